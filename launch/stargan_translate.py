r"""Translates one face photo to every target attribute of a StarGAN run.

  python -m launch.stargan_translate --workdir=runs/stargan_smoke \
      --image=face.jpg --out=grid.png

Writes a grid: the input, then one column per target attribute setting of
every data set (hair colour set / attribute flipped for CelebA-format
sets, one column per class for RaFD-format sets), as the reference's
sample images. The photo is treated as an example of `--dataset` (default
the first data set, all its attributes 0) and centre-cropped/resized as in
training (`--crop_size`, 0 = the shorter side).
"""

import os

from absl import app
from absl import flags
import jax
import numpy as np

from facejax.data import attribute_sets as sets_lib
from facejax.data import sources
from facejax.data import transforms
from launch import common
from launch import restore

_WORKDIR = flags.DEFINE_string("workdir", None, "StarGAN training workdir.")
_IMAGE = flags.DEFINE_string("image", None, "Input face image.")
_OUT = flags.DEFINE_string("out", "grid.png", "Output PNG.")
_DATASET = flags.DEFINE_integer("dataset", 0, "Index of the data set the "
                                "photo is treated as coming from.")
_CROP = flags.DEFINE_integer("crop_size", 0, "Centre crop in pixels before "
                             "resizing (0: the shorter side).")
_WHICH = flags.DEFINE_enum("checkpoint", "latest", ["best", "latest"],
                           "Which checkpoint to use.")
flags.mark_flags_as_required(["workdir", "image"])


def translate_image(setup, state, image: np.ndarray, dataset: int = 0,
                    crop_size: int = 0):
  """The grid (PIL image) for one uint8 RGB photo."""
  task = setup.task
  layout = task.layout
  if not 0 <= dataset < layout.num_sets:
    raise ValueError(f"--dataset={dataset}: the run has "
                     f"{layout.num_sets} data set(s)")
  block = layout.blocks[dataset]
  values = 0 if block.format == "rafd" else np.zeros(block.size, np.float32)
  label = layout.encode(dataset, values)
  pre = sets_lib.FacePreprocess(setup.config.data.image_size)
  example = pre((0, {"image": image, "label": label, "dataset": dataset,
                     "crop_size": crop_size}))
  return task.translation_grid(jax.device_get(state.gen),
                               [(dataset, example)])


def main(argv):
  if len(argv) > 1:
    common.fail(f"unexpected arguments: {argv[1:]}")
  try:
    image = np.asarray(transforms.load_image(_IMAGE.value))
  except sources.DataError as e:
    common.fail(f"--image: {e}")
  common.start_jax()
  try:
    setup, state, step = restore.restore(_WORKDIR.value, which=_WHICH.value)
  except (FileNotFoundError, ValueError) as e:
    common.fail(str(e))
  if setup.config.task != "stargan":
    common.fail(f"{_WORKDIR.value} is a {setup.config.task!r} workdir, not "
                "a StarGAN one")
  try:
    grid = translate_image(setup, state, image, _DATASET.value, _CROP.value)
  except ValueError as e:
    common.fail(str(e))
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    grid.save(_OUT.value)
    print(f"wrote {_OUT.value} ({grid.size[0]}x{grid.size[1]}, checkpoint "
          f"step {step})")


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
