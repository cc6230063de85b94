"""Spectrally normalised 2-D convolution, as torch.nn.utils.spectral_norm.

`flax.linen.SpectralNorm` exists but differs from PyTorch in what it keeps:
it stores only `u` and runs a power iteration even in inference, so an
imported PyTorch model would not reproduce PyTorch's eval output. This
module keeps PyTorch's semantics exactly, which the HRFAE importer needs:

  training (update_stats=True): one power iteration from the stored u,
      v = normalize(W^T u), u = normalize(W v)  (no gradient), store u, v;
  inference (update_stats=False): the stored u and v, no iteration;
  both: sigma = u . (W v) (gradient flows through W), kernel / sigma.

W is the kernel as a matrix [O, kh*kw*I]. Here the kernel is [kh, kw, I, O]
so the stored `v` is ordered (kh, kw, I); PyTorch orders it (I, kh, kw),
which `facejax.convert.age_transformer` permutes. u, v live in the
'spectral' collection (not trained, checkpointed with the model).
"""

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from facejax import runtime
from facejax.models import layers

SPECTRAL = "spectral"  # variable collection of the u, v vectors


def _auto_rule(x, kernel, strides) -> str:
  """impl 'auto''s fixed rule on CPU (see conv2d)."""
  return ("tap_sum" if runtime.cpu_tap_sum_conv(
      x.shape, kernel.shape[:2], strides, kernel.shape[3]) else "xla")


def conv2d(x: jax.Array, kernel: jax.Array, strides: Sequence[int],
           impl: str) -> jax.Array:
  """Unpadded NHWC convolution (the callers pad explicitly).

  impl 'auto' is XLA's native convolution everywhere but in the large-kernel,
  few-output convs (`runtime.cpu_tap_sum_conv`) on CPU: this GAN step
  differentiates through the discriminator twice (R1), and im2col's
  kh*kw slices per conv made its CPU compile 2-4x slower (measured: 40 s
  vs 17 s for the tiny discriminator's gradient) for no faster steps.
  'im2col' (facejax.models.layers) can still be chosen.
  """
  second_order, impl = runtime.split_second_order(impl)
  if impl not in layers.CONV_IMPLS:
    raise ValueError(f"config key model.conv_impl: unknown {impl!r}; "
                     f"choose one of {layers.CONV_IMPLS}")
  if second_order:  # a penalised D's conv, autotuning on (CPU)
    rule = impl if impl != "auto" else _auto_rule(x, kernel, strides)
    impl = runtime.tuned_conv_form(
        x.shape, kernel.shape[:2], strides, ((0, 0), (0, 0)),
        kernel.shape[3], rule, layers.penalty_conv_forms(), x.dtype,
        order=2)
  elif impl == "auto" and jax.default_backend() == "cpu":
    rule = _auto_rule(x, kernel, strides)
    # im2col is not offered (its compile cost, above); with autotuning on
    # the faster of the other two at this shape is used.
    forms = {k: v for k, v in layers.conv_forms(
        strides, kernel.shape[3]).items() if k != "im2col"}
    impl = runtime.tuned_conv_form(x.shape, kernel.shape[:2], strides,
                                   ((0, 0), (0, 0)), kernel.shape[3],
                                   rule, forms, x.dtype)
  elif impl == "auto":
    impl = "xla"
  # (tap_sum: HRFAE's last 9x9 conv to 3 channels.)
  return layers.conv_in_form(impl, x, kernel, strides, ((0, 0), (0, 0)))


class Conv(nn.Module):
  """Unpadded conv with bias; spectral norm when `spectral` is True.

  Parameters: `kernel` [kh, kw, I, O], `bias` [O]; spectral state:
  `u` [O], `v` [kh*kw*I].

  With `upsample` the input is first up-sampled x2 (nearest) and reflect-
  padded by 1 (HRFAE's decoder; 3x3 kernels), computed in the sub-pixel
  form (`layers.subpixel_upsample_conv`): same parameters, same values.
  """
  features: int
  kernel_size: int
  strides: int = 1
  spectral: bool = True
  kernel_init: Callable = nn.initializers.xavier_uniform()
  bias_init: Callable = nn.initializers.constant(0.01)
  eps: float = 1e-12
  dtype: Any = jnp.float32
  impl: str = "auto"
  upsample: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, update_stats: bool = False) -> jax.Array:
    k = self.kernel_size
    if self.upsample and (k, self.strides) != (3, 1):
      raise ValueError(f"spectral_norm.Conv(upsample=True) takes a 3x3 "
                       f"stride-1 kernel, got {k}x{k} stride {self.strides}")
    kernel = self.param("kernel", self.kernel_init,
                        (k, k, x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
    if self.spectral:
      w = kernel.reshape(-1, self.features).T  # [O, kh*kw*I] (PyTorch's W)
      u_var = self.variable(
          SPECTRAL, "u", lambda: layers.l2_normalize(jax.random.normal(
              self.make_rng("params"), (w.shape[0],)), self.eps))
      v_var = self.variable(
          SPECTRAL, "v", lambda: layers.l2_normalize(jax.random.normal(
              self.make_rng("params"), (w.shape[1],)), self.eps))
      u, v = u_var.value, v_var.value
      if update_stats and not self.is_initializing():
        w_sg = jax.lax.stop_gradient(w)
        v = layers.l2_normalize(w_sg.T @ u, self.eps)
        u = layers.l2_normalize(w_sg @ v, self.eps)
        u_var.value, v_var.value = u, v
      sigma = jnp.dot(u, w @ v)
      kernel = kernel / sigma
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    if self.upsample:
      y = layers.subpixel_upsample_conv(
          x, kernel, lambda x, k: conv2d(x, k, (1, 1), self.impl))
    else:
      y = conv2d(x, kernel, (self.strides, self.strides), self.impl)
    return y + bias.astype(self.dtype)
