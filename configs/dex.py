r"""DEX age classifier: VGG-16 + 101-way age head, age = softmax expectation.

Real data (an age CSV with `path,age` columns, e.g. IMDB-WIKI / CACD /
AFAD after `python -m launch.prepare_data`), 224 px Caffe-BGR input as the
released model; start from ImageNet VGG-16 weights you hold, or fine-tune
the official DEX weights:
  python -m launch.train --config=configs/dex.py --workdir=runs/dex \
      --config.data.root=/data/cacd_prepared \
      --config.model.init_from=/weights/vgg16-397923af.pth
Hyperparameters of the base config follow the usual VGG-16 fine-tuning
recipe (SGD momentum 0.9, lr 1e-3 with a step decay, weight decay 5e-4,
dropout 0.5, batch 32, flip + light jitter); the DEX paper's exact schedule
is not documented in the reference. A GPU/TPU run; on CPU use the smoke.
Without data.root it trains on the bundled synthetic age set (generated on
first use), which needs no weights but learns slowly at 224 px from scratch.

Smoke (tests, ~1 min on 2 CPU cores): --config=configs/dex.py:smoke
Tiny VGG at 32 px, Gaussian soft labels; validation MAE ~10 y vs ~24 y
for predicting the mean on the 1,500-face synthetic set.

Loss options: --config.loss.label_smoothing=0.1 (uniform smoothing),
--config.loss.sigma=2.0 (Gaussian soft labels of that width in years).
The official DEX weights as a frozen age loss: see facejax.tasks.frozen.
"""

import ml_collections

from configs import common


def get_config(arg=None) -> ml_collections.ConfigDict:
  _, smoke = common.parse_arg(arg)

  c = common.base_config()
  c.task = "dex"
  c.total_steps = 400 if smoke else 20000
  c.eval_every_steps = 200 if smoke else 2000
  c.ckpt.every_steps = 200 if smoke else 2000

  c.model = ml_collections.ConfigDict()
  c.model.name = "dex"
  c.model.backbone = "vgg_tiny" if smoke else "vgg16"  # vgg16 | vgg_tiny
  c.model.dropout = 0.0 if smoke else 0.5  # fc6/fc7 dropout
  c.model.dtype = "float32"  # 'bfloat16' for compute on GPU/TPU
  c.model.conv_impl = "auto"  # auto | xla | im2col | im2col_bf16
  # DEX .pth (keys conv*_*, fc6, fc7, fc8_101) or ImageNet VGG-16 weights.
  c.model.init_from = ""

  c.data = common.age_csv_data(smoke, synthetic_size=64 if smoke else 128)
  # The released model is 224 px; fc6's width follows the input size.
  c.data.image_size = 32 if smoke else 224
  # Photos at inference: the face box grown 40% a side (DEX's crop).
  c.data.align = 'box'
  c.data.crop_fraction = 1.0
  c.data.normalize = "caffe_bgr"  # the reference's input transform
  c.data.batch_size = 32
  c.data.eval_batch_size = 64
  c.data.num_workers = 0 if smoke else 2
  c.data.skip_bad_records = False
  c.data.augment = ml_collections.ConfigDict()
  c.data.augment.enabled = True
  c.data.augment.flip = True
  c.data.augment.rotate_deg = 0.0 if smoke else 5.0
  c.data.augment.scale_jitter = 0.1
  c.data.augment.color_jitter = 0.0 if smoke else 0.1
  c.data.balance = ml_collections.ConfigDict()
  c.data.balance.enabled = False
  c.data.balance.max_per_age = 2000
  c.data.balance.age_range = (0, 100)

  c.loss = ml_collections.ConfigDict()
  c.loss.label_smoothing = 0.0  # mixes in the uniform distribution
  # > 0: Gaussian soft labels of this width (years) instead of one-hot.
  # Neighbouring ages share evidence, which a small data set needs.
  c.loss.sigma = 3.0 if smoke else 0.0

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "adam" if smoke else "sgd"  # sgd | adam | adamw
  c.optim.lr = 2e-3 if smoke else 1e-3
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.momentum = 0.9
  c.optim.nesterov = False
  c.optim.weight_decay = 0.0 if smoke else 5e-4
  c.optim.schedule = "cosine" if smoke else "step"
  c.optim.warmup_steps = 20 if smoke else 500
  c.optim.final_lr_fraction = 0.0
  c.optim.decay_factor = 0.1
  c.optim.decay_at = (0.5, 0.75)
  c.optim.clip_norm = 1.0
  c.optim.freeze = "finetune"  # finetune | feature_extraction | last_block
  return c
