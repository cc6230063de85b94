"""The Task contract: what the training loop, runs and the CLIs call.

`facejax.train.loop` knows no task by name: it is handed an object of a
`Task` subclass and calls only the members below. `facejax.train.loop.
check_task` checks them once at start-up.

Required (abstract; every task writes them):

  best_metric = (eval key, 'min'|'max')   attribute (set in __init__ where
                                       the config decides): what best/ keeps
  meta() -> dict                       what a workdir's checkpoints are; a
                                       mismatch refuses to resume or reload
  dummy_batch(batch_size) -> dict of numpy arrays (benchmarks, tests)
  describe(state) -> str               one line for the start message
  init_state(rng) -> state             a flax.struct pytree with `step`
  train_step(state, batch, frozen, **kind) -> (state, metrics)   pure,
      jitted, donated; `kind` is one of `step_kinds`
  eval_step(state, batch, frozen) -> dict of sums        pure, jitted
  summarize(sums) -> dict[str, float]  eval metrics from the summed dicts
  data_root() -> str                   the data root (recorded absolute)
  source(split) -> a record source     'train' | 'valid' | 'test' | a path
  preprocess(train) -> callable        record -> example (grain map)

Hooks (defaulted here; override where the task needs them):

  progress_keys = ('loss',)            train metrics on the progress line
  finite_keys = ('loss',)              NaN/Inf in any of them stops the run
  step_kinds = ({},)                   keyword sets of train_step, one
      compiled program each (e.g. a GAN's D-only and D+G steps)
  step_args(step) -> dict              the kind for global step `step`
  balance(src) -> src                  the training sampler (identity)
  train_dataset(start_step, train_src) -> grain.IterDataset   the training
      batches (default: pipeline.train_dataset over `train_src`, the
      balanced train source)
  baseline(train_src, eval_src) -> dict[str, float]   reference numbers ({})
  has_import() -> bool                 whether config.model.init_from is set
  import_pretrained(state) -> state    config.model.init_from (host arrays)
  load_frozen() -> pytree              frozen networks (loss estimators):
      passed to every step, never optimised or checkpointed (`Frozen()`)
  learning_rate(step) -> float | None  logged as train/lr (None: not logged)
  predict(state, images) -> pytree     inference on [B, H, W, 3] images
      (`implements('predict')` says whether a task has one)
  on_eval(state, frozen, step, workdir)   after each eval: sample grids
  xla_cpu_options() -> dict[str, str]  per-executable XLA options on CPU
  inference_config(config, from_weights, frozen_networks)   classmethod:
      config changes before a trained model is rebuilt for inference

A task with one set of parameters and one optimizer subclasses
`SupervisedTask` and writes model-level functions instead of the state
form (see there).

A task is never handed the loop's run (`facejax.train.loop.Setup`): the
evaluation reports that need one (sharded inference over a split) are
`facejax.evaluators.<name>.report(run, state, split, out_dir)`.
"""

import abc
import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections

from facejax import optim
from facejax.data import pipeline
from facejax.train import state as state_lib
from facejax.train import steps as steps_lib


@flax.struct.dataclass
class Frozen:
  """Nothing frozen (the default `load_frozen`)."""


class Task(abc.ABC):
  """Base of every task; see the module docstring for the whole contract."""

  best_metric: tuple[str, str]  # required; checked by loop.check_task
  progress_keys: tuple[str, ...] = ("loss",)
  finite_keys: tuple[str, ...] = ("loss",)
  step_kinds: tuple[dict[str, Any], ...] = ({},)

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config

  @classmethod
  def inference_config(cls, config: ml_collections.ConfigDict,
                       from_weights: bool, frozen_networks: bool) -> None:
    """Adjusts `config` (unlocked) before the task is built for inference
    (facejax.runs): with `from_weights` no training run, nor its data, is
    on this machine; without `frozen_networks` the networks only a loss
    reads are not wanted. Default: nothing to adjust."""
    del config, from_weights, frozen_networks

  @classmethod
  def implements(cls, hook: str) -> bool:
    """Whether this task overrides the base class's default `hook`."""
    return getattr(cls, hook) is not getattr(Task, hook)

  # --- required ----------------------------------------------------------
  @abc.abstractmethod
  def meta(self) -> dict[str, Any]:
    """What a workdir's checkpoints are; a mismatch refuses to resume."""

  @abc.abstractmethod
  def dummy_batch(self, batch_size: int) -> dict[str, Any]:
    """Zeros of a training batch's shapes (numpy)."""

  @abc.abstractmethod
  def describe(self, state) -> str:
    """One line about the model for the start message."""

  @abc.abstractmethod
  def init_state(self, rng: jax.Array):
    """The initial state pytree (a flax.struct dataclass with `step`)."""

  @abc.abstractmethod
  def train_step(self, state, batch, frozen, **kind):
    """(state, metrics) after one update; pure, jitted by the loop."""

  @abc.abstractmethod
  def eval_step(self, state, batch, frozen) -> dict[str, jax.Array]:
    """Per-batch metric sums; the loop adds them up over a split."""

  @abc.abstractmethod
  def summarize(self, sums: dict[str, Any]) -> dict[str, float]:
    """Eval metrics from the summed `eval_step` outputs."""

  @abc.abstractmethod
  def data_root(self) -> str:
    """The data root (the synthetic set where none is configured)."""

  @abc.abstractmethod
  def source(self, split: str):
    """The record source of a split ('train' | 'valid' | 'test' | path)."""

  @abc.abstractmethod
  def preprocess(self, train: bool):
    """record -> example, for training or evaluation."""

  # --- hooks -------------------------------------------------------------
  def step_args(self, step: int) -> dict[str, Any]:
    """The `step_kinds` entry global step `step` (0-based) runs."""
    del step
    return dict(self.step_kinds[0])

  def balance(self, src):
    """The training sampler over the train source (default: all of it)."""
    return src

  def train_dataset(self, start_step: int = 0, train_src=None):
    """This process's training batches from global step `start_step` on.

    `train_src` is `balance(source('train'))` where the caller has it.
    """
    cfg = self.config
    if train_src is None:
      train_src = self.balance(self.source("train"))
    return pipeline.train_dataset(
        train_src, self.preprocess(train=True), cfg.data.batch_size,
        cfg.seed, cfg.data.num_workers, start_step=start_step)

  def baseline(self, train_src, eval_src) -> dict[str, float]:
    """Reference numbers logged with the results (e.g. predict-the-mean)."""
    del train_src, eval_src
    return {}

  def has_import(self) -> bool:
    """Whether the initial state imports config.model.init_from."""
    return bool(self.config.model.get("init_from", ""))

  def import_pretrained(self, state):
    """`state` (host arrays) with config.model.init_from read into it."""
    return state

  def load_frozen(self) -> Any:
    """Networks used frozen inside the losses (a pytree of arrays)."""
    return Frozen()

  def learning_rate(self, step: int) -> float | None:
    """The learning rate at `step`, logged as train/lr (None: not logged)."""
    del step
    return None

  def predict(self, state, images):
    """The task's prediction for images [B, H, W, 3] (jitted by Setup)."""
    raise NotImplementedError(
        f"the {self.config.get('task')!r} task has no prediction function")

  def on_eval(self, state, frozen, step: int, workdir: str) -> None:
    """Called after each evaluation (sample grids and the like)."""
    del state, frozen, step, workdir

  def xla_cpu_options(self) -> dict[str, str]:
    """Per-executable XLA options for the train/eval steps on CPU."""
    return {}


class SupervisedTask(Task):
  """A task with one set of parameters and one optimizer.

  Subclasses write the model-level functions; this class builds the state
  form (`TrainState`, the optimizer from config.optim, the train step)
  from them:

    init_variables(rng) -> {'params', 'batch_stats'}
    loss_fn(params, batch_stats, batch, rng)
        -> (loss, (metrics, new batch_stats))
    eval_fn(params, batch_stats, batch) -> dict of sums
    forward(params, batch_stats, images) -> (prediction, features)
    import_variables(variables) -> variables   config.model.init_from
        (default: unchanged)
    last_block_prefixes() -> tuple[str, ...]   for optim.freeze='last_block'
  """

  progress_keys = ("loss", "mae")
  finite_keys = ("loss", "grad_norm")

  @abc.abstractmethod
  def init_variables(self, rng: jax.Array) -> dict[str, Any]:
    """{'params', 'batch_stats'} of a fresh model."""

  @abc.abstractmethod
  def loss_fn(self, params, batch_stats, batch, rng):
    """(loss, (metrics, new batch_stats)) of one training batch."""

  @abc.abstractmethod
  def eval_fn(self, params, batch_stats, batch) -> dict[str, jax.Array]:
    """Per-batch metric sums."""

  @abc.abstractmethod
  def forward(self, params, batch_stats, images):
    """(prediction, features) of images in inference mode."""

  def import_variables(self, variables: dict[str, Any]) -> dict[str, Any]:
    """`variables` with config.model.init_from read into them."""
    return variables

  def last_block_prefixes(self) -> tuple[str, ...]:
    """Parameter path prefixes of the last block (optim.freeze)."""
    return ()

  @functools.cached_property
  def _training(self):
    """(tx, schedule, train step), built once the model exists."""
    config = self.config
    abstract_vars = jax.eval_shape(self.init_variables,
                                   jax.random.key(config.seed))
    trainable = optim.trainable_mask(
        abstract_vars["params"], config.optim.freeze,
        self.last_block_prefixes())
    tx, schedule = optim.create_optimizer(config.optim, config.total_steps,
                                          trainable)
    step = steps_lib.make_train_step(self.loss_fn, tx, trainable,
                                     config.seed)
    return tx, schedule, step

  def _state(self, variables) -> state_lib.TrainState:
    tx = self._training[0]
    return state_lib.TrainState(
        step=jnp.zeros((), jnp.int32), params=variables["params"],
        batch_stats=variables["batch_stats"],
        opt_state=tx.init(variables["params"]))

  def init_state(self, rng):
    return self._state(self.init_variables(rng))

  def import_pretrained(self, state):
    variables = self.import_variables(
        {"params": state.params, "batch_stats": state.batch_stats})
    return self._state(variables)

  def learning_rate(self, step: int) -> float:
    return float(self._training[1](step))

  def train_step(self, state, batch, frozen):
    del frozen
    return self._training[2](state, batch)

  def eval_step(self, state, batch, frozen):
    del frozen
    return self.eval_fn(state.params, state.batch_stats, batch)

  def predict(self, state, images):
    return self.forward(state.params, state.batch_stats, images)[0]

  def describe(self, state) -> str:
    m = self.config.model
    n = state_lib.count_params(state.params)
    return f"{m.name} ({m.get('backbone', '')}): {n:,} params"
