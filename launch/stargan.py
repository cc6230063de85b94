r"""Translates every face in photos to every target attribute of StarGAN.

  python -m launch.stargan --workdir=runs/stargan_smoke \
      --image=face.jpg --out=grid.png
  python -m launch.stargan --weights=200000-G.ckpt \
      --image=photos/ --out=grid.png

--weights takes an official generator checkpoint. Its data sets are read
from the file's first convolution: 5 labels is the released CelebA model
(Black_Hair, Blond_Hair, Brown_Hair, Male, Young), 8 the RaFD model
(RaFD's expressions), 15 the joint CelebA+RaFD model; --config=... for any
other. No training run is needed.

Writes a grid: one row per face (labelled with its file and face index),
the input, then one column per target attribute setting of every data set
(hair colour set / attribute flipped for CelebA-format sets, one column per
class for RaFD-format sets), as the reference's sample images. Each face is
treated as an example of `--dataset` (default the first data set, all its
attributes 0). Faces are found with MTCNN and cropped square around the face
box (--align=box, --margin); --detector=none takes each photo as a face and
centre-crops it as in training (`--crop_size`, 0 = the shorter side).
"""

import os

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from facejax.data.faces import photos
from facejax.convert import stargan as stargan_convert
from facejax.evaluators import stargan as stargan_eval
from launch import common
from facejax import runs
from facejax import tasks

_WORKDIR = flags.DEFINE_string("workdir", None, "StarGAN training workdir.")
_WEIGHTS = flags.DEFINE_string("weights", None, "An official StarGAN "
                               "generator (…-G.ckpt), instead of --workdir.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "The model geometry and data sets for --weights "
    "(default: read from the file).", lock_config=False)
_IMAGE = flags.DEFINE_string("image", None, "Face image file or folder.")
_OUT = flags.DEFINE_string("out", "grid.png", "Output PNG.")
_DATASET = flags.DEFINE_integer("dataset", 0, "Index of the data set the "
                                "photo is treated as coming from.")
_CROP = flags.DEFINE_integer("crop_size", 0, "Centre crop in pixels before "
                             "resizing (0: the shorter side).")
_WHICH = flags.DEFINE_enum("checkpoint", "latest", ["best", "latest"],
                           "Which checkpoint to use.")
_FACES = common.FaceFlags(rows=False)
flags.mark_flags_as_mutual_exclusive(["workdir", "weights"], required=True)
flags.mark_flag_as_required("image")

def main(argv):
  paths = photos.expand_paths(([_IMAGE.value] if _IMAGE.value else [])
                              + argv[1:])
  missing = [p for p in paths if not os.path.exists(p)]
  if not paths or missing:
    common.fail(f"--image: {', '.join(missing) or 'no image files'}: no "
                "such file or folder")
  common.start_jax()
  try:
    config = _CONFIG.value
    if _WEIGHTS.value and config is None:
      config = stargan_convert.release_config(
          _WEIGHTS.value, runs.default_config("stargan"))
    setup, state, step = runs.load("stargan", _WORKDIR.value,
                                      _WEIGHTS.value, config,
                                      which=_WHICH.value, task_class=tasks.get)
    crops = _FACES.crops(paths, setup.config.data.get("align", "box"),
                         int(setup.config.data.image_size))
    grid = stargan_eval.translate_faces(setup, state, crops, common.warn,
                                        _DATASET.value, _CROP.value)
  except (FileNotFoundError, ValueError) as e:
    common.fail(str(e))
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
    grid.save(_OUT.value)
    print(f"wrote {_OUT.value} ({grid.size[0]}x{grid.size[1]}, checkpoint "
          f"step {step})")
  common.report_photos(crops, 0, "")


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
