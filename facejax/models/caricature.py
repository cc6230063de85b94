"""MUNIT generator / multi-scale discriminator with SAGAN self-attention.

The seed caricature system (SATNet, shared/reference/caricature.md sections
1-3), NHWC and Flax Linen:

* `Generator` (MUNIT AdaINGen): content encoder (c7s1 + n_down 4x4/s2
  convs with InstanceNorm, n_res IN ResBlocks), style encoder (no norm,
  global average pool, 1x1 conv to style_dim), an MLP from the style code
  to every AdaIN layer's (beta, gamma) - the first C values of a layer
  are beta, the next C gamma, no +1 on gamma - and a decoder (n_res AdaIN
  ResBlocks, nearest x2 upsampling + 5x5 conv + MUNIT's LayerNorm, c7s1
  tanh). With `attention` (SATNet) the content encoder ends with
  SelfAttention + one more IN ResBlock, and the decoder's AdaIN blocks
  are followed by SelfAttention + one more AdaIN ResBlock.
* `MsDiscriminator`: per scale conv4x4/s2 (no SN) -> (n_layer - 1) x
  [conv4x4/s2 with SN, LReLU 0.2] -> SelfAttention (SATNet) -> 1x1 conv,
  the input average-pooled (3, s2, p1, count_include_pad=False) between
  scales.

Spectral norm: facejax.models.spectral_norm (PyTorch's torch.nn.utils
semantics: one power iteration per *training* forward from the stored u,
the stored u, v at inference). The reference's custom SpectralNorm
iterates on every forward, training or not; with a trained model the
difference is a converged u vs one more iteration of it, i.e. negligible.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from facejax.models import layers
from facejax.models import spectral_norm

SPECTRAL = spectral_norm.SPECTRAL
_KAIMING = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
_D_INIT = nn.initializers.normal(0.02)
_ZERO = nn.initializers.zeros


def instance_norm(x: jax.Array, eps: float = 1e-5) -> jax.Array:
  """Per example and channel over H, W; biased variance (InstanceNorm2d)."""
  mean = x.mean(axis=(1, 2), keepdims=True)
  var = jnp.square(x - mean).mean(axis=(1, 2), keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps)


class LayerNorm(nn.Module):
  """MUNIT's LayerNorm: per example over (H, W, C) with the *unbiased* std,
  y = (x - mean) / (std + eps), then per-channel gamma ~ U(0, 1), beta 0."""
  eps: float = 1e-5

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    gamma = self.param("gamma", nn.initializers.uniform(1.0), (c,))
    beta = self.param("beta", _ZERO, (c,))
    flat = x.reshape(x.shape[0], -1)
    mean = flat.mean(1)[:, None, None, None]
    std = jnp.std(flat, axis=1, ddof=1)[:, None, None, None]
    return (x - mean) / (std + self.eps) * gamma + beta


def adain(x: jax.Array, beta: jax.Array, gamma: jax.Array,
          eps: float = 1e-5) -> jax.Array:
  """AdaIN: instance-normalised x * gamma + beta ([B, C] each)."""
  return (instance_norm(x, eps) * gamma[:, None, None, :]
          + beta[:, None, None, :])


class ConvBlock(nn.Module):
  """pad (reflect / zero) -> conv -> norm -> activation (MUNIT Conv2dBlock).

  norm: 'none' | 'in' | 'ln' | 'adain' (then `ada` = (beta, gamma));
  activation: 'relu' | 'lrelu' | 'tanh' | 'none'.
  """
  features: int
  kernel: int
  stride: int = 1
  pad: int = 0
  norm: str = "none"
  activation: str = "relu"
  pad_type: str = "reflect"
  spectral: bool = False
  kernel_init: Any = _KAIMING
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x, ada=None, update_stats: bool = False):
    if self.pad:
      p = self.pad
      mode = "reflect" if self.pad_type == "reflect" else "constant"
      x = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode=mode)
    x = spectral_norm.Conv(self.features, self.kernel, self.stride,
                           spectral=self.spectral,
                           kernel_init=self.kernel_init, bias_init=_ZERO,
                           impl=self.conv_impl,
                           name="conv")(x, update_stats)
    if self.norm == "in":
      x = instance_norm(x)
    elif self.norm == "ln":
      x = LayerNorm(name="norm")(x)
    elif self.norm == "adain":
      x = adain(x, *ada)
    elif self.norm != "none":
      raise ValueError(f"config key model.norm: unknown {self.norm!r}")
    if self.activation == "relu":
      x = nn.relu(x)
    elif self.activation == "lrelu":
      x = nn.leaky_relu(x, 0.2)
    elif self.activation == "tanh":
      x = jnp.tanh(x)
    return x


class ResBlock(nn.Module):
  """x + [conv3x3 -> norm -> ReLU -> conv3x3 -> norm]."""
  norm: str = "in"
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x, ada=None):
    c = x.shape[-1]
    a0 = a1 = None
    if self.norm == "adain":
      a0, a1 = ada
    y = ConvBlock(c, 3, 1, 1, self.norm, "relu", conv_impl=self.conv_impl,
                  name="conv0")(x, a0)
    y = ConvBlock(c, 3, 1, 1, self.norm, "none", conv_impl=self.conv_impl,
                  name="conv1")(y, a1)
    return x + y


class SelfAttention(nn.Module):
  """SAGAN block: y = gamma * softmax(q^T k) v + x, gamma a learned scalar.

  q, k: 1x1 convs C -> C/8; v: 1x1 conv C -> C (the SAGAN code's form);
  spectral norm on all three in SATNet. gamma starts at `gamma_init`
  (SAGAN 0: the block is the identity at initialisation; SATNet 1e-8).
  """
  spectral: bool = True
  gamma_init: float = 0.0
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x, update_stats: bool = False):
    b, h, w, c = x.shape
    conv = lambda f, name: spectral_norm.Conv(
        f, 1, 1, spectral=self.spectral, kernel_init=_KAIMING,
        bias_init=_ZERO, impl=self.conv_impl, name=name)
    q = conv(max(c // 8, 1), "query")(x, update_stats).reshape(b, h * w, -1)
    k = conv(max(c // 8, 1), "key")(x, update_stats).reshape(b, h * w, -1)
    v = conv(c, "value")(x, update_stats).reshape(b, h * w, c)
    attn = jax.nn.softmax(jnp.einsum("bic,bjc->bij", q, k), axis=-1)
    out = jnp.einsum("bij,bjc->bic", attn, v).reshape(b, h, w, c)
    gamma = self.param("gamma", nn.initializers.constant(self.gamma_init),
                       ())
    return gamma * out + x


class Generator(nn.Module):
  """MUNIT AdaINGen (+ SATNet attention). Methods: encode, decode, mlp."""
  dim: int = 64
  style_dim: int = 8
  n_downsample: int = 2
  n_style_downsample: int = 4
  n_res: int = 4
  mlp_dim: int = 256
  attention: bool = True
  attention_sn: bool = True
  gamma_init: float = 0.0
  conv_impl: str = "auto"

  def setup(self):
    ci = self.conv_impl
    d = self.dim
    # Content encoder.
    enc = [ConvBlock(d, 7, 1, 3, "in", conv_impl=ci)]
    for i in range(self.n_downsample):
      enc.append(ConvBlock(d * 2 ** (i + 1), 4, 2, 1, "in", conv_impl=ci))
    self.content_convs = enc
    self.content_res = [ResBlock("in", ci) for _ in range(self.n_res)]
    # Style encoder (no norm).
    sty = [ConvBlock(d, 7, 1, 3, "none", conv_impl=ci)]
    ch = d
    for i in range(self.n_style_downsample):
      ch = d * 2 ** min(i + 1, 2)
      sty.append(ConvBlock(ch, 4, 2, 1, "none", conv_impl=ci))
    self.style_convs = sty
    self.style_out = nn.Dense(self.style_dim, kernel_init=_KAIMING)
    c = d * 2 ** self.n_downsample
    self.content_dim = c
    if self.attention:
      self.content_attn = SelfAttention(self.attention_sn, self.gamma_init,
                                        ci)
      self.content_extra = ResBlock("in", ci)
      self.dec_attn = SelfAttention(self.attention_sn, self.gamma_init, ci)
    # Decoder.
    n_adain_blocks = self.n_res + int(self.attention)
    self.dec_res = [ResBlock("adain", ci) for _ in range(n_adain_blocks)]
    ups = []
    for i in range(self.n_downsample):
      ups.append(ConvBlock(c // 2 ** (i + 1), 5, 1, 2, "ln", conv_impl=ci))
    self.dec_ups = ups
    self.dec_out = ConvBlock(3, 7, 1, 3, "none", "tanh", conv_impl=ci)
    # MLP: style -> 2 * C per AdaIN layer (2 layers per block).
    self.num_adain = 2 * n_adain_blocks
    self.mlp_layers = [nn.Dense(self.mlp_dim, kernel_init=_KAIMING),
                       nn.Dense(self.mlp_dim, kernel_init=_KAIMING),
                       nn.Dense(2 * c * self.num_adain,
                                kernel_init=_KAIMING)]

  def encode(self, x: jax.Array, update_stats: bool = False):
    """[B, H, W, 3] -> (content [B, H/2^n, W/2^n, C], style [B, style_dim])."""
    h = x
    for layer in self.content_convs:
      h = layer(h)
    for block in self.content_res:
      h = block(h)
    if self.attention:
      h = self.content_extra(self.content_attn(h, update_stats))
    s = x
    for layer in self.style_convs:
      s = layer(s)
    s = self.style_out(s.mean(axis=(1, 2)))
    return h, s

  def mlp(self, style: jax.Array) -> jax.Array:
    h = nn.relu(self.mlp_layers[0](style))
    h = nn.relu(self.mlp_layers[1](h))
    return self.mlp_layers[2](h)

  def decode(self, content: jax.Array, style: jax.Array,
             update_stats: bool = False) -> jax.Array:
    """(content, style [B, style_dim]) -> image [B, H, W, 3] in [-1, 1]."""
    c = content.shape[-1]
    params = self.mlp(style).reshape(style.shape[0], self.num_adain, 2, c)
    # Per AdaIN layer in module order: beta = first C, gamma = next C.
    ada = [(params[:, i, 0], params[:, i, 1]) for i in range(self.num_adain)]
    h = content
    for j, block in enumerate(self.dec_res[:self.n_res]):
      h = block(h, (ada[2 * j], ada[2 * j + 1]))
    if self.attention:
      h = self.dec_attn(h, update_stats)
      j = self.n_res
      h = self.dec_res[j](h, (ada[2 * j], ada[2 * j + 1]))
    for up in self.dec_ups:
      b, hh, ww, cc = h.shape
      h = jax.image.resize(h, (b, 2 * hh, 2 * ww, cc), "nearest")
      h = up(h)
    return self.dec_out(h)

  def __call__(self, x: jax.Array, update_stats: bool = False):
    """Reconstruction G(E(x)) (used for init)."""
    content, style = self.encode(x, update_stats)
    return self.decode(content, style, update_stats)


def _avg_pool_3s2(x: jax.Array) -> jax.Array:
  """AvgPool2d(3, stride 2, pad 1, count_include_pad=False)."""
  pad = ((0, 0), (1, 1), (1, 1), (0, 0))
  s = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 2, 2, 1),
                            pad)
  n = jax.lax.reduce_window(jnp.ones_like(x[:1, ..., :1]), 0.0, jax.lax.add,
                            (1, 3, 3, 1), (1, 2, 2, 1), pad)
  return s / n


class Discriminator(nn.Module):
  """One scale of the multi-scale D (PatchGAN logits [B, h, w, 1])."""
  dim: int = 64
  n_layer: int = 4
  attention: bool = True
  gamma_init: float = 0.0
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x, update_stats: bool = False):
    ci = self.conv_impl
    h = ConvBlock(self.dim, 4, 2, 1, "none", "lrelu", "zero",
                  kernel_init=_D_INIT, conv_impl=ci)(x)
    d = self.dim
    for _ in range(self.n_layer - 1):
      d *= 2
      h = ConvBlock(d, 4, 2, 1, "none", "lrelu", "zero", spectral=True,
                    kernel_init=_D_INIT, conv_impl=ci)(h, None,
                                                       update_stats)
    if self.attention:
      h = SelfAttention(True, self.gamma_init, ci)(h, update_stats)
    return ConvBlock(1, 1, 1, 0, "none", "none", kernel_init=_D_INIT,
                     conv_impl=ci)(h)


class MsDiscriminator(nn.Module):
  """`num_scales` discriminators on 1, 1/2, 1/4, ... of the input."""
  dim: int = 64
  n_layer: int = 4
  num_scales: int = 3
  attention: bool = True
  gamma_init: float = 0.0
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x, update_stats: bool = False) -> list[jax.Array]:
    outs = []
    for s in range(self.num_scales):
      outs.append(Discriminator(self.dim, self.n_layer, self.attention,
                                self.gamma_init, self.conv_impl,
                                name=f"scale{s}")(x, update_stats))
      if s + 1 < self.num_scales:
        x = _avg_pool_3s2(x)
    return outs


def check_geometry(image_size: int, n_downsample: int,
                   n_style_downsample: int, n_layer: int,
                   num_scales: int) -> None:
  """Errors naming config keys when the image is too small for the nets."""
  if image_size % (2 ** n_downsample):
    raise ValueError(f"config key data.image_size={image_size} must be "
                     f"divisible by 2**model.n_downsample "
                     f"({2 ** n_downsample})")
  if image_size < 2 ** n_style_downsample:
    raise ValueError(f"config key data.image_size={image_size} is smaller "
                     f"than 2**model.n_style_downsample")
  smallest = image_size // 2 ** (num_scales - 1)
  if smallest < 2 ** n_layer:
    raise ValueError(f"config keys model.d_scales={num_scales} / "
                     f"model.d_layers={n_layer}: the coarsest scale "
                     f"({smallest} px) is smaller than 2**d_layers")


def spectral_sigma(kernel: jax.Array, steps: int, u0: jax.Array
                   ) -> jax.Array:
  """sigma after `steps` power iterations from u0 (as Conv in training)."""
  w = kernel.reshape(-1, kernel.shape[-1]).T
  u = u0
  for _ in range(steps):
    v = layers.l2_normalize(w.T @ u)
    u = layers.l2_normalize(w @ v)
  return jnp.dot(u, w @ v)


__all__ = ["Generator", "MsDiscriminator", "SelfAttention", "LayerNorm",
           "adain", "instance_norm", "check_geometry",
           "spectral_sigma"]
