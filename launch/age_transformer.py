r"""Edits the apparent age of every face in photos with the age transformer.

  python -m launch.age_transformer --workdir=runs/age_transformer \
      --image=photos/ [--ages=20,30,40,50,60] [--histogram_transfer] \
      --out=grid.png
  python -m launch.age_transformer --weights=checkpoint --image=photo.jpg

--weights takes HRFAE's released checkpoint (the extension-less
`checkpoint` file, PyTorch's legacy format, or any facejax export) in the
geometry of configs/age_transformer.py (--config=... for another); no
training run is needed.

`--image` is one image file or a folder of them. Writes a PNG grid: one row
per face (labelled with its file and face index), the input first, then one
column per target age. Faces are found with MTCNN and cropped as the model
was trained, FFHQ's alignment (--align=ffhq; --detector=none for crops that
are already aligned). Unreadable files and photos without a face are
reported; the others are still edited (exit status 1 if a file failed).
`--histogram_transfer`: the reference's per-channel histogram matching of
each output to its input (colour fidelity).
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from facejax.evaluators import age_transformer as age_edits
from facejax.evaluators import image_grid
from facejax.data.faces import photos
from launch import common
from facejax import runs
from facejax import tasks

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir.")
_WEIGHTS = flags.DEFINE_string("weights", None, "HRFAE's released "
                               "checkpoint, instead of --workdir.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "The model geometry for --weights (default "
    "configs/age_transformer.py).", lock_config=False)
_IMAGE = flags.DEFINE_string("image", None, "Image file or folder.")
_AGES = flags.DEFINE_list("ages", ["20", "30", "40", "50", "60"],
                          "Target ages (years, 0..100).")
_OUT = flags.DEFINE_string("out", "age_edit.png", "Output PNG grid.")
_HIST = flags.DEFINE_bool("histogram_transfer", False,
                          "Match each output's colour histogram to the "
                          "input (the reference's hist_transform).")
_WHICH = flags.DEFINE_enum("checkpoint", "latest", ["best", "latest"],
                           "Which checkpoint (a GAN's latest is usual).")
_FACES = common.FaceFlags(rows=False)
flags.mark_flags_as_mutual_exclusive(["workdir", "weights"], required=True)
flags.mark_flag_as_required("image")


def parse_ages(values: list[str]) -> list[float]:
  ages = []
  for v in values:
    try:
      age = float(v)
    except ValueError:
      raise ValueError(f"--ages: {v!r} is not a number") from None
    if not 0 <= age <= 100:
      raise ValueError(f"--ages: {age} is outside 0..100")
    ages.append(age)
  if not ages:
    raise ValueError("--ages: give at least one age")
  return ages


def main(argv):
  del argv
  try:
    paths = photos.image_paths(_IMAGE.value)
    ages = parse_ages(_AGES.value)
  except ValueError as e:
    common.fail(str(e))
  common.start_jax()
  try:
    setup, state, step = runs.load(
        "age_transformer", _WORKDIR.value, _WEIGHTS.value, _CONFIG.value,
        which=_WHICH.value, frozen_networks=False, task_class=tasks.get)
    config = setup.config
    crops = _FACES.crops(paths, config.data.get("align", "ffhq"),
                         int(config.data.image_size))
    images, labels = age_edits.load_faces(
        crops, setup.task.preprocess(train=False), common.warn)
  except (FileNotFoundError, ValueError) as e:
    common.fail(str(e))
  rows = age_edits.edit_grid(setup, state, images, ages, _HIST.value,
                   _FACES.batch_size.value)
  header = ["input"] + [f"{a:g}" for a in ages]
  size = image_grid.save_grid(_OUT.value, rows, header, labels)
  print(f"wrote {_OUT.value} ({size[0]}x{size[1]} px, {len(rows)} face(s) x "
        f"{len(ages)} age(s), checkpoint step {step})")
  common.report_photos(crops, len(rows), "")


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
