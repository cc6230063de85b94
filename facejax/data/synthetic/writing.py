"""What the synthetic writers share: seeded streams and the drawing pool.

Every image draws from its own numpy Generator seeded by (seed, layout,
index), so the files do not depend on generation order or on the number
of worker processes.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import pickle
import subprocess
import sys
import tempfile
import zlib
from typing import Sequence

import numpy as np
from PIL import Image

from facejax.data.synthetic import drawing


# Separate random streams per layout so that, e.g., the CelebA and age sets
# written with the same seed hold different people.
_STREAM = {'age_csv': 1, 'celeba': 2, 'rafd': 3, 'fiw': 4}
# Worker processes pay off from a few hundred images (each takes ~1 s to
# start).
_MIN_POOL_IMAGES = 400
_MAX_WORKERS = 8
# First index of the streams for splits and pair lists (beyond any image
# index, which SeedSequence needs to be non-negative).
AUX = 2**31


def stream_rng(seed: int, layout: str, *index: int) -> np.random.Generator:
  return np.random.default_rng([seed, _STREAM[layout], *index])


def _save(array: np.ndarray, path: str) -> None:
  img = Image.fromarray(array)
  if path.endswith('.png'):
    # The pixel noise leaves little for LZ77 matching: run-length + Huffman
    # coding is ~30% faster than level 1 and as small.
    img.save(path, compress_level=1, compress_type=zlib.Z_RLE)
  else:
    img.save(path, quality=95)


def _pool_workers(num_images: int) -> int:
  """Worker processes worth starting for num_images images (1: none)."""
  if num_images < _MIN_POOL_IMAGES or not sys.executable:
    return 1
  try:
    cpus = len(os.sched_getaffinity(0))
  except AttributeError:  # Not on Linux.
    cpus = os.cpu_count() or 1
  return max(1, min(cpus, _MAX_WORKERS))


def _work(job_file: str) -> None:
  """Worker process entry: draws and writes the jobs pickled in job_file."""
  with open(job_file, 'rb') as f:
    jobs = pickle.load(f)
  for face, size, rng, path in jobs:
    _save(drawing.render_face(face, size, rng), path)


class Renderer:
  """Draws and writes images, in worker processes when there are many.

  Faces are sampled in the calling process, so the data set does not depend
  on the number of workers: each job carries its face and the Generator
  state for the pixel noise. Workers are fresh interpreters started with
  subprocess rather than multiprocessing: forking would copy the locked
  state of threads the caller may run (JAX does), and multiprocessing's
  spawn re-runs the caller's main script, which breaks scripts without a
  __main__ guard. With one worker, images are drawn here and encoded on a
  background thread (PIL releases the GIL while compressing). Use as a
  context manager; errors surface at the latest on exit.
  """

  def __init__(self, num_images: int):
    self._workers = _pool_workers(num_images)
    self._jobs = []
    self._pending = collections.deque()
    self._saver = (concurrent.futures.ThreadPoolExecutor(1)
                   if self._workers == 1 else None)

  def add(self, face: dict, size: int, rng: np.random.Generator,
          path: str) -> None:
    """Queues drawing.render_face(face, size, rng) -> path; do not reuse rng."""
    if self._saver is None:
      self._jobs.append((face, size, rng, path))
      return
    image = drawing.render_face(face, size, rng)
    self._pending.append(self._saver.submit(_save, image, path))
    while len(self._pending) > 32:
      self._pending.popleft().result()

  def __enter__(self) -> 'Renderer':
    return self

  def __exit__(self, exc_type, *unused) -> None:
    if self._saver is not None:
      try:
        while self._pending:
          self._pending.popleft().result()
      finally:
        self._saver.shutdown(wait=True, cancel_futures=True)
    elif exc_type is None and self._jobs:
      self._run_workers()

  def _run_workers(self) -> None:
    # The worker imports this module by name from the same root.
    root = os.path.abspath(__file__)
    for _ in __name__.split('.'):
      root = os.path.dirname(root)
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in (root, env.get('PYTHONPATH')) if p)
    code = f'import sys; import {__name__} as m; m._work(sys.argv[1])'
    with tempfile.TemporaryDirectory() as tmp:
      procs = []
      for w in range(self._workers):
        job_file = os.path.join(tmp, f'jobs{w}.pkl')
        with open(job_file, 'wb') as f:
          # Interleaved, so that every worker gets a similar mix of faces.
          pickle.dump(self._jobs[w::self._workers], f)
        log = open(os.path.join(tmp, f'log{w}.txt'), 'w+')
        procs.append((subprocess.Popen(
            [sys.executable, '-c', code, job_file], env=env,
            stdout=log, stderr=subprocess.STDOUT), log))
      failures = []
      for proc, log in procs:
        if proc.wait() != 0:
          log.seek(0)
          failures.append(log.read()[-2000:])
        log.close()
      if failures:
        raise RuntimeError('Synthetic image worker failed:\n' + failures[0])


def split_counts(num: int, fractions: Sequence[float]) -> list[int]:
  """Counts per split; every later split gets at least one item if num >= 3."""
  later = [int(round(f * num)) for f in fractions[1:]]
  if num >= len(fractions):
    later = [max(1, n) for n in later]
  return [num - sum(later)] + later
