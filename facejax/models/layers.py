"""Shared layers.

`Conv` is a drop-in for `flax.linen.Conv` (same `kernel` [kh, kw, in, out]
and `bias` parameters, so checkpoints and importers are unaffected) that
can compute the convolution as patches @ kernel ("im2col"), the same with
bf16 operands and f32 sums ("im2col_bf16", for CPUs with bf16 dot
instructions), or, for a large kernel with few outputs, as one matmul and
shifted sums ("tap_sum"; "tap_sum_s2d" does it on the 2x2 space-to-depth
map). `subpixel_upsample_conv` is a 3x3 convolution after nearest x2
up-sampling, computed on the map before it.
`impl='auto'` picks the native convolution on GPU/TPU. On CPU it picks
per layer shape (`runtime.cpu_conv_impl`, where all CPU tuning lives): XLA's Eigen convolutions (in effect with
the flags of `runtime.CPU_XLA_FLAGS`) beat im2col on most ResNet34 layers
(docs/performance.md section 4), but are 5-60x slower where the output is
1-2 px on a side (section 10), e.g. the last ResNet stage at 64 px.

`Dense` is `flax.linen.Dense` computed as one 2-D matmul.

`max_pool` is `flax.linen.max_pool` with a cheaper gradient on CPU.
"""

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from facejax import autotune
from facejax import runtime

CONV_IMPLS = ("auto", "xla", "im2col", "im2col_bf16")


def _patches(x, kernel_size, strides, padding):
  """x [B,H,W,C] -> the patches [B,H',W',kh*kw*C] a convolution with this
  geometry contracts, channels ordered (dy, dx, c) to match
  kernel.reshape(kh*kw*C, O)."""
  kh, kw = kernel_size
  sh, sw = strides
  (pt, pb), (pl, pr) = padding
  if kh == kw == 1 and not (pt or pb or pl or pr):
    return x[:, ::sh, ::sw, :]
  x = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  h_out = (x.shape[1] - kh) // sh + 1
  w_out = (x.shape[2] - kw) // sw + 1
  cols = [x[:, dy:dy + sh * (h_out - 1) + 1:sh,
            dx:dx + sw * (w_out - 1) + 1:sw, :]
          for dy in range(kh) for dx in range(kw)]
  return cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)


def _im2col_conv(x, kernel, strides, padding):
  """x [B,H,W,C] * kernel [kh,kw,C,O] -> [B,H',W',O] as one matmul."""
  kh, kw, c, o = kernel.shape
  patches = _patches(x, (kh, kw), strides, padding)
  return jnp.einsum("bhwk,ko->bhwo", patches, kernel.reshape(kh * kw * c, o))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def im2col_bf16_conv(x, kernel, strides, padding):
  """im2col with bf16 operands and f32 accumulation and output.

  On a CPU with bf16 dot instructions (AVX512_BF16, AMX) XLA:CPU runs a
  bf16 x bf16 -> f32 matmul several times faster than an f32 one (2048^2:
  10.3 against 41.3 ms on a 2-core Intel Xeon with AMX, through YNNPACK
  with `runtime.CPU_XLA_FLAGS`; docs/performance.md section 17). The
  custom VJP keeps every matmul of the gradient in that form too: the
  incoming gradient is rounded to bf16 (as mixed-precision training
  does), the products are exact in f32 and summed in f32, and the patches'
  gradient goes back to the input in f32. Parameters, activations and the
  returned gradients stay f32. Offered to autotuning (`conv_forms`), or
  asked for by name with `model.conv_impl='im2col_bf16'`.
  """
  return _im2col_bf16_fwd(x, kernel, strides, padding)[0]


def _im2col_bf16_fwd(x, kernel, strides, padding):
  kh, kw, c, o = kernel.shape
  patches = _patches(x.astype(jnp.bfloat16), (kh, kw), strides, padding)
  k2 = kernel.reshape(kh * kw * c, o).astype(jnp.bfloat16)
  y = jax.lax.dot_general(patches, k2, (((3,), (0,)), ((), ())),
                          preferred_element_type=jnp.float32)
  # Building patches is linear in x: its (f32) transpose scatters the
  # patches' gradient back (the f32 patches themselves are never used,
  # so XLA drops them). The kernel rides along for its shape.
  _, to_input = jax.vjp(
      lambda x: _patches(x, (kh, kw), strides, padding), x)
  return y, (patches, k2, to_input, kernel)


def _im2col_bf16_bwd(strides, padding, res, g):
  del strides, padding  # in to_input
  patches, k2, to_input, kernel = res
  g = g.astype(jnp.bfloat16)
  d_kernel = jax.lax.dot_general(patches, g, (((0, 1, 2), (0, 1, 2)),
                                              ((), ())),
                                 preferred_element_type=jnp.float32)
  d_patches = jax.lax.dot_general(g, k2, (((3,), (1,)), ((), ())),
                                  preferred_element_type=jnp.float32)
  (dx,) = to_input(d_patches)
  return dx, d_kernel.reshape(kernel.shape)


im2col_bf16_conv.defvjp(_im2col_bf16_fwd, _im2col_bf16_bwd)


def _im2col_bf16_form(x, kernel, strides, padding):
  # (strides, padding: tuples, as custom_vjp's static arguments must be.)
  y = im2col_bf16_conv(x.astype(jnp.float32), kernel.astype(jnp.float32),
                       strides, padding)
  return y.astype(x.dtype)


def _tap_sum_parts(x, kernel, padding):
  kh, kw, c, o = kernel.shape
  (pt, pb), (pl, pr) = padding
  xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
  # [C, (dy, dx, o)]: every tap's output channels side by side.
  taps = kernel.transpose(2, 0, 1, 3).reshape(c, kh * kw * o)
  return xp, taps


# Output row 2i + a of a 3-tap conv on the nearest x2 up-sampled, reflect-
# padded (1) map reads the edge-padded input rows i, i+1, i+2 (offsets p)
# through these sums of the kernel's rows r: [a, p, r].
_SUBPIXEL_TAPS = np.array([[[1, 0, 0], [0, 1, 1], [0, 0, 0]],
                           [[0, 0, 0], [1, 1, 0], [0, 0, 1]]], np.float32)


def subpixel_upsample_conv(x, kernel, conv):
  """conv(reflect_pad(upsample2(x), 1), kernel) computed on x itself.

  A 3x3 convolution after nearest x2 up-sampling (HRFAE's decoder) sees,
  for each output parity (a, b), a 2x2 window of the input with some of
  its taps summed. As one 3x3 convolution of the edge-padded input to
  4 x O channels (the sub-pixel form, then depth-to-space) it reads a
  quarter of the pixels and writes four times the channels, which XLA:CPU's
  and YNNPACK's matmul tiles want: forward + backward 1.7-2.0x faster at
  HRFAE's 8 x 256 px on a 2-core Intel Xeon with AMX (docs/performance.md
  section 20). Reflect padding of
  the up-sampled map equals edge padding of the input (row -1 of the
  up-sampled map is row 0 of the input).

  Args:
    x: [B, H, W, C], before up-sampling.
    kernel: [3, 3, C, O], the convolution's kernel on the up-sampled map.
    conv: fn(x, kernel) -> the unpadded stride-1 convolution (the caller's
      form choice).

  Returns:
    [B, 2H, 2W, O].
  """
  if kernel.shape[:2] != (3, 3):
    raise ValueError(f"sub-pixel up-sampling conv: 3x3 kernels only, got "
                     f"{kernel.shape[:2]}")
  b, h, w, _ = x.shape
  c, o = kernel.shape[2:]
  taps = jnp.asarray(_SUBPIXEL_TAPS, kernel.dtype)
  # [p, q, C, (a, b, O)]: parity (a, b)'s taps at offsets (p, q).
  k4 = jnp.einsum("apr,bqs,rsco->pqcabo", taps, taps, kernel,
                  precision=jax.lax.Precision.HIGHEST)
  xe = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
  y = conv(xe, k4.reshape(3, 3, c, 4 * o))            # [B, H, W, (a, b, O)]
  y = y.reshape(b, h, w, 2, 2, o).transpose(0, 1, 3, 2, 4, 5)
  return y.reshape(b, 2 * h, 2 * w, o)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def tap_sum_conv(x, kernel, padding):
  """Stride-1 conv with few output channels: x @ taps, then shifted sums.

  XLA:CPU's convolution runs a 9x9 conv to 3 channels at ~21 GFLOP/s on a
  2-core AMD EPYC with AVX-512 (its matmul tiles want more output
  channels). Here one matmul gives every
  tap's contribution [B, H, W, kh*kw*O] and one fused loop adds the kh*kw
  shifted maps. The custom VJP builds the output gradient's shifted maps
  once (XLA's own transpose of the sum pads every slice to full size).
  """
  return _tap_sum_fwd(x, kernel, padding)[0]


def _tap_sum_fwd(x, kernel, padding):
  kh, kw, c, o = kernel.shape
  xp, taps = _tap_sum_parts(x, kernel, padding)
  b, h, w, _ = xp.shape
  ho, wo = h - kh + 1, w - kw + 1
  z = (xp.reshape(-1, c) @ taps).reshape(b, h, w, kh * kw, o)
  y = None
  for dy in range(kh):
    for dx in range(kw):
      part = z[:, dy:dy + ho, dx:dx + wo, dy * kw + dx, :]
      y = part if y is None else y + part
  return y, (x, kernel)


def _tap_sum_bwd(padding, res, g):
  x, kernel = res
  kh, kw, c, o = kernel.shape
  xp, taps = _tap_sum_parts(x, kernel, padding)
  b, h, w, _ = xp.shape
  # dz[:, p, q, (dy, dx), :] = g[:, p - dy, q - dx, :] (zero outside).
  gp = jnp.pad(g, ((0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1), (0, 0)))
  dz = jnp.stack([gp[:, kh - 1 - dy:kh - 1 - dy + h, kw - 1 - dx:kw - 1 - dx + w]
                  for dy in range(kh) for dx in range(kw)], axis=3)
  dz = dz.reshape(-1, kh * kw * o)
  d_taps = xp.reshape(-1, c).T @ dz                        # [C, kh*kw*O]
  d_kernel = d_taps.reshape(c, kh, kw, o).transpose(1, 2, 0, 3)
  dxp = (dz @ taps.T).reshape(b, h, w, c)
  (pt, pb), (pl, pr) = padding
  dx = dxp[:, pt:h - pb, pl:w - pr, :]
  return dx.astype(x.dtype), d_kernel.astype(kernel.dtype)


tap_sum_conv.defvjp(_tap_sum_fwd, _tap_sum_bwd)


def _space_to_depth_kernel(kernel):
  """[kh, kw, C, O] -> the [uh, uw, 4C, 4O] kernel of the same stride-1
  convolution on the 2x2 space-to-depth map, channels ordered (p, q, c)
  in and (a, b, o) out: entry [u, v, (p, q), (a, b)] is the kernel's tap
  (2u + p - a, 2v + q - b), or 0 outside it."""
  kh, kw, c, o = kernel.shape

  def select(k):  # [u, p, a, tap]
    u = (k + 2) // 2
    sel = np.zeros((u, 2, 2, k), np.float32)
    for i in range(u):
      for p in range(2):
        for a in range(2):
          if 0 <= 2 * i + p - a < k:
            sel[i, p, a, 2 * i + p - a] = 1
    return jnp.asarray(sel, kernel.dtype)

  k2 = jnp.einsum("upay,vqbx,yxco->uvpqcabo", select(kh), select(kw), kernel,
                  precision=jax.lax.Precision.HIGHEST)  # (sums with 0: exact)
  return k2.reshape(k2.shape[0], k2.shape[1], 4 * c, 4 * o)


def _tap_sum_s2d_form(x, kernel, strides, padding):
  """tap_sum on the 2x2 space-to-depth map (stride 1 only).

  A few-output convolution at full size is bound by tap_sum's buffer of
  kh*kw maps per output channel. On the space-to-depth map (a quarter of
  the pixels, 4C in, 4O out) a 9x9 kernel becomes 5x5: 25 x 12 instead
  of 81 x 3 values per input pixel, for 1.2x the multiplications.
  HRFAE's 9x9 32 -> 3 at 8 x 256 px, forward + backward: 429 -> 195 ms
  on a 2-core Intel Xeon with AMX (docs/performance.md section 20).
  """
  del strides  # stride 1 only (conv_forms)
  kh, kw, c, o = kernel.shape
  x = jnp.pad(x, ((0, 0),) + tuple(padding) + ((0, 0),))
  b, h, w, _ = x.shape
  ho, wo = h - kh + 1, w - kw + 1
  k2 = _space_to_depth_kernel(kernel)
  # Blocks enough for every output pixel and the 2x2 kernel's reach.
  hb, wb = -(-ho // 2) + k2.shape[0] - 1, -(-wo // 2) + k2.shape[1] - 1
  x = jnp.pad(x, ((0, 0), (0, 2 * hb - h), (0, 2 * wb - w), (0, 0)))
  x2 = x.reshape(b, hb, 2, wb, 2, c).transpose(0, 1, 3, 2, 4, 5)
  y2 = tap_sum_conv(x2.reshape(b, hb, wb, 4 * c), k2, ((0, 0), (0, 0)))
  y = y2.reshape(b, y2.shape[1], y2.shape[2], 2, 2, o)
  y = y.transpose(0, 1, 3, 2, 4, 5).reshape(b, 2 * y2.shape[1],
                                           2 * y2.shape[2], o)
  return y[:, :ho, :wo]


def _xla_conv(x, kernel, strides, padding):
  return jax.lax.conv_general_dilated(
      x, kernel, tuple(strides), padding,
      dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _tap_sum_form(x, kernel, strides, padding):
  del strides  # stride 1 only (conv_forms)
  return tap_sum_conv(x, kernel, padding)


# tap_sum is offered to autotuning only below this many outputs: its
# matmul writes kh*kw maps per output channel, 2.5x slower already at 64
# on a 2-core AMD EPYC with AVX-512 (runtime.cpu_tap_sum_conv), and timing
# a hopeless form costs start-up.
_TAP_SUM_MAX_FEATURES = 16


def conv_forms(strides: Sequence[int], features: int) -> dict[str, Callable]:
  """The forms a CPU convolution may take, name -> fn(x, kernel, strides,
  padding), for `runtime.cpu_conv_impl` to choose from by timing. The
  bf16 form only where autotuning may use it (`autotune.bf16_offered`)."""
  forms = {"xla": _xla_conv, "im2col": _im2col_conv}
  if tuple(strides) == (1, 1) and features <= _TAP_SUM_MAX_FEATURES:
    forms["tap_sum"] = _tap_sum_form
    forms["tap_sum_s2d"] = _tap_sum_s2d_form
  if autotune.bf16_offered():
    forms["im2col_bf16"] = _im2col_bf16_form
  return forms


# Every form by name (the tap_sum forms: stride 1 only, chosen only by
# 'auto' on CPU).
_FORMS = {"xla": _xla_conv, "im2col": _im2col_conv,
          "im2col_bf16": _im2col_bf16_form, "tap_sum": _tap_sum_form,
          "tap_sum_s2d": _tap_sum_s2d_form}


def conv_in_form(form: str, x, kernel, strides, padding):
  """The convolution computed in `form` (a name of `_FORMS`)."""
  return _FORMS[form](x, kernel, tuple(strides),
                      tuple(tuple(p) for p in padding))


def penalty_conv_forms() -> dict[str, Callable]:
  """The forms a penalised discriminator's convolution may take (timed
  through the penalty's second derivative, where tap_sum never pays)."""
  return {"xla": _xla_conv, "im2col": _im2col_conv}


class PReLU(nn.Module):
  """Parametric ReLU with one learned slope per channel (init 0.25, as
  torch.nn.PReLU(num_parameters=C)); the parameter is named `alpha`."""

  @nn.compact
  def __call__(self, x):
    alpha = self.param("alpha", nn.initializers.constant(0.25),
                       (x.shape[-1],))
    return jnp.where(x >= 0, x, alpha * x)


class Conv(nn.Module):
  """2-D convolution, NHWC, explicit padding [(top, bottom), (left, right)]."""
  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] = (1, 1)
  padding: Sequence[tuple[int, int]] = ((0, 0), (0, 0))
  use_bias: bool = True
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros_init()
  dtype: Any = jnp.float32
  impl: str = "auto"

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel_size
    kernel = self.param("kernel", self.kernel_init,
                        (kh, kw, x.shape[-1], self.features), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    second_order, impl = runtime.split_second_order(self.impl)
    if impl not in CONV_IMPLS:
      raise ValueError(f"config key model.conv_impl: unknown {impl!r}; "
                       f"choose one of {CONV_IMPLS}")
    padding = tuple(tuple(p) for p in self.padding)
    if second_order:  # a penalised D's conv, autotuning on (CPU)
      rule = (impl if impl != "auto" else runtime.cpu_conv_impl(
          x.shape, (kh, kw), self.strides, padding, self.features))
      impl = runtime.tuned_conv_form(
          x.shape, (kh, kw), self.strides, padding, self.features, rule,
          penalty_conv_forms(), self.dtype, order=2)
    elif impl == "auto":
      impl = (runtime.cpu_conv_impl(
          x.shape, (kh, kw), self.strides, padding, self.features,
          forms=conv_forms(self.strides, self.features), dtype=self.dtype)
              if jax.default_backend() == "cpu" else "xla")
    y = conv_in_form(impl, x, kernel, self.strides, padding)
    if self.use_bias:
      y = y + self.param("bias", self.bias_init, (self.features,),
                         jnp.float32).astype(self.dtype)
    return y


class Dense(nn.Dense):
  """`flax.linen.Dense` (same parameters) on [..., C] as [N, C] @ kernel.

  On an N-D input, the kernel gradient contracts several leading axes;
  XLA:CPU then copies the incoming gradient into a transposed layout
  first. Flattening to 2-D gives the plain x^T @ g it runs in place
  (Swin's MLP, fwd + grads: 560 -> 448 ms; docs/performance.md section 11).
  """

  @nn.compact
  def __call__(self, inputs):
    lead = inputs.shape[:-1]
    y = super().__call__(inputs.reshape(-1, inputs.shape[-1]))
    return y.reshape(*lead, y.shape[-1])


def _pool_windows(xp, window, strides, out_hw):
  """(dy, dx, strided window slice [B, H', W', C]) in row-major order."""
  (kh, kw), (sh, sw), (ho, wo) = window, strides, out_hw
  for dy in range(kh):
    for dx in range(kw):
      yield dy, dx, xp[:, dy:dy + sh * (ho - 1) + 1:sh,
                       dx:dx + sw * (wo - 1) + 1:sw, :]


def _max_pool_fwd(x, window, strides, padding):
  (pt, pb), (pl, pr) = padding
  xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)),
               constant_values=-jnp.inf)
  ho = (xp.shape[1] - window[0]) // strides[0] + 1
  wo = (xp.shape[2] - window[1]) // strides[1] + 1
  y = None
  for _, _, s in _pool_windows(xp, window, strides, (ho, wo)):
    y = s if y is None else jnp.maximum(y, s)
  return y, (xp, y)


def _max_pool_bwd(window, strides, padding, res, g):
  # Each output's gradient goes to the first maximum of its window (as
  # in PyTorch), scattered back with strided (interior) padding: plain
  # elementwise work that XLA fuses, where the reduce-window gradient
  # builds index arrays and a scatter (2.7x slower, measured).
  xp, y = res
  (pt, pb), (pl, pr) = padding
  ho, wo = y.shape[1], y.shape[2]
  taken = jnp.zeros(y.shape, bool)
  dxp = jnp.zeros(xp.shape, g.dtype)
  zero = jnp.zeros((), g.dtype)
  for dy, dx, s in _pool_windows(xp, window, strides, (ho, wo)):
    hit = (s == y) & ~taken
    taken = taken | hit
    dxp = dxp + jax.lax.pad(jnp.where(hit, g, zero), zero, [
        (0, 0, 0),
        (dy, xp.shape[1] - dy - strides[0] * (ho - 1) - 1, strides[0] - 1),
        (dx, xp.shape[2] - dx - strides[1] * (wo - 1) - 1, strides[1] - 1),
        (0, 0, 0)])
  h, w = xp.shape[1] - pt - pb, xp.shape[2] - pl - pr
  return (dxp[:, pt:pt + h, pl:pl + w, :],)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool(x, window, strides, padding):
  return _max_pool_fwd(x, window, strides, padding)[0]


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def max_pool(x: jax.Array, window: Sequence[int], strides: Sequence[int],
             padding: Sequence[tuple[int, int]]) -> jax.Array:
  """NHWC max pooling, -inf padded; values equal `flax.linen.max_pool`.

  Args:
    x: [B, H, W, C] floats.
    window: (kh, kw).
    strides: (sh, sw).
    padding: ((top, bottom), (left, right)).

  Returns:
    [B, H', W', C].
  """
  return _max_pool(x, tuple(window), tuple(strides),
                   tuple(tuple(p) for p in padding))


# ---------------------------------------------------------------------------
# Small math shared by models, losses and evaluation (one definition each;
# the masked mean of per-example losses is facejax.train.steps.masked_mean).
# ---------------------------------------------------------------------------


def l2_normalize(x: jax.Array, eps: float = 1e-12,
                 axis: int = -1) -> jax.Array:
  """x / max(||x||, eps) along `axis`, as torch.nn.functional.normalize.

  eps 1e-12 is torch's default (the spectral-norm power iteration is
  compared with torch's); it only matters for vectors of norm < eps.
  """
  return x / jnp.maximum(jnp.linalg.norm(x, axis=axis, keepdims=True), eps)


def cosine(a: jax.Array, b: jax.Array) -> jax.Array:
  """Cosine similarity of the rows of a and b ([..., D] -> [...])."""
  return jnp.sum(l2_normalize(a) * l2_normalize(b), axis=-1)
