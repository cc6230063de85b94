"""StarGAN generator and discriminator (Choi et al. 2018), NHWC, Linen.

Faithful to the official PyTorch model (see the reference doc):
* G: the label vector is tiled over the image and concatenated on the
  channel axis; 7x7 conv, two stride-2 down-sampling convs, `repeat_num`
  residual blocks, two stride-2 transposed convs, 7x7 conv + tanh. No
  conv biases; instance norm with affine parameters, always normalising
  with per-instance statistics (the reference never calls `.eval()`, so
  its running buffers are never used) - train and test behave the same.
  Zero padding everywhere (the reference notes the tiled label needs it).
* D: `repeat_num` 4x4 stride-2 convs with LeakyReLU(0.01), no norm; a 3x3
  PatchGAN realism head and a classification head whose kernel covers the
  whole final map (image_size / 2**repeat_num).

Kernels are HWIO. The transposed conv stores the kernel of the
equivalent ordinary convolution over the zero-dilated input (PyTorch's
(in, out, k, k) weight flipped spatially); facejax.convert.stargan converts.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from facejax.models import layers

# (conv_dim, repeat_num) of G and D per variant.
VARIANTS = {
    "base": {"g_conv_dim": 64, "d_conv_dim": 64, "g_repeat_num": 6,
             "d_repeat_num": 6},
    "tiny": {"g_conv_dim": 8, "d_conv_dim": 8, "g_repeat_num": 1,
             "d_repeat_num": 3},
}

# PyTorch's default conv init: U(+-1/sqrt(fan_in)) for kernels.
_TORCH_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in",
                                               "uniform")


# impl='auto' is layers.Conv's per-shape choice: XLA's native convolution
# on G's maps (32-128 px at 128 px images) and on D's large layers, im2col
# on D's last layers (2x2 and 1x1 outputs at 128 px), where XLA:CPU's
# convolution is 5-60x slower (docs/performance.md section 10). An earlier
# im2col-everywhere default lost on G's 7x7 convs (2nd-order gradient 1.4 s
# vs 0.13 s native at 32 px, batch 16; compile 35 s vs 1 s).


def _pad(p: int):
  return ((p, p), (p, p))


class _Kernel(nn.Module):
  """Holds a conv kernel [kh, kw, in, out] (the parameter `kernel`)."""
  shape: tuple[int, ...]

  @nn.compact
  def __call__(self):
    return self.param("kernel", _TORCH_INIT, self.shape, jnp.float32)


# Phase form of the k=4, s=2, p=1 transposed conv: output row 2m + a
# reads input rows m-1, m, m+1 (offsets d = 0, 1, 2) through kernel row
# _TAPS[a][d] of the dilated-input kernel (None: no tap).
_TAPS = ((0, 2, None), (None, 1, 3))


def _phase_rows(a: int) -> tuple[list[int], tuple[int, int]]:
  """Output parity a -> (its two kernel rows, input padding (before, after)).

  Its taps sit at two consecutive offsets d, d+1, i.e. a 2-tap window
  starting at input row m-1+d.
  """
  ds = [d for d in range(3) if _TAPS[a][d] is not None]
  return [_TAPS[a][d] for d in ds], (1 - ds[0], ds[-1] - 1)


def _conv(x, kernel, strides, padding, impl):
  if impl == "auto":
    impl = "xla"  # transposed convs output large maps (see above)
  if impl == "im2col":
    return layers._im2col_conv(x, kernel, strides, padding)  # pylint: disable=protected-access
  return jax.lax.conv_general_dilated(
      x, kernel, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


class ConvTranspose(nn.Module):
  """PyTorch ConvTranspose2d(k, stride, padding) as a conv on a dilated map.

  Inserting stride-1 zeros between input pixels and convolving (stride 1,
  padding k-1-p) with the spatially flipped kernel is the transposed
  convolution; `conv/kernel` holds that flipped kernel [k, k, in, out].
  StarGAN's k=4, s=2, p=1 is computed in the equivalent phase form: each
  of the 4 output parities (a, b) is a 2x2 conv of the undilated map with
  its 4 taps of the kernel, then the 4 maps are interleaved. That is a
  quarter of the pixels and no multiplications by inserted zeros, and
  unlike one 3x3 conv to 4 x out channels (the sub-pixel form, 2.3x
  faster than the dilated map) no multiplications by the 3x3 kernel's
  zero taps either: 2.25x fewer FLOPs, forward + backward 0.58 -> 0.28 s
  for G's first up-sampling at 16 x 32 px on a 2-core AMD EPYC with
  AVX-512 (docs/performance.md section 13).
  """
  features: int
  kernel_size: int = 4
  stride: int = 2
  padding: int = 1
  use_bias: bool = False
  impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    if self.use_bias:
      raise NotImplementedError("StarGAN's transposed convs have no bias")
    b, h, w, c = x.shape
    k, s = self.kernel_size, self.stride
    kernel = _Kernel((k, k, c, self.features), name="conv")()
    kernel = kernel.astype(self.dtype)
    x = x.astype(self.dtype)
    if (k, s, self.padding) == (4, 2, 1):
      rows = []
      for a in range(2):
        taps_a, pad_a = _phase_rows(a)
        cols = []
        for b_ in range(2):
          taps_b, pad_b = _phase_rows(b_)
          k_ab = kernel[jnp.array(taps_a)][:, jnp.array(taps_b)]
          cols.append(_conv(x, k_ab, (1, 1), (pad_a, pad_b), self.impl))
        rows.append(jnp.stack(cols, axis=3))  # [B, h, w, b, out]
      y = jnp.stack(rows, axis=2)  # [B, h, a, w, b, out]
      return y.reshape(b, 2 * h, 2 * w, self.features)
    dilated = jnp.zeros((b, (h - 1) * s + 1, (w - 1) * s + 1, c), x.dtype)
    dilated = dilated.at[:, ::s, ::s, :].set(x)
    return _conv(dilated, kernel, (1, 1), _pad(k - 1 - self.padding),
                 self.impl)


def _norm(name: str) -> nn.Module:
  # PyTorch InstanceNorm2d(affine=True): eps 1e-5, scale 1, bias 0.
  return nn.InstanceNorm(epsilon=1e-5, name=name)


class ResidualBlock(nn.Module):
  features: int
  impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    conv = lambda name: layers.Conv(
        self.features, (3, 3), padding=_pad(1), use_bias=False,
        kernel_init=_TORCH_INIT, dtype=self.dtype, impl=self.impl, name=name)
    y = nn.relu(_norm("norm1")(conv("conv1")(x)))
    y = _norm("norm2")(conv("conv2")(y))
    return x + y


class Generator(nn.Module):
  """(images [B,H,W,3] in [-1,1], labels [B,c]) -> images [B,H,W,3]."""
  conv_dim: int = 64
  repeat_num: int = 6
  impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, c):
    b, h, w, _ = x.shape
    c = jnp.broadcast_to(c[:, None, None, :].astype(x.dtype),
                         (b, h, w, c.shape[-1]))
    x = jnp.concatenate([x, c], axis=-1)  # [B, H, W, 3 + c]
    conv = lambda f, k, s, p, name: layers.Conv(
        f, (k, k), strides=(s, s), padding=_pad(p), use_bias=False,
        kernel_init=_TORCH_INIT, dtype=self.dtype, impl=self.impl, name=name)
    dim = self.conv_dim
    x = nn.relu(_norm("in0")(conv(dim, 7, 1, 3, "conv0")(x)))
    for i in range(2):
      dim *= 2
      x = nn.relu(_norm(f"down{i}_norm")(conv(dim, 4, 2, 1, f"down{i}")(x)))
    for i in range(self.repeat_num):
      x = ResidualBlock(dim, self.impl, self.dtype, name=f"res{i}")(x)
    for i in range(2):
      dim //= 2
      x = ConvTranspose(dim, impl=self.impl, dtype=self.dtype,
                        name=f"up{i}")(x)
      x = nn.relu(_norm(f"up{i}_norm")(x))
    x = conv(3, 7, 1, 3, "conv_out")(x)
    return jnp.tanh(x.astype(jnp.float32))


class Discriminator(nn.Module):
  """images [B,H,W,3] -> (patch realism [B,h,w,1], class logits [B,c])."""
  image_size: int = 128
  conv_dim: int = 64
  c_dim: int = 5
  repeat_num: int = 6
  impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    if x.shape[1] != self.image_size or x.shape[2] != self.image_size:
      raise ValueError(f"discriminator built for {self.image_size} px "
                       f"images, got {x.shape[1:3]}")
    dim = self.conv_dim
    for i in range(self.repeat_num):
      x = layers.Conv(dim, (4, 4), strides=(2, 2), padding=_pad(1),
                      kernel_init=_TORCH_INIT, dtype=self.dtype,
                      impl=self.impl, name=f"conv{i}")(x)
      x = nn.leaky_relu(x, 0.01)
      dim *= 2
    k = self.image_size // 2**self.repeat_num
    src = layers.Conv(1, (3, 3), padding=_pad(1), use_bias=False,
                      kernel_init=_TORCH_INIT, dtype=self.dtype,
                      impl=self.impl, name="src")(x)
    cls = layers.Conv(self.c_dim, (k, k), use_bias=False,
                      kernel_init=_TORCH_INIT, dtype=self.dtype,
                      impl=self.impl, name="cls")(x)
    return src.astype(jnp.float32), cls.reshape(
        cls.shape[0], self.c_dim).astype(jnp.float32)


def check_geometry(image_size: int, d_repeat_num: int) -> None:
  """D's classification kernel must be a whole number of pixels."""
  if image_size % 2**d_repeat_num or image_size // 2**d_repeat_num < 1:
    raise ValueError(
        f"config keys data.image_size={image_size} / model.d_repeat_num="
        f"{d_repeat_num}: image_size must be a multiple of "
        f"2**d_repeat_num = {2**d_repeat_num}")
  if image_size % 4:
    raise ValueError(f"config key data.image_size={image_size}: G "
                     f"down-samples twice, use a multiple of 4")
