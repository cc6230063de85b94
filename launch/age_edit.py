r"""Edits the apparent age of faces with a trained age transformer.

  python -m launch.age_edit --workdir=runs/age_transformer \
      --image=face.jpg [--ages=20,30,40,50,60] [--histogram_transfer] \
      --out=grid.png

`--image` is one image file or a folder of them. Writes a PNG grid: one
row per face, the input first, then one column per target age. Photos go
through face detection and the same crop as launch.predict (OpenCV Haar
cascade, 40% margin; --nodetect for already-cropped faces).
`--histogram_transfer`: the reference's per-channel histogram matching of
each output to its input (colour fidelity).
"""

import os

from absl import app
from absl import flags
import jax
import numpy as np
from PIL import Image

from facejax import image_grid
from facejax import parallel
from facejax.data import face_detect
from facejax.data import sources
from facejax.data import transforms
from launch import common
from launch import restore

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir.")
_IMAGE = flags.DEFINE_string("image", None, "Image file or folder.")
_AGES = flags.DEFINE_list("ages", ["20", "30", "40", "50", "60"],
                          "Target ages (years, 0..100).")
_OUT = flags.DEFINE_string("out", "age_edit.png", "Output PNG grid.")
_HIST = flags.DEFINE_bool("histogram_transfer", False,
                          "Match each output's colour histogram to the "
                          "input (the reference's hist_transform).")
_DETECT = flags.DEFINE_bool("detect", True, "Detect and crop the face.")
_MARGIN = flags.DEFINE_float("margin", 0.4, "Crop margin around the face "
                             "box (same as prepare_data).")
_WHICH = flags.DEFINE_enum("checkpoint", "latest", ["best", "latest"],
                           "Which checkpoint (a GAN's latest is usual).")
flags.mark_flag_as_required("workdir")
flags.mark_flag_as_required("image")


def image_paths(arg: str) -> list[str]:
  """The file, or a folder's image files (sorted); clear errors."""
  if os.path.isdir(arg):
    paths = sorted(os.path.join(arg, f) for f in os.listdir(arg)
                   if f.lower().endswith(sources.IMAGE_EXTENSIONS))
    if not paths:
      raise ValueError(f"{arg}: folder holds no image files "
                       f"({', '.join(sources.IMAGE_EXTENSIONS)})")
    return paths
  if not os.path.exists(arg):
    raise ValueError(f"{arg}: no such file or folder")
  return [arg]


def check_images(paths: list[str]) -> None:
  """Fails before any model loading if a file is not a readable image."""
  for path in paths:
    try:
      with Image.open(path) as im:
        im.verify()
    except Exception as e:  # PIL raises many types for non-images.
      raise ValueError(f"{path}: not an image file PIL can read "
                       f"({type(e).__name__}); --image must be an image "
                       f"(jpg, png, ...) or a folder of them") from None


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


def load_faces(paths: list[str], preprocess, detect: bool, margin: float
               ) -> tuple[np.ndarray, list[str]]:
  """Images as the task's preprocess yields them, plus notes per face."""
  detector = face_detect.FaceDetector(multiple_faces="largest")
  images, notes = [], []
  for path in paths:
    image = np.asarray(transforms.load_image(path))  # DataError if bad
    note = ""
    if detect:
      crop, n = detector.detect_and_crop(image, margin=margin)
      if crop is None:
        note = "no face found: used the whole image"
      else:
        image, note = crop, (f"{n} faces: used the largest" if n > 1
                             else "")
    images.append(preprocess((0, {"image": image,
                                  "age": np.float32(0)}))["image"])
    notes.append(note)
  return np.stack(images), notes


def edit_grid(setup, state, images: np.ndarray, ages: list[float],
              histogram: bool) -> list[list[np.ndarray]]:
  """Rows [input, edit at ages[0], ...] of RGB in [0, 1]."""
  fn = setup.task.edit_fn(histogram)
  n = len(images)
  # Pad the batch to a multiple of the device count (it is sharded).
  per = -(-n // jax.device_count()) * jax.device_count()
  padded = np.concatenate([images, np.repeat(images[-1:], per - n, 0)])
  x = parallel.shard_batch({"image": padded}, setup.mesh)["image"]
  rows = [[(images[i] + 1.0) * 0.5] for i in range(n)]
  for age in ages:
    t = parallel.shard_batch({"t": np.full((per,), age, np.float32)},
                             setup.mesh)["t"]
    out = np.asarray(jax.device_get(fn(state, x, t)))
    for i in range(n):
      rows[i].append(out[i])
  return rows


def main(argv):
  del argv
  try:
    paths = image_paths(_IMAGE.value)
    check_images(paths)
    ages = parse_ages(_AGES.value)
  except ValueError as e:
    common.fail(str(e))
  common.start_jax()
  try:
    config = restore.load_workdir_config(_WORKDIR.value)
    if config.get("task") != "age_transformer":
      raise ValueError(f"{_WORKDIR.value!r} holds a {config.get('task')!r} "
                       f"run, not an age_transformer")
    # Editing never uses the age loss: a tiny random stand-in avoids
    # needing the estimator's workdir on this machine.
    with config.unlocked():
      config.age_loss.random_init = "tiny"
    setup, state, step = restore.restore(_WORKDIR.value, config,
                                         which=_WHICH.value)
  except (FileNotFoundError, ValueError) as e:
    common.fail(str(e))
  try:
    images, notes = load_faces(paths, setup.task.preprocess(train=False),
                               _DETECT.value, _MARGIN.value)
  except sources.DataError as e:
    common.fail(f"{e} (--image must be an image file or a folder of them)")
  rows = edit_grid(setup, state, images, ages, _HIST.value)
  labels = ["input"] + [f"{a:g}" for a in ages]
  size = image_grid.save_grid(_OUT.value, rows, labels)
  for path, note in zip(paths, notes):
    if note:
      print(f"{path}: {note}")
  print(f"wrote {_OUT.value} ({size[0]}x{size[1]} px, {len(rows)} face(s) x "
        f"{len(ages)} age(s), checkpoint step {step})")


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
