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
import numpy as np

from facejax.data import stargan as sets_lib
from facejax.data.faces import photos
from facejax.data.formats import rafd
from facejax.convert import stargan as stargan_convert
from facejax.convert import torch_pickle
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

# The released models' label blocks, by the generator's label channels.
CELEBA_RELEASE = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young")


def config_for_weights(weights: str):
  """configs/stargan.py shaped like an official generator file."""
  g_path, _ = stargan_convert.checkpoint_paths(weights)
  sd = torch_pickle.read_state_dict(g_path)
  if "main.0.weight" not in sd:
    raise ValueError(f"{g_path}: no main.0.weight; not a StarGAN generator")
  conv_dim, in_channels = sd["main.0.weight"].shape[:2]
  labels = in_channels - 3
  repeat = len({k.split(".")[1] for k in sd
                if k.startswith("main.") and ".main." in k})
  config = runs.default_config("stargan")
  celeba, rafd_set = (dict(s) for s in config.data.sets)
  celeba.update(attributes=CELEBA_RELEASE, crop_size=0)
  rafd_set.update(classes=rafd.EXPRESSIONS, crop_size=0)
  by_labels = {5: [celeba], 8: [rafd_set], 5 + 8 + 2: [celeba, rafd_set]}
  if labels not in by_labels:
    raise ValueError(
        f"{g_path}: the generator takes {labels} label channels; the "
        f"releases take 5 (CelebA), 8 (RaFD) or 15 (both): give --config "
        f"with the data.sets it was trained on")
  with config.unlocked():
    config.data.sets = by_labels[labels]
    config.model.g_conv_dim = int(conv_dim)
    config.model.g_repeat_num = repeat
  return config


def translate_faces(setup, state, crops, dataset: int = 0,
                    crop_size: int = 0):
  """The grid (PIL image): one row per face of `crops`, and row labels."""
  task = setup.task
  layout = task.layout
  if not 0 <= dataset < layout.num_sets:
    raise ValueError(f"--dataset={dataset}: the run has "
                     f"{layout.num_sets} data set(s)")
  block = layout.blocks[dataset]
  values = 0 if block.format == "rafd" else np.zeros(block.size, np.float32)
  label = layout.encode(dataset, values)
  pre = sets_lib.FacePreprocess(setup.config.data.image_size)
  faces, labels = photos.labelled_faces(crops, common.warn)
  examples = [(dataset, pre((0, {"image": f.crop, "label": label,
                                 "dataset": dataset,
                                 "crop_size": crop_size})))
              for f in faces]
  if not examples:
    raise ValueError("no face to translate in " + ", ".join(crops.paths[:5]))
  return task.translation_grid(jax.device_get(state.gen), examples, labels)


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
      config = config_for_weights(_WEIGHTS.value)
    setup, state, step = runs.load("stargan", _WORKDIR.value,
                                      _WEIGHTS.value, config,
                                      which=_WHICH.value, task_class=tasks.get)
    crops = _FACES.crops(paths, setup.config.data.get("align", "box"),
                         int(setup.config.data.image_size))
    grid = translate_faces(setup, state, crops, _DATASET.value, _CROP.value)
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
