"""Orbax checkpoints of the train state together with the data iterator.

The only module that imports orbax. Layout under the workdir:
  ckpt/<step>/{state,data}   the last `keep` checkpoints (resume source)
  best/<step>/state          the best-by-validation checkpoint
  model.json                 what model the workdir belongs to

Writes are atomic (orbax writes into a temporary folder and renames it when
complete), so a run killed while saving resumes from the previous one.
"""

import json
import os
from typing import Any

from absl import logging
import grain
import jax
import orbax.checkpoint as ocp


class WorkdirMismatchError(ValueError):
  """The workdir holds checkpoints of a different model."""


def check_workdir_model(workdir: str, meta: dict[str, Any]) -> None:
  """Writes workdir/model.json, or checks it against `meta` if present."""
  path = os.path.join(workdir, "model.json")
  if os.path.exists(path):
    with open(path) as f:
      stored = json.load(f)
    diff = {k: (stored.get(k), v) for k, v in meta.items()
            if stored.get(k) != v}
    if diff:
      details = "; ".join(f"{k}: workdir has {a!r}, config asks {b!r}"
                          for k, (a, b) in diff.items())
      raise WorkdirMismatchError(
          f"{path}: workdir {workdir!r} holds checkpoints of another model "
          f"({details}). Use a new --workdir, or the config that trained it.")
    return
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(path, "w") as f:
      json.dump(meta, f, indent=2)


def abstract_like(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the *current* mesh's shardings."""
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      tree, shardings)


class Checkpointer:
  """Saves/restores {state, data iterator}; keeps the last K and the best."""

  def __init__(self, workdir: str, keep: int = 3, best_mode: str = "min",
               async_save: bool = True):
    workdir = os.path.abspath(workdir)
    self._mgr = ocp.CheckpointManager(
        os.path.join(workdir, "ckpt"),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, cleanup_tmp_directories=True,
            enable_async_checkpointing=async_save),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "data": grain.checkpoint.CheckpointHandler()})
    sign = 1.0 if best_mode == "min" else -1.0
    self._best = ocp.CheckpointManager(
        os.path.join(workdir, "best"),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, best_fn=lambda m: sign * m["value"],
            best_mode="min", keep_checkpoints_without_metrics=False,
            cleanup_tmp_directories=True,
            enable_async_checkpointing=async_save),
        item_handlers={"state": ocp.StandardCheckpointHandler()})
    self.directory = os.path.join(workdir, "ckpt")
    self.best_directory = os.path.join(workdir, "best")

  def latest_step(self) -> int | None:
    return self._mgr.latest_step()

  def best_step(self) -> int | None:
    return self._best.best_step()

  def save(self, step: int, state: Any, data_iter: Any | None) -> None:
    items = {"state": ocp.args.StandardSave(state)}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iter)
    self._mgr.save(step, args=ocp.args.Composite(**items), force=True)

  def save_best(self, step: int, state: Any, value: float) -> None:
    if step in self._best.all_steps():
      # Written before a kill by the run this one resumed; same state.
      return
    self._best.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state)), metrics={"value": float(value)},
                    force=True)

  def restore(self, step: int, abstract_state: Any,
              data_iter: Any | None = None, best: bool = False) -> Any:
    """Restores the state (and the iterator in place) saved at `step`."""
    mgr = self._best if best else self._mgr
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    restored = mgr.restore(step, args=ocp.args.Composite(**items))
    return restored["state"]

  def wait(self) -> None:
    self._mgr.wait_until_finished()
    self._best.wait_until_finished()

  def close(self) -> None:
    self._mgr.close()
    self._best.close()
    logging.info("checkpoints closed")
