"""The two kinds of task the training loop runs, and the adapter between them.

A *supervised* task (age regression, DEX, attribute classifiers) has one
set of parameters and one optimizer; it provides `loss_fn`, `eval_fn` and
`init_variables`, and `SupervisedTask` wraps it into the general form.

A *state* task (the GANs, multitask models) provides the general form
directly; `facejax.train.loop` only ever talks to this form:

  meta() -> dict                       what a workdir's checkpoints are
  best_metric = (eval key, 'min'|'max')
  progress_keys = (train metric, ...)   shown on the progress line
  finite_keys = (train metric, ...)     NaN/Inf in any of them stops the run
  data_root() -> str; source(split); balance(src); preprocess(train)
  train_dataset(start_step) -> grain.IterDataset   (optional; default:
      pipeline.train_dataset over balance(source('train')))
  baseline(train_src, eval_src) -> dict[str, float]   reference numbers
  init_state(rng) -> state             a flax.struct pytree with `step`
  import_pretrained(state) -> state    config.model.init_from (host arrays)
  load_frozen() -> pytree              frozen networks (loss estimators):
      passed to every step as an argument, never optimised or checkpointed
  train_step(state, batch, frozen, **kind) -> (state, metrics)   pure,
      jitted; `kind` is one of `step_kinds` (optional, default ({},)),
      chosen per global step by `step_args(step)`: e.g. a GAN's D-only and
      D+G steps, compiled as separate programs
  eval_step(state, batch, frozen) -> dict of sums        pure, jitted
  summarize(sums) -> dict[str, float]
  dummy_batch(batch_size) -> dict of numpy arrays (benchmarks, tests)
  describe(state) -> str               one line for the start message
  on_eval(state, frozen, step, workdir)   optional: sample grids etc.
"""

import json
import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections

from facejax import optim
from facejax.train import state as state_lib



def write_report(out_dir: str, name: str, table: str, data: Any) -> None:
  """Writes a task report's Markdown `table` and JSON `data` to out_dir as
  <name>.md and <name>.json (process 0 only; nothing if out_dir is '')."""
  if not out_dir or jax.process_index() != 0:
    return
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, f"{name}.md"), "w") as f:
    f.write(table)
  with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
    json.dump(data, f, indent=2)

@flax.struct.dataclass
class Frozen:
  """Nothing frozen (the default `load_frozen`)."""


class SupervisedTask:
  """Wraps a supervised task (one optimizer) into the state-task form."""

  progress_keys = ("loss", "mae")
  finite_keys = ("loss", "grad_norm")

  def __init__(self, inner, config: ml_collections.ConfigDict):
    self.inner = inner
    self.config = config
    self.best_metric = inner.best_metric
    self.progress_keys = getattr(inner, "progress_keys", self.progress_keys)
    rng = jax.random.key(config.seed)
    abstract_vars = jax.eval_shape(inner.init_variables, rng)
    self.trainable = optim.trainable_mask(
        abstract_vars["params"], config.optim.freeze,
        inner.last_block_prefixes())
    self.tx, self.schedule = optim.create_optimizer(
        config.optim, config.total_steps, self.trainable)
    self._step = state_lib.make_train_step(inner.loss_fn, self.tx,
                                           self.trainable, config.seed)

  def __getattr__(self, name):  # data, meta, summarize, ... of the inner task
    return getattr(self.inner, name)

  def _state(self, variables) -> state_lib.TrainState:
    return state_lib.TrainState(
        step=jnp.zeros((), jnp.int32), params=variables["params"],
        batch_stats=variables["batch_stats"],
        opt_state=self.tx.init(variables["params"]))

  def init_state(self, rng):
    return self._state(self.inner.init_variables(rng))

  def import_pretrained(self, state):
    variables = self.inner.import_pretrained(
        {"params": state.params, "batch_stats": state.batch_stats})
    return self._state(variables)

  def has_import(self) -> bool:
    return bool(self.config.model.get("init_from", ""))

  def load_frozen(self):
    return Frozen()

  def learning_rate(self, step: int) -> float:
    return float(self.schedule(step))

  def train_step(self, state, batch, frozen):
    del frozen
    return self._step(state, batch)

  def eval_step(self, state, batch, frozen):
    del frozen
    return self.inner.eval_fn(state.params, state.batch_stats, batch)

  def predict(self, state, images):
    return self.inner.predict(state.params, state.batch_stats, images)[0]

  def baseline(self, train_src, eval_src) -> dict[str, float]:
    value = self.inner.baseline(train_src, eval_src)
    return value if isinstance(value, dict) else {"baseline_mae": value}

  def describe(self, state) -> str:
    m = self.config.model
    n = state_lib.count_params(state.params)
    return f"{m.name} ({m.get('backbone', '')}): {n:,} params"


def wrap(task, config) -> Any:
  """The state-task form of `task` (supervised tasks get the adapter)."""
  if hasattr(task, "loss_fn") and not hasattr(task, "train_step"):
    return SupervisedTask(task, config)
  return task
