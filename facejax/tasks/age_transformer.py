"""HRFAE age transformer: a GAN task in the state-task form (tasks/base.py).

One jitted `train_step(state, batch, frozen)` does, as the reference's
trainer.py (shared/reference/model_lib.md section 6):
  D step: a fresh target age t ~ the reference's rule, x_mod = G(x_a, t)
    (no gradient to G); D loss = w_dis * [mean((D(x_b) - 1)^2) +
    mean(D(x_mod)^2)] + w_gp * R1(x_b), R1 = gamma/2 * mean_b ||d mean(D(x_b))
    / d x_b||^2 (the gradient of the mean over batch *and* patches, hence
    the reference's 1/(B*P) scaling);
  G step: another fresh t; x_rec = G(x_a, a), x_mod = G(x_a, t);
    G loss = w_recon * L1(x_rec, x_a) + w_class * CE(est(x_mod), t) +
    w_adver * mean((D(x_mod) - 1)^2) + w_tv * TV(x_mod), with the updated D.
x_b is a second, independent real batch (`image_b`, see PairedPreprocess).
The frozen age estimator (facejax.tasks.frozen, config.age_loss) is a
step argument: gradients flow through it into G; its variables are never
optimised or checkpointed.

Image domains: the data pipeline yields RGB in [-1, 1] ('unit'); the
networks work in the reference's domain, RGB in [0, 1] minus the ImageNet
mean (std 1, no tanh), so the loss weights mean what they mean in the
reference and the official weights import as they are. The estimator gets
RGB in [0, 1] (the generator's output + mean, unclipped so gradients flow).

Resolution schedule: config.stages = ((steps, image_size, w_recon), ...);
batches change size at a stage boundary (pipeline.Staged; one more
compile) and w_recon is chosen by state.step inside the step.
"""

import functools
import os
from typing import Any, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from facejax.tasks import frozen as frozen_lib
from facejax.evaluators import image_grid
from facejax import optim
from facejax import runtime
from facejax.data import pipeline
from facejax.data import age as age_data
from facejax.data import transforms
from facejax.models import age_transformer as model_lib
from facejax.models import layers
from facejax.models import spectral_norm
from facejax.train import state as state_lib
from facejax.train import steps as steps_lib
from facejax.tasks import base

SPECTRAL = spectral_norm.SPECTRAL
NEED_ESTIMATOR = (
    "the age transformer needs a trained age estimator for its age loss: "
    "train one first, e.g.\n"
    "  python -m launch.train --config=configs/dex.py --workdir=runs/dex\n"
    "(or configs/age_regressor.py with age_loss.estimator=regressor), then "
    "pass --config.age_loss.workdir=runs/dex (or age_loss.weights=<official "
    "DEX .pth>)")


# gen: {'enc', 'dec', 'mod'}; gen_stats: {'spectral': u, v of every SN
# conv}; disc_stats: {'spectral': ..., 'batch_stats': BN stats}.
GanState = state_lib.GanState


# ---------------------------------------------------------------------------
# Target ages (reference `random_age`) and small helpers.
# ---------------------------------------------------------------------------


def _target_bounds(ages, age_min: int, age_max: int, diff: int, xp):
  """Integer source ages -> (lo, hi) of the uniform target draw."""
  mid = (age_min + age_max) // 2
  young = ages < mid
  lo = xp.where(young, ages + diff, age_min)
  hi = xp.where(young, age_max - 1, ages - diff - 1)
  return lo, xp.maximum(hi, lo)


def sample_target_ages(rng: jax.Array, ages: jax.Array, age_min: int = 20,
                       age_max: int = 70, diff: int = 25) -> jax.Array:
  """The reference's target rule, per example ([B] float ages -> [B]).

  Source a (rounded): a < 45 -> U{a+25 .. 69}; a == 45 -> 20 (the
  reference's wrap-around); a > 45 -> U{20 .. a-26}; clipped to
  [age_min, age_max - 1] for ages outside the training range.
  """
  a = jnp.round(ages)
  lo, hi = _target_bounds(a, age_min, age_max, diff, jnp)
  u = jax.random.uniform(rng, a.shape)
  t = jnp.floor(lo + u * (hi - lo + 1))
  t = jnp.where(a == (age_min + age_max) // 2, age_min, t)
  return jnp.clip(t, age_min, age_max - 1)


def sample_target_ages_np(rng: np.random.Generator, ages: np.ndarray,
                          age_min: int = 20, age_max: int = 70,
                          diff: int = 25) -> np.ndarray:
  """Host (numpy) twin of `sample_target_ages`."""
  a = np.round(np.asarray(ages, np.float64))
  lo, hi = _target_bounds(a, age_min, age_max, diff, np)
  t = np.floor(lo + rng.random(a.shape) * (hi - lo + 1))
  t = np.where(a == (age_min + age_max) // 2, age_min, t)
  return np.clip(t, age_min, age_max - 1).astype(np.float32)


def total_variation(x: jax.Array) -> jax.Array:
  """[B] mean |dx| + mean |dy| per image (the reference's TV)."""
  dy = jnp.abs(x[:, 1:] - x[:, :-1])
  dx = jnp.abs(x[:, :, 1:] - x[:, :, :-1])
  return steps_lib.per_example_mean(dx) + steps_lib.per_example_mean(dy)


def histogram_transfer(out: jax.Array, ref: jax.Array) -> jax.Array:
  """Per image and channel, out's pixel ranks take ref's sorted values.

  The reference's `hist_transform` (exact histogram matching of the edited
  image to the input). [B, H, W, C] each (same shape) -> [B, H, W, C].
  """
  b, h, w, c = out.shape
  o = out.reshape(b, h * w, c)
  r = jnp.sort(ref.reshape(b, h * w, c), axis=1)
  ranks = jnp.argsort(jnp.argsort(o, axis=1), axis=1)
  return jnp.take_along_axis(r, ranks, axis=1).reshape(b, h, w, c)


def _unit_to_model(images: jax.Array) -> jax.Array:
  """Pipeline images in [-1, 1] -> the networks' mean-subtracted domain."""
  return model_lib.to_model_domain((images + 1.0) * 0.5)


# ---------------------------------------------------------------------------
# Data: a second independent real batch, per stage.
# ---------------------------------------------------------------------------


class PairedPreprocess:
  """Adds `image_b`, a second, independently drawn training image.

  The reference draws two batches per iteration: x_a (edited) and x_b
  (the discriminator's real images). Example position g pairs with the
  record drawn by a generator seeded (seed, g), so the pairs are
  reproducible and resumable like the main order. Picklable.
  """

  def __init__(self, preprocess: transforms.Preprocess, source, seed: int):
    self.preprocess, self.source, self.seed = preprocess, source, seed

  def __call__(self, item: tuple[int, dict]) -> dict:
    position, _ = item
    out = self.preprocess(item)
    j = int(np.random.default_rng([self.seed, 1, position]).integers(
        len(self.source)))
    other = self.preprocess((position + 2**40, self.source[j]))
    out["image_b"] = other["image"]
    out["mask"] = np.float32(out["mask"] * other["mask"])
    return out


# ---------------------------------------------------------------------------
# The task.
# ---------------------------------------------------------------------------


class Task(base.Task):
  """HRFAE on an age CSV (or prepared TFDS) set.

  Reads the age data as age_regression does (`facejax.data.age`: data_root,
  source, bad-record handling, the age-balanced sampler `balance`).
  """

  best_metric = ("age_err", "min")
  progress_keys = ("g_loss", "d_loss", "age_err", "g_recon")
  finite_keys = ("g_loss", "d_loss")

  def __init__(self, config: ml_collections.ConfigDict):
    super().__init__(config)
    m = config.model
    dtype = jnp.dtype(m.get("dtype", "float32"))
    self.gen = model_lib.Generator(width=m.gen_width,
                               num_res_blocks=m.num_res_blocks, dtype=dtype,
                               conv_impl=m.conv_impl,
                               remat=bool(m.get("remat", False)))
    self.disc = model_lib.Discriminator(width=m.disc_width, dtype=dtype,
                                    conv_impl=m.conv_impl)
    self.stages = self._check_stages()
    rule = config.target.get("rule", "reference")
    if rule not in ("reference", "uniform"):
      raise ValueError(f"config key target.rule: unknown {rule!r}; choose "
                       f"'reference' or 'uniform'")
    self.tx_g, self.schedule_g = optim.create_optimizer(
        config.optim_g, config.total_steps, None)
    self.tx_d, self.schedule_d = optim.create_optimizer(
        config.optim_d, config.total_steps, None)
    scale = config.optim_g.get("mod_lr_scale", 1.0)
    if scale != 1.0:
      # Each age's embedding row only trains when that age is drawn; short
      # runs need it to move faster than the convolutions.
      self.tx_g = optax.chain(self.tx_g, optax.masked(
          optax.scale(scale), lambda p: {k: k == "mod" for k in p}))
    self._estimator = None
    self._eval_estimator = None
    self._edit_fns = {}
    self._metric_fns = {}

  def _check_stages(self) -> list[tuple[int, int, float]]:
    """config.stages -> [(end_step, image_size, w_recon)]; errors name keys."""
    stages = [tuple(s) for s in self.config.stages]
    if not stages or any(len(s) != 3 for s in stages):
      raise ValueError(f"config key stages: expected ((steps, image_size, "
                       f"w_recon), ...), got {self.config.stages!r}")
    out, end = [], 0
    for steps, size, w_recon in stages:
      if int(steps) <= 0 or int(size) % 4 or int(size) < 16:
        raise ValueError(f"config key stages: stage {(steps, size, w_recon)}"
                         f" needs steps > 0 and an image_size >= 16 "
                         f"divisible by 4")
      end += int(steps)
      out.append((end, int(size), float(w_recon)))
    if end != self.config.total_steps:
      raise ValueError(f"config key stages: the stage steps add up to {end}"
                       f", but total_steps is {self.config.total_steps}")
    if out[-1][1] != self.config.data.image_size:
      raise ValueError(f"config key data.image_size="
                       f"{self.config.data.image_size} must equal the last "
                       f"stage's image_size {out[-1][1]} (config key stages)")
    return out

  # --- identity / shapes -------------------------------------------------
  def meta(self) -> dict[str, Any]:
    m = self.config.model
    return {"task": self.config.task, "model": m.name,
            "gen_width": m.gen_width, "disc_width": m.disc_width,
            "num_res_blocks": m.num_res_blocks}

  def dummy_batch(self, batch_size: int, image_size: int | None = None
                  ) -> dict[str, np.ndarray]:
    """Zeros of the training batch's shape (any image size, default last
    stage's)."""
    size = image_size or self.config.data.image_size
    image = np.zeros((batch_size, size, size, 3), np.float32)
    return {"image": image, "image_b": image.copy(),
            "age": np.full((batch_size,), 30.0, np.float32),
            "mask": np.ones((batch_size,), np.float32)}

  def describe(self, state) -> str:
    count = lambda t: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(t))
    return (f"HRFAE generator {count(state.gen):,} + discriminator "
            f"{count(state.disc):,} params, stages "
            f"{[(e, s, w) for e, s, w in self.stages]} (end step, px, "
            f"w_recon)")

  def learning_rate(self, step: int) -> float:
    return float(self.schedule_g(step))

  # --- state -------------------------------------------------------------
  def init_state(self, rng: jax.Array) -> GanState:
    r_g, r_d = jax.random.split(rng)
    size = self.stages[0][1]
    x = jnp.zeros((1, size, size, 3), jnp.float32)
    gv = self.gen.init({"params": r_g}, x, jnp.zeros((1,)))
    dv = self.disc.init({"params": r_d}, x)
    gen_stats = {SPECTRAL: gv[SPECTRAL]}
    disc_stats = {SPECTRAL: dv[SPECTRAL], "batch_stats": dv["batch_stats"]}
    return GanState(step=jnp.zeros((), jnp.int32), gen=gv["params"],
                    gen_stats=gen_stats, disc=dv["params"],
                    disc_stats=disc_stats,
                    gen_opt=self.tx_g.init(gv["params"]),
                    disc_opt=self.tx_d.init(dv["params"]))

  @classmethod
  def inference_config(cls, config, from_weights: bool,
                       frozen_networks: bool) -> None:
    """Editing and scoring never use the age-loss estimator: a tiny random
    stand-in where it is not wanted, or where official weights come with
    no estimator run or weights."""
    given = config.age_loss.get("workdir") or config.age_loss.get("weights")
    if not frozen_networks or (from_weights and not given):
      config.age_loss.random_init = "tiny"

  def import_pretrained(self, state: GanState) -> GanState:
    """config.model.init_from: the official HRFAE checkpoint (host arrays)."""
    from facejax.convert import age_transformer as convert_lib  # pylint: disable=g-import-not-at-top
    path = self.config.model.init_from
    logging.info("importing HRFAE weights from %s", path)
    imported = convert_lib.load_hrfae(path, {
        "gen": {"params": state.gen, **state.gen_stats},
        "disc": {"params": state.disc, **state.disc_stats}})
    gen, disc = imported["gen"], imported.get("disc")
    new = state.replace(gen=gen["params"],
                        gen_stats={SPECTRAL: gen[SPECTRAL]},
                        gen_opt=self.tx_g.init(gen["params"]))
    if disc is not None:
      new = new.replace(
          disc=disc["params"],
          disc_stats={SPECTRAL: disc[SPECTRAL],
                      "batch_stats": disc["batch_stats"]},
          disc_opt=self.tx_d.init(disc["params"]))
    return new

  # --- frozen estimators -------------------------------------------------
  def estimator(self) -> frozen_lib.FrozenEstimator:
    """The training age estimator (config.age_loss), loaded once."""
    if self._estimator is None:
      self._estimator = _load_estimator(self.config.age_loss,
                                        "age_loss", NEED_ESTIMATOR)
      logging.info("age loss: %s", frozen_lib.describe(self._estimator))
    return self._estimator

  def eval_estimator(self) -> frozen_lib.FrozenEstimator | None:
    """The evaluation estimator (config.eval.estimator), or None if unset."""
    cfg = self.config.eval.estimator
    if not (cfg.get("workdir", "") or cfg.get("weights", "")):
      return None
    if self._eval_estimator is None:
      self._eval_estimator = _load_estimator(cfg, "eval.estimator", "")
    return self._eval_estimator

  def load_frozen(self):
    return self.estimator().variables

  # --- networks ----------------------------------------------------------
  def _gen(self, params, stats, x, ages, update: bool):
    """G(x, ages) -> (image, new stats); x in the model domain."""
    if update:
      out, new = self.gen.apply({"params": params, **stats}, x, ages,
                                update_stats=True, mutable=[SPECTRAL])
      return out, {SPECTRAL: new[SPECTRAL]}
    return self.gen.apply({"params": params, **stats}, x, ages), stats

  def _gen_pair(self, params, stats, x, ages_rec, ages_mod):
    """One encoding, two decodings (the reference's G step)."""
    def fn(module, x):
      code = module.encode(x, True)
      return (module.decode(code, ages_rec, True),
              module.decode(code, ages_mod, True))
    (x_rec, x_mod), new = self.gen.apply({"params": params, **stats}, x,
                                         method=fn, mutable=[SPECTRAL])
    return x_rec, x_mod, {SPECTRAL: new[SPECTRAL]}

  def _disc(self, params, stats, x, penalty=False):
    """D(x) -> (patch map [B, P, P, 1], new stats); BN in training mode.

    penalty: x's gradient will be differentiated again (R1).
    """
    disc = self.disc
    if penalty:  # the same D (same parameters) in a second order's form
      disc = disc.clone(conv_impl=runtime.penalty_conv_impl(
          disc.conv_impl, x.shape, disc.width, normalised=True))
    out, new = disc.apply({"params": params, **stats}, x,
                          update_stats=True,
                          mutable=[SPECTRAL, "batch_stats"])
    return out, dict(new)

  def _w_recon(self, step: jax.Array) -> jax.Array:
    w = jnp.float32(self.stages[-1][2])
    for end, _, w_i in reversed(self.stages[:-1]):
      w = jnp.where(step < end, jnp.float32(w_i), w)
    return w

  def _age_terms(self, frozen, x_mod, targets, mask):
    """(CE of the estimator vs targets, mean |E[age] - target|)."""
    est = self.estimator()
    logp = est.log_probs(frozen, model_lib.to_unit_interval(x_mod))  # [B, 101]
    idx = jnp.clip(targets, 0, frozen_lib.NUM_AGES - 1).astype(jnp.int32)
    ce = -jnp.take_along_axis(logp, idx[:, None], axis=1)[:, 0]
    expected = jnp.exp(logp) @ jnp.arange(logp.shape[1], dtype=jnp.float32)
    return (steps_lib.masked_mean(ce, mask),
            steps_lib.masked_mean(jnp.abs(expected - targets), mask))

  # --- train / eval ------------------------------------------------------
  def train_step(self, state: GanState, batch: dict, frozen):
    cfg, lw = self.config, self.config.loss
    rng = jax.random.fold_in(jax.random.key(cfg.seed), state.step)
    r_jit, r_td, r_tg = jax.random.split(rng, 3)
    x_a = _unit_to_model(batch["image"])     # [B, H, W, 3]
    x_b = _unit_to_model(batch["image_b"])
    mask = batch["mask"]
    ages = jnp.round(batch["age"])
    if cfg.data.age_jitter:  # the reference's obscure_age: -1 or 0
      ages = ages - jax.random.bernoulli(r_jit, 0.5, ages.shape)
    tr = cfg.target
    if tr.get("rule", "reference") == "uniform":
      # Targets independent of the source age: with the reference's rule
      # (young -> old, old -> young) a short run learns to invert the
      # apparent age from the image alone and ignores the age code.
      sample = lambda r: jax.random.randint(
          r, ages.shape, tr.age_min, tr.age_max).astype(jnp.float32)
    else:
      sample = lambda r: sample_target_ages(r, ages, tr.age_min, tr.age_max,
                                            tr.diff)

    # D step (the generator's output is a constant here).
    t_d = sample(r_td)
    x_fake, gen_stats = self._gen(state.gen, state.gen_stats, x_a, t_d,
                                  update=True)
    x_fake = jax.lax.stop_gradient(x_fake)

    def d_loss_fn(dp):
      # R1 of the mean over batch and patches (the reference's scaling);
      # its forward pass is D(x_b) for the LSGAN term as well.
      r1_sq, real, stats = steps_lib.r1_penalty(
          lambda x: self._disc(dp, state.disc_stats, x, penalty=True),
          x_b, mask)
      fake, stats = self._disc(dp, stats, x_fake)
      d_real, d_fake = steps_lib.lsgan_d(real, fake, mask)
      r1 = 0.5 * lw.r1_gamma * steps_lib.masked_mean(r1_sq, mask)
      loss = lw.w_dis * (d_real + d_fake) + lw.w_gp * r1
      return loss, ({"d_real": d_real, "d_fake": d_fake, "d_r1": r1}, stats)

    disc, disc_opt, d_metrics, disc_stats = steps_lib.gan_update(
        d_loss_fn, state.disc, state.disc_opt, self.tx_d, "d")

    # G step, against the updated discriminator.
    t_g = sample(r_tg)
    w_recon = self._w_recon(state.step)

    def g_loss_fn(gp):
      x_rec, x_mod, g_stats = self._gen_pair(gp, gen_stats, x_a, ages, t_g)
      recon = steps_lib.masked_mean(
          steps_lib.per_example_mean(jnp.abs(x_rec - x_a)), mask)
      ce, age_err = self._age_terms(frozen, x_mod, t_g, mask)
      fake, d_stats = self._disc(disc, disc_stats, x_mod)
      adv = steps_lib.lsgan_g(fake, mask)
      tv = steps_lib.masked_mean(total_variation(x_mod), mask)
      loss = (w_recon * recon + lw.w_class * ce + lw.w_adver * adv +
              lw.w_tv * tv)
      return loss, ({"g_recon": recon, "g_class": ce, "g_adv": adv,
                     "g_tv": tv, "age_err": age_err}, (g_stats, d_stats))

    gen, gen_opt, g_metrics, (gen_stats, disc_stats) = steps_lib.gan_update(
        g_loss_fn, state.gen, state.gen_opt, self.tx_g, "g")

    new_state = state.replace(
        step=state.step + 1, gen=gen, gen_stats=gen_stats, disc=disc,
        disc_stats=disc_stats, gen_opt=gen_opt, disc_opt=disc_opt)
    metrics = {"w_recon": w_recon, **g_metrics, **d_metrics}
    return new_state, metrics

  def _eval_targets(self, ages):
    """Deterministic targets for validation (same rule, fixed key)."""
    tr = self.config.target
    return sample_target_ages(jax.random.key(self.config.seed + 1), ages,
                              tr.age_min, tr.age_max, tr.diff)

  def eval_step(self, state: GanState, batch: dict, frozen):
    """Sums: recon L1 at the source age; estimator error at targets."""
    x = _unit_to_model(batch["image"])
    mask = batch["mask"]
    ages = jnp.round(batch["age"])
    targets = self._eval_targets(ages)
    x_rec, _ = self._gen(state.gen, state.gen_stats, x, ages, False)
    x_mod, _ = self._gen(state.gen, state.gen_stats, x, targets,
                         False)
    est = self.estimator()
    err = jnp.abs(est.age(frozen, model_lib.to_unit_interval(x_mod)) - targets)
    unedited = jnp.abs(est.age(frozen, model_lib.to_unit_interval(x)) - targets)
    recon = steps_lib.per_example_mean(jnp.abs(x_rec - x))
    return {"recon_l1": (recon * mask).sum(),
            "age_err": (err * mask).sum(),
            "unedited_age_err": (unedited * mask).sum(),
            "count": mask.sum()}

  @staticmethod
  def summarize(sums: dict[str, np.ndarray]) -> dict[str, float]:
    count = max(float(sums["count"]), 1.0)
    return {"age_err": float(sums["age_err"]) / count,
            "unedited_age_err": float(sums["unedited_age_err"]) / count,
            "recon_l1": float(sums["recon_l1"]) / count,
            "count": float(sums["count"])}

  # --- inference ---------------------------------------------------------
  def edit(self, state: GanState, images: jax.Array, target_ages: jax.Array,
           histogram_transfer_: bool = False) -> jax.Array:
    """Edits faces to target ages (pure; jit it).

    Args:
      state: the trained state.
      images: [B, H, W, 3] as `preprocess(train=False)` yields ([-1, 1]).
      target_ages: [B] ages in years.
      histogram_transfer_: the reference's per-channel histogram matching
        of each output to its input.

    Returns:
      [B, H, W, 3] RGB in [0, 1] (clipped).
    """
    x = _unit_to_model(images)
    out, _ = self._gen(state.gen, state.gen_stats, x,
                       jnp.asarray(target_ages, jnp.float32), False)
    if histogram_transfer_:
      out = histogram_transfer(out, x)
    return jnp.clip(model_lib.to_unit_interval(out), 0.0, 1.0)

  def edit_fn(self, histogram: bool = False):
    """jax.jit of `edit` (cached per histogram option)."""
    if histogram not in self._edit_fns:
      self._edit_fns[histogram] = jax.jit(
          lambda s, x, t: self.edit(s, x, t, histogram))
    return self._edit_fns[histogram]

  def on_eval(self, state, frozen, step: int, workdir: str) -> str | None:
    """Writes workdir/samples/step_<step>.png (validation faces x ages)."""
    del frozen
    if jax.process_index() != 0:
      return None
    cfg = self.config.eval
    src = self.source("valid")
    n = min(cfg.num_samples, len(src))
    if not n:
      return None
    pre = self.preprocess(train=False)
    images = np.stack([pre((i, src[i]))["image"] for i in range(n)])
    ages = list(cfg.ages)
    rows = [[(images[i] + 1.0) * 0.5] for i in range(n)]
    fn = self.edit_fn(False)
    for age in ages:
      out = np.asarray(jax.device_get(fn(state, images,
                                         np.full((n,), age, np.float32))))
      for i in range(n):
        rows[i].append(out[i])
    path = os.path.join(workdir, "samples", f"step_{step}.png")
    labels = [f"{float(a):.0f}" for a in getattr(src, "ages", [])[:n]]
    image_grid.save_grid(path, rows, ["input"] + [str(a) for a in ages],
                         labels or None)
    return path

  # --- evaluation report -------------------------------------------------
  def edit_metric_fn(self, ages: Sequence[float]):
    """The jitted per-batch sums behind the edit metrics
    (facejax.evaluators.age_transformer.edit_metrics):
    `fn(state, frozen, eval_variables, batch) -> {name: sum over the batch}`
    for every target age in `ages`; compiled once per set of ages."""
    ev = self.eval_estimator()
    est = self.estimator()
    ages = [float(a) for a in ages]

    def per_batch(state, frozen, ev_vars, batch):
      x = _unit_to_model(batch["image"])
      x01 = model_lib.to_unit_interval(x)
      mask = batch["mask"]
      src_ages = jnp.round(batch["age"])
      sums = {"count": mask.sum()}
      if ev is not None:
        f_in = ev.features(ev_vars, x01)
        age_in = ev.age(ev_vars, x01)
      train_in = est.age(frozen, x01)
      rec, _ = self._gen(state.gen, state.gen_stats, x, src_ages,
                         False)
      sums["recon_l1"] = (steps_lib.per_example_mean(jnp.abs(rec - x))
                          * mask).sum()
      if ev is not None:
        sums["recon_identity"] = (layers.cosine(
            ev.features(ev_vars, model_lib.to_unit_interval(rec)), f_in)
                                  * mask).sum()
      for k, t in enumerate(ages):
        tt = jnp.full_like(src_ages, t)
        out, _ = self._gen(state.gen, state.gen_stats, x, tt, False)
        out01 = jnp.clip(model_lib.to_unit_interval(out), 0.0, 1.0)
        train_age = est.age(frozen, out01)
        sums[f"train_age_{k}"] = (train_age * mask).sum()
        sums[f"train_err_{k}"] = (jnp.abs(train_age - t) * mask).sum()
        sums[f"train_err_unedited_{k}"] = (jnp.abs(train_in - t)
                                           * mask).sum()
        if ev is not None:
          eval_age = ev.age(ev_vars, out01)
          sums[f"eval_age_{k}"] = (eval_age * mask).sum()
          sums[f"eval_age_sq_{k}"] = (jnp.square(eval_age) * mask).sum()
          sums[f"eval_err_{k}"] = (jnp.abs(eval_age - t) * mask).sum()
          sums[f"eval_err_unedited_{k}"] = (jnp.abs(age_in - t)
                                            * mask).sum()
          sums[f"identity_{k}"] = (layers.cosine(ev.features(ev_vars, out01),
                                                 f_in)
                                   * mask).sum()
      return sums

    # One compile per set of target ages (the report reuses the test's).
    return self._metric_fns.setdefault(tuple(ages), jax.jit(per_batch))

  def estimator_names(self) -> tuple[str, str]:
    """(evaluation estimator, training estimator) as reports name them;
    '' when no evaluation estimator is configured."""
    ev = self.eval_estimator()
    return (frozen_lib.describe(ev) if ev is not None else "",
            frozen_lib.describe(self.estimator()))

  # --- data --------------------------------------------------------------
  def _preprocess(self, size: int, train: bool) -> transforms.Preprocess:
    cfg = self.config.data
    aug = None
    if train and cfg.augment.enabled:
      aug = transforms.Augment(flip=cfg.augment.flip, rotate_deg=0.0,
                               scale_jitter=0.0, color_jitter=0.0)
    return transforms.Preprocess(
        image_size=size, normalize="unit", crop_fraction=cfg.crop_fraction,
        augment=aug, seed=self.config.seed, skip_bad=cfg.skip_bad_records,
        label_keys=("age",))

  def preprocess(self, train: bool):
    """Eval / inference: the last stage's size. Training: see train_dataset."""
    return self._preprocess(self.config.data.image_size, train)

  def data_root(self) -> str:
    return age_data.data_root(self.config.data)

  def source(self, split: str):
    return age_data.source(self.config.data, split)

  def balance(self, src):
    """The age-balanced sampler (config data.balance), logged."""
    return age_data.balance(src, self.config.data.balance, self.config.seed)

  def train_dataset(self, start_step: int = 0, train_src=None):
    """Paired batches whose image size follows config.stages."""
    # balance(source('train')) again, without logging the histograms twice.
    del train_src
    src = age_data.balance(self.source("train"), self.config.data.balance,
                           self.config.seed, log=False)
    cfg = self.config
    staged = pipeline.Staged([
        (end, PairedPreprocess(self._preprocess(size, True), src, cfg.seed))
        for end, size, _ in self.stages])
    return pipeline.train_dataset(src, staged, cfg.data.batch_size, cfg.seed,
                                  cfg.data.num_workers, start_step=start_step)

  def baseline(self, train_src, eval_src) -> dict[str, float]:
    """|source - target| under the target rule: the do-nothing editor's
    error with a perfect estimator."""
    del train_src
    if not hasattr(eval_src, "ages"):
      return {}
    tr = self.config.target
    targets = sample_target_ages_np(np.random.default_rng(self.config.seed),
                                    eval_src.ages, tr.age_min, tr.age_max,
                                    tr.diff)
    return {"identity_age_gap": float(np.mean(np.abs(
        targets - np.round(eval_src.ages))))}


def _load_estimator(cfg: ml_collections.ConfigDict, key: str,
                    hint: str) -> frozen_lib.FrozenEstimator:
  """frozen_lib.load_estimator, or a random DEX for benchmarks."""
  variant = cfg.get("random_init", "")
  if variant:
    return _random_dex(variant)
  if not (cfg.get("workdir", "") or cfg.get("weights", "")) and hint:
    raise ValueError(f"config key {key}.workdir is empty: {hint}")
  try:
    return frozen_lib.load_estimator(cfg)
  except ValueError as e:
    msg = str(e)
    if not msg.startswith(key):
      msg = msg.replace("age_loss.", f"{key}.")
    raise ValueError(msg) from None


# The released DEX's input size per random variant.
_RANDOM_DEX_SIZE = {"vgg16": 224, "tiny": 64}


@functools.lru_cache(maxsize=None)
def _random_dex_params(variant: str) -> dict[str, Any]:
  """The random DEX's parameters (key 0), host arrays, read-only: built
  once a process. Every inference tool's config asks for one (it never
  uses the age loss), and each build traced and compiled the init anew."""
  from facejax.models import vgg  # pylint: disable=g-import-not-at-top
  model = vgg.create_dex(variant, dropout_rate=0.0)
  size = _RANDOM_DEX_SIZE[variant]
  variables = jax.jit(lambda r: model.init(
      r, jnp.zeros((1, size, size, 3)), train=False))(jax.random.key(0))
  params = jax.device_get(variables["params"])
  for leaf in jax.tree.leaves(params):
    leaf.setflags(write=False)
  return params


def _random_dex(variant: str) -> frozen_lib.FrozenEstimator:
  """A randomly initialised DEX ('vgg16' at 224 px, or 'tiny' at 64 px).

  For benchmarks (the real cost of the age loss) and for inference tools
  that never use the age loss; never for training a usable model.
  """
  from facejax.models import vgg  # pylint: disable=g-import-not-at-top
  if variant not in _RANDOM_DEX_SIZE:
    raise ValueError(f"config key age_loss.random_init: unknown "
                     f"{variant!r}; choose 'vgg16' or 'tiny' (or '')")
  model = vgg.create_dex(variant, dropout_rate=0.0)
  size = _RANDOM_DEX_SIZE[variant]
  variables = {"params": _random_dex_params(variant)}

  def forward(v, x):
    logits, feats = model.apply(v, x, train=False)
    return (frozen_lib.expected_age(logits),
            jax.nn.log_softmax(logits, axis=-1), feats)
  return frozen_lib.FrozenEstimator(
      variables=variables, forward=forward, kind="dex", image_size=size,
      normalization="caffe_bgr", source=f"random init ({variant})")
