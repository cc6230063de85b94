"""ResNet backbones (BasicBlock ResNet-18/34) in the torchvision topology.

Submodule names mirror torchvision's state-dict keys (`conv1`, `bn1`,
`layer1_0.conv1`, `layer1_0.downsample_conv`, ...) so that
`facejax.convert.imagenet` maps ImageNet weights one-to-one.
Images are NHWC.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from facejax.models.layers import Conv
from facejax.models.layers import max_pool

# torchvision initialises convs with kaiming_normal(mode='fan_out').
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

VARIANTS = {
    # name: (blocks per stage, width of the first stage)
    "tiny": ((1, 1, 1, 1), 8),
    "resnet18": ((2, 2, 2, 2), 64),
    "resnet34": ((3, 4, 6, 3), 64),
}


class BasicBlock(nn.Module):
  """Two 3x3 convs with an identity (or 1x1 projection) shortcut."""
  features: int
  strides: int = 1
  dtype: Any = jnp.float32
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x, *, train: bool):
    norm = lambda name: nn.BatchNorm(
        use_running_average=not train, momentum=0.9, epsilon=1e-5,
        dtype=self.dtype, name=name)
    conv = lambda f, k, s, p, name: Conv(
        f, (k, k), (s, s), padding=((p, p), (p, p)), use_bias=False,
        kernel_init=_conv_init, dtype=self.dtype, impl=self.conv_impl,
        name=name)
    residual = x
    y = conv(self.features, 3, self.strides, 1, "conv1")(x)
    y = nn.relu(norm("bn1")(y))
    y = conv(self.features, 3, 1, 1, "conv2")(y)
    y = norm("bn2")(y)
    if self.strides != 1 or x.shape[-1] != self.features:
      residual = conv(self.features, 1, self.strides, 0, "downsample_conv")(x)
      residual = norm("downsample_bn")(residual)
    return nn.relu(y + residual)


class ResNet(nn.Module):
  """ResNet feature extractor: returns globally pooled features [B, C]."""
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  width: int = 64
  dtype: Any = jnp.float32
  conv_impl: str = "auto"  # see facejax.models.layers.Conv
  # Child-name prefixes that train; None: all. Frozen children run their
  # BatchNorm on running statistics, in training as in eval.
  trainable: Sequence[str] | None = None

  # Name prefix of the last stage, used by the `last_block` freeze policy.
  last_block = ("layer4_",)

  def _train(self, name: str, train: bool) -> bool:
    return train and (self.trainable is None or
                      any(name.startswith(p) for p in self.trainable))

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = Conv(self.width, (7, 7), (2, 2), padding=((3, 3), (3, 3)),
             use_bias=False, kernel_init=_conv_init, dtype=self.dtype,
             impl=self.conv_impl, name="conv1")(x.astype(self.dtype))
    x = nn.BatchNorm(use_running_average=not self._train("bn1", train),
                     momentum=0.9, epsilon=1e-5, dtype=self.dtype,
                     name="bn1")(x)
    x = nn.relu(x)
    x = max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        name = f"layer{i + 1}_{j}"
        x = BasicBlock(self.width * 2**i, strides, dtype=self.dtype,
                       conv_impl=self.conv_impl,
                       name=name)(x, train=self._train(name, train))
    return jnp.mean(x, axis=(1, 2))  # [B, C]


def create(variant: str, dtype=jnp.float32, conv_impl="auto") -> ResNet:
  stage_sizes, width = VARIANTS[variant]
  return ResNet(stage_sizes=stage_sizes, width=width, dtype=dtype,
                conv_impl=conv_impl)
