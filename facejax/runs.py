"""A trained run, read-only: config.json + checkpoint -> task and state.

The one way to reload a run, for the CLIs (`load`, `restore`,
`from_weights`: a `Setup` on this machine's devices) and for networks used
frozen inside another model (`read_config` + `restore_host`: host arrays
the caller places on its own mesh). Nothing here writes to the workdir: a
run still training there keeps its saves in progress.

This module imports no task (nor launch) and names none: callers pass
`task_class(name) -> Task subclass` (`facejax.tasks.get`), or a task built
on the run's config; what a task changes in its config for inference is its
`inference_config` hook.
"""

import json
import os
from typing import Any, Callable, Optional

from absl import logging
import jax
import ml_collections

from facejax import checkpoint as ckpt_lib
from facejax import config_lib
from facejax.train import loop

TaskClass = Callable[[str], Any]  # config.task -> its Task subclass


class RunError(FileNotFoundError, ValueError):
  """Not a usable training run: no config.json, bad JSON, no checkpoint."""


def read_config(workdir: str, key: str = "") -> ml_collections.ConfigDict:
  """`workdir`'s config.json (written by the training loop).

  Args:
    workdir: a training workdir.
    key: the config key that named `workdir`, named in errors (a frozen
      network's run); '' for a workdir given on the command line.
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    if key:
      raise RunError(f"{key}: {path} not found; {workdir!r} is not a "
                     f"facejax training workdir")
    raise RunError(
        f"{path} not found: {workdir!r} is not a facejax training workdir")
  with open(path) as f:
    try:
      return ml_collections.ConfigDict(json.load(f))
    except json.JSONDecodeError as e:
      raise RunError(f"{key or 'workdir'}: {path}:{e.lineno}: bad JSON "
                     f"({e.msg})") from None


def restore_host(workdir: str, task: Any, key: str = "") -> tuple[Any, int]:
  """(state, step) of `workdir`'s best checkpoint, else its latest, as host
  (numpy) arrays: for a network used frozen inside another model, which
  places it on its own mesh.

  Args:
    workdir: the training workdir.
    task: its task, built on its config (`read_config`).
    key: the config key that named `workdir`, named in errors.
  """
  abstract = jax.eval_shape(task.init_state,
                            jax.random.key(task.config.seed))
  # One device is enough: the caller places the variables.
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = ckpt_lib.abstract_like(
      abstract, jax.tree.map(lambda _: device, abstract))
  checkpointer = ckpt_lib.Checkpointer(workdir, async_save=False,
                                       read_only=True)
  try:
    step = checkpointer.best_step()
    best = step is not None
    if not best:
      step = checkpointer.latest_step()
    if step is None:
      raise RunError(f"config key {key}: no checkpoint in {workdir!r}")
    state = checkpointer.restore(step, abstract, best=best)
  finally:
    checkpointer.close()
  logging.info("%s: restored %s checkpoint %d of %s", key or "run",
               "best" if best else "latest", step, workdir)
  return jax.device_get(state), step


def _inference_mesh(config: ml_collections.ConfigDict) -> None:
  # Inference may run on another machine than training: a data-parallel
  # mesh over this machine's devices, batches rounded to fit it.
  n = jax.device_count()
  with config.unlocked():
    config.mesh = (("data", -1), ("fsdp", 1), ("model", 1))
    for key in ("batch_size", "eval_batch_size"):
      config.data[key] = -(-config.data[key] // n) * n


def _setup(config: ml_collections.ConfigDict, task_class: TaskClass):
  config_lib.validate(config)
  return loop.Setup(task_class(config.task)(config), config)


def from_weights(config: ml_collections.ConfigDict, weights: str, *,
                 task_class: TaskClass):
  """(setup, state, 0): `config`'s model with the weights file imported
  through its model.init_from (an official checkpoint; no training run)."""
  if not os.path.exists(weights):
    raise FileNotFoundError(f"--weights {weights}: no such file")
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.model.init_from = os.path.abspath(weights)
    task_class(config.task).inference_config(
        config, from_weights=True, frozen_networks=True)
  _inference_mesh(config)
  setup = _setup(config, task_class)
  if not setup.task.has_import():
    raise ValueError(f"the {config.task!r} task imports no weights file")
  return setup, setup.init_state(), 0


def restore(workdir: str, config: ml_collections.ConfigDict | None = None,
            which: str = "best", *, task_class: TaskClass):
  """Returns (setup, state, step) from workdir's best or latest checkpoint.

  Args:
    workdir: a directory written by launch.train.
    config: defaults to the workdir's config.json.
    which: 'best' (best validation metric) or 'latest'.
    task_class: config.task -> its Task subclass (`facejax.tasks.get`).
  """
  config = config or read_config(workdir)
  _inference_mesh(config)
  setup = _setup(config, task_class)
  ckpt_lib.check_workdir_model(workdir, setup.task.meta())
  # Read-only: a run still training in this workdir keeps its saves in
  # progress (orbax would otherwise clean up their temporary folders).
  checkpointer = ckpt_lib.Checkpointer(workdir, async_save=False,
                                       read_only=True)
  abstract = ckpt_lib.abstract_like(setup.abstract_state,
                                    setup.state_sharding)
  try:
    state, step = None, None
    if which == "best":
      try:
        state, step = checkpointer.restore_newest_good(abstract, best=True)
      except ValueError as e:  # Unusable best/: the latest checkpoint.
        print(f"warning: {e}; using the latest checkpoint", flush=True)
    if state is None:
      state, step = checkpointer.restore_newest_good(abstract)
  finally:
    checkpointer.close()
  if state is None:
    raise RunError(f"no checkpoint in {workdir!r}")
  return setup, state, step


def default_config(name: str) -> ml_collections.ConfigDict:
  """configs/<name>.py: the geometry official weights are read into."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  return config_lib.load_config(os.path.join(root, "configs", f"{name}.py"))


def load(task: str, workdir: str = "", weights: str = "",
         config: Optional[ml_collections.ConfigDict] = None,
         which: str = "best", frozen_networks: bool = True, *,
         task_class: TaskClass):
  """(setup, state, step) of a `task` model from a workdir or weights file.

  `weights` is read into `config` (default configs/<task>.py). With
  `frozen_networks=False` (editing, export) the networks only a loss reads
  are not loaded (the task's `inference_config`: the age transformer's age
  estimator becomes a tiny random stand-in, so its run need not be on this
  machine). A model of another task is a ValueError.
  """
  if weights:
    config = (config or default_config(task)).copy_and_resolve_references()
  else:
    config = config or read_config(workdir)
  if config.get("task") != task:
    raise ValueError(f"{workdir or weights!r} is a {config.get('task')!r} "
                     f"model, not {task!r}")
  if not frozen_networks:
    with config.unlocked():
      task_class(task).inference_config(config, from_weights=False,
                                        frozen_networks=False)
  if weights:
    return from_weights(config, weights, task_class=task_class)
  return restore(workdir, config, which=which, task_class=task_class)
