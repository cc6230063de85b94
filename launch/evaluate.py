r"""Evaluates a trained model, or official weights, on a split.

  python -m launch.evaluate --workdir=runs/age_regressor [--split=test]
  python -m launch.evaluate --weights=dex_imdb_wiki.caffemodel.pt \
      --config=configs/dex.py --config.data.format=appa_real \
      --config.data.root=/data/appa-real-release [--out_dir=eval_dex]

Age estimators (age regressor, DEX): prints MAE/RMSE and a per-decade
error table; writes eval_<split>.json and a predicted-vs-true scatter plot
eval_<split>.png into the workdir. Other tasks (the GANs) print and write
their own report (`facejax.evaluators.<model>.report`), e.g. edited-age
error per target age.

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
from ml_collections import config_flags

from facejax.data.sources import DataError
from facejax import evaluators
from facejax.evaluators import age as age_eval
from facejax.evaluators import swinface as swinface_eval
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
        task_class=tasks.get)
    out = _OUT_DIR.value or os.getcwd()
  else:
    setup, state, step = runs.restore(_WORKDIR.value, which=_WHICH.value,
                                      task_class=tasks.get)
    out = _OUT_DIR.value or _WORKDIR.value
  os.makedirs(out, exist_ok=True)
  return setup, state, step, out


def main(argv):
  del argv
  common.start_jax()
  try:
    setup, state, step, workdir = _load()
    if _BINS.value:
      if setup.config.task != "swinface":
        common.fail(f"--verification_bin: the {setup.config.task!r} task "
                    "has no face embedding to verify with (swinface has)")
      table = swinface_eval.verification_bins(setup, state, _BINS.value)
      if jax.process_index() == 0:
        print(f"checkpoint step {step}, 10-fold verification\n\n{table}")
      return
    own = evaluators.report_module(setup.config.task)
    if own is not None:  # the task's own report
      table = own.report(setup, state, _SPLIT.value, workdir)
      if jax.process_index() == 0:
        print(f"{_SPLIT.value}, checkpoint step {step}\n\n{table}")
      return
    if setup.config.task in ("age_regression", "dex"):
      age_eval.report(setup, state, _SPLIT.value, step, workdir, _PLOT.value)
      return
    # No report of its own (attribute classifier, SphereFace): the task's
    # validation metrics over the split.
    summary = setup.task.summarize(setup.evaluate(
        state, setup.task.source(_SPLIT.value)))
    if jax.process_index() == 0:
      print(f"{_SPLIT.value}, checkpoint step {step}\n\n| metric | value "
            "|\n|---|---|\n" + "\n".join(
                f"| {k} | {float(v):.4g} |" for k, v in summary.items()))
      name = os.path.basename(_SPLIT.value).replace(".csv", "")
      with open(os.path.join(workdir, f"eval_{name}.json"), "w") as f:
        json.dump({k: float(v) for k, v in summary.items()}, f, indent=2)
  except (DataError, FileNotFoundError, ValueError) as e:
    common.fail(str(e))


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
