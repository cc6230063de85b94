"""Writing evaluation reports and plots, one way for every task.

A report is a Markdown table (`<name>.md`) with its numbers as JSON
(`<name>.json`), plus optional PNG plots, written by process 0 only.
Plots use matplotlib's Agg backend (no display needed).
"""

import json
import os
from typing import Any

import jax
import numpy as np


def writes(out_dir: str) -> bool:
  """Whether this process writes reports to `out_dir` (process 0, a
  folder given); creates the folder when it does."""
  if not out_dir or jax.process_index() != 0:
    return False
  os.makedirs(out_dir, exist_ok=True)
  return True


def write_json(out_dir: str, name: str, data: Any) -> None:
  """Writes `data` to out_dir/<name>.json (indented; see `writes`)."""
  if writes(out_dir):
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
      json.dump(data, f, indent=2)


def write_report(out_dir: str, name: str, table: str,
                 data: Any = None) -> None:
  """Writes a report's Markdown `table` to out_dir/<name>.md and, unless
  None, its `data` to <name>.json (process 0 only; nothing if out_dir is
  '')."""
  if not writes(out_dir):
    return
  with open(os.path.join(out_dir, f"{name}.md"), "w") as f:
    f.write(table)
  if data is not None:
    write_json(out_dir, name, data)


def pyplot():
  """matplotlib.pyplot on the Agg backend (imported on first use: only
  the commands that draw need matplotlib)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def save_figure(fig, path: str, dpi: float | None = None) -> None:
  """Lays out, writes (PNG by the path's extension) and closes `fig`."""
  fig.tight_layout()
  if dpi is None:
    fig.savefig(path)
  else:
    fig.savefig(path, dpi=dpi)
  pyplot().close(fig)


def plot_roc(roc, path: str, title: str) -> None:
  """ROC curve PNG of (fpr, tpr), with the chance diagonal."""
  fpr, tpr = roc
  fig, ax = pyplot().subplots(figsize=(4.5, 4.5), dpi=100)
  ax.plot(fpr, tpr, lw=1.5)
  ax.plot([0, 1], [0, 1], "k--", lw=1)
  ax.set(xlabel="false positive rate", ylabel="true positive rate",
         title=title, xlim=(0, 1), ylim=(0, 1))
  save_figure(fig, path)


def plot_grouped_bars(values: np.ndarray, groups, series, path: str,
                      ylabel: str) -> None:
  """Grouped bars PNG: values[g, s] for each group g (x axis) and series
  s (one colour each, in the legend)."""
  values = np.asarray(values)
  n_group, n_series = values.shape
  fig, ax = pyplot().subplots(figsize=(10, 3.5), dpi=100)
  width = 0.8 / n_series
  for s in range(n_series):
    ax.bar(np.arange(n_group) + s * width, values[:, s], width,
           label=series[s])
  ax.set_xticks(np.arange(n_group) + 0.4 - width / 2)
  ax.set_xticklabels(list(groups), rotation=30)
  ax.set_ylabel(ylabel)
  ax.legend(ncol=n_series)
  save_figure(fig, path)
