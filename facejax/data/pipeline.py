"""grain pipelines: reproducible, resumable, per-process sharded.

Training order is a pure function of (seed, global example position):
epoch e visits the records in `permutation(seed, e)`, and global batch s
holds positions [s*B, (s+1)*B). Process p of P reads the contiguous block
[s*B + p*B/P, s*B + (p+1)*B/P) of every global batch, so 1 process and N
processes see the same global batches in the same row order. The grain
iterator's state (a position) is saved in every checkpoint; a resumed run
continues with exactly the batches an uninterrupted run would have seen.
"""

import bisect
import math
import os
import threading
import time
from typing import Iterator, Sequence

import grain
import jax
import numpy as np

from facejax.data.transforms import Preprocess

ENDLESS = 2**40  # number of (lazily built) training steps


class ProcessSlice:
  """This process's contiguous block of each global batch; picklable."""

  def __init__(self, global_batch: int, process_index: int = 0,
               process_count: int = 1):
    self.global_batch = global_batch
    self.local_batch = global_batch // process_count
    self.offset = process_index * self.local_batch

  def positions(self, step: int) -> range:
    """Global example positions this process reads at `step`."""
    start = step * self.global_batch + self.offset
    return range(start, start + self.local_batch)


class GlobalOrder(ProcessSlice):
  """Local position -> (global position, record index); picklable."""

  def __init__(self, num_records: int, seed: int, global_batch: int,
               process_index: int = 0, process_count: int = 1):
    super().__init__(global_batch, process_index, process_count)
    self.n, self.seed = num_records, seed
    self._cache = (None, None)

  def _permutation(self, epoch: int) -> np.ndarray:
    if self._cache[0] != epoch:
      perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
      self._cache = (epoch, perm)
    return self._cache[1]

  def record(self, g: int) -> int:
    """Record index at global position `g`."""
    epoch, pos = divmod(g, self.n)
    return int(self._permutation(epoch)[pos])

  def __call__(self, local_pos: int) -> tuple[int, int]:
    step, k = divmod(int(local_pos), self.local_batch)
    g = self.positions(step)[k]
    return g, self.record(g)


def _stack(examples: list[dict]) -> dict:
  return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


class Staged:
  """Per-step preprocessing: `[(end_step, preprocess), ...]`, in order.

  Steps before the first end_step use the first preprocess, and so on; the
  last one also covers every later step. Used for resolution schedules
  (e.g. HRFAE's low-resolution first stage): batches change size at the
  boundary, which costs one more compile of the step and nothing else.
  """

  def __init__(self, stages: Sequence[tuple[int, Preprocess]]):
    if not stages:
      raise ValueError("Staged needs at least one (end_step, preprocess)")
    ends = [int(e) for e, _ in stages]
    if ends != sorted(ends):
      raise ValueError(f"stage end steps must increase, got {ends}")
    self.ends, self.preprocesses = ends, [p for _, p in stages]

  def at(self, step: int) -> Preprocess:
    i = bisect.bisect_right(self.ends, step)
    return self.preprocesses[min(i, len(self.preprocesses) - 1)]


def _at(preprocess, step: int):
  return preprocess.at(step) if isinstance(preprocess, Staged) else preprocess


class _LoadTrainBatch:
  """Training step -> this process's slice of that step's global batch.

  Whole batches are the elements handed to grain workers, so worker
  processes never reorder or drop examples: the batches are the same with
  0, 2 or 16 workers, and the iterator state is simply the step.
  """

  def __init__(self, source, order: GlobalOrder,
               preprocess: Preprocess | Staged):
    self.source, self.order, self.preprocess = source, order, preprocess

  def __call__(self, step: int, own_step: int | None = None) -> dict:
    """Batch of global `step`; `own_step` indexes this source's order."""
    own = step if own_step is None else own_step
    preprocess = _at(self.preprocess, step)
    return _stack([preprocess((g, self.source[self.order.record(g)]))
                   for g in self.order.positions(own)])


class _LoadRoundRobinBatch:
  """Global step -> a batch of the data set whose turn it is.

  Step s belongs to data set k = (s // group) % K; it is that data set's
  own step (s // (group * K)) * group + s % group, so each data set walks
  through its own reproducible order at 1/K of the global pace.
  """

  def __init__(self, loaders: Sequence[_LoadTrainBatch], group: int):
    self.loaders, self.group = list(loaders), group

  def __call__(self, step: int) -> dict:
    k_total = len(self.loaders)
    k = (step // self.group) % k_total
    own = (step // (self.group * k_total)) * self.group + step % self.group
    return self.loaders[k](step, own)


class _LoadEvalBatch:
  """Eval batch index -> padded local batch; padding rows have mask 0."""

  def __init__(self, source, preprocess: Preprocess, slice_: ProcessSlice):
    self.source, self.preprocess, self.slice = source, preprocess, slice_

  def __call__(self, step: int) -> dict:
    examples = []
    for g in self.slice.positions(step):
      ex = self.preprocess((g, self.source[min(g, len(self.source) - 1)]))
      if g >= len(self.source):
        ex["mask"] = np.float32(0.0)
      examples.append(ex)
    return _stack(examples)


def exit_with_parent(worker_index: int, worker_count: int) -> None:
  """Grain worker start-up: the worker exits within a second of its parent.

  A training process killed by SIGKILL or the OOM killer cannot stop its
  workers; without this they live on (hundreds of MB each), holding their
  shared memory. A daemon thread polls the parent's pid: the worker is
  re-parented when the parent dies.
  """
  del worker_index, worker_count
  parent = os.getppid()

  def watch():
    while os.getppid() == parent:
      time.sleep(0.5)
    os._exit(1)  # pylint: disable=protected-access
  threading.Thread(target=watch, name="exit_with_parent", daemon=True).start()


def read_options(num_workers: int) -> grain.ReadOptions:
  """grain's thread prefetch for facejax's elements, which are whole batches.

  grain's defaults (16 threads, 500 elements ahead) are tuned for records
  of 1-10 KiB. Ours are batches of megabytes that the step takes one at a
  time: with the defaults a 2-step run decoded hundreds of batches it never
  used, beside its step on the same cores, and a long run ended 500 batches
  ahead (in every worker process, in memory). Here the training process
  keeps 4 batches ready with 2 threads; a worker process loads one batch
  at a time and keeps 2 ready (the workers are the parallelism there).
  """
  if num_workers > 0:
    return grain.ReadOptions(num_threads=1, prefetch_buffer_size=2)
  return grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)


def prefetch(ds: grain.MapDataset, num_workers: int) -> grain.IterDataset:
  """`ds` (one element per batch) as an iterator dataset, loaded ahead by
  threads (`read_options`) and, with `num_workers` > 0, worker processes."""
  it = ds.to_iter_dataset(read_options(num_workers))
  if num_workers > 0:
    return it.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=num_workers), worker_init_fn=exit_with_parent)
  return it


def train_dataset(source, preprocess: Preprocess | Staged, global_batch: int,
                  seed: int, num_workers: int = 0,
                  start_step: int = 0) -> grain.IterDataset:
  """Endless training batches for this process (checkpointable).

  `preprocess` may be `Staged` (a preprocess per range of steps).
  `start_step` positions a fresh iterator without its saved state (the
  order is a function of the step, so the batches are the same).
  """
  order = GlobalOrder(len(source), seed, global_batch, jax.process_index(),
                      jax.process_count())
  ds = grain.MapDataset.range(start_step, ENDLESS).map(
      _LoadTrainBatch(source, order, preprocess))
  return prefetch(ds, num_workers)


def round_robin_dataset(sources: Sequence, preprocesses: Sequence,
                        global_batch: int, seed: int, num_workers: int = 0,
                        start_step: int = 0,
                        group: int = 1) -> grain.IterDataset:
  """Endless batches taking turns over several data sets (checkpointable).

  Step s reads data set (s // group) % len(sources); with group = n_critic
  a whole critic group sees one data set. Data set k is shuffled with
  seed + k. Every data set's examples must have the same keys and shapes
  (e.g. the full multi-data-set label vector), so one compiled step serves
  all of them.
  """
  if len(sources) != len(preprocesses) or not sources:
    raise ValueError("round_robin_dataset needs one preprocess per source")
  if group < 1:
    raise ValueError(f"group must be >= 1, got {group}")
  loaders = [
      _LoadTrainBatch(src, GlobalOrder(len(src), seed + k, global_batch,
                                       jax.process_index(),
                                       jax.process_count()), pre)
      for k, (src, pre) in enumerate(zip(sources, preprocesses))]
  ds = grain.MapDataset.range(start_step, ENDLESS).map(
      _LoadRoundRobinBatch(loaders, group))
  return prefetch(ds, num_workers)


def eval_batches(source, preprocess: Preprocess, global_batch: int,
                 num_workers: int = 0) -> Iterator[dict]:
  """One pass over `source` in padded batches; `mask` marks real rows."""
  num_batches = math.ceil(len(source) / global_batch)
  load = _LoadEvalBatch(source, preprocess, ProcessSlice(
      global_batch, jax.process_index(), jax.process_count()))
  ds = grain.MapDataset.range(num_batches).map(load)
  it = iter(prefetch(ds, num_workers))
  try:
    yield from it
  finally:
    close(it)  # Workers and their shared memory go with the pass.


def close(iterator) -> None:
  """Stops a grain iterator's worker processes (a no-op without them), so
  their shared memory is released now rather than at interpreter exit."""
  stop = getattr(iterator, "close", None)
  if stop is not None:
    stop()
