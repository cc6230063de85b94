"""Age regressor: a CNN backbone, optional dropout, and a 1-unit head.

The head predicts a normalised age; `__call__` returns years:
age = head(x) * age_scale + age_shift, which keeps the initial predictions
near the middle of the age range and the early gradients well scaled.
"""

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from facejax.models import mobilenet, resnet, vgg

# backbone variant name -> module that builds it
BACKBONES = {
    **{name: resnet for name in resnet.VARIANTS},
    **{name: vgg for name in vgg.VARIANTS if name != "tiny"},
    "vgg_tiny": vgg,
    **{name: mobilenet for name in mobilenet.VARIANTS if name != "tiny"},
    "mobilenet_tiny": mobilenet,
}


def create_backbone(name: str, dtype=jnp.float32,
                    conv_impl: str = "auto") -> nn.Module:
  if name not in BACKBONES:
    raise ValueError(f"config key model.backbone: unknown backbone {name!r}; "
                     f"choose one of {sorted(BACKBONES)}")
  module = BACKBONES[name]
  variant = name.split("_")[-1] if name.endswith("_tiny") else name
  if module is mobilenet:  # depthwise convs: XLA's native path
    return module.create(variant, dtype=dtype)
  return module.create(variant, dtype=dtype, conv_impl=conv_impl)


class AgeRegressor(nn.Module):
  """Returns (age [B] in years, penultimate features [B, C])."""
  backbone: nn.Module
  dropout_rate: float = 0.0
  age_shift: float = 50.0
  age_scale: float = 30.0

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    feats = self.backbone(images, train=train)  # [B, C]
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(feats)
    out = nn.Dense(1, dtype=jnp.float32, name="head")(x)[:, 0]
    return out * self.age_scale + self.age_shift, feats


def create(model_config: ml_collections.ConfigDict,
           freeze: str = "finetune") -> AgeRegressor:
  """The regressor; `freeze` puts frozen BatchNorms in inference mode."""
  dtype = jnp.dtype(model_config.get("dtype", "float32"))
  backbone = create_backbone(model_config.backbone, dtype=dtype,
                             conv_impl=model_config.get("conv_impl", "auto"))
  if hasattr(backbone, "trainable"):  # backbones with BatchNorm
    if freeze == "feature_extraction":
      backbone = backbone.clone(trainable=())
    elif freeze == "last_block":
      backbone = backbone.clone(trainable=backbone.last_block)
  return AgeRegressor(
      backbone=backbone,
      dropout_rate=model_config.get("dropout", 0.0),
      age_shift=model_config.get("age_shift", 50.0),
      age_scale=model_config.get("age_scale", 30.0))


def last_block_prefixes(model: AgeRegressor) -> tuple[str, ...]:
  """Parameter-path prefixes trained by the `last_block` freeze policy."""
  return tuple(f"backbone/{p}" for p in model.backbone.last_block) + ("head",)


