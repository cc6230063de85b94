"""VGG-16 feature extractor (the DEX backbone; also a regressor backbone).

Layer names follow the Caffe/DEX convention (`conv1_1` ... `conv5_3`, `fc6`,
`fc7`) so the DEX importer maps keys one-to-one. With `include_fc=False` the
conv features are globally average pooled, which works at any input size.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from facejax.models.layers import Conv
from facejax.models.layers import max_pool

VARIANTS = {
    # name: (convs per block, channels per block, fc width)
    "tiny": ((1, 1, 1, 1, 1), (8, 16, 32, 32, 32), 64),
    "vgg16": ((2, 2, 3, 3, 3), (64, 128, 256, 512, 512), 4096),
}


class VGG(nn.Module):
  """VGG conv stack; returns [B, fc_width] (fc) or [B, C] (pooled)."""
  block_sizes: Sequence[int] = (2, 2, 3, 3, 3)
  channels: Sequence[int] = (64, 128, 256, 512, 512)
  fc_width: int = 4096
  include_fc: bool = False
  dropout_rate: float = 0.5
  dtype: Any = jnp.float32
  conv_impl: str = "auto"  # see facejax.models.layers.Conv

  last_block = ("conv5_", "fc6", "fc7")

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = x.astype(self.dtype)
    for b, (n, c) in enumerate(zip(self.block_sizes, self.channels)):
      for i in range(n):
        x = Conv(c, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                 impl=self.conv_impl, name=f"conv{b + 1}_{i + 1}")(x)
        x = nn.relu(x)
      # layers.max_pool: the same values and gradient (ties included) as
      # nn.max_pool, without the index arrays XLA:CPU builds for the
      # reduce-window gradient (docs/performance.md section 16).
      x = max_pool(x, (2, 2), (2, 2), ((0, 0), (0, 0)))
    if not self.include_fc:
      return jnp.mean(x, axis=(1, 2))
    # Flatten in PyTorch's channel-major (C, H, W) order so that fc6 weights
    # converted from Caffe/PyTorch apply without permutation.
    x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
    for name in ("fc6", "fc7"):
      x = nn.relu(nn.Dense(self.fc_width, dtype=self.dtype, name=name)(x))
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return x


def create(variant: str, dtype=jnp.float32, **kwargs) -> VGG:
  block_sizes, channels, fc_width = VARIANTS[variant]
  return VGG(block_sizes=block_sizes, channels=channels, fc_width=fc_width,
             dtype=dtype, **kwargs)


DEX_NUM_AGES = 101  # DEX's fc8_101: one class per age 0..100


class DEX(nn.Module):
  """DEX age classifier: VGG with fc6/fc7 and a 101-way age head.

  Returns (logits [B, num_ages], fc7 features [B, fc_width]). The head is
  named `head` so the importer maps DEX's `fc8_101` onto it and the
  `last_block` / `feature_extraction` freeze policies find it.
  """
  backbone: VGG
  num_ages: int = DEX_NUM_AGES

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    feats = self.backbone(x, train=train)  # [B, fc_width]
    logits = nn.Dense(self.num_ages, dtype=jnp.float32, name="head")(feats)
    return logits.astype(jnp.float32), feats


def create_dex(variant: str = "vgg16", dtype=jnp.float32,
               dropout_rate: float = 0.5, conv_impl: str = "auto") -> DEX:
  """DEX on a VGG variant ('vgg16' as released; 'tiny' for smoke runs)."""
  return DEX(backbone=create(variant, dtype=dtype, include_fc=True,
                             dropout_rate=dropout_rate, conv_impl=conv_impl))
