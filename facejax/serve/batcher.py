"""Gathers items from concurrent requests into batches for one function.

A request hands its items (faces, pairs, photos) to `Batcher.submit` and
awaits their results. One asyncio task per batcher takes the first waiting
item, keeps collecting for `window_s` or until `max_batch` items are there,
and runs `fn(items) -> results` once on a worker thread (JAX releases the
GIL while it computes, so the event loop keeps accepting requests). Under
load the queue fills while a batch runs, so the next batch is bigger:
throughput grows with the number of clients instead of staying at one
item per call.
"""

import asyncio
import concurrent.futures
import dataclasses
import time
from typing import Any, Callable, Sequence


@dataclasses.dataclass
class BatchStats:
  """What a batcher has done: calls, items, and their mean batch size."""
  calls: int = 0
  items: int = 0
  largest: int = 0
  busy_s: float = 0.0

  def add(self, size: int, seconds: float) -> None:
    self.calls += 1
    self.items += size
    self.largest = max(self.largest, size)
    self.busy_s += seconds

  def as_dict(self) -> dict:
    return {"calls": self.calls, "items": self.items,
            "mean_batch": round(self.items / self.calls, 3)
                          if self.calls else 0.0,
            "largest_batch": self.largest,
            "busy_seconds": round(self.busy_s, 3)}


class Batcher:
  """Batches `submit`ted items for `fn(list of items) -> list of results`.

  Args:
    fn: runs one batch; returns one result per item, in order. An
      exception fails every request of that batch.
    max_batch: items per call at most.
    window_s: how long the first item of a batch waits for company.
    name: for errors and `stats`.
  """

  def __init__(self, fn: Callable[[list], Sequence[Any]], max_batch: int,
               window_s: float, name: str = ""):
    if max_batch < 1:
      raise ValueError(f"max_batch={max_batch} must be >= 1")
    self.fn = fn
    self.max_batch = max_batch
    self.window_s = max(0.0, window_s)
    self.name = name
    self.stats = BatchStats()
    self._queue: asyncio.Queue | None = None
    self._task: asyncio.Task | None = None
    # One thread per batcher: one model's calls run one at a time.
    self._pool = concurrent.futures.ThreadPoolExecutor(
        1, thread_name_prefix=f"batch-{name}")

  def start(self) -> None:
    """Starts the collecting task on the running event loop."""
    self._queue = asyncio.Queue()
    self._task = asyncio.get_running_loop().create_task(self._run())

  async def stop(self) -> None:
    if self._task is not None:
      self._task.cancel()
      try:
        await self._task
      except asyncio.CancelledError:
        pass
    self._pool.shutdown(wait=True)

  async def submit(self, items: Sequence[Any]) -> list:
    """The results of `items` (batched with other requests' items)."""
    if self._queue is None:
      raise RuntimeError(f"batcher {self.name!r} is not started")
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in items]
    for item, future in zip(items, futures):
      self._queue.put_nowait((item, future))
    return list(await asyncio.gather(*futures))

  async def _collect(self) -> list:
    batch = [await self._queue.get()]
    deadline = time.monotonic() + self.window_s
    while len(batch) < self.max_batch:
      try:  # Whatever is already waiting joins without a wait.
        batch.append(self._queue.get_nowait())
        continue
      except asyncio.QueueEmpty:
        pass
      left = deadline - time.monotonic()
      if left <= 0:
        break
      try:
        batch.append(await asyncio.wait_for(self._queue.get(), left))
      except asyncio.TimeoutError:
        break
    return batch

  async def _run(self) -> None:
    loop = asyncio.get_running_loop()
    while True:
      batch = await self._collect()
      # A client that went away leaves a cancelled future: skip its item.
      batch = [(i, f) for i, f in batch if not f.done()]
      if not batch:
        continue
      start = time.perf_counter()
      try:
        results = await loop.run_in_executor(
            self._pool, self.fn, [item for item, _ in batch])
        if len(results) != len(batch):
          raise RuntimeError(f"{self.name}: {len(results)} results for "
                             f"{len(batch)} items")
      except Exception as e:  # pylint: disable=broad-except
        for _, future in batch:
          if not future.done():
            future.set_exception(e)
        continue
      finally:
        self.stats.add(len(batch), time.perf_counter() - start)
      for (_, future), result in zip(batch, results):
        if not future.done():
          future.set_result(result)
