"""Kinship heads: projection, RBKin fusion, relation / group heads, GRL.

  ProjectionHead   TeamCNU's training head: D -> 256 (BN, ReLU) -> 128.
                   Verification uses the cosine of the *backbone*
                   embeddings; the projection only shapes training.
  RBKinNet         the multi-age classifier of the robust kinship
                   verification reference: per face [B, 5, D] (five ages)
                   -> shared ConvolutionBlock(5) -> [B, D]; both faces
                   [B, D, 2] -> ConvolutionBlock(2) -> [B, D]; two residual
                   blocks (D -> 256 -> 128); Dense(2).
  ClassHead        D -> hidden (BN, ReLU) -> n: relation type (multitask),
                   gender, or the demographic group (KFC's HeadRace).
  grad_reverse     identity forward, -alpha * gradient backward (DANN/KFC).
Linen modules over NHWC / [B, D] arrays; BatchNorm statistics are in
`batch_stats`.
"""

import functools
import flax.linen as nn
import jax
import jax.numpy as jnp


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def grad_reverse(x: jax.Array, alpha: float = 1.0) -> jax.Array:
  """Identity; the backward pass multiplies the gradient by -alpha."""
  del alpha
  return x


def _grl_fwd(x, alpha):
  del alpha
  return x, None


def _grl_bwd(alpha, _, g):
  return (jax.tree.map(lambda t: -alpha * t, g),)


grad_reverse.defvjp(_grl_fwd, _grl_bwd)


def _bn(train: bool, name: str | None = None) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                      epsilon=1e-5, name=name)


class ProjectionHead(nn.Module):
  hidden: int = 256
  out: int = 128

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = nn.Dense(self.hidden, name="fc1")(x)
    x = nn.relu(_bn(train, "bn1")(x))
    return nn.Dense(self.out, name="fc2")(x)


class ClassHead(nn.Module):
  num_classes: int
  hidden: int = 64

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = nn.Dense(self.hidden, name="fc1")(x)
    x = nn.relu(_bn(train, "bn1")(x))
    return nn.Dense(self.num_classes, name="fc2")(x)


class ConvolutionBlock(nn.Module):
  """[B, L, n] (n channels along a length-L feature axis) -> [B, L].

  Conv1d(n->n, k3) ReLU BN Dropout Conv1d(n->1, k3) ReLU BN, as the
  reference (PyTorch NCL; here NLC with the ages/faces as channels).
  """
  channels: int
  dropout: float = 0.05

  @nn.compact
  def __call__(self, x, *, train: bool):
    x = nn.Conv(self.channels, (3,), padding=((1, 1),), name="conv1")(x)
    x = _bn(train, "bn1")(nn.relu(x))
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = nn.Conv(1, (3,), padding=((1, 1),), name="conv2")(x)
    x = _bn(train, "bn2")(nn.relu(x))
    return x[..., 0]


class ResidualBlock(nn.Module):
  """fc1 ReLU BN Drop fc2 (+x) ReLU BN Drop fc3 (D -> D/2) ReLU."""
  features: int
  dropout: float = 0.05

  @nn.compact
  def __call__(self, x, *, train: bool):
    drop = nn.Dropout(self.dropout, deterministic=not train)
    y = drop(_bn(train, "bn1")(nn.relu(nn.Dense(self.features,
                                                name="fc1")(x))))
    y = nn.Dense(self.features, name="fc2")(y) + x
    y = drop(_bn(train, "bn2")(nn.relu(y)))
    return nn.relu(nn.Dense(self.features // 2, name="fc3")(y))


class RBKinNet(nn.Module):
  """Two faces' multi-age embeddings [B, A, D] each -> logits [B, 2]."""
  dropout: float = 0.05

  @nn.compact
  def __call__(self, feats_a, feats_b, *, train: bool):
    ages = feats_a.shape[1]
    per_face = ConvolutionBlock(ages, self.dropout, name="age_block")
    # [B, A, D] -> [B, D, A]: the ages are the channels of the 1-D conv.
    f_a = per_face(jnp.swapaxes(feats_a, 1, 2), train=train)  # [B, D]
    f_b = per_face(jnp.swapaxes(feats_b, 1, 2), train=train)
    x = ConvolutionBlock(2, self.dropout, name="pair_block")(
        jnp.stack([f_a, f_b], axis=-1), train=train)           # [B, D]
    x = ResidualBlock(x.shape[-1], self.dropout, name="res1")(x, train=train)
    x = ResidualBlock(x.shape[-1], self.dropout, name="res2")(x, train=train)
    return nn.Dense(2, name="out")(x)


class FairMargin(nn.Module):
  """KFC-style per-pair margin from the squared embedding difference.

  m = max_margin * tanh(Dense((e_a - e_b)^2)); the debias variant
  subtracts it from the positive logit of the contrastive loss, and the
  task logs its average per demographic group.
  """
  max_margin: float = 0.2

  @nn.compact
  def __call__(self, e_a, e_b):
    d = jnp.square(e_a - e_b)
    m = nn.Dense(1, kernel_init=nn.initializers.zeros, name="fc")(d)[:, 0]
    return self.max_margin * jnp.tanh(m)

