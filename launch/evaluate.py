r"""Evaluates a trained model, or official weights, on a split.

  python -m launch.evaluate --workdir=runs/age_regressor [--split=test]
  python -m launch.evaluate --weights=dex_imdb_wiki.caffemodel.pt \
      --config=configs/dex.py --config.data.format=appa_real \
      --config.data.root=/data/appa-real-release [--out_dir=eval_dex]

Age estimators (age regressor, DEX): prints MAE/RMSE and a per-decade
error table; writes eval_<split>.json and a predicted-vs-true scatter plot
eval_<split>.png into the workdir. Other tasks (the GANs) print and write
their own report (`Task.report`), e.g. edited-age error per target age.

  python -m launch.evaluate --workdir=runs/swinface_s2 \
      --verification_bin=/data/faces_emore/lfw.bin,/data/faces_emore/cfp_fp.bin

SwinFace on insightface's verification sets: the 10-fold accuracy of the
protocol (flip-summed embeddings, squared L2 distance, best threshold on
nine folds applied to the tenth), as its paper reports it.

--weights scores an official checkpoint with no training run: --config
names the model (and, by its overrides, the data to score it on); results
go to --out_dir (default: the current directory).
"""

import json
import os

from absl import app
from absl import flags
import jax
from jax.experimental import multihost_utils
from ml_collections import config_flags
import numpy as np

from facejax import mesh as mesh_lib
from facejax.data import pipeline
from facejax.data.sources import DataError
from launch import common
from facejax import runs
from facejax import tasks

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir.")
_WEIGHTS = flags.DEFINE_string("weights", None, "Official weights to score, "
                               "instead of --workdir (with --config).")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "With --weights: the model's config file, with its "
    "data overrides.", lock_config=False)
_OUT_DIR = flags.DEFINE_string("out_dir", "", "Where results are written "
                               "(default: the workdir, or the current "
                               "directory with --weights).")
_SPLIT = flags.DEFINE_string("split", "test", "train | valid | test, or a "
                             "CSV path.")
_WHICH = flags.DEFINE_enum("checkpoint", "best", ["best", "latest"],
                           "Which checkpoint to evaluate.")
_PLOT = flags.DEFINE_bool("plot", True, "Write a scatter plot PNG.")
_BINS = flags.DEFINE_list(
    "verification_bin", [], "insightface verification sets (lfw.bin, "
    "cfp_fp.bin, agedb_30.bin): 10-fold accuracy instead of a split "
    "(SwinFace).")
flags.mark_flags_as_mutual_exclusive(["workdir", "weights"], required=True)


def _load():
  """(setup, state, step, results folder)."""
  if _WEIGHTS.value:
    if _CONFIG.value is None:
      raise ValueError("--weights needs --config=configs/<model>.py (with "
                       "--config.data.* naming the data to score on)")
    setup, state, step = runs.load(
        _CONFIG.value.task, weights=_WEIGHTS.value, config=_CONFIG.value,
        make_task=tasks.build)
    out = _OUT_DIR.value or os.getcwd()
  else:
    setup, state, step = runs.restore(_WORKDIR.value, which=_WHICH.value,
                                      make_task=tasks.build)
    out = _OUT_DIR.value or _WORKDIR.value
  os.makedirs(out, exist_ok=True)
  return setup, state, step, out


def predict_split(setup, state, source):
  """(predicted ages, true ages) over a whole split, on every process."""
  preds, ages = [], []
  for batch in pipeline.eval_batches(source, setup.task.preprocess(False),
                                     setup.eval_batch,
                                     setup.config.data.num_workers):
    pred = np.asarray(setup.predict(
        state, mesh_lib.shard_batch(batch, setup.mesh)["image"]))
    # Each process holds a contiguous block of the global batch: gathering
    # the blocks in process order lines them up with the global predictions.
    age, mask = (np.asarray(multihost_utils.process_allgather(
        batch[k], tiled=True)) for k in ("age", "mask"))
    preds.append(pred[mask > 0])
    ages.append(age[mask > 0])
  return np.concatenate(preds), np.concatenate(ages)


def decade_table(pred: np.ndarray, age: np.ndarray) -> list[dict]:
  rows = []
  for lo in range(0, 101, 10):
    sel = (age >= lo) & (age < lo + 10)
    if sel.any():
      rows.append({"ages": f"{lo}-{lo + 9}", "count": int(sel.sum()),
                   "mae": float(np.mean(np.abs(pred[sel] - age[sel]))),
                   "bias": float(np.mean(pred[sel] - age[sel]))})
  return rows


def _plot(pred, age, path, title):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
  ax.scatter(age, pred, s=6, alpha=0.5)
  ax.plot([0, 100], [0, 100], "k--", lw=1)
  ax.set(xlabel="true age", ylabel="predicted age", title=title,
         xlim=(0, 100), ylim=(0, 100))
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def main(argv):
  del argv
  common.start_jax()
  try:
    setup, state, step, workdir = _load()
    if _BINS.value:
      if not hasattr(setup.task, "verification_bins"):
        common.fail(f"--verification_bin: the {setup.config.task!r} task "
                    "has no face embedding to verify with (swinface has)")
      table = setup.task.verification_bins(setup, state, _BINS.value)
      if jax.process_index() == 0:
        print(f"checkpoint step {step}, 10-fold verification\n\n{table}")
      return
    table = setup.task.report(setup, state, _SPLIT.value, workdir)
    if table is not None:  # the task's own report
      if jax.process_index() == 0:
        print(f"{_SPLIT.value}, checkpoint step {step}\n\n{table}")
      return
    source = setup.task.source(_SPLIT.value)
    if setup.config.task not in ("age_regression", "dex"):
      # No report of its own (attribute classifier, SphereFace): the
      # task's validation metrics over the split.
      summary = setup.task.summarize(setup.evaluate(state, source))
      if jax.process_index() == 0:
        print(f"{_SPLIT.value}, checkpoint step {step}\n\n| metric | value "
              "|\n|---|---|\n" + "\n".join(
                  f"| {k} | {float(v):.4g} |" for k, v in summary.items()))
        name = os.path.basename(_SPLIT.value).replace(".csv", "")
        with open(os.path.join(workdir, f"eval_{name}.json"), "w") as f:
          json.dump({k: float(v) for k, v in summary.items()}, f, indent=2)
      return
  except (DataError, FileNotFoundError, ValueError) as e:
    common.fail(str(e))
  pred, age = predict_split(setup, state, source)
  try:
    train_src = setup.task.balance(setup.task.source("train"))
    train_mean = float(np.mean(train_src.ages))
  except (AttributeError, DataError, FileNotFoundError, ValueError):
    train_mean = float("nan")  # No training split to take the mean of.
  result = {
      "split": _SPLIT.value, "checkpoint_step": step, "count": len(age),
      "mae": float(np.mean(np.abs(pred - age))),
      "rmse": float(np.sqrt(np.mean((pred - age)**2))),
      "cs5": float(np.mean(np.abs(pred - age) <= 5)),
      "baseline_mae": float(np.mean(np.abs(age - train_mean))),
      "decades": decade_table(pred, age)}
  if jax.process_index() == 0:
    print(f"{_SPLIT.value}: {len(age)} images, checkpoint step {step}")
    print(f"MAE {result['mae']:.3f}  RMSE {result['rmse']:.3f}  "
          f"CS@5 {result['cs5']:.3f}  (predict-the-mean MAE "
          f"{result['baseline_mae']:.3f})")
    print("\n| ages | count | MAE | bias |\n|---|---|---|---|")
    for r in result["decades"]:
      print(f"| {r['ages']} | {r['count']} | {r['mae']:.2f} | "
            f"{r['bias']:+.2f} |")
    name = os.path.basename(_SPLIT.value).replace(".csv", "")
    with open(os.path.join(workdir, f"eval_{name}.json"), "w") as f:
      json.dump(result, f, indent=2)
    if _PLOT.value:
      png = os.path.join(workdir, f"eval_{name}.png")
      _plot(pred, age, png, f"{name}: MAE {result['mae']:.2f}")
      print(f"\nwrote {png}")


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
