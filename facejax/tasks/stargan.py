"""StarGAN on any number of CelebA- and RaFD-format data sets at once.

State task (see `facejax.tasks.base`). One jitted step per global step:
the discriminator is updated every step (WGAN-GP + masked domain
classification), the generator every `loss.n_critic`-th step (adversarial
+ masked classification of the translation + L1 cycle reconstruction).
The two kinds of step are two compiled programs (`step_kinds`; the loop
passes `step_args(step)`), each serving every data set (all examples carry
the full label vector + mask). Not one program with `lax.cond`: XLA:CPU
does not canonicalise convolutions inside a conditional's branch, so the
generator's kernel gradients there ran 120x slower (a 128 px generator
step took minutes; docs/performance.md section 10).
Data sets take turns per critic group (`pipeline.round_robin_dataset`
with group = n_critic), so the generator steps cycle through them.

Learning rates: 'linear' (the paper: constant, then linear decay to zero
over the last `optim.decay_steps`, default the second half), 'official'
(the official code's quirk: lr_init / decay_steps subtracted every
`optim.lr_update_step` steps in the decay phase, i.e. almost no decay),
or 'constant'.

Evaluation: reconstruction L1 and the discriminator's opinion always;
with `eval.classifier_workdir` (an `attribute_classifier` workdir on the
same data sets) the classifier's accuracy on the requested attribute of
translated images, vs on the untranslated inputs.
facejax.evaluators.stargan.report (launch.evaluate) gives the
per-attribute table; `on_eval` writes workdir/samples/step_N.png.
"""

import os
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from PIL import Image

from facejax import runtime
from facejax.evaluators import image_grid
from facejax.data import stargan as sets_lib
from facejax.data import sources
from facejax.data import pipeline
from facejax.models import stargan as model_lib
from facejax.tasks import base as task_base
from facejax.tasks import frozen as frozen_lib
from facejax.train import state as state_lib
from facejax.train import steps as steps_lib

GanState = state_lib.GanState
SCHEDULES = ("linear", "official", "constant")
_EVAL_SEED = 2**30  # fold_in offset of the evaluation targets


def learning_rate(cfg: ml_collections.ConfigDict, lr0: float,
                  total_steps: int, step):
  """The generator's or discriminator's lr at `step` (jnp or Python)."""
  decay = int(cfg.decay_steps) if cfg.decay_steps >= 0 else total_steps // 2
  decay = max(1, decay)
  start = total_steps - decay
  if cfg.schedule == "constant":
    return lr0 * jnp.ones_like(jnp.asarray(step, jnp.float32))
  if cfg.schedule == "linear":
    frac = jnp.clip((jnp.asarray(step, jnp.float32) - start) / decay, 0, 1)
    return lr0 * (1.0 - frac)
  if cfg.schedule == "official":
    # lr -= lr0 / decay after each step i+1 with (i+1) % U == 0, i+1 > start.
    u = int(cfg.lr_update_step)
    n = jnp.maximum(0, jnp.asarray(step) // u - start // u)
    return lr0 * (1.0 - n.astype(jnp.float32) / decay)
  raise ValueError(f"config key optim.schedule: unknown {cfg.schedule!r}; "
                   f"choose one of {SCHEDULES}")


class Task(task_base.Task):
  """StarGAN with multi-data-set masked labels."""

  progress_keys = ("d_loss", "g_loss", "g_rec")
  finite_keys = ("d_loss", "g_loss")

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    m, d = config.model, config.data
    self.layout = sets_lib.make_layout(d)
    model_lib.check_geometry(d.image_size, m.d_repeat_num)
    if config.loss.n_critic < 1:
      raise ValueError("config key loss.n_critic must be >= 1")
    if config.optim.schedule not in SCHEDULES:
      raise ValueError(f"config key optim.schedule: unknown "
                       f"{config.optim.schedule!r}; choose one of "
                       f"{SCHEDULES}")
    if m.target_mode not in sets_lib.TARGET_MODES:
      raise ValueError(f"config key model.target_mode: unknown "
                       f"{m.target_mode!r}; choose one of "
                       f"{sets_lib.TARGET_MODES}")
    dtype = jnp.dtype(m.get("dtype", "float32"))
    self.gen = model_lib.Generator(m.g_conv_dim, m.g_repeat_num,
                                   m.conv_impl, dtype)
    self.disc = model_lib.Discriminator(d.image_size, m.d_conv_dim,
                                        self.layout.cls_dim, m.d_repeat_num,
                                        m.conv_impl, dtype)
    self.tx_d = self._optimizer(config.optim.d_lr, 1)
    self.tx_g = self._optimizer(config.optim.g_lr, config.loss.n_critic)
    self.classifier = None  # set by load_frozen when configured
    self.best_metric = (("clf_target_acc", "max")
                        if config.eval.classifier_workdir
                        else ("rec_l1", "min"))

  # --- identity / shapes -------------------------------------------------
  def meta(self) -> dict[str, Any]:
    m = self.config.model
    meta = {"task": "stargan", "labels": self.layout.to_json(),
            "image_size": self.config.data.image_size,
            "g": [m.g_conv_dim, m.g_repeat_num],
            "d": [m.d_conv_dim, m.d_repeat_num]}
    if not self.layout.mask_dim:
      # One data set has no mask input since this release: a workdir
      # trained with one (3 + c_dim + 1 channels) is named as such.
      meta["data_set_mask"] = False
    return meta

  def dummy_batch(self, batch_size: int) -> dict[str, np.ndarray]:
    return sets_lib.dummy_batch(self.layout, self.config.data.image_size,
                                batch_size)

  def describe(self, state) -> str:
    return (f"StarGAN: G {state_lib.count_params(state.gen):,} + D "
            f"{state_lib.count_params(state.disc):,} params; labels "
            f"{self.layout.summary()}")

  # --- state -------------------------------------------------------------
  def init_state(self, rng: jax.Array) -> GanState:
    g_rng, d_rng = jax.random.split(rng)
    s = self.config.data.image_size
    x = jnp.zeros((1, s, s, 3), jnp.float32)
    c = jnp.zeros((1, self.layout.label_dim), jnp.float32)
    gen = self.gen.init(g_rng, x, c)["params"]
    disc = self.disc.init(d_rng, x)["params"]
    return self._state(gen, disc)

  def _state(self, gen, disc) -> GanState:
    zero = jnp.zeros((), jnp.float32)
    return GanState(step=jnp.zeros((), jnp.int32), gen=gen, disc=disc,
                    gen_opt=self.tx_g.init(gen),
                    disc_opt=self.tx_d.init(disc),
                    g_metrics={k: zero for k in ("g_loss", "g_fake",
                                                 "g_rec", "g_cls",
                                                 "g_grad_norm")})

  def has_import(self) -> bool:
    return bool(self.config.model.get("init_from", ""))

  def import_pretrained(self, state: GanState) -> GanState:
    from facejax.convert import stargan as stargan_convert  # pylint: disable=g-import-not-at-top
    m = self.config.model
    logging.info("importing StarGAN weights from %s", m.init_from)
    gen, disc = stargan_convert.load(m.init_from, state.gen, state.disc,
                                    m.g_repeat_num, m.d_repeat_num)
    return self._state(gen, disc)

  def learning_rate(self, step: int) -> float:
    o = self.config.optim
    return float(learning_rate(o, o.g_lr, self.config.total_steps, step))

  # --- frozen classifier (evaluation) ------------------------------------
  def load_frozen(self):
    workdir = self.config.eval.classifier_workdir
    if not workdir:
      return frozen_lib.NoClassifier()
    params, batch_stats, clf_task, clf_config = frozen_lib.load_classifier(
        workdir)
    if clf_task.layout.to_json() != self.layout.to_json():
      raise ValueError(
          f"config key eval.classifier_workdir={workdir!r}: the classifier "
          f"was trained on other labels ({clf_task.layout.summary()}) than "
          f"this model's ({self.layout.summary()})")
    self.classifier = clf_task
    self.classifier_size = clf_config.data.image_size
    return frozen_lib.Classifier(params, batch_stats)

  def _classify(self, frozen, images):
    s = self.classifier_size
    if images.shape[1] != s:
      images = jax.image.resize(images, images.shape[:1] + (s, s, 3),
                                "linear")
    logits, _ = self.classifier.forward(frozen.params, frozen.batch_stats,
                                        images)
    return logits

  # --- train / eval ------------------------------------------------------
  def _d_losses(self, disc, gen, x, c_org, c_trg, w, rng):
    lam = self.config.loss
    src_real, cls_real = self.disc.apply({"params": disc}, x)
    x_fake = jax.lax.stop_gradient(self.gen.apply({"params": gen}, x,
                                                  c_trg))
    src_fake, _ = self.disc.apply({"params": disc}, x_fake)
    d_real, d_fake = steps_lib.wgan_d(src_real, src_fake, w)
    d_cls = steps_lib.masked_mean(
        sets_lib.masked_cls_loss(cls_real, c_org, self.layout), w)
    alpha = jax.random.uniform(rng, (x.shape[0], 1, 1, 1))
    x_hat = alpha * x + (1.0 - alpha) * x_fake
    # The same D (same parameters) in the form that suits a second order.
    pen_disc = self.disc.clone(impl=runtime.penalty_conv_impl(
        self.disc.impl, x_hat.shape, self.disc.conv_dim))
    src_fn = lambda xh: pen_disc.apply({"params": disc}, xh)[0]
    d_gp = steps_lib.masked_mean(steps_lib.gradient_penalty(src_fn, x_hat), w)
    loss = d_real + d_fake + lam.lambda_cls * d_cls + lam.lambda_gp * d_gp
    return loss, ({"d_real": d_real, "d_fake": d_fake, "d_cls": d_cls,
                   "d_gp": d_gp}, None)

  def _g_losses(self, gen, disc, x, c_org, c_trg, w):
    lam = self.config.loss
    x_fake = self.gen.apply({"params": gen}, x, c_trg)
    src, cls = self.disc.apply({"params": disc}, x_fake)
    g_fake = steps_lib.wgan_g(src, w)
    g_cls = steps_lib.masked_mean(
        sets_lib.masked_cls_loss(cls, c_trg, self.layout), w)
    x_rec = self.gen.apply({"params": gen}, x_fake, c_org)
    g_rec = steps_lib.masked_mean(jnp.abs(x - x_rec).mean((1, 2, 3)), w)
    loss = g_fake + lam.lambda_rec * g_rec + lam.lambda_cls * g_cls
    return loss, ({"g_fake": g_fake, "g_rec": g_rec, "g_cls": g_cls}, None)

  def _optimizer(self, lr0: float, every: int
                 ) -> optax.GradientTransformation:
    """Adam at `learning_rate` for a network updated every `every` steps.

    The schedule is optax's (it counts this network's own updates): its
    count-th update is global step (count + 1) * every - 1 (`step_args`),
    where the loop's learning rate is read.
    """
    o, total = self.config.optim, self.config.total_steps
    return optax.chain(
        optax.scale_by_adam(b1=o.b1, b2=o.b2),
        optax.scale_by_learning_rate(
            lambda count: learning_rate(o, lr0, total,
                                        (count + 1) * every - 1)))

  # Keyword arguments of train_step: one compiled program per kind.
  step_kinds = ({"g_step": False}, {"g_step": True})

  def step_args(self, step: int) -> dict[str, bool]:
    """train_step's keyword arguments for global step `step` (0-based)."""
    return {"g_step": (step + 1) % self.config.loss.n_critic == 0}

  def train_step(self, state: GanState, batch: dict, frozen, *,
                 g_step: bool):
    """The D update, then (if `g_step`) the G update against the new D."""
    del frozen  # the classifier is for evaluation only
    cfg = self.config
    rng = jax.random.fold_in(jax.random.key(cfg.seed), state.step)
    r_trg, r_gp = jax.random.split(rng)
    x, c_org, w = batch["image"], batch["label"], batch["mask"]
    c_trg = sets_lib.sample_targets(r_trg, c_org, self.layout,
                                    cfg.model.target_mode)

    disc, disc_opt, d_metrics, _ = steps_lib.gan_update(
        lambda d: self._d_losses(d, state.gen, x, c_org, c_trg, w, r_gp),
        state.disc, state.disc_opt, self.tx_d, "d")

    gen, gen_opt, g_metrics = state.gen, state.gen_opt, state.g_metrics
    if g_step:
      gen, gen_opt, g_metrics, _ = steps_lib.gan_update(
          lambda g: self._g_losses(g, disc, x, c_org, c_trg, w),
          gen, gen_opt, self.tx_g, "g")
    new_state = state.replace(step=state.step + 1, gen=gen, disc=disc,
                              gen_opt=gen_opt, disc_opt=disc_opt,
                              g_metrics=g_metrics)
    metrics = {**d_metrics, **g_metrics,
               "g_step": jnp.float32(g_step), "image_mean": x.mean()}
    return new_state, metrics

  def translate(self, gen, images, labels):
    """G(images, target labels) in [-1, 1]."""
    return self.gen.apply({"params": gen}, images, labels)

  def eval_step(self, state: GanState, batch: dict, frozen):
    """Sums over a batch at fixed random targets (same for every batch)."""
    x, c_org, w = batch["image"], batch["label"], batch["mask"]
    rng = jax.random.fold_in(jax.random.key(self.config.seed), _EVAL_SEED)
    c_trg = sets_lib.sample_targets(rng, c_org, self.layout, "random")
    x_fake = self.translate(state.gen, x, c_trg)
    x_rec = self.translate(state.gen, x_fake, c_org)
    cols = sets_lib.active_columns(c_org, self.layout) * w[:, None]
    _, d_cls = self.disc.apply({"params": state.disc}, x_fake)
    sums = {"count": w.sum(), "cols": cols.sum(),
            "rec_l1": (jnp.abs(x - x_rec).mean((1, 2, 3)) * w).sum(),
            "d_fake_acc": (sets_lib.block_correct(d_cls, c_trg, self.layout)
                           * cols).sum()}
    if isinstance(frozen, frozen_lib.Classifier):
      fake = self._classify(frozen, x_fake)
      real = self._classify(frozen, x)
      # Columns the target changed: did the classifier see the change?
      changed = (jnp.abs(c_trg - c_org)[:, :self.layout.cls_dim] > 0.5)
      changed = changed * cols
      sums["changed"] = changed.sum()
      for name, logits in (("clf_target_acc", fake), ("clf_input_acc", real)):
        ok = sets_lib.block_correct(logits, c_trg, self.layout)
        sums[name] = (ok * changed).sum()
      sums["clf_real_acc"] = (sets_lib.block_correct(real, c_org,
                                                     self.layout)
                              * cols).sum()
    return sums

  @staticmethod
  def summarize(sums: dict[str, np.ndarray]) -> dict[str, float]:
    n, cols = max(float(sums["count"]), 1.0), max(float(sums["cols"]), 1.0)
    out = {"rec_l1": float(sums["rec_l1"]) / n,
           "d_fake_acc": float(sums["d_fake_acc"]) / cols,
           "count": float(sums["count"])}
    if "changed" in sums:
      changed = max(float(sums["changed"]), 1.0)
      out["clf_target_acc"] = float(sums["clf_target_acc"]) / changed
      out["clf_input_acc"] = float(sums["clf_input_acc"]) / changed
      out["clf_real_acc"] = float(sums["clf_real_acc"]) / cols
    return out

  # --- data --------------------------------------------------------------
  def data_root(self) -> str:
    """Writes the synthetic stand-ins of sets without a root."""
    sets_lib.ensure_synthetic(self.config.data)
    return self.config.data.root or os.getcwd()

  def sources(self, split: str) -> list:
    self.data_root()
    return [sets_lib.open_source(self.config.data, self.layout, k, split)
            for k in range(self.layout.num_sets)]

  def source(self, split: str):
    """All data sets' `split` one after another (mixed eval batches)."""
    return sources.ConcatSource(self.sources(split))

  def balance(self, src):
    return src

  def preprocess(self, train: bool) -> sets_lib.AttributeFacePreprocess:
    d = self.config.data
    return sets_lib.AttributeFacePreprocess(d.image_size, flip=train and d.flip,
                                   seed=self.config.seed)

  def train_dataset(self, start_step: int = 0, train_src=None):
    """Data sets in turn, one critic group (n_critic steps) each."""
    d = self.config.data
    srcs = self.sources("train")
    group = d.round_robin_group or self.config.loss.n_critic
    pre = self.preprocess(train=True)
    return pipeline.round_robin_dataset(
        srcs, [pre] * len(srcs), d.batch_size, self.config.seed,
        d.num_workers, start_step=start_step, group=group)

  def baseline(self, train_src, eval_src) -> dict[str, float]:
    del train_src, eval_src
    return {}

  # --- samples and report ------------------------------------------------
  def sample_rows(self, split: str = "valid", per_set: int = 2):
    """[(data set index, preprocessed example)] for sample grids."""
    pre = self.preprocess(train=False)
    rows = []
    for k, src in enumerate(self.sources(split)):
      for i in range(min(per_set, len(src))):
        rows.append((k, pre((i, src[i]))))
    return rows

  def grid_columns(self) -> list[tuple[str, tuple[int, str] | None]]:
    """[(title, (data set, attribute) or None for the input)]."""
    columns = [("input", None)]
    for k, block in enumerate(self.layout.blocks):
      for name in block.names:
        columns.append((f"{block.name}:{name}", (k, name)))
    return columns

  def grid_targets(self, k: int, label: np.ndarray) -> np.ndarray:
    """[columns - 1, label_dim] targets of one example of data set k."""
    settings = {n: t for n, _, t in
                self.layout.target_settings(k, label[None])}
    out = []
    for _, (tk, name) in self.grid_columns()[1:]:
      if tk == k:
        out.append(settings[name][0])
      else:
        # Another data set's attribute: its block with the other mask
        # (the reference's zero_rafd + mask_celeba and vice versa).
        out.append(self.layout.encode(tk, self._first_setting(tk, name)))
    return np.stack(out)

  def translation_grid(self, gen, examples, row_labels=None) -> Image.Image:
    """Input + one column per target setting of every data set.

    One generator call per row (all of the row's targets as one batch),
    so every row runs the same compiled program.
    """
    columns = self.grid_columns()
    rows = []
    for k, ex in examples:
      targets = self.grid_targets(k, np.asarray(ex["label"], np.float32))
      images = np.repeat(np.asarray(ex["image"])[None], len(targets), 0)
      fakes = np.asarray(self._translate_jit(gen, images, targets))
      rows.append([ex["image"], *fakes])
    return make_grid(rows, [c for c, _ in columns], row_labels)

  def _first_setting(self, k: int, name: str):
    block = self.layout.blocks[k]
    i = block.names.index(name)
    if block.format == "rafd":
      return i
    values = np.zeros((block.size,), np.float32)
    values[i] = 1.0
    return values

  @property
  def _translate_jit(self):
    if not hasattr(self, "_tj"):
      self._tj = jax.jit(self.translate)
    return self._tj

  def on_eval(self, state, frozen, step: int, workdir: str) -> None:
    del frozen
    if jax.process_index() != 0:
      return
    n = self.config.eval.samples_per_set
    if not n:
      return
    gen = jax.device_get(state.gen)
    grid = self.translation_grid(gen, self.sample_rows("valid", n))
    out = os.path.join(workdir, "samples")
    os.makedirs(out, exist_ok=True)
    grid.save(os.path.join(out, f"step_{step}.png"))

  def has_classifier(self, frozen) -> bool:
    """Whether `frozen` holds the attribute classifier (evaluation)."""
    return isinstance(frozen, frozen_lib.Classifier)

  def report_step(self, state, frozen, batch):
    """Per example of a batch translated to `batch['target']`.

    Returns rec [B] (L1 of the cycle reconstruction) and, with a
    classifier, hit / base [B, cls_dim]: whether the classifier finds
    each target column's value in the translation / in the input.
    """
    x, c_org, c_trg = batch["image"], batch["label"], batch["target"]
    x_fake = self.translate(state.gen, x, c_trg)
    x_rec = self.translate(state.gen, x_fake, c_org)
    out = {"rec": jnp.abs(x_rec - x).mean((1, 2, 3)), "mask": batch["mask"]}
    if isinstance(frozen, frozen_lib.Classifier):
      for key, images in (("hit", x_fake), ("base", x)):
        logits = self._classify(frozen, images)
        out[key] = sets_lib.block_correct(logits, c_trg, self.layout)
    return out


def make_grid(rows: list[list[np.ndarray]], titles: list[str],
              row_labels: list[str] | None = None) -> Image.Image:
  """A grid of [-1, 1] images: one row per input, titled columns (whole
  titles, wrapped to the cell width), rows labelled when given."""
  return image_grid.make_signed_grid(rows, titles, row_labels)
