"""SphereFace-20 (sphere20a) and the A-Softmax (angular margin) loss.

shared/reference/caricature.md section 4 (clcarwin/sphereface_pytorch):
4 stages, each a 3x3 stride-2 conv + PReLU followed by 1/2/4/1 residual
units x + PReLU(conv(PReLU(conv(x)))) (3x3, pad 1, bias, per-channel
PReLU init 0.25); fc5 (the 512-d feature) on the flattened last map;
fc6 = AngleLinear (weight [in, out], columns normalised, m = 4).

Inputs here are RGB in [-1, 1] at (H, W) = `input_size` (the reference:
112 x 96); the module converts to the reference's input, BGR and
(x * 127.5 + 127.5 - 127.5) / 128, so imported weights see what they were
trained on. The fc5 flatten order is (H, W, C) here, (C, H, W) in PyTorch
(the importer permutes).
"""

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from facejax.models import layers

VARIANTS = {
    # widths per stage, residual units per stage, feature dim
    "sphere20": ((64, 128, 256, 512), (1, 2, 4, 1), 512),
    "small": ((16, 32, 64, 128), (1, 2, 2, 1), 128),
    "tiny": ((8, 16, 32, 64), (1, 1, 1, 1), 64),
}
_XAVIER = nn.initializers.xavier_uniform()
_RES_INIT = nn.initializers.normal(0.01)


def to_reference_input(images: jax.Array) -> jax.Array:
  """RGB [-1, 1] -> BGR (x255 - 127.5) / 128 (sphereface_pytorch)."""
  return images[..., ::-1] * (127.5 / 128.0)


class SphereFace(nn.Module):
  """SphereFace-20 trunk + fc5; `__call__` -> fc5 feature [B, feature_dim]."""
  widths: Sequence[int] = (64, 128, 256, 512)
  units: Sequence[int] = (1, 2, 4, 1)
  feature_dim: int = 512

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    x = to_reference_input(images)
    for s, (w, n) in enumerate(zip(self.widths, self.units), 1):
      x = nn.Conv(w, (3, 3), (2, 2), padding=1, kernel_init=_XAVIER,
                  name=f"conv{s}_1")(x)
      x = layers.PReLU(name=f"relu{s}_1")(x)
      for u in range(n):
        i = 2 + 2 * u
        y = nn.Conv(w, (3, 3), padding=1, kernel_init=_RES_INIT,
                    name=f"conv{s}_{i}")(x)
        y = layers.PReLU(name=f"relu{s}_{i}")(y)
        y = nn.Conv(w, (3, 3), padding=1, kernel_init=_RES_INIT,
                    name=f"conv{s}_{i + 1}")(y)
        y = layers.PReLU(name=f"relu{s}_{i + 1}")(y)
        x = x + y
    x = x.reshape(x.shape[0], -1)
    return nn.Dense(self.feature_dim, kernel_init=_XAVIER, name="fc5")(x)


class AngleLinear(nn.Module):
  """fc6: (cos theta * |x|, phi(theta) * |x|), weight [in, out]."""
  num_classes: int
  m: int = 4

  @nn.compact
  def __call__(self, x: jax.Array):
    w = self.param("kernel", _uniform_pm1, (x.shape[-1], self.num_classes))
    return angle_logits(x, w, self.m)


def _uniform_pm1(key, shape, dtype=jnp.float32):
  """U(-1, 1), the reference's fc6 initialisation."""
  return jax.random.uniform(key, shape, dtype, -1.0, 1.0)


def angle_logits(x: jax.Array, w: jax.Array, m: int = 4):
  """(cos_theta * |x|, phi_theta * |x|), each [B, classes]."""
  wn = w / jnp.maximum(jnp.linalg.norm(w, axis=0, keepdims=True), 1e-12)
  xlen = jnp.linalg.norm(x, axis=1, keepdims=True)
  cos = jnp.clip(x @ wn / jnp.maximum(xlen, 1e-12), -1.0, 1.0)
  phi = phi_theta(cos, m)
  return cos * xlen, phi * xlen


def phi_theta(cos: jax.Array, m: int = 4) -> jax.Array:
  """phi = (-1)^k cos(m theta) - 2k, k = floor(m theta / pi)."""
  cos_m = {1: lambda c: c, 2: lambda c: 2 * c ** 2 - 1,
           3: lambda c: 4 * c ** 3 - 3 * c,
           4: lambda c: 8 * c ** 4 - 8 * c ** 2 + 1}[m](cos)
  theta = jnp.arccos(jnp.clip(cos, -1.0, 1.0))
  k = jax.lax.stop_gradient(jnp.floor(m * theta / (math.pi + 1e-7)))
  sign = 1.0 - 2.0 * jnp.mod(k, 2.0)
  return sign * cos_m - 2.0 * k


def angle_loss(cos_x: jax.Array, phi_x: jax.Array, labels: jax.Array,
               lamb: jax.Array) -> jax.Array:
  """[B] A-Softmax CE: the target logit is cos - cos/(1+l) + phi/(1+l)."""
  onehot = jax.nn.one_hot(labels, cos_x.shape[-1], dtype=cos_x.dtype)
  target = cos_x - cos_x / (1.0 + lamb) + phi_x / (1.0 + lamb)
  logits = cos_x * (1 - onehot) + target * onehot
  return -jnp.sum(onehot * jax.nn.log_softmax(logits), axis=-1)


def lambda_at(step, lambda_min: float = 5.0, base: float = 1500.0,
              gamma: float = 0.1):
  """The reference's annealed lambda = max(lambda_min, base/(1+gamma*it))."""
  return jnp.maximum(lambda_min, base / (1.0 + gamma * step))


class Classifier(nn.Module):
  """SphereFace + AngleLinear head: -> (feature, cos*|x|, phi*|x|)."""
  widths: Sequence[int] = (64, 128, 256, 512)
  units: Sequence[int] = (1, 2, 4, 1)
  feature_dim: int = 512
  num_classes: int = 10574
  m: int = 4

  def setup(self):
    self.trunk = SphereFace(self.widths, self.units, self.feature_dim)
    self.fc6 = AngleLinear(self.num_classes, self.m)

  def features(self, images):
    return self.trunk(images)

  def __call__(self, images):
    f = self.trunk(images)
    cos, phi = self.fc6(f)
    return f, cos, phi


def create(variant: str, num_classes: int, m: int = 4) -> Classifier:
  if variant not in VARIANTS:
    raise ValueError(f"config key model.variant: unknown {variant!r}; "
                     f"choose one of {sorted(VARIANTS)}")
  widths, units, dim = VARIANTS[variant]
  return Classifier(widths, units, dim, num_classes, m)
