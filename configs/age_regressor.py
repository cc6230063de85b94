r"""ResNet34 age regressor (L1 on age in years).

Default run (synthetic faces, generated on first use, ~20 min on 2 CPU cores):
  python -m launch.train --config=configs/age_regressor.py \
      --workdir=runs/age_regressor
Ends with a validation MAE far below the predict-the-mean baseline (~25 y).

Smoke (tests, seconds): --config=configs/age_regressor.py:smoke

Your own data (an age CSV with `path,age` columns, e.g. CACD or AFAD after
`python -m launch.prepare_data`):
  python -m launch.train --config=configs/age_regressor.py \
      --workdir=runs/cacd --config.data.root=/data/cacd_prepared \
      --config.data.image_size=120 --config.total_steps=50000
Start from ImageNet weights you hold:  --config.model.init_from=resnet34.pth
Freeze regimes: --config.optim.freeze=finetune|feature_extraction|last_block
Age-balanced sampling: --config.data.balance.enabled=True
"""

import ml_collections

from configs import common


def get_config(arg=None) -> ml_collections.ConfigDict:
  _, smoke = common.parse_arg(arg)

  c = common.base_config()
  c.task = "age_regression"
  c.total_steps = 300 if smoke else 800
  c.eval_every_steps = 100 if smoke else 400
  c.ckpt.every_steps = 100 if smoke else 200

  c.model = ml_collections.ConfigDict()
  c.model.name = "age_regressor"
  # resnet34 | resnet18 | tiny | vgg16 | vgg_tiny | mobilenet_v2 | ...
  c.model.backbone = "tiny" if smoke else "resnet34"
  c.model.dropout = 0.0
  c.model.dtype = "float32"  # 'bfloat16' for compute on GPU/TPU
  c.model.conv_impl = "auto"  # auto | xla | im2col | im2col_bf16
  c.model.age_shift = 50.0   # the head predicts (age - shift) / scale
  c.model.age_scale = 30.0
  c.model.init_from = ""     # .pth/.safetensors in torchvision/timm names

  c.data = common.age_csv_data(smoke, synthetic_size=64 if smoke else 128)
  c.data.image_size = 32 if smoke else 64
  # Photos at inference: the face box grown 40% a side (DEX's crop).
  c.data.align = 'box'
  c.data.crop_fraction = 1.0
  c.data.normalize = "imagenet"
  c.data.batch_size = 32
  c.data.eval_batch_size = 64
  c.data.num_workers = 0 if smoke else 2
  c.data.skip_bad_records = False
  c.data.augment = ml_collections.ConfigDict()
  c.data.augment.enabled = True
  c.data.augment.flip = True
  # Smoke trains 300 steps on 1,200 images: light augmentation learns faster.
  c.data.augment.rotate_deg = 0.0 if smoke else 5.0
  c.data.augment.scale_jitter = 0.1
  c.data.augment.color_jitter = 0.0 if smoke else 0.1
  c.data.balance = ml_collections.ConfigDict()
  c.data.balance.enabled = False
  c.data.balance.max_per_age = 2000
  c.data.balance.age_range = (0, 100)

  c.loss = "l1"  # l1 | mse

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "adam"      # sgd | adam | adamw
  c.optim.lr = 5e-3 if smoke else 1e-3
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.momentum = 0.9
  c.optim.nesterov = False
  c.optim.weight_decay = 0.0
  c.optim.schedule = "cosine"  # constant | cosine | linear | step
  c.optim.warmup_steps = 20 if smoke else 50
  c.optim.final_lr_fraction = 0.0
  c.optim.decay_factor = 0.1
  c.optim.decay_at = (0.5, 0.75)
  c.optim.clip_norm = 1.0
  c.optim.freeze = "finetune"  # finetune | feature_extraction | last_block
  return c
