"""Kinship losses over a batch of B pairs (e_a[i], e_b[i]).

All contrastive losses stack the 2B embeddings x = [e_a; e_b] (L2
normalised) and use the cosine matrix S = x x^T; sample i's partner is
p(i) = (i + B) mod 2B.

  contrastive  TeamCNU (RFIW 2021): anchor i's positive is p(i); the
               denominator sums over every j != i, the positive included;
               mean over the 2B anchors. Temperature 0.08. With `margins`
               (the KFC debias variant) the positive logit is
               (S_ip - m_i) / tau.
  hcl          the reference's hard contrastive loss: positives are the
               kin pairs; anchor i's negatives are all j not in {i, p(i)}
               (so both directions of a positive pair are excluded), and
               l_i = -log(e^{S_ip/t} / (e^{S_ip/t} + sum_neg e^{S_ik/t}));
               mean over the 2 * #pos kin anchors. With `hard`, only
               negatives at or above the per-anchor alpha_neg quantile
               count, and positives above the (1 - alpha_pos) quantile of
               the batch's positive similarities (the easy ones) drop out.
  triplet      max(0, d(a, p) - d(a, n) + margin), d the L2 distance
               (torch's TripletMarginLoss, p = 2).
  batch_hard_triplet  every sample is an anchor; positive p(i), negative
               the nearest j not in {i, p(i)} (distinct families: every
               other sample is a non-relative).
  cross_entropy  softmax CE on integer labels.
`mask` [B] (1 real, 0 padding) removes pairs from anchors and
denominators.
"""

import jax
import jax.numpy as jnp

from facejax.models import layers
from facejax.train import steps as steps_lib

_NEG = -1e9  # logit of an excluded entry (finite: no NaN in gradients)


def _stacked(e_a, e_b, mask):
  """(S [2B, 2B], partner [2B], valid-sample mask [2B] bool)."""
  b = e_a.shape[0]
  x = layers.l2_normalize(jnp.concatenate([e_a, e_b]).astype(jnp.float32))
  s = x @ x.T
  idx = jnp.arange(2 * b)
  partner = (idx + b) % (2 * b)
  m = jnp.ones((b,), bool) if mask is None else mask > 0
  return s, partner, jnp.concatenate([m, m])


def contrastive(e_a: jax.Array, e_b: jax.Array, tau: float = 0.08,
                mask: jax.Array | None = None,
                margins: jax.Array | None = None) -> jax.Array:
  """TeamCNU's bidirectional in-batch contrastive loss (scalar).

  Args:
    e_a, e_b: [B, D] embeddings of the pairs' two faces (any norm).
    tau: temperature.
    mask: [B] pair weights (1 real, 0 padding), or None.
    margins: [B] per-pair margins subtracted from the positive cosine
      (KFC fair loss), or None.
  """
  s, partner, valid = _stacked(e_a, e_b, mask)
  n = s.shape[0]
  idx = jnp.arange(n)
  logits = s / tau
  if margins is not None:
    m2 = jnp.concatenate([margins, margins])
    logits = logits.at[idx, partner].add(-m2 / tau)
  keep = valid[None, :] & (idx[:, None] != idx[None, :])
  logits = jnp.where(keep, logits, _NEG)
  per_anchor = jax.nn.logsumexp(logits, axis=1) - logits[idx, partner]
  return steps_lib.masked_mean(per_anchor, valid)


def hcl(e_a: jax.Array, e_b: jax.Array, is_kin: jax.Array,
        tau: float = 0.08, alpha_neg: float = 0.0, alpha_pos: float = 0.0,
        hard: jax.Array | bool = False,
        mask: jax.Array | None = None) -> jax.Array:
  """Hard contrastive loss (scalar); see the module docstring.

  Args:
    e_a, e_b: [B, D] embeddings.
    is_kin: [B] 1 for kin pairs (the positives).
    tau: temperature.
    alpha_neg: negative quantile kept when hard (0 keeps all).
    alpha_pos: fraction of easiest positives dropped when hard.
    hard: whether hard mining is on (a traced bool is fine, e.g.
      step >= loss.hcl_from_step).
    mask: [B] pair weights, or None.
  """
  s, partner, valid = _stacked(e_a, e_b, mask)
  n = s.shape[0]
  idx = jnp.arange(n)
  kin = jnp.concatenate([is_kin, is_kin]) > 0
  anchors = valid & kin
  # Negatives of i: valid j other than i and its partner (the partner of a
  # kin anchor is its positive; both directions are excluded this way).
  neg = (valid[None, :] & valid[:, None] & (idx[:, None] != idx[None, :])
         & (idx[None, :] != partner[:, None]))
  q_neg = jnp.nanquantile(jnp.where(neg, s, jnp.nan), alpha_neg, axis=1)
  hard_neg = neg & (s >= q_neg[:, None])
  pos_sim = s[idx, partner]
  q_pos = jnp.nanquantile(jnp.where(anchors, pos_sim, jnp.nan),
                          1.0 - alpha_pos)
  hard_anchors = anchors & ((pos_sim <= q_pos) | (alpha_pos <= 0.0))
  hard = jnp.asarray(hard)
  neg = jnp.where(hard, hard_neg, neg)
  anchors = jnp.where(hard, hard_anchors, anchors)
  pos_logit = pos_sim / tau
  neg_logits = jnp.where(neg, s / tau, _NEG)
  denom = jnp.logaddexp(pos_logit, jax.nn.logsumexp(neg_logits, axis=1))
  return steps_lib.masked_mean(denom - pos_logit, anchors)


def _distance(x, y):
  # torch.nn.functional.pairwise_distance: ||x - y + eps||_2, eps 1e-6.
  return jnp.linalg.norm(x - y + 1e-6, axis=-1)


def triplet(anchor: jax.Array, positive: jax.Array, negative: jax.Array,
            margin: float = 1.0, mask: jax.Array | None = None) -> jax.Array:
  """Triplet margin loss (scalar), L2 distance, mean over triplets."""
  per = jax.nn.relu(_distance(anchor, positive) -
                    _distance(anchor, negative) + margin)
  w = jnp.ones(per.shape, bool) if mask is None else mask > 0
  return steps_lib.masked_mean(per, w)


def batch_hard_triplet(e_a: jax.Array, e_b: jax.Array, margin: float = 1.0,
                       mask: jax.Array | None = None
                       ) -> tuple[jax.Array, jax.Array]:
  """Batch-hard triplet loss over the 2B samples (L2-normalised).

  Returns:
    (loss, hardest negative index [2B] into [e_a; e_b]).
  """
  b = e_a.shape[0]
  x = layers.l2_normalize(jnp.concatenate([e_a, e_b]).astype(jnp.float32))
  idx = jnp.arange(2 * b)
  partner = (idx + b) % (2 * b)
  m = jnp.ones((b,), bool) if mask is None else mask > 0
  valid = jnp.concatenate([m, m])
  d = _distance(x[:, None, :], x[None, :, :])                  # [2B, 2B]
  cand = (valid[None, :] & (idx[:, None] != idx[None, :])
          & (idx[None, :] != partner[:, None]))
  hardest = jnp.argmin(jnp.where(cand, d, jnp.inf), axis=1)
  per = jax.nn.relu(d[idx, partner] - d[idx, hardest] + margin)
  return steps_lib.masked_mean(per, valid), hardest


def cross_entropy(logits: jax.Array, labels: jax.Array,
                  mask: jax.Array | None = None) -> jax.Array:
  """Mean softmax cross-entropy; labels < 0 (unknown) are ignored."""
  labels = jnp.asarray(labels, jnp.int32)
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.take_along_axis(logp, jnp.maximum(labels, 0)[:, None],
                             axis=-1)[:, 0]
  w = labels >= 0
  if mask is not None:
    w = w & (mask > 0)
  return steps_lib.masked_mean(nll, w)
