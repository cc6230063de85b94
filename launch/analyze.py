r"""Every SwinFace prediction for every face in photos, and embeddings.

  python -m launch.analyze --workdir=runs/swinface_s2 face1.jpg dir/ \
      [--npy_dir=embeddings] [--out=faces.csv] [--detector=none]
  python -m launch.analyze --weights=checkpoint_step_79999_gpu_0.pt face.jpg

--weights takes the official SwinFace checkpoint (or a facejax-exported
one) with no training run; its geometry is configs/swinface.py's (Swin-T,
112 px), --config=... [--config.model.swin.variant=...] for another, and
the expression classes are RAF-DB's, the data set SwinFace was trained on.

Faces are found with MTCNN and aligned as SwinFace was trained: the five
landmarks moved onto insightface's 112x112 template (--align=arcface_112;
--detector=none for crops already aligned). Prints per face: expression,
age, gender and the attributes predicted present (probability > 0.5), or
writes rows with box, score, landmarks and every probability to --out
(.csv or .jsonl). With --npy_dir writes each face's L2-normalised
recognition embedding to <npy_dir>/<file>.face<k>.npy (files of the same
name in different folders keep their folder in the name).
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from facejax.evaluators import swinface as swinface_eval
from facejax.data.faces import photos
from launch import common
from facejax import runs
from facejax import tasks

_WORKDIR = flags.DEFINE_string("workdir", None, "SwinFace training workdir.")
_WEIGHTS = flags.DEFINE_string(
    "weights", None, "An official SwinFace checkpoint (.pt), instead of "
    "--workdir.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "The model geometry for --weights (default "
    "configs/swinface.py).", lock_config=False)
_NPY = flags.DEFINE_string("npy_dir", "", "Write embeddings here (.npy).")
_WHICH = flags.DEFINE_enum("checkpoint", "best", ["best", "latest"],
                           "Which checkpoint to use.")
_FACES = common.FaceFlags()
flags.mark_flags_as_mutual_exclusive(["workdir", "weights"], required=True)


def main(argv):
  paths = photos.expand_paths(argv[1:])
  if not paths:
    common.fail("give one or more image files or folders after the flags")
  common.start_jax()
  try:
    setup, state, _ = runs.load("swinface", _WORKDIR.value or "",
                                   _WEIGHTS.value or "", _CONFIG.value,
                                   which=_WHICH.value, task_class=tasks.get)
  except (FileNotFoundError, ValueError) as e:
    common.fail(str(e))
  config = setup.config
  try:
    crops = _FACES.crops(paths, config.data.get("align", "arcface_112"),
                         int(config.data.image_size))
    writer = photos.RowWriter(_FACES.out.value) if _FACES.out.value else None
  except (FileNotFoundError, ValueError) as e:
    common.fail(str(e))
  rows = 0
  for r in swinface_eval.analyze(setup, state, crops, _NPY.value,
                                     photos.unique_names(paths)):
    rows += 1
    if writer:
      writer.add(r)
    elif "error" in r:
      print(f"{r['file']}\terror: {r['error']}", flush=True)
    else:
      present = [n for n, p in r["attributes"].items() if p > 0.5]
      print(f"{r['file']}\texpression {r['expression']}\tage {r['age']:.1f}"
            f"\tgender {r['gender']}\tattributes: {', '.join(present) or '-'}"
            f"\t(face {r['face']})", flush=True)
  if writer:
    writer.close()
  common.report_photos(crops, rows, _FACES.out.value)


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
