"""Swin Transformer backbone (Liu et al. 2021) returning FM1-FM4 (SwinFace).

Geometry follows SwinFace's face variant (img 112, patch 2, window 7,
embed 96, depths (2, 2, 6, 2), heads (3, 6, 12, 24)); `VARIANTS['tiny']` is
a test-sized model. Images are NHWC.

Stages: S_i = blocks (W-MSA / SW-MSA alternating), then patch merging
except in the last stage. Where a stage's resolution is not larger than the
window, the window shrinks to the resolution and the shift is 0 (no mask).

Outputs (`SwinBackbone.__call__`), all at the last stage's resolution R:
  fm: [FM1, FM2, FM3, FM4], FM1..3 = stage 1..3 output after merging, average
      pooled down to R x R; FM4 = last stage output before the final norm.
  tokens: LayerNorm(FM4) averaged over the R*R tokens (recognition input).
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from facejax.models import layers

LN_EPS = 1e-5
MASK_VALUE = -100.0  # the reference's value for cross-region pairs

VARIANTS = {
    # The SwinFace / Swin-T face configuration (28.5 M backbone params).
    "swin_t": dict(img_size=112, patch_size=2, embed_dim=96,
                   depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window=7),
    # Tests and smoke runs: 32 px, 16x16 tokens, shifted windows in S1/S2
    # (S3/S4 fit one window: no shift, so one block each).
    "tiny": dict(img_size=32, patch_size=2, embed_dim=16,
                 depths=(2, 2, 1, 1), num_heads=(1, 2, 2, 4), window=4),
}

trunc_normal = nn.initializers.truncated_normal(stddev=0.02)


def relative_position_index(window: int) -> np.ndarray:
  """[w*w, w*w] index into the ((2w-1)^2, heads) bias table.

  For tokens i=(yi, xi) and j=(yj, xj) of a window the index is
  (yi - yj + w - 1) * (2w - 1) + (xi - xj + w - 1).
  """
  ys, xs = np.meshgrid(np.arange(window), np.arange(window), indexing="ij")
  coords = np.stack([ys.ravel(), xs.ravel()])              # [2, w*w]
  rel = coords[:, :, None] - coords[:, None, :] + window - 1
  return (rel[0] * (2 * window - 1) + rel[1]).astype(np.int32)


def window_partition(x: jax.Array, window: int) -> jax.Array:
  """[B, H, W, C] -> [B * nW, w*w, C], windows in row-major order."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // window, window, w // window, window, c)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(-1, window * window, c)


def window_reverse(x: jax.Array, window: int, h: int, w: int) -> jax.Array:
  """Inverse of `window_partition`: [B * nW, w*w, C] -> [B, H, W, C]."""
  c = x.shape[-1]
  x = x.reshape(-1, h // window, w // window, window, window, c)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(-1, h, w, c)


def shift_attention_mask(h: int, w: int, window: int,
                         shift: int) -> np.ndarray:
  """[nW, w*w, w*w] additive mask of the shifted windows (0 or -100).

  After the cyclic shift by -shift, a window may hold tokens from up to
  four regions of the unshifted map, numbered over the slices
  (0:-w, -w:-shift, -shift:) of each axis; only same-region pairs attend.
  """
  region = np.zeros((1, h, w, 1), np.float32)
  cnt = 0
  spans = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
  for hs in spans:
    for ws in spans:
      region[:, hs, ws, :] = cnt
      cnt += 1
  windows = np.asarray(window_partition(region, window))[..., 0]  # [nW, N]
  diff = windows[:, None, :] - windows[:, :, None]
  return np.where(diff != 0, MASK_VALUE, 0.0).astype(np.float32)


class DropPath(nn.Module):
  """Stochastic depth: drops the whole residual branch per example."""
  rate: float

  @nn.compact
  def __call__(self, x, train: bool):
    if not train or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    rng = self.make_rng("dropout")
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = jax.random.bernoulli(rng, keep, shape)
    return jnp.where(mask, x / keep, 0.0)


def _dense(features, name, use_bias=True):
  return layers.Dense(features, use_bias=use_bias, kernel_init=trunc_normal,
                      name=name)


class WindowAttention(nn.Module):
  """Multi-head self-attention in windows with relative position bias."""
  dim: int
  num_heads: int
  window: int

  @nn.compact
  def __call__(self, x, mask=None):
    # x: [B*nW, N, C]; mask: [nW, N, N] or None.
    bn, n, c = x.shape
    h = self.num_heads
    table = self.param("relative_position_bias_table", trunc_normal,
                       ((2 * self.window - 1)**2, h))
    index = relative_position_index(self.window)
    bias = table[index.reshape(-1)].reshape(n, n, h).transpose(2, 0, 1)
    qkv = _dense(3 * c, "qkv")(x).reshape(bn, n, 3, h, c // h)
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
    # Logits and softmax in f32 (the reference disables autocast here).
    q = q.astype(jnp.float32) * (c // h) ** -0.5
    attn = jnp.einsum("bhnd,bhmd->bhnm", q, k.astype(jnp.float32))
    attn = attn + bias[None]
    if mask is not None:
      nw = mask.shape[0]
      attn = attn.reshape(bn // nw, nw, h, n, n) + mask[None, :, None]
      attn = attn.reshape(bn, h, n, n)
    attn = jax.nn.softmax(attn, axis=-1).astype(v.dtype)
    out = jnp.einsum("bhnm,bhmd->bhnd", attn, v)
    out = out.transpose(0, 2, 1, 3).reshape(bn, n, c)
    return _dense(c, "proj")(out)


class Mlp(nn.Module):
  hidden: int

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    x = _dense(self.hidden, "fc1")(x)
    x = nn.gelu(x, approximate=False)  # exact GELU, as torch's default
    return _dense(c, "fc2")(x)


class SwinBlock(nn.Module):
  """x + DropPath(Attn(LN(x))), then x + DropPath(MLP(LN(x)))."""
  num_heads: int
  window: int
  shift: int
  mlp_ratio: float = 4.0
  drop_path: float = 0.0

  @nn.compact
  def __call__(self, x, train: bool):
    b, hgt, wid, c = x.shape
    shortcut = x
    y = nn.LayerNorm(epsilon=LN_EPS, name="norm1")(x)
    mask = None
    if self.shift:
      y = jnp.roll(y, (-self.shift, -self.shift), axis=(1, 2))
      mask = jnp.asarray(shift_attention_mask(hgt, wid, self.window,
                                              self.shift))
    y = window_partition(y, self.window)
    y = WindowAttention(c, self.num_heads, self.window, name="attn")(y, mask)
    y = window_reverse(y, self.window, hgt, wid)
    if self.shift:
      y = jnp.roll(y, (self.shift, self.shift), axis=(1, 2))
    x = shortcut + DropPath(self.drop_path)(y, train)
    y = nn.LayerNorm(epsilon=LN_EPS, name="norm2")(x)
    y = Mlp(int(c * self.mlp_ratio), name="mlp")(y)
    return x + DropPath(self.drop_path)(y, train)


class PatchMerging(nn.Module):
  """2x2 neighbours -> LayerNorm(4C) -> Linear(4C -> 2C, no bias)."""

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    # Order [(0,0), (1,0), (0,1), (1,1)] as (row, col) offsets: the
    # reference's x0, x1, x2, x3 (checkpoint weights depend on it).
    x = jnp.concatenate([x[:, 0::2, 0::2], x[:, 1::2, 0::2],
                         x[:, 0::2, 1::2], x[:, 1::2, 1::2]], axis=-1)
    x = nn.LayerNorm(epsilon=LN_EPS, name="norm")(x)
    return _dense(2 * c, "reduction", use_bias=False)(x)


def stage_geometry(resolution: int, window: int) -> tuple[int, int]:
  """(window, shift) of a stage: no shift when the map fits one window."""
  if resolution <= window:
    return resolution, 0
  if resolution % window:
    raise ValueError(f"config key model.swin: stage resolution {resolution} "
                     f"is not a multiple of the window {window}")
  return window, window // 2


class SwinBackbone(nn.Module):
  """Swin Transformer returning ([FM1..FM4], pooled normalised tokens)."""
  img_size: int = 112
  patch_size: int = 2
  embed_dim: int = 96
  depths: Sequence[int] = (2, 2, 6, 2)
  num_heads: Sequence[int] = (3, 6, 12, 24)
  window: int = 7
  mlp_ratio: float = 4.0
  drop_path_rate: float = 0.1
  dtype: Any = jnp.float32
  # jax.checkpoint per block: keep only block inputs for the backward pass.
  remat: bool = False

  def stage_resolutions(self) -> list[int]:
    r = self.img_size // self.patch_size
    return [r // 2**i for i in range(len(self.depths))]

  def feature_dims(self) -> list[int]:
    """Channels of FM1..FM4 (FM_i is stage i after merging)."""
    n = len(self.depths)
    dims = [self.embed_dim * 2**(i + 1) for i in range(n - 1)]
    return dims + [self.embed_dim * 2**(n - 1)]

  @nn.compact
  def __call__(self, images, train: bool = False):
    if images.shape[1] != self.img_size or images.shape[2] != self.img_size:
      raise ValueError(f"Swin built for {self.img_size} px input, got "
                       f"{images.shape[1:3]} (config key data.image_size)")
    x = nn.Conv(self.embed_dim, (self.patch_size,) * 2,
                strides=(self.patch_size,) * 2, padding="VALID",
                dtype=self.dtype, name="patch_embed_proj")(
                    images.astype(self.dtype))
    x = nn.LayerNorm(epsilon=LN_EPS, name="patch_embed_norm")(x)
    rates = np.linspace(0.0, self.drop_path_rate, sum(self.depths))
    fms, k = [], 0
    n_stages = len(self.depths)
    block = (nn.remat(SwinBlock, static_argnums=(2,)) if self.remat
             else SwinBlock)
    for s, (depth, heads) in enumerate(zip(self.depths, self.num_heads)):
      window, shift = stage_geometry(x.shape[1], self.window)
      for b in range(depth):
        x = block(heads, window, shift if b % 2 else 0, self.mlp_ratio,
                      float(rates[k]), name=f"layers_{s}_blocks_{b}")(
                          x, train)
        k += 1
      if s < n_stages - 1:
        x = PatchMerging(name=f"layers_{s}_downsample")(x)
      fms.append(x)
    final = fms[-1].shape[1]
    # FM1..FM3 average pooled to the last stage's resolution.
    for i in range(n_stages - 1):
      f = fms[i].shape[1] // final
      if f > 1:
        fms[i] = nn.avg_pool(fms[i], (f, f), strides=(f, f))
    tokens = nn.LayerNorm(epsilon=LN_EPS, name="norm")(fms[-1])
    tokens = tokens.reshape(tokens.shape[0], -1, tokens.shape[-1]).mean(1)
    return fms, tokens


def create(variant: str = "tiny", **overrides) -> SwinBackbone:
  if variant not in VARIANTS:
    raise ValueError(f"config key model.swin.variant: unknown {variant!r}; "
                     f"choose one of {sorted(VARIANTS)}")
  return SwinBackbone(**{**VARIANTS[variant], **overrides})
