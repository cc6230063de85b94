r"""Are two people relatives? Score, threshold and decision of a kinship run.

  python -m launch.kinship --workdir=runs/kinship photo_a.jpg photo_b.jpg

The threshold is the one `launch.evaluate` stored (workdir/
kinship_threshold.json, Youden's J on the validation list); without it the
validation list is scored here first. With model.relation_head the most
likely relation type is printed too. Each photo's most confident face is
found with MTCNN and aligned as the model's config says (data.align, the
five landmarks onto the ArcFace template); a photo without a face is an
error, never scored. --detector=none for FIW's face crops as released.
"""

from absl import app
from absl import flags
import jax
import numpy as np

from facejax.evaluators import kinship as kinship_eval
from facejax.data.sources import DataError
from launch import common
from facejax import runs
from facejax import tasks

_WORKDIR = flags.DEFINE_string("workdir", None, "A kinship training workdir.")
_WHICH = flags.DEFINE_enum("checkpoint", "best", ["best", "latest"],
                           "Which checkpoint to use.")
_FACES = common.FaceFlags(rows=False)
flags.mark_flag_as_required("workdir")


def faces_of(setup, paths: list[str]) -> list[np.ndarray]:
  """The most confident face of each photo, cropped as the model expects;
  a photo that cannot be read or holds no face is a ValueError."""
  config = setup.config
  crops = _FACES.crops(paths, config.data.get("align", "arcface_112"),
                       int(config.data.image_size))
  crops.max_faces = 1
  found = {}
  for batch in crops:
    for face in batch:
      if face.error:
        hint = (" (aligned face crops such as FIW's: --detector=none)"
                if face.error == "no face found" else "")
        raise ValueError(f"{face.path}: {face.error}{hint}")
      found[face.path] = face.crop
  return [found[p] for p in paths]


def main(argv):
  if len(argv) != 3:
    common.fail("usage: python -m launch.kinship --workdir=W "
                "PHOTO_A PHOTO_B")
  common.start_jax()
  try:
    setup, state, step = runs.restore(_WORKDIR.value, which=_WHICH.value,
                                      task_class=tasks.get)
    if setup.config.task != "kinship":
      raise ValueError(f"{_WORKDIR.value!r} holds a {setup.config.task!r} "
                       f"run, not a kinship run")
    (res,) = kinship_eval.score_pairs(
        setup, state, [tuple(faces_of(setup, argv[1:3]))])
    threshold, where = kinship_eval.stored_threshold(setup, state,
                                                       _WORKDIR.value)
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
