"""Orbax checkpoints of the train state together with the data iterator.

The only module that imports orbax. Layout under the workdir:
  ckpt/<step>/{state,data}   the last `keep` checkpoints (resume source)
  best/<step>/state          the best-by-validation checkpoint
  model.json                 what model the workdir belongs to

Writes are atomic (orbax writes into a temporary folder and renames it when
complete), so a run killed while saving resumes from the previous one. A
training run holds an exclusive lock on its workdir (`WorkdirLock`);
readers (predict, evaluate, export) open the checkpoints read-only and
never delete anything, so they can run beside a live training run.
"""

import datetime
import errno
import fcntl
import json
import logging as std_logging
import os
import socket
from typing import Any, Callable

from absl import logging
import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import multihost


def sync_processes(name: str, timeout_s: int = 3600) -> None:
  """A barrier of every process, with a timeout (orbax's barrier on JAX's
  distributed client; the loop meets here after compiling, because gloo
  gives peers only 30 s to reach their first collective)."""
  multihost.sync_global_processes(name, timeout=timeout_s)


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


def has_checkpoints(workdir: str) -> bool:
  """Whether workdir/ckpt holds a finished checkpoint: an integer step
  folder (orbax's temporary folders and `<step>.unusable` are not)."""
  folder = os.path.join(workdir, "ckpt")
  return os.path.isdir(folder) and any(n.isdigit() for n in os.listdir(folder))


def abstract_like(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the *current* mesh's shardings."""
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      tree, shardings)


class WorkdirBusyError(RuntimeError):
  """Another live process trains in the workdir."""


class WorkdirLock:
  """An exclusive lock on a workdir for one training run (process 0).

  `flock` on workdir/lock: the kernel releases it when the holder exits,
  however it dies (SIGKILL, OOM), so a stale lock never blocks a rerun. The
  file says who holds it, for the message a second run gets.
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(os.path.abspath(workdir), "lock")
    self._file = None

  def acquire(self) -> None:
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    f = open(self.path, "a+")
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        # A file system without flock (some Lustre/GPFS mounts): run
        # unlocked rather than refuse every run.
        f.close()
        logging.warning("cannot lock %s (%s); running without a workdir "
                        "lock", self.path, e)
        return
      f.seek(0)
      holder = f.read().strip() or "another process"
      f.close()
      raise WorkdirBusyError(
          f"{os.path.dirname(self.path)} is in use by {holder} (lock "
          f"{self.path}). Two runs on one workdir would delete each other's "
          "checkpoints: wait for that run to end, stop it, or use another "
          "--workdir.") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()} since "
            f"{datetime.datetime.now().isoformat(timespec='seconds')}\n")
    f.flush()
    self._file = f

  def release(self) -> None:
    if self._file is not None:
      fcntl.flock(self._file, fcntl.LOCK_UN)
      self._file.close()
      self._file = None


class Checkpointer:
  """Saves/restores {state, data iterator}; keeps the last K and the best.

  `read_only=True` (inference beside a live run): nothing is created,
  cleaned up or deleted; only finished checkpoints are seen.
  """

  def __init__(self, workdir: str, keep: int = 3, best_mode: str = "min",
               async_save: bool = True, read_only: bool = False):
    workdir = os.path.abspath(workdir)
    self.read_only = read_only
    writable = dict(cleanup_tmp_directories=not read_only,
                    read_only=read_only, create=not read_only)
    verbosity = logging.get_verbosity()
    if read_only:  # orbax warns "directory is read only" on every open
      logging.set_verbosity(logging.ERROR)
    try:
      self._open(workdir, keep, best_mode, async_save, writable)
    finally:
      logging.set_verbosity(verbosity)

  def _open(self, workdir, keep, best_mode, async_save, writable):
    self._mgr = ocp.CheckpointManager(
        os.path.join(workdir, "ckpt"),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save,
            **writable),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "data": grain.checkpoint.CheckpointHandler()})
    sign = 1.0 if best_mode == "min" else -1.0
    self._best = ocp.CheckpointManager(
        os.path.join(workdir, "best"),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, best_fn=lambda m: sign * m["value"],
            best_mode="min", keep_checkpoints_without_metrics=False,
            enable_async_checkpointing=async_save, **writable),
        item_handlers={"state": ocp.StandardCheckpointHandler()})
    self.directory = os.path.join(workdir, "ckpt")
    self.best_directory = os.path.join(workdir, "best")

  def latest_step(self) -> int | None:
    return self._mgr.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._mgr.all_steps())

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

  def restore_newest_good(self, abstract_state: Any,
                          data_iter: Any | None = None,
                          check: Callable[[Any], str] | None = None,
                          best: bool = False) -> tuple[Any, int | None]:
    """(state, step) of the newest checkpoint that reads and passes
    `check` (a reason string when the state is bad, '' when good); older
    ones are tried in turn with a warning naming what was wrong. (None,
    None) when there is no checkpoint; an error when none is usable."""
    mgr = self._best if best else self._mgr
    steps = sorted(mgr.all_steps(), reverse=True)
    problems = []
    self.iterator_restored = data_iter is not None
    # A damaged checkpoint fails in many tensorstore reads at once; asyncio
    # would log each unretrieved failure (hundreds of lines): one warning
    # per checkpoint says it instead.
    asyncio_log = std_logging.getLogger("asyncio")
    level = asyncio_log.level
    asyncio_log.setLevel(std_logging.CRITICAL)
    try:
      return self._newest_good(mgr, steps, abstract_state, data_iter, check,
                               best, problems)
    finally:
      asyncio_log.setLevel(level)
      if problems and not self.read_only:
        self._reload_steps()  # The unusable ones were moved aside.

  def _newest_good(self, mgr, steps, abstract_state, data_iter, check, best,
                   problems):
    unusable = []
    for step in steps:
      state, reason = self._try_restore(step, abstract_state, data_iter,
                                        check, best)
      if not reason:
        if unusable:
          logging.warning("restored step %d instead", step)
          self._move_aside(unusable)
        return state, step
      where = os.path.join(mgr.directory, str(step))
      logging.warning("checkpoint %s is unusable (%s); trying an older one",
                      where, reason)
      print(f"warning: checkpoint {where} is unusable ({reason}); trying "
            "an older one", flush=True)
      problems.append(f"{where}: {reason}")
      unusable.append(where)
    if problems:
      # Nothing restored: the cause is more likely the reader (a config
      # that changed shapes, memory) than every checkpoint. Nothing moves.
      raise ValueError("no usable checkpoint: " + "; ".join(problems))
    return None, None

  def _try_restore(self, step, abstract_state, data_iter, check, best):
    """(state, '') or (None, why the checkpoint at `step` is unusable)."""
    try:
      state = self.restore(step, abstract_state, data_iter, best=best)
    except Exception as e:  # pylint: disable=broad-except
      # Truncated or zeroed files surface as many exception types from
      # tensorstore; any of them makes this checkpoint unusable.
      reason = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
      if data_iter is None:
        return None, reason
      try:  # The state alone (the iterator's layout may have changed).
        state = self.restore(step, abstract_state, None, best=best)
      except Exception:  # pylint: disable=broad-except
        return None, reason
      logging.warning("data iterator state of step %d not restorable (%s)",
                      step, reason)
      self.iterator_restored = False
    return (state, "") if check is None else (state, check(state))

  def _move_aside(self, folders: list[str]) -> None:
    """Unusable checkpoints newer than the one restored: kept for a
    post-mortem, out of the way of the next save of their steps (orbax
    reads only integer step folders). One process only, and only where it
    alone decides (several hosts could disagree on what is unusable)."""
    if self.read_only or jax.process_count() > 1:
      return
    for where in folders:
      aside = f"{where}.unusable"
      if not os.path.exists(aside):
        os.rename(where, aside)
        print(f"  moved {where} to {aside}", flush=True)

  def _reload_steps(self) -> None:
    self._mgr.reload()
    self._best.reload()

  def check_for_errors(self) -> None:
    """Raises now if a background save failed (instead of at the next)."""
    self._mgr.check_for_errors()
    self._best.check_for_errors()

  def wait(self) -> None:
    self._mgr.wait_until_finished()
    self._best.wait_until_finished()

  def close(self) -> None:
    self._mgr.close()
    self._best.close()
    logging.info("checkpoints closed")
