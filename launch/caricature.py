r"""Translates every face in photos to K random styles of the other domain.

  python -m launch.caricature --workdir=runs/caricature_smoke \
      --image=photos/ --direction=photo2cari --styles=4 --out=grid.png

Writes a grid: one row per face (labelled with its file and face index),
the input as the model sees it, then one translation per random style code
(seeded by --seed). Faces are found with MTCNN and their five landmarks
aligned onto the template the training faces were warped to
(--align=caricature: SphereFace's points in a square, with hair and
outline). With --landmarks (a WebCaricature 17-line "x y" file, for one
--image) those points are used instead; --detector=none centre-crops each
photo as it is. Unreadable files and photos without a face are reported
and the rest still translated (exit status 1 if a file failed).
"""

import os

from absl import app
from absl import flags
import jax

from facejax.data import sources
from facejax.data.faces import photos
from facejax.evaluators import caricature as caricature_eval
from facejax.tasks import caricature as task_lib
from launch import common
from facejax import runs
from facejax import tasks

_WORKDIR = flags.DEFINE_string("workdir", None, "Caricature training "
                               "workdir.")
_IMAGE = flags.DEFINE_string("image", None, "Face image file or folder.")
_DIRECTION = flags.DEFINE_enum("direction", "photo2cari",
                               list(task_lib.DIRECTIONS),
                               "Translation direction.")
_STYLES = flags.DEFINE_integer("styles", 4, "Random styles (columns).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the style codes.")
_LANDMARKS = flags.DEFINE_string("landmarks", "", "Optional 17-point "
                                 "landmark file for alignment (one image).")
_OUT = flags.DEFINE_string("out", "grid.png", "Output PNG.")
_WHICH = flags.DEFINE_enum("checkpoint", "latest", ["best", "latest"],
                           "Which checkpoint to use.")
_FACES = common.FaceFlags(rows=False)
flags.mark_flags_as_required(["workdir", "image"])


def _face_records(setup, paths):
  """{'image': crop} per face found, row labels, and the FaceCrops."""
  d = setup.config.data
  crops = _FACES.crops(paths, d.get("align", "caricature"),
                       int(d.get("align_size", 112)))
  faces, labels = photos.labelled_faces(crops, common.warn)
  records = [{"image": f.crop} for f in faces]
  if not records:
    raise ValueError("no face to translate in " + ", ".join(paths[:5]))
  return records, labels, crops


def main(argv):
  paths = photos.expand_paths([_IMAGE.value] + argv[1:])
  missing = [p for p in paths if not os.path.exists(p)]
  if missing:
    common.fail(f"--image: {', '.join(missing)}: image file not found")
  if _LANDMARKS.value and len(paths) != 1:
    common.fail("--landmarks goes with one --image file")
  common.start_jax()
  crops = None
  try:
    setup, state, step = runs.load("caricature", _WORKDIR.value,
                                      which=_WHICH.value, task_class=tasks.get)
    if _LANDMARKS.value:
      grid = caricature_eval.translate_file(
          setup, state, paths[0], _DIRECTION.value, _STYLES.value,
          _SEED.value, _LANDMARKS.value)
    else:
      records, labels, crops = _face_records(setup, paths)
      grid = caricature_eval.translate_records(
          setup, state, records, _DIRECTION.value, _STYLES.value,
          _SEED.value, labels)
  except (FileNotFoundError, ValueError, sources.DataError) as e:
    common.fail(str(e))
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    grid.save(_OUT.value)
    print(f"wrote {_OUT.value} ({grid.size[0]}x{grid.size[1]}, "
          f"{_DIRECTION.value}, checkpoint step {step})")
  if crops is not None:
    common.report_photos(crops, 0, "")


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
