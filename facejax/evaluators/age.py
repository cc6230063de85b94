"""Age estimators (age regressor, DEX): scored on a whole split, and run on
photos from a trained run (`run_predictor`, launch.predict).

MAE, RMSE, CS@5 (share within 5 years), the predict-the-training-mean
baseline and a per-decade error table; `report` prints them as
launch.evaluate shows them and writes eval_<split>.json and a
predicted-vs-true scatter plot eval_<split>.png.
"""

import os
from typing import Any

import jax
from jax.experimental import multihost_utils
import numpy as np

from facejax import mesh as mesh_lib
from facejax import runs
from facejax.data import pipeline
from facejax.data.sources import DataError
from facejax.evaluators import reports


def predict_split(run, state, source) -> tuple[np.ndarray, np.ndarray]:
  """(predicted ages, true ages) over a whole split, on every process.

  `run` is the `facejax.train.loop.Setup` the state was restored with.
  """
  preds, ages = [], []
  for batch in pipeline.eval_batches(source, run.task.preprocess(False),
                                     run.eval_batch,
                                     run.config.data.num_workers):
    pred = np.asarray(run.predict(
        state, mesh_lib.shard_batch(batch, run.mesh)["image"]))
    # Each process holds a contiguous block of the global batch: gathering
    # the blocks in process order lines them up with the global predictions.
    age, mask = (np.asarray(multihost_utils.process_allgather(
        batch[k], tiled=True)) for k in ("age", "mask"))
    preds.append(pred[mask > 0])
    ages.append(age[mask > 0])
  return np.concatenate(preds), np.concatenate(ages)


def decade_table(pred: np.ndarray, age: np.ndarray) -> list[dict]:
  """Count, MAE and bias per decade of true age."""
  rows = []
  for lo in range(0, 101, 10):
    sel = (age >= lo) & (age < lo + 10)
    if sel.any():
      rows.append({"ages": f"{lo}-{lo + 9}", "count": int(sel.sum()),
                   "mae": float(np.mean(np.abs(pred[sel] - age[sel]))),
                   "bias": float(np.mean(pred[sel] - age[sel]))})
  return rows


def scatter_plot(pred, age, path: str, title: str) -> None:
  """Predicted against true age, with the diagonal (PNG)."""
  fig, ax = reports.pyplot().subplots(figsize=(4.5, 4.5), dpi=100)
  ax.scatter(age, pred, s=6, alpha=0.5)
  ax.plot([0, 100], [0, 100], "k--", lw=1)
  ax.set(xlabel="true age", ylabel="predicted age", title=title,
         xlim=(0, 100), ylim=(0, 100))
  reports.save_figure(fig, path)


def _train_mean(task) -> float:
  try:
    return float(np.mean(task.balance(task.source("train")).ages))
  except (AttributeError, DataError, FileNotFoundError, ValueError):
    return float("nan")  # No training split to take the mean of.


def evaluate(run, state, split: str, step: int
             ) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
  """(numbers, predicted ages, true ages) of `split` (a split name or a
  CSV path)."""
  pred, age = predict_split(run, state, run.task.source(split))
  train_mean = _train_mean(run.task)
  return {
      "split": split, "checkpoint_step": step, "count": len(age),
      "mae": float(np.mean(np.abs(pred - age))),
      "rmse": float(np.sqrt(np.mean((pred - age)**2))),
      "cs5": float(np.mean(np.abs(pred - age) <= 5)),
      "baseline_mae": float(np.mean(np.abs(age - train_mean))),
      "decades": decade_table(pred, age)}, pred, age


def report(run, state, split: str, step: int, out_dir: str,
           plot: bool = True) -> dict[str, Any]:
  """Prints `evaluate`'s numbers and writes eval_<name>.json (and .png)
  to out_dir (process 0); returns them."""
  result, pred, age = evaluate(run, state, split, step)
  if jax.process_index() != 0:
    return result
  print(f"{split}: {len(age)} images, checkpoint step {step}")
  print(f"MAE {result['mae']:.3f}  RMSE {result['rmse']:.3f}  "
        f"CS@5 {result['cs5']:.3f}  (predict-the-mean MAE "
        f"{result['baseline_mae']:.3f})")
  print("\n| ages | count | MAE | bias |\n|---|---|---|---|")
  for r in result["decades"]:
    print(f"| {r['ages']} | {r['count']} | {r['mae']:.2f} | "
          f"{r['bias']:+.2f} |")
  name = os.path.basename(split).replace(".csv", "")
  reports.write_json(out_dir, f"eval_{name}", result)
  if plot:
    png = os.path.join(out_dir, f"eval_{name}.png")
    scatter_plot(pred, age, png, f"{name}: MAE {result['mae']:.2f}")
    print(f"\nwrote {png}")
  return result


# The other models' photo commands, for a workdir that is not an age model.
_COMMAND_OF = {"swinface": "launch.analyze",
               "stargan": "launch.stargan",
               "age_transformer": "launch.age_transformer",
               "kinship": "launch.kinship", "caricature": "launch.caricature"}


def run_predictor(workdir: str, which: str, task_class):
  """(uint8 [B, H, W, 3] -> ages, input size, alignment template) of a
  trained age regressor or DEX run, through its own preprocessing;
  `task_class` is facejax.tasks.get."""
  task = runs.read_config(workdir).get("task")
  if task not in ("age_regression", "dex"):
    other = _COMMAND_OF.get(task)
    raise ValueError(f"{workdir!r} is a {task!r} run; launch.predict takes "
                     "an age regressor or DEX run"
                     + (f" (use {other} for this one)" if other else ""))
  setup, state, _ = runs.restore(workdir, which=which, task_class=task_class)
  config = setup.config
  return (predictor(setup, state), int(config.data.image_size),
          config.data.get("align", "box"))


def predictor(setup, state):
  """uint8 [B, H, W, 3] face crops -> ages of a restored age regressor or
  DEX run, through its own preprocessing."""
  pre = setup.task.preprocess(train=False)

  def predict(images):
    x = np.stack([pre((0, {"image": im, "age": np.float32(0)}))["image"]
                  for im in images])
    out = setup.predict(state, mesh_lib.shard_images(x, setup.mesh))
    return np.asarray(jax.device_get(out))[:len(x)]
  return predict
