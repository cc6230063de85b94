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

_ENDLESS = 2**40  # length of the (lazily evaluated) training index range


class GlobalOrder:
  """Local position -> (global position, record index); picklable."""

  def __init__(self, num_records: int, seed: int, global_batch: int,
               process_index: int = 0, process_count: int = 1):
    self.n, self.seed = num_records, seed
    self.global_batch = global_batch
    self.local_batch = global_batch // process_count
    self.offset = process_index * self.local_batch
    self._cache = (None, None)

  def _permutation(self, epoch: int) -> np.ndarray:
    if self._cache[0] != epoch:
      perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
      self._cache = (epoch, perm)
    return self._cache[1]

  def __call__(self, local_pos: int) -> tuple[int, int]:
    step, k = divmod(int(local_pos), self.local_batch)
    g = step * self.global_batch + self.offset + k
    epoch, pos = divmod(g, self.n)
    return g, int(self._permutation(epoch)[pos])


class _LoadTrain:
  def __init__(self, source, order: GlobalOrder, preprocess: Preprocess):
    self.source, self.order, self.preprocess = source, order, preprocess

  def __call__(self, local_pos: int):
    g, idx = self.order(local_pos)
    return self.preprocess((g, self.source[idx]))


class _LoadEval:
  """Eval position -> example; positions past the end are padding."""

  def __init__(self, source, preprocess: Preprocess, global_batch: int,
               process_index: int, process_count: int):
    self.source, self.preprocess = source, preprocess
    self.global_batch = global_batch
    self.local_batch = global_batch // process_count
    self.offset = process_index * self.local_batch

  def __call__(self, local_pos: int) -> dict:
    step, k = divmod(int(local_pos), self.local_batch)
    g = step * self.global_batch + self.offset + k
    pad = g >= len(self.source)
    ex = self.preprocess((g, self.source[min(g, len(self.source) - 1)]))
    if ex is None:  # a bad record under skip_bad: count it as padding
      ex = self.preprocess((0, self.source[0]))
      pad = True
    if pad:
      ex["mask"] = np.float32(0.0)
    return ex


def _is_example(x) -> bool:
  return x is not None


def _prefetch(ds: grain.IterDataset, num_workers: int) -> grain.IterDataset:
  if num_workers > 0:
    return ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=num_workers))
  return ds


def train_dataset(source, preprocess: Preprocess, global_batch: int,
                  seed: int, num_workers: int = 0) -> grain.IterDataset:
  """Endless training batches for this process (checkpointable)."""
  order = GlobalOrder(len(source), seed, global_batch, jax.process_index(),
                      jax.process_count())
  ds = grain.MapDataset.range(_ENDLESS).map(
      _LoadTrain(source, order, preprocess))
  if preprocess.skip_bad:
    ds = ds.filter(_is_example)
  ds = ds.to_iter_dataset().batch(order.local_batch, drop_remainder=True)
  return _prefetch(ds, num_workers)


def eval_batches(source, preprocess: Preprocess, global_batch: int,
                 num_workers: int = 0) -> Iterator[dict]:
  """One pass over `source` in padded batches; `mask` marks real rows."""
  num_batches = math.ceil(len(source) / global_batch)
  load = _LoadEval(source, preprocess, global_batch, jax.process_index(),
                   jax.process_count())
  ds = grain.MapDataset.range(num_batches * load.local_batch).map(load)
  ds = ds.to_iter_dataset().batch(load.local_batch, drop_remainder=True)
  return iter(_prefetch(ds, num_workers))
