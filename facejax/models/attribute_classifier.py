"""The attribute classifier's networks (facejax.tasks.attribute_classifier
trains them; StarGAN's evaluation uses one frozen): a small plain CNN or
one of the age regressor's backbones, under a linear head with one output
per attribute/class of every data set."""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from facejax.models import age_regressor
from facejax.models import layers


class SmallCNN(nn.Module):
  """Plain conv net for small images: [B,S,S,3] -> flat features [B, F].

  A 3x3 conv at full resolution, then stride-2 4x4 convs down to
  S/2**len(widths) pixels, flattened (not pooled): where a feature is
  (mouth vs brows) tells expressions apart. No BatchNorm, so training
  and evaluation compute the same function. The smoke classifier: the
  tiny ResNet's stride-4 stem leaves 8x8 maps at 32 px and did not learn
  the synthetic RaFD expressions (0.14-0.17 class accuracy, chance 0.14).
  """
  widths: tuple[int, ...] = (16, 32, 64)
  dtype: Any = jnp.float32
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    del train
    # The native conv: compiles fast; im2col gains little at these sizes.
    impl = "xla" if self.conv_impl == "auto" else self.conv_impl
    x = layers.Conv(self.widths[0], (3, 3), padding=((1, 1), (1, 1)),
                    dtype=self.dtype, impl=impl, name="conv0")(x)
    x = nn.relu(x)
    for i, w in enumerate(self.widths):
      x = layers.Conv(w, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)),
                      dtype=self.dtype, impl=impl, name=f"down{i}")(x)
      x = nn.relu(x)
    return x.reshape(x.shape[0], -1).astype(jnp.float32)


BACKBONES = ("small_cnn", *sorted(age_regressor.BACKBONES))


class AttributeNet(nn.Module):
  """Backbone + linear head: images [B,S,S,3] -> logits [B, cls_dim]."""
  backbone: nn.Module
  num_outputs: int

  @nn.compact
  def __call__(self, images, *, train: bool = False):
    feats = self.backbone(images, train=train)
    return nn.Dense(self.num_outputs, name="head")(feats), feats
