r"""StarGAN on several data sets at once (masked labels), WGAN-GP.

Default run (synthetic CelebA- and RaFD-format faces, generated on first
use; the reference's 128 px model and hyperparameters - days on CPU, use
an accelerator):
  python -m launch.train --config=configs/stargan.py --workdir=runs/stargan

Smoke (32 px, tiny G/D, batch 16, 300 steps: ~6-7 min on 2 CPU cores at
load ~10 (0.8 steps/s + ~35 s compile); with the smoke classifier the
CelebA block's targets are found in 0.855 of translations vs 0.235 of
inputs, RaFD expressions 0.327 vs 0.143. Batch 8 / 200 steps is 3x
faster but only reached 0.38 vs 0.24):
  python -m launch.train --config=configs/stargan.py:smoke \
      --workdir=runs/stargan_smoke

Evaluation with a separately trained classifier (configs/
attribute_classifier.py on the same data sets):
  python -m launch.evaluate --workdir=runs/stargan_smoke \
      --config.eval.classifier_workdir=runs/attr_smoke   (or set it here)
Translation grid of one photo:
  python -m launch.stargan --workdir=runs/stargan_smoke \
      --image=face.jpg --out=grid.png

Your data: `data.sets` is a list of dicts, any number of each format:
  {'name': 'celeba', 'format': 'celeba', 'root': '/data/celeba',
   'image_dir': 'images', 'attr_file': 'list_attr_celeba.txt',
   'attributes': ('Black_Hair', 'Blond_Hair', 'Brown_Hair', 'Male',
                  'Young'), 'crop_size': 178, 'test_count': 1999}
  {'name': 'rafd', 'format': 'rafd', 'root': '/data/RaFD',
   'train_dir': 'train', 'test_dir': 'test', 'crop_size': 256}
Official checkpoints: --config.model.init_from=/ckpt/200000-G.ckpt (the
matching -D.ckpt is loaded when present).
"""

import ml_collections

from configs import common
from facejax.data import stargan as stargan_data
from facejax.data import synthetic


def default_sets(smoke: bool) -> list[dict]:
  """Synthetic CelebA- and RaFD-format sets (generated on first use)."""
  size = 64 if smoke else 128
  # Smoke: zoom on the face (the synthetic head is about half the image)
  # so that 32 px still shows eyes and mouth.
  crop = 48 if smoke else 0
  celeba_attrs = (("Black_Hair", "Blond_Hair", "Brown_Hair", "Eyeglasses")
                  if smoke else ("Black_Hair", "Blond_Hair", "Brown_Hair",
                                 "Male", "Young", "Eyeglasses"))
  return [
      {"name": "celeba", "format": "celeba", "root": "",
       "image_dir": "img_align_celeba", "attr_file": "list_attr_celeba.txt",
       "attributes": celeba_attrs, "crop_size": crop,
       "test_count": 100 if smoke else 400, "split_seed": 1234,
       "synthetic_num": 1000 if smoke else 4000, "synthetic_size": size},
      {"name": "rafd", "format": "rafd", "root": "", "train_dir": "train",
       "test_dir": "test", "classes": tuple(synthetic.EXPRESSIONS),
       "crop_size": crop, "synthetic_num": 420 if smoke else 1400,
       "synthetic_size": size},
  ]


def data_config(smoke: bool) -> ml_collections.ConfigDict:
  d = ml_collections.ConfigDict()
  d.root = ""               # base of relative set roots
  d.sets = default_sets(smoke)
  d.one_hot_group = stargan_data.DEFAULT_ONE_HOT_GROUP
  d.synthetic_dir = "data/synthetic/stargan_smoke" if smoke else (
      "data/synthetic/stargan")
  d.synthetic_seed = 0
  d.image_size = 32 if smoke else 128
  d.align = 'box'  # Photos at inference: a square face box crop.
  d.flip = True
  d.batch_size = 16
  d.eval_batch_size = 32 if smoke else 16
  d.num_workers = 0 if smoke else 2
  # Steps per turn of each data set (0: loss.n_critic, so that generator
  # steps cycle through the data sets).
  d.round_robin_group = 0
  return d


def get_config(arg=None) -> ml_collections.ConfigDict:
  _, smoke = common.parse_arg(arg)

  c = common.base_config()
  c.task = "stargan"
  c.total_steps = 300 if smoke else 200_000
  c.log_every_steps = 20 if smoke else 10
  c.eval_every_steps = 300 if smoke else 10_000
  c.ckpt.every_steps = 300 if smoke else 10_000

  c.model = ml_collections.ConfigDict()
  c.model.name = "stargan"
  # Smoke: XLA:CPU's convs are slow at 16+ channels here (measured 4 s
  # vs 0.75 s a step at conv_dim 16 vs 8, batch 16).
  c.model.g_conv_dim = 8 if smoke else 64
  c.model.d_conv_dim = 8 if smoke else 64
  c.model.g_repeat_num = 2 if smoke else 6
  c.model.d_repeat_num = 3 if smoke else 6
  # auto: the native conv (see facejax.models.stargan) | xla | im2col.
  c.model.conv_impl = "auto"
  c.model.dtype = "float32"
  c.model.target_mode = "random"  # random | shuffle (reference randperm)
  c.model.init_from = ""       # official .../200000-G.ckpt

  c.data = data_config(smoke)

  c.loss = ml_collections.ConfigDict()
  c.loss.lambda_cls = 1.0
  c.loss.lambda_rec = 10.0
  c.loss.lambda_gp = 10.0
  c.loss.n_critic = 2 if smoke else 5

  c.optim = ml_collections.ConfigDict()
  c.optim.g_lr = 1e-3 if smoke else 1e-4
  c.optim.d_lr = 1e-3 if smoke else 1e-4
  c.optim.b1 = 0.5
  c.optim.b2 = 0.999
  # linear: the paper (decay to 0 over decay_steps, -1 = second half);
  # official: the official code's quirk (lr0/decay_steps subtracted every
  # lr_update_step steps: 1e-4 -> 9.99e-5); constant.
  c.optim.schedule = "linear"
  c.optim.decay_steps = -1
  c.optim.lr_update_step = 1000

  c.eval = ml_collections.ConfigDict()
  c.eval.classifier_workdir = ""  # an attribute_classifier workdir
  c.eval.samples_per_set = 2      # rows per data set in samples/step_N.png
  c.eval.max_images = 200 if smoke else 0  # per set in report(); 0 = all
  return c
