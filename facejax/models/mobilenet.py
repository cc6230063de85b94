"""MobileNetV2 feature extractor (torchvision topology)."""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

# (expansion t, channels c, repeats n, first stride s), torchvision order.
_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
             (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

VARIANTS = {"tiny": 0.25, "mobilenet_v2": 1.0}  # name: width multiplier


def _make_divisible(v: float, divisor: int = 8) -> int:
  new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
  return new_v + divisor if new_v < 0.9 * v else new_v


class _ConvBN(nn.Module):
  features: int
  kernel: int = 3
  strides: int = 1
  groups: int = 1
  act: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    p = (self.kernel - 1) // 2
    x = nn.Conv(self.features, (self.kernel, self.kernel),
                (self.strides, self.strides), padding=[(p, p), (p, p)],
                feature_group_count=self.groups, use_bias=False,
                dtype=self.dtype)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                     epsilon=1e-5, dtype=self.dtype)(x)
    return jnp.clip(x, 0, 6) if self.act else x  # ReLU6


class InvertedResidual(nn.Module):
  features: int
  strides: int
  expansion: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    c_in = x.shape[-1]
    y = x
    if self.expansion != 1:
      y = _ConvBN(c_in * self.expansion, 1, dtype=self.dtype)(y, train=train)
    hidden = y.shape[-1]
    y = _ConvBN(hidden, 3, self.strides, groups=hidden,
                dtype=self.dtype)(y, train=train)
    y = _ConvBN(self.features, 1, act=False, dtype=self.dtype)(y, train=train)
    if self.strides == 1 and c_in == self.features:
      y = y + x
    return y


class MobileNetV2(nn.Module):
  """Returns globally pooled features [B, 1280 * max(1, width)]."""
  width: float = 1.0
  dtype: Any = jnp.float32
  # Child-name prefixes that train (None: all); frozen children keep their
  # BatchNorm on running statistics.
  trainable: Sequence[str] | None = None

  last_block = ("block_16", "last_conv")

  def _train(self, name: str, train: bool) -> bool:
    return train and (self.trainable is None or
                      any(name.startswith(p) for p in self.trainable))

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = _ConvBN(_make_divisible(32 * self.width), 3, 2,
                dtype=self.dtype, name="stem")(
                    x.astype(self.dtype), train=self._train("stem", train))
    k = 0
    for t, c, n, s in _SETTINGS:
      for i in range(n):
        x = InvertedResidual(_make_divisible(c * self.width),
                             s if i == 0 else 1, t, dtype=self.dtype,
                             name=f"block_{k}")(
                                 x, train=self._train(f"block_{k}", train))
        k += 1
    x = _ConvBN(_make_divisible(1280 * max(1.0, self.width)), 1,
                dtype=self.dtype, name="last_conv")(
                    x, train=self._train("last_conv", train))
    return jnp.mean(x, axis=(1, 2))


def create(variant: str, dtype=jnp.float32) -> MobileNetV2:
  return MobileNetV2(width=VARIANTS[variant], dtype=dtype)
