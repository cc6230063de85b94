"""The training loop shared by every task.

`train_and_evaluate(task, config, workdir)`: the loop is handed a task (a
`facejax.tasks.base.Task`; `facejax.tasks.build(config)` makes one) and
knows none by name:
  mesh -> sharded state init (or resume / import) -> jitted, donated train
  step -> periodic log / eval / checkpoint -> final eval.
Resume order: the newest usable checkpoint in the workdir (a truncated or
non-finite one is skipped with a warning), then `model.init_from`, then
scratch. A resumed run compares its config with the workdir's and refuses
changes that alter shapes or the data order unless allowed. SIGTERM
(preemption) saves a checkpoint before exiting. Every step reports whether
its new state is finite; a NaN/Inf loss or state stops the run before it
is saved, so every checkpoint holds finite weights. One run at a time holds
the workdir (`checkpoint.WorkdirLock`).
"""

import functools
import json
import os
import signal
import time
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np

from facejax import autotune
from facejax import checkpoint as ckpt_lib
from facejax import config_lib
from facejax import metrics as metrics_lib
from facejax import mesh as mesh_lib
from facejax import runtime
from facejax.train import state as state_lib
from facejax.data import pipeline


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or Inf."""


class Preempted(Exception):
  """SIGTERM arrived; a checkpoint was written."""


class CheckpointSaveError(RuntimeError):
  """A background checkpoint save failed (disk full, permissions, ...)."""


# The Task contract as the loop, Setup and the CLIs call it (written down
# whole, with defaults for the hooks, in facejax/tasks/base.py).
TASK_METHODS = (
    # required
    "meta", "dummy_batch", "describe", "init_state", "train_step",
    "eval_step", "summarize", "data_root", "source", "preprocess",
    # hooks (defaulted by base.Task)
    "step_args", "balance", "train_dataset", "baseline", "has_import",
    "import_pretrained", "load_frozen", "learning_rate", "predict",
    "on_eval", "xla_cpu_options")
TASK_ATTRIBUTES = ("best_metric", "progress_keys", "finite_keys",
                   "step_kinds")


def check_task(task: Any) -> None:
  """A TypeError naming what `task` lacks of the Task contract."""
  missing = [n for n in TASK_METHODS if not callable(getattr(task, n, None))]
  missing += [n for n in TASK_ATTRIBUTES if getattr(task, n, None) is None]
  name = f"{type(task).__module__}.{type(task).__qualname__}"
  if missing:
    raise TypeError(
        f"task {name} does not implement the Task contract (subclass "
        f"facejax.tasks.base.Task): missing {', '.join(missing)}")
  best = task.best_metric
  if (not isinstance(best, (tuple, list)) or len(best) != 2
      or best[1] not in ("min", "max")):
    raise TypeError(f"task {name}: best_metric must be (eval key, 'min' or "
                    f"'max'), got {best!r}")
  if not task.step_kinds:
    raise TypeError(f"task {name}: step_kinds is empty")


def _kind_key(kind: dict[str, Any]) -> tuple:
  return tuple(sorted(kind.items()))


def _checked(train_step):
  """The step, with `state_finite` (every float leaf of the new state
  finite) added to its metrics: a poisoned update is seen at its step."""
  def step(state, batch, frozen):
    new_state, metrics = train_step(state, batch, frozen)
    return new_state, dict(metrics,
                           state_finite=state_lib.all_finite(new_state))
  return step


class Setup:
  """Everything built around a task: mesh, state, step functions.

  Shared by training, evaluation, prediction and benchmarking so that all
  of them compile the same functions with the same shardings. The task
  (`facejax.tasks.base.Task`, built on `config`) is checked against the
  contract first; GANs and classifiers go through the same code.
  """

  def __init__(self, task: Any, config: ml_collections.ConfigDict,
               mesh: jax.sharding.Mesh | None = None):
    check_task(task)
    config_lib.validate(config)
    self.config = config
    self.task = task
    self.mesh = mesh or mesh_lib.create_mesh(config.mesh)
    self.local_batch = mesh_lib.check_batch_size(
        config.data.batch_size, self.mesh, "data.batch_size")
    self.eval_batch = config.data.get("eval_batch_size",
                                      config.data.batch_size)
    mesh_lib.check_batch_size(self.eval_batch, self.mesh,
                              "data.eval_batch_size")

    rng = jax.random.key(config.seed)
    self.abstract_state = jax.eval_shape(self.task.init_state, rng)
    self.state_sharding = self._shardings(self.abstract_state)
    self.batch_sharding = mesh_lib.batch_sharding(self.mesh)
    self.replicated = mesh_lib.replicated(self.mesh)
    # Frozen networks (loss estimators) are step arguments: sharded like
    # parameters, never in the optimizer or the checkpoint.
    frozen = self.task.load_frozen()
    self.frozen_sharding = self._shardings(frozen)
    self.frozen = jax.device_put(frozen, self.frozen_sharding)

    # Convolution forms timed on this machine (facejax.autotune) when the
    # config asks for it (on by default; CPU only), bf16-operand ones
    # among them where the CPU has bf16 dot instructions.
    runtime_cfg = config.get("runtime", {})
    self.autotune = autotune.enable(runtime_cfg.get("autotune", True),
                                    bf16=runtime_cfg.get("cpu_bf16", True))
    self.autotune_reports: list[autotune.Report] = []
    options = runtime.step_compiler_options(self.task.xla_cpu_options())
    # A task with several kinds of step (a GAN's D-only and D+G steps)
    # names them by keyword arguments of train_step: one program per kind.
    kinds = tuple(self.task.step_kinds)
    self._jit_specs = {}
    self.train_steps = {
        _kind_key(kind): self._jit(
            _checked(functools.partial(self.task.train_step, **kind)),
            in_shardings=(self.state_sharding, self.batch_sharding,
                          self.frozen_sharding),
            out_shardings=(self.state_sharding, self.replicated),
            donate_argnums=0, compiler_options=options)
        for kind in kinds}
    # The first kind's step (a single-kind task's only step).
    self.train_step = self.train_steps[_kind_key(kinds[0])]
    self.eval_step = self._jit(
        self.task.eval_step,
        in_shardings=(self.state_sharding, self.batch_sharding,
                      self.frozen_sharding),
        out_shardings=self.replicated, compiler_options=options)
    self._compiled = {}
    # images [B, H, W, 3] -> the task's prediction, replicated (traced on
    # first use: a task without `predict` fails only if it is called).
    self._predict = jax.jit(
        self.task.predict,
        in_shardings=(self.state_sharding, self.batch_sharding),
        out_shardings=self.replicated)

  def train_step_at(self, step: int):
    """The jitted train step for global step `step` (0-based)."""
    if len(self.train_steps) == 1:
      return self.train_step
    return self.train_steps[_kind_key(self.task.step_args(step))]

  def _jit(self, fn, **kwargs):
    """jax.jit(fn, **kwargs), remembered so that `compiled` can trace it
    afresh once autotuning has changed a convolution's form."""
    jitted = jax.jit(fn, **kwargs)
    # (Holding `jitted` keeps its id from being reused by another object.)
    self._jit_specs[id(jitted)] = (jitted, fn, kwargs)
    return jitted

  def compiled(self, jitted, state, batch):
    """The AOT executable of `jitted(state, batch, frozen)` for this batch
    signature, compiled on first use.

    With autotuning on, the trace notes its convolution shapes; shapes
    this machine has not timed yet are timed (facejax.autotune), and the
    step is traced again if that changed a form. With several processes
    every process compiles first and they meet at a barrier: gloo (the
    CPU collectives) gives the peers only 30 s to reach their first
    collective, less than a compile takes on a busy host. Executables are
    kept per batch signature (a resolution schedule changes the batch
    shape once).
    """
    key = (id(jitted), tuple((x.shape, str(x.dtype))
                             for x in jax.tree.leaves(batch)))
    if key not in self._compiled:
      with autotune.recording() as rec:
        lowered = jitted.lower(state, batch, self.frozen)
      retrace, report = autotune.settle(rec)
      if report is not None:
        self.autotune_reports.append(report)
      if retrace and id(jitted) in self._jit_specs:
        _, fn, kwargs = self._jit_specs[id(jitted)]
        # A new function object: jax.jit's trace cache would otherwise
        # hand back the trace with the old forms.
        lowered = jax.jit(functools.partial(fn), **kwargs).lower(
            state, batch, self.frozen)
      compiled = self._compiled[key] = lowered.compile()
      # Room in the kept host heap for the step's temporaries on every
      # local device, so that later steps reuse it rather than grow it.
      runtime.reserve_host_heap(runtime.temp_bytes(compiled),
                                len(self.mesh.local_devices))
      if jax.process_count() > 1:
        ckpt_lib.sync_processes(f"facejax_compiled_{len(self._compiled)}")
    return self._compiled[key]

  def run(self, jitted, state, batch):
    """`jitted(state, batch, frozen)` through its AOT executable
    (`compiled`)."""
    return self.compiled(jitted, state, batch)(state, batch, self.frozen)

  def autotune_summary(self) -> str:
    """One line on the convolution forms autotuning chose ('' if off)."""
    if not self.autotune_reports:
      return ""
    merged = autotune.Report(forms={}, path=self.autotune_reports[0].path)
    for r in self.autotune_reports:
      merged.forms.update(r.forms)
      merged.timed += r.timed
      merged.seconds += r.seconds
    return merged.summary()

  def _shardings(self, tree):
    sh = self.config.sharding
    return mesh_lib.tree_shardings(tree, self.mesh, rules=tuple(sh.rules),
                                   fsdp_min_size_mb=sh.fsdp_min_size_mb)

  def predict(self, state, images):
    return self._predict(state, images)

  def compile(self, fn):
    """jit of `fn(state, frozen, batch)` with this setup's shardings."""
    return jax.jit(fn, in_shardings=(self.state_sharding,
                                     self.frozen_sharding,
                                     self.batch_sharding),
                   out_shardings=self.replicated)

  def init_state(self, import_weights: bool = True):
    """Sharded initial state; nothing is materialised on one device first."""
    rng = jax.random.key(self.config.seed)
    if not (import_weights and self.task.has_import()):
      return jax.jit(self.task.init_state,
                     out_shardings=self.state_sharding)(rng)
    state = jax.device_get(jax.jit(self.task.init_state)(rng))
    state = self.task.import_pretrained(state)
    return jax.device_put(state, self.state_sharding)

  def evaluate(self, state, source, preprocess=None) -> dict[str, Any]:
    """Sums of the task's eval metrics over a whole split."""
    preprocess = preprocess or self.task.preprocess(train=False)
    totals = None
    for batch in pipeline.eval_batches(source, preprocess, self.eval_batch,
                                       self.config.data.num_workers):
      sums = self.run(self.eval_step, state,
                      mesh_lib.shard_batch(batch, self.mesh))
      totals = sums if totals is None else jax.tree.map(jnp.add, totals,
                                                        sums)
    if totals is None:
      raise ValueError(
          "the evaluation split has no records: "
          f"{getattr(source, 'csv_path', type(source).__name__)}")
    return jax.tree.map(np.asarray, jax.device_get(totals))


def _install_sigterm_handler() -> dict[str, bool]:
  flag = {"stop": False}

  def handler(signum, frame):
    del signum, frame
    flag["stop"] = True
  try:
    signal.signal(signal.SIGTERM, handler)
  except ValueError:  # not in the main thread (e.g. some test runners)
    logging.warning("cannot install SIGTERM handler outside main thread")
  return flag


def _agreed_stop(local_flag: bool, step: int, every: int) -> bool:
  """Whether to stop now; on several hosts all must agree on the step.

  Each process only knows its own SIGTERM, so with several processes the
  flags are combined at log steps (a host sync anyway) and every process
  stops at the same step, as the collective checkpoint save needs.
  """
  if jax.process_count() == 1:
    return local_flag
  if step % every:
    return False
  flags = multihost_utils.process_allgather(np.int32(local_flag))
  return bool(np.any(flags))


def _mean_metrics(window: list[dict]) -> dict[str, float]:
  stacked = jax.device_get(jax.tree.map(lambda *x: jnp.stack(x), *window))
  return {k: float(np.mean(v)) for k, v in stacked.items()}


# Config keys naming another run or a weights file (frozen estimators,
# identity networks, stage-1 runs): stored absolute in config.json.
_RUN_PATH_KEYS = ("workdir", "init_from", "age_transformer", "weights")


def _absolute_run_paths(config: ml_collections.ConfigDict) -> None:
  for key, value in list(config.items()):
    if isinstance(value, ml_collections.ConfigDict):
      _absolute_run_paths(value)
    elif (isinstance(value, str) and value and key.endswith(_RUN_PATH_KEYS)
          and os.path.exists(value)):
      config[key] = os.path.abspath(value)


def train_iterator(setup: Setup, start_step: int = 0, train_src=None):
  """This process's training batches from global step `start_step` on."""
  return iter(setup.task.train_dataset(start_step, train_src))


# Keys a resumed run may change: they alter neither shapes nor the data
# order (the rest is refused unless allow_config_change). Optimizer
# hyperparameters (a lower learning rate after a NaN) are safe, in `optim`
# and in the GANs' `optim_g` / `optim_d`, except those that change what the
# optimizer state holds.
RESUME_SAFE_KEYS = ("total_steps", "log_every_steps", "eval_every_steps",
                    "ckpt.", "eval.", "data.num_workers", "data.root",
                    "data.eval_batch_size", "data.align", "model.init_from",
                    "mesh", "sharding.", "runtime.", "wandb", "tensorboard",
                    "optim")
_STATE_SHAPING = ("name", "momentum", "nesterov", "freeze", "weight_decay",
                  "clip_norm")


def _resume_safe(key: str) -> bool:
  if key.startswith("optim"):
    return key.split(".")[-1] not in _STATE_SHAPING
  return key.startswith(RESUME_SAFE_KEYS)


def check_config_change(workdir: str, config: ml_collections.ConfigDict,
                        allow: bool) -> list[str]:
  """Changed keys between workdir/config.json and `config` ('key: a -> b');
  a ValueError naming them where they matter and `allow` is False. Keys the
  stored config lacks (added to facejax since) are reported, not refused."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    stored = json.load(f)
  current = json.loads(config.to_json_best_effort())
  changed = config_lib.changed_keys(stored, current)
  unsafe = [(k, a, b) for k, a, b in changed
            if not _resume_safe(k) and a is not None]
  if unsafe and not allow:
    raise ValueError(
        f"{path}: this run resumes a workdir trained with another config; "
        "changed: " + "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in unsafe)
        + ". These change shapes or the data order, so the run would not "
        "continue the one saved: use the config it was trained with, a new "
        "--workdir, or --allow_config_change to continue anyway.")
  return [f"{k}: {a!r} -> {b!r}" for k, a, b in changed]


def train_and_evaluate(task: Any, config: ml_collections.ConfigDict,
                       workdir: str,
                       allow_config_change: bool = False) -> dict[str, Any]:
  """Trains `task` (built on `config`) in `workdir`, resuming if possible;
  returns the results (also written to workdir/result.json)."""
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  lock = ckpt_lib.WorkdirLock(workdir)
  if jax.process_index() == 0:
    lock.acquire()  # Before anything in the workdir is written.
  try:
    return _train_and_evaluate(task, config, workdir, allow_config_change)
  finally:
    lock.release()


def _train_and_evaluate(task, config, workdir, allow_config_change):
  setup = Setup(task, config)
  # Record where the data and the other runs this one reads really are,
  # so evaluate/predict/restore work from any directory.
  with config.unlocked():
    config.data.root = os.path.abspath(task.data_root())
    _absolute_run_paths(config)
  ckpt_lib.check_workdir_model(workdir, task.meta())
  # Only a run with checkpoints to continue is held to its config (a first
  # run that failed before its first save may be retried with another).
  changes = (check_config_change(workdir, config, allow_config_change)
             if ckpt_lib.has_checkpoints(workdir) else [])
  if jax.process_index() == 0:
    # Atomic: other hosts read it (launch.* on a live run too).
    tmp = os.path.join(workdir, "config.json.tmp")
    with open(tmp, "w") as f:
      f.write(config.to_json_best_effort(indent=2))
    os.replace(tmp, os.path.join(workdir, "config.json"))
  # Every process says where it stands (the cluster's logs per process).
  print(f"process {jax.process_index()}/{jax.process_count()}, "
        f"{jax.device_count()} devices, mesh {dict(setup.mesh.shape)}",
        flush=True)
  if changes:
    print("config changed since the last run: " + "; ".join(changes),
          flush=True)
  progress = metrics_lib.Progress(config.total_steps)
  writer = metrics_lib.MetricWriter(workdir, config)

  # Data.
  train_src = task.balance(task.source("train"))
  eval_src = task.source("valid")
  baseline = task.baseline(train_src, eval_src)
  make_iter = lambda start=0: train_iterator(setup, start, train_src)
  train_iter = make_iter()

  # State: resume > import > scratch.
  checkpointer = ckpt_lib.Checkpointer(
      workdir, keep=config.ckpt.keep, best_mode=task.best_metric[1],
      async_save=config.ckpt.get("async_save", True))
  abstract = ckpt_lib.abstract_like(setup.abstract_state,
                                    setup.state_sharding)
  finite = jax.jit(state_lib.all_finite)
  state, latest = checkpointer.restore_newest_good(
      abstract, train_iter,
      check=lambda st: "" if bool(finite(st)) else "non-finite weights")
  if state is not None:
    if not checkpointer.iterator_restored:
      # The saved iterator state has another shape (e.g. data.num_workers
      # changed). The order is a function of the step: start there.
      train_iter = make_iter(latest)
    progress.message(f"Resumed from {checkpointer.directory}/{latest}")
  else:
    state = setup.init_state()
  start = int(jax.device_get(state.step))
  # Rows of steps after the checkpoint were logged by the run that died:
  # they are re-run now, so metrics.jsonl keeps one row per step.
  writer.forget_after(start)
  progress.message(
      f"{task.describe(state)}; "
      f"{len(train_src)} train / {len(eval_src)} valid images; "
      f"batch {config.data.batch_size} on {setup.mesh.devices.size} device(s) "
      f"{dict(setup.mesh.shape)}; workdir {workdir}")

  stop = _install_sigterm_handler()
  window: list[dict] = []
  best_name, _ = task.best_metric
  result: dict[str, Any] = dict(baseline)

  def flush(step, stopping=False):
    """Pulls the window's metrics to host; raises on a NaN/Inf loss or
    state (before the state can be saved) and on a failed background
    save (now, not at the next save; when stopping for SIGTERM, a fresh
    save is tried instead, so the job can still be requeued)."""
    if not window:
      return None
    means = _mean_metrics(window)
    window.clear()
    bad = {k: means[k] for k in task.finite_keys
           if not np.isfinite(means[k])}
    if means.pop("state_finite", 1.0) < 1.0:
      bad["weights"] = "not finite"
    if bad:
      last = checkpointer.latest_step()
      kept = (f"The last good checkpoint is kept: {checkpointer.directory}/"
              f"{last}" if last is not None else "No checkpoint was saved")
      rates = " / ".join(config_lib.learning_rates(config))
      raise NonFiniteLossError(
          ", ".join(f"{k} {v}" for k, v in bad.items()) + f" by step "
          f"{step}; training stopped before saving them. {kept}. Rerun "
          f"with a lower {rates or 'learning rate'} (or optim.clip_norm "
          "where the config has it); the rerun resumes from that "
          "checkpoint.")
    try:
      checkpointer.check_for_errors()
    except Exception as e:  # pylint: disable=broad-except
      message = (f"saving a checkpoint in {checkpointer.directory} failed: "
                 f"{type(e).__name__}: {e}")
      if not stopping:
        raise CheckpointSaveError(message) from e
      progress.message(f"warning: {message}; saving again before exiting")
    lr = task.learning_rate(step)
    if lr is not None:
      means["lr"] = lr
    return means

  def run_eval(step):
    sums = setup.evaluate(state, eval_src)
    summary = task.summarize(sums)
    writer.write(step, {f"eval/{k}": v for k, v in summary.items()})
    task.on_eval(state, setup.frozen, step, workdir)  # sample grids etc.
    return summary

  metrics = None
  try:
    step = start
    compile_t0 = time.perf_counter()
    if step < config.total_steps:
      progress.message(
          "compiling the train step (minutes on a CPU the first time"
          + (", with its convolution forms timed on this machine"
             if setup.autotune else "")
          + "; reruns read the compilation cache)...")
    while step < config.total_steps:
      if metrics is not None and runtime.wait_for_each_step():
        # One step in flight: the next step's temporaries then reuse the
        # last one's room in the kept host heap. (Before the batch: XLA
        # frees the room just after the outputs are ready.)
        jax.block_until_ready(metrics)
      batch = mesh_lib.shard_batch(next(train_iter), setup.mesh)
      state, metrics = setup.run(setup.train_step_at(step), state, batch)
      step += 1
      window.append(metrics)
      if step == start + 1:
        jax.block_until_ready(metrics)
        compile_s = time.perf_counter() - compile_t0
        writer.write(step, {"perf/compile_s": compile_s})
        progress.message(f"first step done in {compile_s:.0f} s; training")
        if setup.autotune_summary():
          progress.message(setup.autotune_summary())
        progress.reset(step)
      last = step == config.total_steps
      # Read the flag once: SIGTERM may arrive mid-iteration, and stopping
      # without the checkpoint decided here would lose the steps since.
      stopping = _agreed_stop(stop["stop"], step, config.log_every_steps)
      do_ckpt = step % config.ckpt.every_steps == 0 or last or stopping
      do_eval = step % config.eval_every_steps == 0 or last
      if step % config.log_every_steps == 0 or do_ckpt or do_eval:
        means = flush(step, stopping)
        if means is not None:
          rate = progress.report(step, {k: means[k]
                                        for k in task.progress_keys})
          means["steps_per_sec"] = rate
          means["images_per_sec"] = rate * config.data.batch_size
          writer.write(step, {f"train/{k}": v for k, v in means.items()})
      if do_ckpt:
        checkpointer.save(step, state, train_iter)
      if do_eval:
        summary = run_eval(step)
        progress.message(f"  eval at step {step}: " + ", ".join(
            f"{k} {v:.4g}" for k, v in summary.items()))
        # After the resume checkpoint: a kill in between must not leave a
        # best/<step> without its ckpt/<step>.
        checkpointer.save_best(step, state, summary[best_name])
        result.update(summary)
      if do_ckpt or do_eval:
        progress.reset(step)
      if stopping and not last:
        checkpointer.wait()
        raise Preempted(f"SIGTERM at step {step}: checkpoint saved in "
                        f"{checkpointer.directory}; rerun the same command "
                        f"to resume")
    if start >= config.total_steps:
      # Finished before (or killed between the last checkpoint and its
      # eval): evaluate, and write best/ if that kill left none.
      summary = run_eval(start)
      checkpointer.save_best(start, state, summary[best_name])
      result.update(summary)
    checkpointer.wait()
  finally:
    pipeline.close(train_iter)
    writer.close()
    checkpointer.close()
  result["checkpoint"] = os.path.join(checkpointer.directory,
                                      str(checkpointer.latest_step()))
  best = checkpointer.best_step()
  result["best_checkpoint"] = (
      os.path.join(checkpointer.best_directory, str(best))
      if best is not None else None)
  shown = ", ".join(f"{k} {result[k]:.4g}" for k in
                    (best_name, *baseline) if k in result)
  progress.message(
      f"Done: validation {shown}; checkpoint "
      f"{result['checkpoint']} (best: {result['best_checkpoint']})")
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "result.json"), "w") as f:
      json.dump(result, f, indent=2)
  return result
