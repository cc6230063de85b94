"""Frechet distance between feature sets, and the small feature network.

The FID of the literature uses Inception-v3 pool3 features (2048-d,
pytorch-fid). facejax holds no Inception weights, so on CPU-small data the
features come from a small network and the number is reported as
"FID-small (...)", never as FID: values are comparable only between runs
with the same feature network, not with published FIDs.

Two feature networks:
* 'random': `RandomFeatures`, a fixed 4-layer conv net with He-normal
  weights drawn from seed 0 (no training, never saved); per layer the
  channel means and standard deviations over positions (colour, texture,
  style statistics at 4 scales). Named "FID-small (random-conv features)".
* 'identity': the caller's embedding network (e.g. the frozen SphereFace
  fc5 or SwinFace recognition embedding), named "FID-small
  (identity-network features)". Identity features are trained to ignore
  style, so they measure the domain gap less.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from scipy import linalg

NAMES = {"random": "FID-small (random-conv features, not Inception)",
         "identity": "FID-small (identity-network features, not Inception)"}


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray) -> float:
  """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) (float64)."""
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
  covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
  if not np.all(np.isfinite(covmean)):
    # Singular product (few samples): the usual pytorch-fid fix.
    eps = 1e-6 * np.eye(s1.shape[0])
    covmean = linalg.sqrtm((s1 + eps) @ (s2 + eps))
  covmean = np.real(covmean)
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(s1) + np.trace(s2)
               - 2.0 * np.trace(covmean))


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(mean, covariance) of [N, D] features."""
  f = np.asarray(features, np.float64)
  if f.shape[0] < 2:
    raise ValueError(f"FID needs at least 2 images, got {f.shape[0]}")
  return f.mean(0), np.cov(f, rowvar=False)


def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
  """Frechet distance between two [N, D] feature sets."""
  return frechet_distance(*statistics(features_a), *statistics(features_b))


class RandomFeatures(nn.Module):
  """Fixed random conv features: per layer channel mean and std (4 x 2 x w)."""
  widths: tuple = (16, 32, 32, 32)

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    x, feats = images, []
    init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
    for i, w in enumerate(self.widths):
      x = nn.Conv(w, (3, 3), (2, 2) if i else (1, 1), padding=1,
                  kernel_init=init, name=f"conv{i}")(x)
      x = nn.leaky_relu(x, 0.2)
      feats += [x.mean((1, 2)), x.std((1, 2))]
    return jnp.concatenate(feats, axis=-1)


_RANDOM_PARAMS = {}


def random_features_fn():
  """images [B, H, W, 3] in [-1, 1] -> [B, 2 * sum(widths)] (fixed seed 0)."""
  net = RandomFeatures()
  if "p" not in _RANDOM_PARAMS:
    _RANDOM_PARAMS["p"] = net.init(jax.random.key(0),
                                   jnp.zeros((1, 32, 32, 3)))
  params = _RANDOM_PARAMS["p"]
  return lambda images: net.apply(params, images)
