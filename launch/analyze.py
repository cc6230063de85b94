r"""Every SwinFace prediction for face photos, and their embeddings.

  python -m launch.analyze --workdir=runs/swinface_s2 face1.jpg dir/ \
      [--npy_dir=embeddings] [--detect=false]
  python -m launch.analyze --weights=checkpoint_step_79999_gpu_0.pt face.jpg

--weights takes the official SwinFace checkpoint (or a facejax-exported
one) with no training run; its geometry is configs/swinface.py's (Swin-T,
112 px), --config=... [--config.model.swin.variant=...] for another, and
the expression classes are RAF-DB's, the data set SwinFace was trained on.

Prints per image: expression, age, gender and the attributes predicted
present (probability > 0.5); with --npy_dir writes the L2-normalised
recognition embedding to <npy_dir>/<image name>.npy. Faces are detected
and cropped as in launch.predict (--detect=false for aligned crops).
"""

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from facejax import config_lib
from facejax import swinface_analysis
from facejax.data import face_detect
from facejax.data import sources
from facejax.data.formats import raf_db
from launch import common
from launch import restore

_WORKDIR = flags.DEFINE_string("workdir", None, "SwinFace training workdir.")
_WEIGHTS = flags.DEFINE_string(
    "weights", None, "An official SwinFace checkpoint (.pt), instead of "
    "--workdir.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "The model geometry for --weights (default "
    "configs/swinface.py).", lock_config=False)
_NPY = flags.DEFINE_string("npy_dir", "", "Write embeddings here (.npy).")
_DETECT = flags.DEFINE_bool("detect", True, "Detect and crop the face.")
_WHICH = flags.DEFINE_enum("checkpoint", "best", ["best", "latest"],
                           "Which checkpoint to use.")
flags.mark_flags_as_mutual_exclusive(["workdir", "weights"], required=True)


def _expand_paths(args: list[str]) -> list[str]:
  """Files as given; folders expanded to their image files (sorted)."""
  paths = []
  for arg in args:
    if os.path.isdir(arg):
      paths += sorted(os.path.join(arg, f) for f in os.listdir(arg)
                      if f.lower().endswith(sources.IMAGE_EXTENSIONS))
    else:
      paths.append(arg)
  return paths


def main(argv):
  paths = _expand_paths(argv[1:])
  if not paths:
    common.fail("give one or more image files or folders after the flags")
  common.start_jax()
  try:
    if _WEIGHTS.value:
      config = _CONFIG.value or config_lib.load_config(os.path.join(
          os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
          "configs", "swinface.py"))
      with config.unlocked():
        # Inference needs no data: no identity count from the data set,
        # RAF-DB's expression classes (SwinFace's training set).
        config.model.num_identities = config.model.num_identities or 1
        config.data.expression.classes = (tuple(config.data.expression.classes)
                                          or raf_db.CLASSES)
      setup, state, _ = restore.from_weights(config, _WEIGHTS.value)
    else:
      setup, state, _ = restore.restore(_WORKDIR.value, which=_WHICH.value)
  except (FileNotFoundError, ValueError) as e:
    common.fail(str(e))
  if setup.config.task != "swinface":
    common.fail(f"{_WORKDIR.value or _WEIGHTS.value!r} is a "
                f"{setup.config.task!r} model; launch.analyze needs swinface")
  detector = (face_detect.FaceDetector(multiple_faces="largest")
              if _DETECT.value else None)
  rows = swinface_analysis.analyze(setup, state, paths, _NPY.value,
                                   detector)
  for r in rows:
    if "error" in r:
      print(f"{r['path']}\terror: {r['error']}", flush=True)
      continue
    present = [n for n, p in r["attributes"].items() if p > 0.5]
    print(f"{r['path']}\texpression {r['expression']}\tage {r['age']:.1f}\t"
          f"gender {r['gender']}\tattributes: {', '.join(present) or '-'}",
          flush=True)
  failures = sum("error" in r for r in rows)
  if failures:
    print(f"{failures} of {len(paths)} file(s) could not be read",
          file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
