"""Kinship verification on FIW-format data (a state task, tasks/base.py).

config.model.head:
  cosine  a shared backbone embeds both faces (one pass over [a; b]); the
          loss (config.loss.name) trains it: 'contrastive' (TeamCNU) or
          'hcl' on a projection head, 'triplet' on the L2-normalised
          backbone embeddings (batch-hard with loss.batch_hard). The
          verification score is the cosine of the backbone embeddings.
  rbkin   both faces rendered at rbkin.ages (20..60) by a frozen age
          transformer (config rbkin.age_transformer: a trained
          age_transformer workdir), embedded by the backbone and fused by
          the RBKin net into 2 logits; 'ce' on positives (a_i, b_i) and
          in-batch negatives (a_i, b_{i+1}). Score: P(kin).
Training batches come from the kinship batch sampler (facejax.data.kinship):
positive pairs of distinct families, so in-batch cross pairs are
non-relatives. Options: model.relation_head (multitask: relation type of
each positive pair), debias.enabled (KFC: a demographic-group head behind a
gradient-reversal layer on the backbone embeddings, plus per-pair fair
margins in the contrastive loss whose per-group means are logged).
model.backbone: an age_regressor backbone name (tiny | resnet18 |
resnet34 | ...) trained here; 'swin': SwinFace's Swin backbone and
recognition subnet (geometry from model.swin and model.embedding_dim, as in
configs/swinface.py), trained here; or 'frozen': the embedding network of
model.frozen_workdir, never optimised -- an age_regression or kinship run's
backbone, or a swinface run's 'swin' + 'recognition' parameters and batch
statistics (its recognition embedding), loaded by facejax.tasks.frozen.
With a frozen backbone the projection head trains with any loss and
verification uses the cosine of the projections.

Evaluation (launch.evaluate; facejax.evaluators.kinship.report): the
RFIW protocol -- the threshold
maximising Youden's J (TPR - FPR) on the validation list, then accuracy per
relation and over all pairs (micro), ROC AUC, TAR at FAR 1e-2 / 1e-3,
accuracy per demographic group, a Markdown table and a ROC PNG.
"""

import os
import types
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from facejax import optim
from facejax.evaluators import kinship as kinship_eval
from facejax.evaluators import verification
from facejax.data import kinship as kin_data
from facejax.data import transforms
from facejax.models import kinship as kin_models
from facejax.models import layers
from facejax.models import swinface
from facejax.tasks import base
from facejax.tasks import frozen as frozen_lib
from facejax.train import state as state_lib
from facejax.train import steps as steps_lib

HEADS = ("cosine", "rbkin")
LOSSES = {"cosine": ("contrastive", "hcl", "triplet"), "rbkin": ("ce",)}


# ---------------------------------------------------------------------------
# Losses.
# ---------------------------------------------------------------------------
# Kinship losses over a batch of B pairs (e_a[i], e_b[i]).
#
# All contrastive losses stack the 2B embeddings x = [e_a; e_b] (L2
# normalised) and use the cosine matrix S = x x^T; sample i's partner is
# p(i) = (i + B) mod 2B.
#
#   contrastive  TeamCNU (RFIW 2021): anchor i's positive is p(i); the
#                denominator sums over every j != i, the positive included;
#                mean over the 2B anchors. Temperature 0.08. With `margins`
#                (the KFC debias variant) the positive logit is
#                (S_ip - m_i) / tau.
#   hcl          the reference's hard contrastive loss: positives are the
#                kin pairs; anchor i's negatives are all j not in {i, p(i)}
#                (so both directions of a positive pair are excluded), and
#                l_i = -log(e^{S_ip/t} / (e^{S_ip/t} + sum_neg e^{S_ik/t}));
#                mean over the 2 * #pos kin anchors. With `hard`, only
#                negatives at or above the per-anchor alpha_neg quantile
#                count, and positives above the (1 - alpha_pos) quantile of
#                the batch's positive similarities (the easy ones) drop out.
#   triplet      max(0, d(a, p) - d(a, n) + margin), d the L2 distance
#                (torch's TripletMarginLoss, p = 2).
#   batch_hard_triplet  every sample is an anchor; positive p(i), negative
#                the nearest j not in {i, p(i)} (distinct families: every
#                other sample is a non-relative).
#   cross_entropy  softmax CE on integer labels.
# `mask` [B] (1 real, 0 padding) removes pairs from anchors and
# denominators.

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
  """Hard contrastive loss (scalar); see the comment above the losses.

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


# ---------------------------------------------------------------------------
# The task.
# ---------------------------------------------------------------------------


class Task(base.Task):
  """Kinship verification (see the module docstring)."""

  best_metric = ("auc", "max")
  progress_keys = ("loss", "kin_loss")
  finite_keys = ("loss", "grad_norm")

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    m, lc = config.model, config.loss
    if m.head not in HEADS:
      raise ValueError(f"config key model.head: unknown {m.head!r}; choose "
                       f"one of {HEADS}")
    if lc.name not in LOSSES[m.head]:
      raise ValueError(f"config key loss.name: {lc.name!r} does not fit "
                       f"model.head={m.head!r}; choose one of "
                       f"{LOSSES[m.head]}")
    self.frozen_backbone = m.backbone == "frozen"
    dtype = jnp.dtype(m.get("dtype", "float32"))
    conv_impl = m.get("conv_impl", "auto")
    if self.frozen_backbone:
      self._frozen_cfg = frozen_lib.workdir_config(
          m.frozen_workdir, "model.frozen_workdir", frozen_lib.FROZEN_TASKS)
      self.backbone = frozen_lib.frozen_backbone(self._frozen_cfg, dtype,
                                                 conv_impl)
    else:
      self.backbone = frozen_lib.create_backbone(m, dtype, conv_impl)
    self._check_image_size()
    self.heads = {}
    # A frozen backbone learns nothing: then the projection trains (with
    # any loss) and verification uses the cosine of the projections.
    if m.head == "cosine" and (lc.name in ("contrastive", "hcl")
                               or self.frozen_backbone):
      self.heads["proj"] = kin_models.ProjectionHead(m.proj_hidden,
                                                     m.proj_out)
    if m.head == "rbkin":
      self.heads["fusion"] = kin_models.RBKinNet(m.dropout)
    if m.relation_head:
      self.heads["relation"] = kin_models.ClassHead(
          kin_data.NUM_RELATIONS, m.relation_hidden)
    if config.debias.enabled:
      self.heads["group"] = kin_models.ClassHead(config.debias.num_groups,
                                                 config.debias.hidden)
      if lc.name == "contrastive" and config.debias.max_margin > 0:
        self.heads["margin"] = kin_models.FairMargin(
            config.debias.max_margin)
    self.tx, self.schedule = optim.create_optimizer(
        config.optim, config.total_steps, None)
    self._at_task = None
    if m.head == "rbkin" and config.rbkin.render:
      self._at_task = self._age_transformer_task()

  def _check_image_size(self):
    """A Swin embedding network takes exactly its img_size."""
    if not isinstance(self.backbone, swinface.RecognitionNet):
      return
    size = self.backbone.backbone["img_size"]
    got = self.config.data.image_size
    if got == size:
      return
    if self.frozen_backbone:
      raise ValueError(
          f"config key data.image_size={got}: the Swin network of "
          f"model.frozen_workdir ({self.config.model.frozen_workdir!r}) "
          f"takes {size} px images; set data.image_size={size}")
    raise ValueError(
        f"config key data.image_size={got} differs from the Swin "
        f"backbone's img_size {size} (config keys model.swin.variant="
        f"{self.config.model.swin.variant!r} / model.swin.img_size)")

  # --- identity / shapes -------------------------------------------------
  def meta(self) -> dict[str, Any]:
    m = self.config.model
    meta = {"task": "kinship", "head": m.head, "backbone": m.backbone,
            "loss": self.config.loss.name, "heads": sorted(self.heads)}
    if m.backbone == "swin":
      meta["swin"] = m.swin.variant
    return meta

  def dummy_batch(self, batch_size: int) -> dict[str, np.ndarray]:
    s = self.config.data.image_size
    image = np.zeros((batch_size, s, s, 3), np.float32)
    ints = lambda v: np.full((batch_size,), v, np.int32)
    return {"image_a": image, "image_b": image.copy(),
            "label": np.ones((batch_size,), np.float32),
            "relation": ints(1), "family": np.arange(batch_size,
                                                     dtype=np.int32),
            "gender_a": ints(0), "gender_b": ints(0), "group_a": ints(0),
            "group_b": ints(0), "mask": np.ones((batch_size,), np.float32)}

  def describe(self, state) -> str:
    n = state_lib.count_params(state.params)
    m = self.config.model
    return (f"kinship {m.head} ({m.backbone}, loss {self.config.loss.name}"
            f", heads {sorted(self.heads)}): {n:,} trainable params")

  def learning_rate(self, step: int) -> float:
    return float(self.schedule(step))

  # --- state -------------------------------------------------------------
  def _embed_dim(self) -> int:
    x = jnp.zeros((1,) + (self.config.data.image_size,) * 2 + (3,))
    feats = jax.eval_shape(lambda r: self.backbone.apply(
        self.backbone.init(r, x, train=False), x, train=False),
                           jax.random.key(0))
    return feats.shape[-1]

  def init_state(self, rng: jax.Array) -> state_lib.TrainState:
    s = self.config.data.image_size
    params, stats = {}, {}

    def add(name, variables):
      params[name] = variables["params"]
      if variables.get("batch_stats"):
        stats[name] = variables["batch_stats"]
    keys = iter(jax.random.split(rng, 8))
    if not self.frozen_backbone:
      add("backbone", self.backbone.init(next(keys), jnp.zeros((1, s, s, 3)),
                                         train=False))
    d = self._embed_dim()
    feat = jnp.zeros((2, d))
    for name, head in self.heads.items():
      r = next(keys)
      if name == "fusion":
        ages = jnp.zeros((2, len(self.config.rbkin.ages), d))
        add(name, head.init(r, ages, ages, train=False))
      elif name == "relation":
        add(name, head.init(r, jnp.zeros((2, 2 * d)), train=False))
      elif name == "margin":
        add(name, head.init(r, feat, feat))
      else:
        add(name, head.init(r, feat, train=False))
    return state_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                                batch_stats=stats,
                                opt_state=self.tx.init(params))

  def has_import(self) -> bool:
    return False

  def import_pretrained(self, state):
    return state

  # --- frozen networks ---------------------------------------------------
  def _age_transformer_task(self):
    from facejax import config_lib  # pylint: disable=g-import-not-at-top
    from facejax import tasks  # pylint: disable=g-import-not-at-top
    r = self.config.rbkin
    if r.random_init:
      # Tests and benchmarks only: an untrained tiny transformer.
      root = os.path.dirname(os.path.dirname(os.path.dirname(
          os.path.abspath(__file__))))
      cfg = config_lib.load_config(
          os.path.join(root, "configs", "age_transformer.py:smoke"),
          {"age_loss.random_init": "tiny"})
      self._at_cfg = cfg
      return tasks.get("age_transformer")(cfg)
    self._at_cfg, at_task = frozen_lib.workdir_task(
        r.age_transformer, "rbkin.age_transformer", ("age_transformer",))
    return at_task

  def load_frozen(self):
    frozen = {}
    if self.frozen_backbone:
      wd = self.config.model.frozen_workdir
      _, frozen["backbone"], _ = frozen_lib.load_frozen_embedding(
          wd, "model.frozen_workdir")
    if self._at_task is not None:
      if self.config.rbkin.random_init:
        state = jax.device_get(jax.jit(self._at_task.init_state)(
            jax.random.key(0)))
      else:
        state = frozen_lib.restore_state(self.config.rbkin.age_transformer,
                                         self._at_task,
                                         "rbkin.age_transformer")
      frozen["age_transformer"] = {"gen": state.gen,
                                   "gen_stats": state.gen_stats}
    return frozen if frozen else base.Frozen()

  # --- networks ----------------------------------------------------------
  def _apply(self, name, params, stats, *args, train, rng=None, **kw):
    """(output, new batch stats of head `name`)."""
    module = self.heads[name]
    variables = {"params": params[name]}
    if name in stats:
      variables["batch_stats"] = stats[name]
    if name == "margin":
      return module.apply(variables, *args), {}
    if train and name in stats:
      out, new = module.apply(variables, *args, train=True,
                              rngs={"dropout": rng}, mutable=["batch_stats"],
                              **kw)
      return out, {name: new["batch_stats"]}
    return module.apply(variables, *args, train=train,
                        rngs={"dropout": rng} if rng is not None else None,
                        **kw), {}

  def embed(self, params, stats, frozen, images, train: bool, rng=None):
    """Backbone features [N, D] and new backbone stats.

    `rng` feeds the backbone's 'dropout' stream (Swin stochastic depth).
    """
    if self.frozen_backbone:
      v = frozen["backbone"]
      variables = {"params": v["params"]}
      if v["batch_stats"]:
        variables["batch_stats"] = v["batch_stats"]
      return jax.lax.stop_gradient(
          self.backbone.apply(variables, images, train=False)), {}
    variables = {"params": params["backbone"]}
    if "backbone" in stats:
      variables["batch_stats"] = stats["backbone"]
    rngs = {"dropout": rng} if train and rng is not None else None
    if train and "backbone" in stats:
      out, new = self.backbone.apply(variables, images, train=True,
                                     rngs=rngs, mutable=["batch_stats"])
      return out, {"backbone": new["batch_stats"]}
    return self.backbone.apply(variables, images, train=train, rngs=rngs), {}

  def render_ages(self, frozen, images):
    """[N, H, W, 3] in [-1, 1] -> [A, N, H, W, 3] at rbkin.ages."""
    ages = jnp.asarray(self.config.rbkin.ages, jnp.float32)
    n, h, w, c = images.shape
    if not self.config.rbkin.render:  # ablation: no age normalisation
      return jnp.broadcast_to(images[None], (ages.shape[0],) + images.shape)
    size = self._at_cfg.data.image_size
    x = images
    if (h, w) != (size, size):
      x = jax.image.resize(images, (n, size, size, c), "bilinear")
    a = ages.shape[0]
    tiled = jnp.broadcast_to(x[None], (a,) + x.shape).reshape(
        (a * n, size, size, c))
    at = types.SimpleNamespace(**frozen["age_transformer"])
    out = self._at_task.edit(at, tiled, jnp.repeat(ages, n))  # [0, 1]
    out = jax.lax.stop_gradient(out) * 2.0 - 1.0
    if (h, w) != (size, size):
      out = jax.image.resize(out, (a * n, h, w, c), "bilinear")
    return out.reshape((a, n, h, w, c))

  def _multi_age_feats(self, params, stats, frozen, images, train,
                       rng=None):
    """[N, A, D] normalised embeddings of the faces rendered at A ages."""
    rendered = self.render_ages(frozen, images)
    a, n = rendered.shape[:2]
    f, new = self.embed(params, stats, frozen,
                        rendered.reshape((a * n,) + rendered.shape[2:]),
                        train, rng)
    f = layers.l2_normalize(f).reshape((a, n, -1))
    return jnp.swapaxes(f, 0, 1), new

  def _forward(self, params, stats, frozen, batch, train, rng):
    """Everything the losses and scores need, and the new stats."""
    b = batch["image_a"].shape[0]
    images = jnp.concatenate([batch["image_a"], batch["image_b"]])
    new, out = {}, {}
    # A stream of its own for the backbone (the heads split `rng`).
    rng = None if rng is None else jax.random.fold_in(rng, 1000)
    if self.config.model.head == "rbkin":
      feats, upd = self._multi_age_feats(params, stats, frozen, images,
                                         train, rng)
      new.update(upd)
      out["multi_a"], out["multi_b"] = feats[:b], feats[b:]
      f = feats.mean(axis=1)
    else:
      f, upd = self.embed(params, stats, frozen, images, train, rng)
      new.update(upd)
    out["f_a"], out["f_b"] = f[:b], f[b:]
    return out, new

  def _score(self, params, stats, frozen, out, rng=None):
    if self.config.model.head == "rbkin":
      logits, _ = self._apply("fusion", params, stats, out["multi_a"],
                              out["multi_b"], train=False)
      return jax.nn.softmax(logits)[:, 1]
    if self.frozen_backbone:
      b = out["f_a"].shape[0]
      z, _ = self._apply("proj", params, stats,
                         jnp.concatenate([out["f_a"], out["f_b"]]),
                         train=False)
      return layers.cosine(z[:b], z[b:])
    return layers.cosine(out["f_a"], out["f_b"])

  def score_fn(self, state, frozen, batch):
    """Per pair: score, relation prediction; labels passed through."""
    out, _ = self._forward(state.params, state.batch_stats, frozen, batch,
                           False, None)
    res = {"score": self._score(state.params, state.batch_stats, frozen,
                                out)}
    if "relation" in self.heads:
      logits, _ = self._apply(
          "relation", state.params, state.batch_stats,
          jnp.concatenate([out["f_a"], out["f_b"]], -1), train=False)
      res["relation_pred"] = jnp.argmax(logits[:, 1:], -1) + 1
    for k in ("label", "relation", "group_a", "group_b", "mask"):
      res[k] = batch[k]
    return res

  # --- train / eval ------------------------------------------------------
  def _loss(self, params, stats, frozen, batch, rng, step):
    cfg, lc = self.config, self.config.loss
    mask = batch["mask"]
    out, new_stats = self._forward(params, stats, frozen, batch, True, rng)
    f_a, f_b = out["f_a"], out["f_b"]
    metrics = {}
    rngs = iter(jax.random.split(rng, 4))
    margins = None
    if "margin" in self.heads:
      margins, _ = self._apply("margin", params, stats,
                               layers.l2_normalize(f_a),
                               layers.l2_normalize(f_b), train=True)
      for g in range(cfg.debias.num_groups):
        sel = (batch["group_a"] == g) * mask
        metrics[f"margin_g{g}"] = ((margins * sel).sum()
                                   / jnp.maximum(sel.sum(), 1.0))
    if lc.name in ("contrastive", "hcl"):
      z, upd = self._apply("proj", params, stats, jnp.concatenate([f_a, f_b]),
                           train=True, rng=next(rngs))
      new_stats.update(upd)
      b = f_a.shape[0]
      if lc.name == "contrastive":
        kin = contrastive(z[:b], z[b:], lc.tau, mask, margins)
      else:
        kin = hcl(z[:b], z[b:], batch["label"], lc.tau,
                         lc.alpha_neg, lc.alpha_pos,
                         step >= lc.hcl_from_step, mask)
    elif lc.name == "triplet":
      if "proj" in self.heads:  # frozen backbone: train the projection
        z, upd = self._apply("proj", params, stats,
                             jnp.concatenate([f_a, f_b]), train=True,
                             rng=next(rngs))
        new_stats.update(upd)
        f_a, f_b = z[:f_a.shape[0]], z[f_a.shape[0]:]
      if lc.batch_hard:
        kin, _ = batch_hard_triplet(f_a, f_b, lc.margin, mask)
      else:  # the next pair's face: another family (the sampler)
        n = layers.l2_normalize
        kin = triplet(n(f_a), n(f_b), n(jnp.roll(f_b, 1, 0)),
                             lc.margin, mask)
    else:  # rbkin + ce: positives and rolled in-batch negatives
      multi_b = jnp.concatenate([out["multi_b"],
                                 jnp.roll(out["multi_b"], 1, 0)])
      multi_a = jnp.concatenate([out["multi_a"], out["multi_a"]])
      logits, upd = self._apply("fusion", params, stats, multi_a, multi_b,
                                train=True, rng=next(rngs))
      new_stats.update(upd)
      b = f_a.shape[0]
      labels = jnp.concatenate([jnp.ones((b,), jnp.int32),
                                jnp.zeros((b,), jnp.int32)])
      kin = cross_entropy(logits, labels, jnp.concatenate([mask,
                                                                  mask]))
      metrics["train_acc"] = ((jnp.argmax(logits, -1) == labels)
                              .astype(jnp.float32).mean())
    loss = kin
    metrics["kin_loss"] = kin
    if "relation" in self.heads:
      logits, upd = self._apply("relation", params, stats,
                                jnp.concatenate([f_a, f_b], -1), train=True,
                                rng=next(rngs))
      new_stats.update(upd)
      labels = jnp.where(batch["label"] > 0, batch["relation"], -1)
      rel = cross_entropy(logits, labels, mask)
      metrics["relation_loss"] = rel
      loss = loss + cfg.model.relation_weight * rel
    if "group" in self.heads:
      feats = kin_models.grad_reverse(jnp.concatenate([f_a, f_b]),
                                      cfg.debias.alpha)
      logits, upd = self._apply("group", params, stats, feats, train=True,
                                rng=next(rngs))
      new_stats.update(upd)
      labels = jnp.concatenate([batch["group_a"], batch["group_b"]])
      grp = cross_entropy(logits, labels, jnp.concatenate([mask,
                                                                  mask]))
      metrics["group_loss"] = grp
      loss = loss + cfg.debias.weight * grp
    return loss, (metrics, {**stats, **new_stats})

  def train_step(self, state, batch, frozen):
    def loss_fn(params, stats, batch, ctx):
      return self._loss(params, stats, ctx.frozen, batch, ctx.rng, ctx.step)
    step = steps_lib.supervised_step(loss_fn, self.tx, self.config.seed)
    return step(state, batch, frozen)

  def _range(self) -> tuple[float, float]:
    return (0.0, 1.0) if self.config.model.head == "rbkin" else (-1.0, 1.0)

  def eval_step(self, state, batch, frozen):
    """Score histograms of kin / non-kin pairs (summed over the split)."""
    res = self.score_fn(state, frozen, batch)
    lo, hi = self._range()
    bins = self.config.eval.hist_bins
    k = jnp.clip(((res["score"] - lo) / (hi - lo) * bins).astype(jnp.int32),
                 0, bins - 1)
    onehot = jax.nn.one_hot(k, bins) * batch["mask"][:, None]
    kin = (batch["label"] > 0)[:, None]
    return {"hist_pos": (onehot * kin).sum(0),
            "hist_neg": (onehot * ~kin).sum(0),
            "count": batch["mask"].sum()}

  @staticmethod
  def summarize(sums: dict[str, np.ndarray]) -> dict[str, float]:
    pos, neg = sums["hist_pos"], sums["hist_neg"]
    return {"auc": verification.hist_auc(pos, neg),
            # Best threshold chosen on this split itself (optimistic).
            "acc_best": verification.hist_best_accuracy(pos, neg),
            "count": float(sums["count"])}

  # --- data --------------------------------------------------------------
  def data_root(self) -> str:
    cfg = self.config.data
    if cfg.root:
      return cfg.root
    from facejax.data import synthetic  # pylint: disable=g-import-not-at-top
    return synthetic.ensure("fiw", cfg.synthetic_dir,
                            num_families=cfg.synthetic_families,
                            size=cfg.synthetic_size, seed=cfg.synthetic_seed)

  def source(self, split: str) -> kin_data.KinPairSource:
    cfg = self.config.data
    name = {"train": cfg.train_file, "valid": cfg.val_file,
            "val": cfg.val_file, "test": cfg.test_file}.get(split, split)
    if os.path.exists(name):
      name = os.path.abspath(name)
    return kin_data.load_split(self.data_root(), name)

  def balance(self, src):
    return src

  def preprocess(self, train: bool) -> kin_data.KinPairPreprocess:
    cfg = self.config.data
    aug = transforms.Augment(flip=True) if train and cfg.flip else None
    return kin_data.KinPairPreprocess(transforms.Preprocess(
        image_size=cfg.image_size, normalize=cfg.normalize,
        crop_fraction=cfg.crop_fraction, augment=aug, seed=self.config.seed,
        label_keys=()))

  def train_dataset(self, start_step: int = 0, train_src=None):
    cfg = self.config
    return kin_data.kinship_train_dataset(
        self.source("train").positives(), self.preprocess(True),
        cfg.data.batch_size, cfg.seed, cfg.data.num_workers, start_step)

  def baseline(self, train_src, eval_src) -> dict[str, float]:
    """ROC AUC of the raw-pixel cosine (16 px grey) on the eval pairs."""
    del train_src
    return {"pixel_auc": kinship_eval.pixel_baseline_auc(eval_src)}

