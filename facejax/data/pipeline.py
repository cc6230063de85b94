"""grain pipelines: reproducible, resumable, per-process sharded.

Training order is a pure function of (seed, global example position):
epoch e visits the records in `permutation(seed, e)`, and global batch s
holds positions [s*B, (s+1)*B). Process p of P reads the contiguous block
[s*B + p*B/P, s*B + (p+1)*B/P) of every global batch, so 1 process and N
processes see the same global batches in the same row order. The grain
iterator's state (a position) is saved in every checkpoint; a resumed run
continues with exactly the batches an uninterrupted run would have seen.
"""

import math
from typing import Iterator

import grain
import jax
import numpy as np

from facejax.data.transforms import Preprocess

_ENDLESS = 2**40  # number of (lazily built) training steps


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


class _LoadTrainBatch:
  """Training step -> this process's slice of that step's global batch.

  Whole batches are the elements handed to grain workers, so worker
  processes never reorder or drop examples: the batches are the same with
  0, 2 or 16 workers, and the iterator state is simply the step.
  """

  def __init__(self, source, order: GlobalOrder, preprocess: Preprocess):
    self.source, self.order, self.preprocess = source, order, preprocess

  def __call__(self, step: int) -> dict:
    return _stack([self.preprocess((g, self.source[self.order.record(g)]))
                   for g in self.order.positions(step)])


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


def _prefetch(ds: grain.IterDataset, num_workers: int) -> grain.IterDataset:
  if num_workers > 0:
    return ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=num_workers))
  return ds


def train_dataset(source, preprocess: Preprocess, global_batch: int,
                  seed: int, num_workers: int = 0,
                  start_step: int = 0) -> grain.IterDataset:
  """Endless training batches for this process (checkpointable).

  `start_step` positions a fresh iterator without its saved state (the
  order is a function of the step, so the batches are the same).
  """
  order = GlobalOrder(len(source), seed, global_batch, jax.process_index(),
                      jax.process_count())
  ds = grain.MapDataset.range(start_step, _ENDLESS).map(
      _LoadTrainBatch(source, order, preprocess))
  return _prefetch(ds.to_iter_dataset(), num_workers)


def eval_batches(source, preprocess: Preprocess, global_batch: int,
                 num_workers: int = 0) -> Iterator[dict]:
  """One pass over `source` in padded batches; `mask` marks real rows."""
  num_batches = math.ceil(len(source) / global_batch)
  load = _LoadEvalBatch(source, preprocess, ProcessSlice(
      global_batch, jax.process_index(), jax.process_count()))
  ds = grain.MapDataset.range(num_batches).map(load)
  return iter(_prefetch(ds.to_iter_dataset(), num_workers))
