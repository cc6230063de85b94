r"""Attribute classifier on StarGAN's data sets (for StarGAN evaluation).

Trains on the real images of the same `data.sets` (same labels, same
preprocessing) as configs/stargan.py; StarGAN's evaluation
(`eval.classifier_workdir`) uses it to check translated images.

  python -m launch.train --config=configs/attribute_classifier.py \
      --workdir=runs/attr
Smoke (32 px, small plain CNN, 300 steps, about a minute on 2 busy CPU
cores; test accuracy: hair colours 0.96-1.0, eyeglasses 0.9, RaFD
expressions 0.38 (chance 0.14)):
  python -m launch.train --config=configs/attribute_classifier.py:smoke \
      --workdir=runs/attr_smoke
Use the same `data.sets` overrides as the StarGAN run it evaluates.
"""

import ml_collections

from configs import common
from configs import stargan


def get_config(arg=None) -> ml_collections.ConfigDict:
  _, smoke = common.parse_arg(arg)

  c = common.base_config()
  c.task = "attribute_classifier"
  c.total_steps = 300 if smoke else 3000
  c.eval_every_steps = 300 if smoke else 1000
  c.ckpt.every_steps = 300 if smoke else 1000

  c.model = ml_collections.ConfigDict()
  c.model.name = "attribute_classifier"
  # small_cnn | resnet18 | ... (facejax.tasks.attribute_classifier).
  c.model.backbone = "small_cnn" if smoke else "resnet18"
  c.model.dtype = "float32"
  c.model.conv_impl = "auto"
  c.model.init_from = ""

  c.data = stargan.data_config(smoke)
  c.data.batch_size = 32
  c.data.eval_batch_size = 32

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "adam"
  c.optim.lr = 3e-3 if smoke else 1e-3
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.weight_decay = 0.0
  c.optim.schedule = "cosine"
  c.optim.warmup_steps = 10 if smoke else 100
  c.optim.final_lr_fraction = 0.0
  c.optim.clip_norm = 1.0
  c.optim.freeze = "finetune"
  return c
