"""HRFAE generator and PatchGAN discriminator (Yao et al., ICPR 2020).

Layer for layer the official InterDigitalInc/HRFAE `nets.py` (see
shared/reference/hrfae.md sections 2-4), in NHWC:

  Encoder  conv_1 9x9 s1 -> conv_2 3x3 s2 (skip_2) -> conv_3 3x3 s2
           (skip_1) -> 4 residual blocks (content); reflect padding,
           InstanceNorm, LeakyReLU(0.2), spectral norm on every conv.
  ModNet   age -> one-hot(101) -> Linear(101, C, no bias) -> sigmoid.
  Decoder  content * age_vec, concat skip_1 -> up x2, conv 3x3 -> concat
           skip_2 -> up x2, conv 3x3 -> reflect pad 4, plain conv 9x9 to
           RGB (no norm, no activation, no tanh).
  PatchGAN 6 convs k4 with reflect pad 2 (strides 2,2,2,2,1,1), BatchNorm
           (always in training mode, as in the reference) on layers 1-4.

Images are in the reference's domain: RGB in [0, 1] minus
`IMAGE_MEAN` (std 1); the generator's output lives in the same space.
Widths scale with `width` (the reference: 32 for G and D).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from facejax.models import spectral_norm

NUM_AGES = 101  # one-hot age index 0..100
# Image mean (123.68, 116.779, 103.939) / 255 subtracted from RGB in [0, 1].
IMAGE_MEAN = np.array([0.48501961, 0.45795686, 0.40760392], np.float32)


def to_model_domain(images01: jax.Array) -> jax.Array:
  """RGB in [0, 1] -> the network's mean-subtracted domain."""
  return images01 - IMAGE_MEAN


def to_unit_interval(x: jax.Array) -> jax.Array:
  """The network's domain -> RGB in [0, 1] (not clipped)."""
  return x + IMAGE_MEAN


def _reflect(x: jax.Array, pad: int) -> jax.Array:
  return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")


def _conv_block(remat: bool):
  """ConvBlock, or a rematerialised one (`model.remat`: large images).

  With remat only each block's input is kept for the backward pass; the
  padded input, conv output and normalised map are recomputed. Parameter
  names are unchanged, so checkpoints load either way.
  """
  return nn.remat(ConvBlock, static_argnums=(2,)) if remat else ConvBlock


class ConvBlock(nn.Module):
  """Reflect pad k//2 -> conv (spectral norm) -> norm -> LeakyReLU(0.2).

  `upsample`: the input is first up-sampled x2, nearest-neighbour
  (torch.nn.Upsample(scale_factor=2)), in the conv's sub-pixel form.
  """
  features: int
  kernel_size: int
  strides: int = 1
  norm: str = "in"          # in | batch | none
  activation: bool = True
  dtype: Any = jnp.float32
  conv_impl: str = "auto"
  upsample: bool = False

  @nn.compact
  def __call__(self, x, update_stats: bool = False):
    if not self.upsample:  # (with it, the conv pads the up-sampled map)
      x = _reflect(x, self.kernel_size // 2)
    x = spectral_norm.Conv(self.features, self.kernel_size, self.strides,
                           dtype=self.dtype, impl=self.conv_impl,
                           upsample=self.upsample,
                           name="conv")(x, update_stats)
    x = x.astype(jnp.float32)
    if self.norm == "in":
      x = nn.InstanceNorm(epsilon=1e-5, name="norm")(x)
    elif self.norm == "batch":
      # The reference never calls eval(): batch statistics always.
      x = nn.BatchNorm(use_running_average=False, momentum=0.9,
                       epsilon=1e-5, name="norm")(x)
    if self.activation:
      x = nn.leaky_relu(x, 0.2)
    return x


class ResBlock(nn.Module):
  """x + B(A(x)); both blocks norm + activate, nothing after the sum."""
  features: int
  dtype: Any = jnp.float32
  conv_impl: str = "auto"
  remat: bool = False

  @nn.compact
  def __call__(self, x, update_stats: bool = False):
    kw = dict(dtype=self.dtype, conv_impl=self.conv_impl)
    block = _conv_block(self.remat)
    y = block(self.features, 3, name="block_0", **kw)(x, update_stats)
    y = block(self.features, 3, name="block_1", **kw)(y, update_stats)
    return x + y


class Encoder(nn.Module):
  """Image -> (content [H/4, 4w], skip_1 [H/4, 4w], skip_2 [H/2, 2w])."""
  width: int = 32
  num_res_blocks: int = 4
  dtype: Any = jnp.float32
  conv_impl: str = "auto"
  remat: bool = False

  @nn.compact
  def __call__(self, x, update_stats: bool = False):
    kw = dict(dtype=self.dtype, conv_impl=self.conv_impl)
    w = self.width
    block = _conv_block(self.remat)
    x = block(w, 9, name="conv_1", **kw)(x, update_stats)
    skip_2 = block(2 * w, 3, 2, name="conv_2", **kw)(x, update_stats)
    skip_1 = block(4 * w, 3, 2, name="conv_3", **kw)(skip_2, update_stats)
    x = skip_1
    for i in range(self.num_res_blocks):
      x = ResBlock(4 * w, name=f"res_block_{i}", remat=self.remat, **kw)(
          x, update_stats)
    return x, skip_1, skip_2


class ModNet(nn.Module):
  """Integer age -> sigmoid modulation vector [B, features]."""
  features: int = 128

  @nn.compact
  def __call__(self, ages):
    idx = jnp.clip(jnp.round(ages), 0, NUM_AGES - 1).astype(jnp.int32)
    # Linear(101 -> C, no bias) on a one-hot = row lookup. U(0, 1) init as
    # the reference's init_weights.
    kernel = self.param("kernel", nn.initializers.uniform(1.0),
                        (NUM_AGES, self.features), jnp.float32)
    return jax.nn.sigmoid(kernel[idx])


class Decoder(nn.Module):
  """(content, age vector, skips) -> image in the model domain."""
  width: int = 32
  dtype: Any = jnp.float32
  conv_impl: str = "auto"
  remat: bool = False

  @nn.compact
  def __call__(self, content, age_vec, skip_1, skip_2,
               update_stats: bool = False):
    kw = dict(dtype=self.dtype, conv_impl=self.conv_impl)
    w = self.width
    block = _conv_block(self.remat)
    x = content * age_vec[:, None, None, :].astype(content.dtype)
    x = jnp.concatenate([x, skip_1], axis=-1)               # [B, H/4, 8w]
    x = block(2 * w, 3, upsample=True, name="conv_1", **kw)(x, update_stats)
    x = jnp.concatenate([x, skip_2], axis=-1)               # [B, H/2, 4w]
    x = block(w, 3, upsample=True, name="conv_2", **kw)(x, update_stats)
    x = _reflect(x, 4)
    x = spectral_norm.Conv(3, 9, spectral=False, name="conv_3",
                           **{"dtype": self.dtype, "impl": self.conv_impl})(x)
    return x.astype(jnp.float32)


class Generator(nn.Module):
  """HRFAE generator: `gen(x, ages)`; `encode`/`decode` for several ages.

  Parameter tree: enc/..., dec/..., mod/kernel (the reference's enc, dec,
  mlp_style state dicts).
  """
  width: int = 32
  num_res_blocks: int = 4
  dtype: Any = jnp.float32
  conv_impl: str = "auto"
  remat: bool = False  # jax.checkpoint per conv block (1024 px training)

  def setup(self):
    kw = dict(dtype=self.dtype, conv_impl=self.conv_impl, remat=self.remat)
    self.enc = Encoder(self.width, self.num_res_blocks, **kw)
    self.dec = Decoder(self.width, **kw)
    self.mod = ModNet(4 * self.width)

  def encode(self, x, update_stats: bool = False):
    return self.enc(x, update_stats)

  def decode(self, code, ages, update_stats: bool = False):
    content, skip_1, skip_2 = code
    return self.dec(content, self.mod(ages), skip_1, skip_2, update_stats)

  def __call__(self, x, ages, update_stats: bool = False):
    """x [B, H, W, 3] (H, W divisible by 4), ages [B] -> [B, H, W, 3]."""
    return self.decode(self.encode(x, update_stats), ages, update_stats)


class Discriminator(nn.Module):
  """PatchGAN: [B, H, W, 3] -> [B, P, P, 1] (P = 35 at 512 px)."""
  width: int = 32
  dtype: Any = jnp.float32
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x, update_stats: bool = True):
    kw = dict(dtype=self.dtype, conv_impl=self.conv_impl)
    w = self.width
    layers = ((w, 2, "none", True), (2 * w, 2, "batch", True),
              (4 * w, 2, "batch", True), (8 * w, 2, "batch", True),
              (16 * w, 1, "batch", True), (1, 1, "none", False))
    for i, (c, s, norm, act) in enumerate(layers):
      x = ConvBlock(c, 4, s, norm=norm, activation=act, name=f"conv_{i}",
                    **kw)(x, update_stats)
    return x


def patch_size(image_size: int) -> int:
  """Side of the discriminator's output map for a square input."""
  s = image_size
  for stride in (2, 2, 2, 2, 1, 1):
    s = (s + 4 - 4) // stride + 1
  return s
