"""SwinFace multitask training: recognition + 42 analysis heads, masked.

State-task form (`facejax.tasks.base`): one AdamW with two learning-rate
groups (backbone at lr * optim.backbone_lr_scale, gradient clipping on the
backbone only, as the reference) and the step-dependent age loss, which
the supervised adapter cannot express.

Each task's loss averages only over the samples that carry its label
(`*_mask` fields of `facejax.data.swinface`); a sample without a label
contributes exactly zero gradient to that head. Stage 1 trains the
backbone, recognition subnet and identity classifier only; stage 2 starts
from stage 1 (`model.init_from`) and trains everything.
"""

import os
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from facejax import optim
from facejax.evaluators import swinface as swinface_eval
from facejax.data import stargan
from facejax.data import sources
from facejax.data import swinface as swinface_data
from facejax.data.formats import raf_db
from facejax.data import transforms
from facejax.models import swinface
from facejax.tasks import base
from facejax.train import state as state_lib
from facejax.train import steps as steps_lib

NUM_ATTRS = len(swinface.BINARY_TASKS)
# Columns of the binary heads in the `attrs` label vector.
_ATTR_COL = {n: i for i, n in enumerate(swinface.BINARY_TASKS)}
HIST_BINS = 400  # cosine-similarity histogram for verification metrics


class Task(base.Task):
  """SwinFace (see module docstring)."""

  best_metric = ("verification_acc", "max")
  progress_keys = ("loss", "rec_loss", "analysis_loss")
  finite_keys = ("loss", "grad_norm")

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    if config.stage not in (1, 2):
      raise ValueError(f"config key stage: 1 or 2, got {config.stage}")
    self.stage = int(config.stage)
    self.model = swinface.create(config.model)
    size = self.model.backbone["img_size"]
    if config.data.image_size != size:
      raise ValueError(f"config key data.image_size={config.data.image_size}"
                       f" differs from the backbone's img_size {size} "
                       f"(config keys model.swin.*)")
    if config.optim.name != "adamw":
      raise ValueError("config key optim.name: SwinFace uses 'adamw'")
    self.num_classes = self._num_classes()

  # --- identity / shapes -------------------------------------------------
  def meta(self) -> dict[str, Any]:
    m = self.config.model
    return {"task": "swinface", "model": m.name, "swin": m.swin.variant,
            "num_classes": self.num_classes}

  def _num_classes(self) -> int:
    n = int(self.config.model.num_identities)
    if not n:
      n = len(self._identity_split()[0])
    k = max(1, int(self.config.model.classifier_multiple))
    return -(-n // k) * k

  def dummy_batch(self, batch_size: int) -> dict[str, np.ndarray]:
    s = self.config.data.image_size
    out = {"image": np.zeros((batch_size, s, s, 3), np.float32),
           "mask": np.ones((batch_size,), np.float32)}
    for k, v in swinface_data.empty_labels(NUM_ATTRS).items():
      out[k] = np.zeros((batch_size,) + v.shape, v.dtype)
    return out

  def xla_cpu_options(self) -> dict[str, str]:
    """Swin's dense layers run faster on XLA's Eigen matmuls than on
    YNNPACK's on CPU (docs/performance.md section 7): only reductions stay
    on YNNPACK in its steps."""
    return {"xla_cpu_experimental_ynn_fusion_type":
                "LIBRARY_FUSION_TYPE_REDUCE"}

  def describe(self, state) -> str:
    n = state_lib.count_params(state.params["model"])
    c = state_lib.count_params(state.params["id_classifier"])
    return (f"swinface stage {self.stage} ({self.config.model.swin.variant})"
            f": {n:,} params + {c:,} classifier ({self.num_classes} ids)")

  # --- variables and optimizer --------------------------------------------
  def _init_variables(self, rng):
    s = self.config.data.image_size
    images = jnp.zeros((1, s, s, 3), jnp.float32)
    v = self.model.init({"params": rng, "dropout": rng}, images)
    clf = swinface.CosFaceClassifier(self.num_classes)
    c = clf.init(jax.random.fold_in(rng, 1),
                 jnp.zeros((1, self.config.model.embedding_dim)))
    return {"params": {"model": v["params"], "id_classifier": c["params"]},
            "batch_stats": v["batch_stats"]}

  def _labels(self, params):
    """'backbone' | 'heads' | 'frozen' per parameter."""
    def label(path, _):
      top = path[0].key
      sub = path[1].key if len(path) > 1 else ""
      if top == "model" and sub == "swin":
        return "backbone"
      if self.stage == 1 and top == "model" and sub == "branches":
        return "frozen"   # stage 1: recognition only
      return "heads"
    return jax.tree_util.tree_map_with_path(label, params)

  def _tx(self):
    cfg = self.config.optim
    schedule = optim.create_schedule(cfg, self.config.total_steps)
    scale = float(cfg.backbone_lr_scale)
    adamw = lambda sched: optax.adamw(sched, weight_decay=cfg.weight_decay)
    backbone = adamw(lambda step: schedule(step) * scale)
    if cfg.clip_norm:
      backbone = optax.chain(optax.clip_by_global_norm(cfg.clip_norm),
                             backbone)
    return optax.multi_transform(
        {"backbone": backbone, "heads": adamw(schedule),
         "frozen": optax.set_to_zero()}, self._labels), schedule

  def init_state(self, rng):
    v = self._init_variables(rng)
    tx, _ = self._tx()
    return state_lib.TrainState(
        step=jnp.zeros((), jnp.int32), params=v["params"],
        batch_stats=v["batch_stats"], opt_state=tx.init(v["params"]))

  @classmethod
  def inference_config(cls, config, from_weights: bool,
                       frozen_networks: bool) -> None:
    """Official weights: the identity count and the expression classes
    (RAF-DB's, its training set) that only the training data would give."""
    del frozen_networks
    if from_weights:
      config.model.num_identities = config.model.num_identities or 1
      config.data.expression.classes = (
          tuple(config.data.expression.classes) or raf_db.CLASSES)

  def import_pretrained(self, state):
    """model.init_from: a facejax workdir (stage 1) or a SwinFace .pt."""
    path = self.config.model.init_from
    params, stats = state.params, state.batch_stats
    if os.path.isdir(path):
      from facejax import runs  # pylint: disable=g-import-not-at-top
      from facejax import tasks  # pylint: disable=g-import-not-at-top
      cfg = runs.read_config(path, "model.init_from")
      loaded, step = runs.restore_host(path, tasks.get(cfg.task)(cfg),
                                       "model.init_from")
      params, stats = _merge(params, loaded.params, path), _merge(
          stats, loaded.batch_stats or {}, path)
      logging.info("stage 1 weights from %s (step %d)", path, step)
    else:
      from facejax.convert import swinface as swinface_convert  # pylint: disable=g-import-not-at-top
      variables = swinface_convert.load_checkpoint(
          path, {"params": params["model"], "batch_stats": stats})
      params = dict(params, model=variables["params"])
      stats = variables["batch_stats"]
    tx, _ = self._tx()
    return state.replace(params=params, batch_stats=stats,
                         opt_state=tx.init(params))

  def load_frozen(self):
    return base.Frozen()

  def learning_rate(self, step: int) -> float:
    return float(self._tx()[1](step))

  # --- train / eval ------------------------------------------------------
  def _forward(self, params, batch_stats, images, train, rng=None):
    model = self.model if self.stage == 2 or not train else (
        self.model.clone(analysis=False))
    variables = {"params": params["model"], "batch_stats": batch_stats}
    if not train:
      return model.apply(variables, images, train=False), batch_stats
    out, new = model.apply(variables, images, train=True,
                           rngs={"dropout": rng}, mutable=["batch_stats"])
    # Stage 1 updates only the recognition statistics.
    return out, {**batch_stats, **new["batch_stats"]}

  def losses(self, out, params, batch, lam, rng=None):
    """Dict of every task's masked-mean loss (and the total).

    With `rng` and model.sample_rate < 1 the CosFace softmax runs over a
    partial-FC sample of the class centres.
    """
    cfg = self.config.loss
    valid = batch["mask"]
    labels, index = batch["identity"], None
    rate = float(self.config.model.get("sample_rate", 1.0))
    if rng is not None and rate < 1.0:
      index, labels = swinface.partial_fc_sample(
          jax.random.fold_in(rng, 1), labels, batch["identity_mask"] * valid,
          self.num_classes, rate)
    cos = swinface.CosFaceClassifier(self.num_classes).apply(
        {"params": params["id_classifier"]}, out["embedding"], index)
    rec = swinface.cosface_loss(cos, labels, cfg.margin, cfg.scale)
    losses = {"rec_loss": steps_lib.masked_mean(
        rec, batch["identity_mask"] * valid)}
    total = cfg.recognition_weight * losses["rec_loss"]
    if self.stage == 2:
      age = swinface.age_loss(out["Age"], batch["age"], lam, cfg.age_sigma)
      expr = optax.softmax_cross_entropy_with_integer_labels(
          out["Expression"], batch["expression"])
      logits = jnp.stack([out[n] for n in swinface.BINARY_TASKS], 1)
      attr = optax.softmax_cross_entropy_with_integer_labels(
          logits, batch["attrs"].astype(jnp.int32))           # [B, 40]
      attr_mask = batch["attrs_mask"] * valid[:, None]
      per_attr = (attr * attr_mask).sum(0) / jnp.maximum(
          attr_mask.sum(0), 1.0)                               # [40]
      losses["age_loss"] = steps_lib.masked_mean(
          age, batch["age_mask"] * valid)
      losses["expression_loss"] = steps_lib.masked_mean(
          expr, batch["expression_mask"] * valid)
      losses["attr_loss"] = per_attr.mean()
      analysis = (cfg.age_weight * losses["age_loss"]
                  + losses["expression_loss"]
                  + cfg.get("attr_weight", 1.0) * per_attr.sum())
      losses["analysis_loss"] = analysis
      total = total + cfg.analysis_weight * analysis
    else:
      losses["analysis_loss"] = jnp.zeros(())
    losses["loss"] = total
    return losses

  def train_step(self, state, batch, frozen):
    def loss_fn(params, batch_stats, batch, ctx):
      lam = ctx.step.astype(jnp.float32) / self.config.total_steps
      out, stats = self._forward(params, batch_stats, batch["image"], True,
                                 ctx.rng)
      losses = self.losses(out, params, batch, lam, ctx.rng)
      return losses["loss"], (losses, stats)
    tx, _ = self._tx()
    step = steps_lib.supervised_step(loss_fn, tx, self.config.seed)
    return step(state, batch, frozen)

  def predict(self, state, images):
    """Every head's output plus the L2-normalised embedding."""
    out, _ = self._forward(state.params, state.batch_stats, images, False)
    emb = out["embedding"]
    out["embedding"] = emb * jax.lax.rsqrt(
        jnp.sum(emb**2, -1, keepdims=True) + 1e-12)
    return out

  def eval_step(self, state, batch, frozen):
    """Per-batch sums; `summarize` turns them into metrics."""
    del frozen
    b = batch["image"].shape[0]
    # One forward pass over [image; image_b]: one compiled network.
    both = self.predict(state, jnp.concatenate([batch["image"],
                                                batch["image_b"]]))
    out = jax.tree.map(lambda x: x[:b], both)
    emb_b = both["embedding"][b:]
    valid = batch["mask"]
    sums = {}
    # Verification: histograms of cos(a, b) for same / different pairs.
    pair = batch["pair_mask"] * valid
    sim = jnp.sum(out["embedding"] * emb_b, -1)
    idx = jnp.clip(((sim + 1.0) / 2.0 * HIST_BINS).astype(jnp.int32), 0,
                   HIST_BINS - 1)
    onehot = jax.nn.one_hot(idx, HIST_BINS)
    sums["ver_pos"] = (onehot * (pair * batch["same"])[:, None]).sum(0)
    sums["ver_neg"] = (onehot * (pair * (1 - batch["same"]))[:, None]).sum(0)
    m = batch["age_mask"] * valid
    sums["age_abs_err"] = (jnp.abs(out["Age"] - batch["age"]) * m).sum()
    sums["age_count"] = m.sum()
    m = batch["expression_mask"] * valid
    ok = jnp.argmax(out["Expression"], -1) == batch["expression"]
    sums["expr_correct"] = (ok * m).sum()
    sums["expr_count"] = m.sum()
    logits = jnp.stack([out[n] for n in swinface.BINARY_TASKS], 1)
    m = batch["attrs_mask"] * valid[:, None]
    ok = jnp.argmax(logits, -1) == batch["attrs"].astype(jnp.int32)
    sums["attr_correct"] = (ok * m).sum(0)                  # [40]
    sums["attr_count"] = m.sum(0)
    # Channel attention per branch and level, over labelled analysis rows.
    sums["attention"] = (out["attention"] * valid[:, None, None]).sum(0)
    sums["count"] = valid.sum()
    return sums

  @staticmethod
  def summarize(sums: dict[str, np.ndarray]) -> dict[str, float]:
    out = swinface_eval.verification_metrics(sums["ver_pos"],
                                             sums["ver_neg"])
    if sums["age_count"]:
      out["age_mae"] = float(sums["age_abs_err"] / sums["age_count"])
    if sums["expr_count"]:
      out["expression_acc"] = float(sums["expr_correct"] /
                                    sums["expr_count"])
    have = sums["attr_count"] > 0
    if have.any():
      acc = sums["attr_correct"][have] / sums["attr_count"][have]
      out["attr_mean_acc"] = float(acc.mean())
      g = _ATTR_COL["Gender"]
      if have[g]:
        out["gender_acc"] = float(sums["attr_correct"][g] /
                                  sums["attr_count"][g])
    return out

  # --- data --------------------------------------------------------------
  def data_root(self) -> str:
    """Folder of the synthetic stand-ins (recorded by the training loop)."""
    d = self.config.data
    return os.path.abspath(d.root or d.synthetic_dir)

  def _roots(self) -> dict[str, str]:
    """Each source's folder; synthetic stand-ins written when empty."""
    d = self.config.data
    out = {}
    writers = {"identity": ("fiw", dict(
        num_families=int(d.identity.synthetic_families))),
               "age": ("age_csv", dict(num=int(d.age.synthetic_num))),
               "celeba": ("celeba", dict(num=int(d.celeba.synthetic_num))),
               "expression": ("rafd", dict(
                   num=int(d.expression.synthetic_num)))}
    for kind, (layout, kwargs) in writers.items():
      root = d[kind].root
      if not root:
        from facejax.data import synthetic  # pylint: disable=g-import-not-at-top
        root = synthetic.ensure(
            layout, os.path.join(self.data_root(), kind),
            size=int(d.synthetic_size), seed=int(d.synthetic_seed), **kwargs)
        if kind == "identity":
          root = os.path.join(root, "images")
      out[kind] = root
    return out

  def _identity_split(self):
    d = self.config.data.identity
    folders = swinface_data.identity_folders(self._roots()["identity"],
                                         "data.identity")
    return swinface_data.split_identities(folders, d.valid_fraction,
                                      self.config.seed)

  def _sources(self, split: str) -> list:
    """[identity, age, celeba, expression] sources of `split`."""
    d = self.config.data
    roots = self._roots()
    train_ids, valid_ids = self._identity_split()
    if split == "train":
      ident = swinface_data.identity_source(train_ids, NUM_ATTRS)
    else:
      ident = swinface_data.VerificationPairSource(valid_ids, int(d.identity.num_pairs),
                                   self.config.seed + (split == "test"),
                                   NUM_ATTRS)
    if d.age.get("format", "age_csv") != "age_csv":
      age = swinface_data.release_age_source(d.age, split, NUM_ATTRS,
                                         _ATTR_COL["Gender"], "data.age")
    else:
      name = {"train": d.age.train_file, "valid": d.age.eval_file,
              "test": d.age.test_file}[split]
      age = swinface_data.age_source(os.path.join(roots["age"], name),
                                 NUM_ATTRS, d.age.gender_column,
                                 _ATTR_COL["Gender"], "data.age",
                                 d.age.get("min_age", 0.0),
                                 d.age.get("max_age", 120.0))
    columns = [swinface.celeba_column(t) for t in swinface.BINARY_TASKS]
    celeba = swinface_data.celeba_source(roots["celeba"], columns, split,
                                     d.celeba, "data.celeba")
    expr = swinface_data.expression_source(
        roots["expression"], split, NUM_ATTRS, d.expression,
        swinface.EXPRESSION_CLASSES, "data.expression")
    return [ident, age, celeba, expr]

  def source(self, split: str):
    if split not in ("train", "valid", "test"):
      raise ValueError(f"split {split!r}: train | valid | test")
    srcs = self._sources(split)
    if split == "train":
      return srcs[0] if self.stage == 1 else sources.ConcatSource(srcs)
    cap = int(self.config.data.eval_max_per_source)
    srcs = [s if len(s) <= cap else sources.SubsetSource(s, range(cap))
            for s in srcs]
    return sources.ConcatSource(srcs[:1] if self.stage == 1 else srcs)

  def balance(self, src):
    return src

  def expression_classes(self) -> tuple[str, ...]:
    d = self.config.data.expression
    if not d.classes and raf_db.release_dir(self._roots()["expression"]):
      return raf_db.CLASSES
    return tuple(d.classes) or stargan.rafd_classes(
        self._roots()["expression"], d.train_dir, "data.expression")

  def face_preprocess(self, train: bool, k: int = 0):
    d = self.config.data
    aug = None
    if train and d.augment.enabled:
      aug = transforms.Augment(flip=d.augment.flip,
                               scale_jitter=d.augment.scale_jitter,
                               color_jitter=d.augment.color_jitter)
    return transforms.Preprocess(
        image_size=d.image_size, normalize=d.normalize, augment=aug,
        seed=self.config.seed + k, skip_bad=d.skip_bad_records,
        label_keys=())

  def preprocess(self, train: bool):
    return swinface_data.MultitaskPreprocess(self.face_preprocess(train),
                                         NUM_ATTRS, pairs=not train)

  def train_dataset(self, start_step: int = 0, train_src=None):
    d = self.config.data
    srcs = self._sources("train")
    mix = (1.0, 0.0, 0.0, 0.0) if self.stage == 1 else tuple(d.mix)
    if len(mix) != len(swinface_data.KINDS):
      raise ValueError(f"config key data.mix: one share per source "
                       f"{swinface_data.KINDS}, got {mix}")
    counts = swinface_data.share_counts(d.batch_size, mix, "data.mix")
    pres = [swinface_data.MultitaskPreprocess(self.face_preprocess(True, k),
                                          NUM_ATTRS)
            for k in range(len(srcs))]
    return swinface_data.mixed_dataset(srcs, pres, counts, self.config.seed,
                                   d.num_workers, start_step)

  def baseline(self, train_src, eval_src) -> dict[str, float]:
    """What label statistics alone score: the bar a trained model beats.

    Majority class of the training labels for gender, every attribute and
    expression; the mean training age for age; 0.5 for balanced pairs.
    """
    def stack(src, key):
      recs = [src[i] for i in range(len(src))]  # labels only, no pixels
      return (np.stack([np.asarray(r[key]) for r in recs]),
              np.stack([np.asarray(r[key + "_mask"]) for r in recs]))

    out = {"chance_verification_acc": 0.5}
    if self.stage == 1:
      return out
    (a_tr, m_tr), (a_ev, m_ev) = stack(train_src, "attrs"), stack(
        eval_src, "attrs")
    majority = (a_tr * m_tr).sum(0) * 2 >= m_tr.sum(0)     # [40] bool
    hit = (a_ev == majority) * m_ev
    have = m_ev.sum(0) > 0
    if have.any():
      acc = hit.sum(0)[have] / m_ev.sum(0)[have]
      out["majority_attr_mean_acc"] = float(acc.mean())
      g = _ATTR_COL["Gender"]
      if have[g]:
        out["majority_gender_acc"] = float(hit[:, g].sum() / m_ev[:, g].sum())
    (e_tr, n_tr), (e_ev, n_ev) = stack(train_src, "expression"), stack(
        eval_src, "expression")
    if n_tr.any() and n_ev.any():
      top = np.bincount(e_tr[n_tr > 0].astype(int)).argmax()
      out["majority_expression_acc"] = float(
          (e_ev[n_ev > 0] == top).mean())
    (y_tr, w_tr), (y_ev, w_ev) = stack(train_src, "age"), stack(
        eval_src, "age")
    if w_tr.any() and w_ev.any():
      out["mean_age_mae"] = float(
          np.abs(y_ev[w_ev > 0] - y_tr[w_tr > 0].mean()).mean())
    return out


def _merge(current: Any, loaded: Any, path: str) -> Any:
  """`loaded` values where the paths match (shapes checked), else current."""
  flat_cur = {jax.tree_util.keystr(p): v for p, v in
              jax.tree_util.tree_leaves_with_path(current)}
  flat_new = {jax.tree_util.keystr(p): v for p, v in
              jax.tree_util.tree_leaves_with_path(loaded)}
  for k, v in flat_new.items():
    if k in flat_cur and np.shape(flat_cur[k]) != np.shape(v):
      raise ValueError(f"model.init_from {path}: {k} has shape "
                       f"{np.shape(v)}, this model {np.shape(flat_cur[k])} "
                       f"(same model.* and identities needed)")
  leaves = [np.asarray(flat_new.get(jax.tree_util.keystr(p), v))
            for p, v in jax.tree_util.tree_leaves_with_path(current)]
  return jax.tree.unflatten(jax.tree.structure(current), leaves)
