r"""SphereFace-20 + A-Softmax identity network (the caricature identity loss).

Default run (synthetic WebCaricature-layout photos + caricatures of the
same identities, generated on first use; SphereFace-20 at 112 x 96):
  python -m launch.train --config=configs/sphereface.py \
      --workdir=runs/sphereface

Smoke (tiny SphereFace at 32 px on 60 synthetic identities, 300 steps,
~1-2 min on 2 CPU cores; validation accuracy well above the 1/60 chance):
  python -m launch.train --config=configs/sphereface.py:smoke \
      --workdir=runs/sphereface_smoke

WebCaricature (fine-tuning, as the seed project):
  --config.data.root=/data/WebCaricature \
  --config.data.image_dir=OriginalImages \
  --config.data.landmark_dir=FacialPoints \
  --config.model.init_from=sphere20a_20171020.pth
Then use the workdir as the translator's identity network:
  python -m launch.train --config=configs/caricature.py \
      --config.identity.workdir=runs/sphereface ...
"""

import ml_collections

from configs import common


def data_config(smoke: bool) -> ml_collections.ConfigDict:
  """The two-domain data keys (shared with configs/caricature.py)."""
  d = ml_collections.ConfigDict()
  d.root = ""                 # empty: the synthetic set below
  d.layout = "webcaricature"  # webcaricature | folders
  d.image_dir = "OriginalImages"
  d.landmark_dir = "FacialPoints"  # '' = no alignment
  d.photo_dir = "photos"      # layout 'folders'
  d.cari_dir = "caricatures"
  d.list_file = ""            # '<photo|cari> <path> <Name>' lines
  d.train_list = "train_subjects.txt"  # '' = split by name hash
  d.test_list = "test_subjects.txt"
  d.test_fraction = 0.25
  d.split_by = "subjects"     # subjects | images
  d.test_per_identity = 1
  d.synthetic_dir = ("data/synthetic/caricature_smoke" if smoke
                     else "data/synthetic/caricature")
  d.synthetic_identities = 60 if smoke else 200
  d.synthetic_photos = 4
  d.synthetic_caricatures = 4
  d.synthetic_size = 64 if smoke else 128
  d.synthetic_seed = 0
  d.image_size = 32 if smoke else 112
  d.align = 'sphereface_96x112'  # Five landmarks onto its 96x112 template.
  d.align_size = 112
  d.crop_fraction = 1.0
  d.flip = True
  d.batch_size = 16
  d.eval_batch_size = 32
  d.num_workers = 0 if smoke else 2
  return d


def get_config(arg=None) -> ml_collections.ConfigDict:
  _, smoke = common.parse_arg(arg)

  c = common.base_config()
  c.task = "sphereface"
  c.total_steps = 300 if smoke else 20_000
  c.log_every_steps = 50 if smoke else 100
  c.eval_every_steps = 300 if smoke else 2_000
  c.ckpt.every_steps = 300 if smoke else 2_000

  c.model = ml_collections.ConfigDict()
  c.model.name = "sphereface"
  c.model.variant = "tiny" if smoke else "sphere20"  # sphere20|small|tiny
  c.model.input_size = (32, 32) if smoke else (112, 96)  # (H, W)
  c.model.num_classes = 0      # 0: the number of identities in the data
  c.model.margin = 4           # A-Softmax m
  c.model.lambda_min = 5.0     # annealed lambda's floor (reference 5)
  c.model.init_from = ""       # sphereface_pytorch .pth (sphere20a)

  c.data = data_config(smoke)
  # Every training-list identity in train and valid (held-out images);
  # the test subjects stay unseen for the translator's verification.
  c.data.split_by = "images"
  c.data.domains = ("photo", "cari")
  c.data.batch_size = 32 if smoke else 64

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "sgd"         # the reference: SGD 0.1, momentum 0.9
  c.optim.lr = 0.05 if smoke else 0.1
  c.optim.momentum = 0.9
  c.optim.nesterov = False
  c.optim.weight_decay = 5e-4
  c.optim.schedule = "cosine"
  c.optim.warmup_steps = 20 if smoke else 500
  c.optim.final_lr_fraction = 0.0
  c.optim.clip_norm = 5.0
  return c
