"""Metric writers (JSON lines, TensorBoard, optional W&B) and progress line.

Everything is written by process 0 only. TensorBoard files come from
tensorboardX (no TensorFlow needed). Weights & Biases is used whenever the
package is installed (unless `config.wandb.enabled=False`), offline by
default (`config.wandb.mode`; the WANDB_MODE environment variable wins).
"""

import json
import os
import sys
import time
from typing import Any

from absl import logging
import jax


def _summary_writer_class():
  """tensorboardX's SummaryWriter, imported without loading PyTorch.

  tensorboardX's writer module imports torch whenever it is installed, only
  to accept torch tensors (facejax passes floats). On a machine with
  PyTorch that cost every training process 2-3 s of CPU and 180 MB at
  start-up (a 2-step smoke run, 2-core Intel Xeon family 6 model 207,
  docs/performance.md section 22). torch is hidden for that one import
  (`import torch` raises ImportError, which tensorboardX expects), unless
  it is loaded already.
  """
  if "torch" in sys.modules:
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    return SummaryWriter
  sys.modules["torch"] = None
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  finally:
    del sys.modules["torch"]
  return SummaryWriter


class MetricWriter:
  """Writes scalars to workdir/metrics.jsonl, TensorBoard and W&B."""

  def __init__(self, workdir: str, config: Any = None):
    self._active = jax.process_index() == 0
    self._tb = self._wandb = self._jsonl = None
    if not self._active:
      return
    os.makedirs(workdir, exist_ok=True)
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
    try:
      self._tb = _summary_writer_class()(os.path.join(workdir, "tensorboard"))
    except ImportError:
      logging.warning("tensorboardX not installed: no TensorBoard logs")
    wandb_cfg = config.get("wandb") if config is not None else None
    if wandb_cfg is not None and wandb_cfg.get("enabled", True):
      try:
        import wandb  # pylint: disable=g-import-not-at-top
      except ImportError:
        wandb = None  # optional: used only where it is installed
      if wandb is not None:
        self._wandb = wandb.init(
            project=wandb_cfg.get("project", "facejax"),
            mode=os.environ.get("WANDB_MODE", wandb_cfg.get("mode")),
            dir=workdir, config=config.to_dict(), resume="allow")

  def forget_after(self, step: int) -> int:
    """Drops metrics.jsonl rows past `step` (a resumed run re-runs those
    steps and writes them again); returns how many were dropped."""
    if not self._active:
      return 0
    path = self._jsonl.name
    self._jsonl.close()
    with open(path) as f:
      lines = f.readlines()
    keep = []
    for line in lines:
      try:
        row_step = json.loads(line).get("step", 0)
      except ValueError:  # a line cut by the kill
        continue
      if row_step <= step:
        keep.append(line if line.endswith("\n") else line + "\n")
    if len(keep) != len(lines):
      tmp = path + ".tmp"
      with open(tmp, "w") as f:
        f.writelines(keep)
      os.replace(tmp, path)
    self._jsonl = open(path, "a")
    return len(lines) - len(keep)

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if not self._active:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    self._jsonl.write(json.dumps({"step": int(step), **scalars}) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(k, v, step)
      self._tb.flush()
    if self._wandb is not None:
      self._wandb.log(scalars, step=step)

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()
    if self._wandb is not None:
      self._wandb.finish()


def _fmt_seconds(s: float) -> str:
  s = int(max(0, s))
  return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else (
      f"{s // 60}m{s % 60:02d}s")


class Progress:
  """One console line per report: step, metrics, steps/s, ETA."""

  def __init__(self, total_steps: int, start_step: int = 0,
               stream=None):
    self.total = total_steps
    self._given_stream = stream
    self._active = jax.process_index() == 0
    self.reset(start_step)

  @property
  def _stream(self):
    # sys.stdout as it is when printing (not when this module was imported:
    # a test's or notebook's redirected stream may be closed since).
    return self._given_stream or sys.stdout

  def reset(self, step: int) -> None:
    """Restarts the rate clock (after compilation, eval or a checkpoint)."""
    self._t0, self._s0 = time.perf_counter(), step

  def steps_per_sec(self, step: int) -> float:
    dt = time.perf_counter() - self._t0
    return (step - self._s0) / dt if dt > 0 and step > self._s0 else 0.0

  def report(self, step: int, scalars: dict[str, float]) -> float:
    rate = self.steps_per_sec(step)
    if self._active:
      eta = (self.total - step) / rate if rate else float("nan")
      parts = [f"step {step}/{self.total}"]
      parts += [f"{k.split('/')[-1]} {v:.4g}" for k, v in scalars.items()]
      parts += [f"{rate:.2f} steps/s",
                f"ETA {_fmt_seconds(eta) if rate else '?'}"]
      print(" | ".join(parts), file=self._stream, flush=True)
    return rate

  def message(self, text: str) -> None:
    if self._active:
      print(text, file=self._stream, flush=True)
