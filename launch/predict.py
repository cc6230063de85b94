r"""Predicts the age of faces in photos with a trained regressor.

  python -m launch.predict --workdir=runs/age_regressor photo1.jpg dir/ ...
  python -m launch.predict --weights=dex_imdb_wiki.caffemodel.pt photo.jpg

--weights takes the official DEX weights (the Caffe-converted VGG-16 that
HRFAE uses; any DEX-format file: the network's shape and input size are
read from it), with no training run: the expected age over 0..100.

Prints one line per image: `path<TAB>predicted age`. Each photo goes
through the same face detection and crop as `launch.prepare_data`
(OpenCV Haar cascade, 40% margin); `--detect=false` for already-cropped
faces. Unreadable files are reported and the rest still processed.
"""

import os
import sys

from absl import app
from absl import flags
import jax
import numpy as np

from facejax import age_estimators
from facejax import parallel
from facejax.data import face_detect
from facejax.data import sources
from facejax.data import transforms
from launch import common
from launch import restore

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir.")
_WEIGHTS = flags.DEFINE_string("weights", None, "Official DEX weights "
                               "(.pt / .pth), instead of --workdir.")
_DETECT = flags.DEFINE_bool("detect", True, "Detect and crop the face.")
_MARGIN = flags.DEFINE_float("margin", 0.4, "Crop margin around the face "
                             "box (same as prepare_data).")
_WHICH = flags.DEFINE_enum("checkpoint", "best", ["best", "latest"],
                           "Which checkpoint to use.")
flags.mark_flags_as_mutual_exclusive(["workdir", "weights"], required=True)


def expand_paths(args: list[str]) -> list[str]:
  """Files as given; folders expanded to their image files (sorted)."""
  paths = []
  for arg in args:
    if os.path.isdir(arg):
      paths += sorted(os.path.join(arg, f) for f in os.listdir(arg)
                      if f.lower().endswith(sources.IMAGE_EXTENSIONS))
    else:
      paths.append(arg)
  return paths


def face_crop(image: np.ndarray, detector, margin: float
              ) -> tuple[np.ndarray, str]:
  """The largest detected face with margin, or the whole image."""
  crop, n = detector.detect_and_crop(image, margin=margin)
  if crop is None:
    return image, "no face found: used the whole image"
  return crop, f"{n} face(s) found" if n > 1 else ""


def _workdir_predictor(setup, state):
  """image uint8 [H, W, 3] -> age, through the run's own preprocessing."""
  pre = setup.task.preprocess(train=False)

  def predict(image):
    example = pre((0, {"image": image, "age": np.float32(0)}))
    # One copy per local device, so the batch divides over the mesh.
    images = np.repeat(example["image"][None], jax.local_device_count(), 0)
    images = parallel.shard_batch({"image": images}, setup.mesh)["image"]
    return float(jax.device_get(setup.predict(state, images))[0])
  return predict


def main(argv):
  paths = expand_paths(argv[1:])
  if not paths:
    common.fail("give one or more image files or folders after the flags")
  common.start_jax()
  try:
    if _WEIGHTS.value:
      estimator = age_estimators.load_estimator(
          {"estimator": "dex", "weights": _WEIGHTS.value})
      age_fn = jax.jit(estimator.age)
      predict = lambda image: float(age_fn(
          estimator.variables, image[None].astype(np.float32) / 255.0)[0])
    else:
      setup, state, _ = restore.restore(_WORKDIR.value, which=_WHICH.value)
      predict = _workdir_predictor(setup, state)
  except (FileNotFoundError, ValueError) as e:
    common.fail(str(e))
  detector = face_detect.FaceDetector(multiple_faces="largest")
  failures = 0
  for path in paths:
    try:
      image = np.asarray(transforms.load_image(path))
    except sources.DataError as e:
      print(f"{path}\terror: {e}", flush=True)
      failures += 1
      continue
    note = ""
    if _DETECT.value:
      image, note = face_crop(image, detector, _MARGIN.value)
    age = predict(image)
    print(f"{path}\t{age:.1f}" + (f"\t({note})" if note else ""), flush=True)
  if failures:
    print(f"{failures} of {len(paths)} file(s) could not be read",
          file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
