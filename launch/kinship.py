r"""Are two faces relatives? Score, threshold and decision of a kinship run.

  python -m launch.kinship --workdir=runs/kinship face_a.jpg face_b.jpg

The threshold is the one `launch.evaluate` stored (workdir/
kinship_threshold.json, Youden's J on the validation list); without it the
validation list is scored here first. With model.relation_head the most
likely relation type is printed too. Images are resized to the model's
input size as they are (give aligned face crops, as FIW's).
"""

import json
import os

from absl import app
from absl import flags
import jax
import numpy as np

from facejax import parallel
from facejax import verification
from facejax.data import kinship as kin_data
from facejax.data.sources import DataError
from facejax.tasks import kinship as kin_task
from launch import common
from launch import restore

_WORKDIR = flags.DEFINE_string("workdir", None, "A kinship training workdir.")
_WHICH = flags.DEFINE_enum("checkpoint", "best", ["best", "latest"],
                           "Which checkpoint to use.")
flags.mark_flag_as_required("workdir")


def _threshold(setup, state, workdir: str) -> tuple[float, str]:
  path = os.path.join(workdir, kin_task.THRESHOLD_FILE)
  if os.path.exists(path):
    with open(path) as f:
      return float(json.load(f)["threshold"]), path
  val = setup.task.scores(setup, state, setup.task.source("valid"))
  return (verification.youden_threshold(val["score"], val["label"]),
          "Youden's J on the validation list")


def classify(setup, state, path_a: str, path_b: str) -> dict:
  """Score (and relation prediction) of one pair of image files."""
  pre = setup.task.preprocess(train=False)
  record = {k: np.asarray(0, np.int32) for k in kin_data.LABEL_KEYS}
  record.update(image_a_path=path_a, image_b_path=path_b,
                where="command line", label=np.float32(0))
  ex = pre((0, record))
  # Fill a whole (device-divisible) batch with the pair; read row 0.
  n = setup.eval_batch
  batch = {k: np.repeat(np.asarray(v)[None], n, axis=0)
           for k, v in ex.items()}
  out = jax.device_get(setup.compile(setup.task.score_fn)(
      state, setup.frozen, parallel.shard_batch(batch, setup.mesh)))
  res = {"score": float(out["score"][0])}
  if "relation_pred" in out:
    names = {v: k for k, v in kin_data.RELATION_LABELS.items()}
    res["relation"] = names[int(out["relation_pred"][0])]
  return res


def main(argv):
  if len(argv) != 3:
    common.fail("usage: python -m launch.kinship --workdir=W "
                "IMAGE_A IMAGE_B")
  common.start_jax()
  try:
    setup, state, step = restore.restore(_WORKDIR.value, which=_WHICH.value)
    if setup.config.task != "kinship":
      raise ValueError(f"{_WORKDIR.value!r} holds a {setup.config.task!r} "
                       f"run, not a kinship run")
    res = classify(setup, state, argv[1], argv[2])
    threshold, where = _threshold(setup, state, _WORKDIR.value)
  except (DataError, FileNotFoundError, ValueError) as e:
    common.fail(str(e))
  if jax.process_index() == 0:
    kin = res["score"] >= threshold
    print(f"score {res['score']:.4f}, threshold {threshold:.4f} ({where}; "
          f"checkpoint step {step}): {'KIN' if kin else 'NOT KIN'}")
    if "relation" in res:
      print(f"most likely relation (if kin): {res['relation']}")


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
