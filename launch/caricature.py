r"""Translates one face to K random styles of the other domain.

  python -m launch.caricature --workdir=runs/caricature_smoke \
      --image=face.jpg --direction=photo2cari --styles=4 --out=grid.png

Writes a one-row grid: the input (as the model sees it), then one
translation per random style code (seeded by --seed). With --landmarks
(a WebCaricature 17-line "x y" file) the face is first aligned to the
5-point template as in training; otherwise the image is centre-cropped
to a square and resized.
"""

import os

from absl import app
from absl import flags
import jax

from facejax.data import sources
from facejax.tasks import caricature as task_lib
from launch import common
from launch import restore

_WORKDIR = flags.DEFINE_string("workdir", None, "Caricature training "
                               "workdir.")
_IMAGE = flags.DEFINE_string("image", None, "Input face image.")
_DIRECTION = flags.DEFINE_enum("direction", "photo2cari",
                               list(task_lib.DIRECTIONS),
                               "Translation direction.")
_STYLES = flags.DEFINE_integer("styles", 4, "Random styles (columns).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the style codes.")
_LANDMARKS = flags.DEFINE_string("landmarks", "", "Optional 17-point "
                                 "landmark file for alignment.")
_OUT = flags.DEFINE_string("out", "grid.png", "Output PNG.")
_WHICH = flags.DEFINE_enum("checkpoint", "latest", ["best", "latest"],
                           "Which checkpoint to use.")
flags.mark_flags_as_required(["workdir", "image"])


def main(argv):
  if len(argv) > 1:
    common.fail(f"unexpected arguments: {argv[1:]}")
  if not os.path.isfile(_IMAGE.value):
    common.fail(f"--image: {_IMAGE.value}: image file not found")
  common.start_jax()
  try:
    setup, state, step = restore.restore(_WORKDIR.value, which=_WHICH.value)
  except (FileNotFoundError, ValueError) as e:
    common.fail(str(e))
  if setup.config.task != "caricature":
    common.fail(f"{_WORKDIR.value} is a {setup.config.task!r} workdir, not "
                "a caricature one")
  try:
    grid = task_lib.translate_file(setup, state, _IMAGE.value, _DIRECTION.value,
                          _STYLES.value, _SEED.value, _LANDMARKS.value)
  except (sources.DataError, ValueError) as e:
    common.fail(str(e))
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    grid.save(_OUT.value)
    print(f"wrote {_OUT.value} ({grid.size[0]}x{grid.size[1]}, "
          f"{_DIRECTION.value}, checkpoint step {step})")


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
