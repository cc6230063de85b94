r"""Predicts the age of every face in photos.

  python -m launch.predict --workdir=runs/age_regressor photo1.jpg dir/ ...
  python -m launch.predict --weights=dex_imdb_wiki.caffemodel.pt photo.jpg \
      [--out=ages.csv]

--weights takes the official DEX weights (the Caffe-converted VGG-16 that
HRFAE uses; any DEX-format file: the network's shape and input size are
read from it), with no training run: the expected age over 0..100.

Faces are found with MTCNN and cropped as the age models were trained: the
face box grown by 40% on each side into a square (--align=box, --margin).
--detector=none takes each file as one already-cropped face. Prints one line
per face, `path<TAB>age<TAB>(face k of n)`, or writes rows with box, score,
landmarks and age to --out (.csv or .jsonl). Unreadable files and photos
without a face are reported, not scored; exit status 1 if a file failed.
"""

from absl import app
from absl import flags
import numpy as np

from facejax.tasks import frozen
from facejax.evaluators import age as age_eval
from facejax.data.faces import photos
from launch import common
from facejax import tasks

_WORKDIR = flags.DEFINE_string("workdir", None, "Training workdir.")
_WEIGHTS = flags.DEFINE_string("weights", None, "Official DEX weights "
                               "(.pt / .pth), instead of --workdir.")
_WHICH = flags.DEFINE_enum("checkpoint", "best", ["best", "latest"],
                           "Which checkpoint to use.")
_FACES = common.FaceFlags()
flags.mark_flags_as_mutual_exclusive(["workdir", "weights"], required=True)


def _dex_predictor(weights: str):
  """uint8 [B, H, W, 3] -> ages, and the input size, of DEX weights."""
  estimator = frozen.load_estimator({"estimator": "dex",
                                     "weights": weights})
  return frozen.photo_ages(estimator), estimator.image_size, "box"


def main(argv):
  paths = photos.expand_paths(argv[1:])
  if not paths:
    common.fail("give one or more image files or folders after the flags")
  common.start_jax()
  try:
    if _WEIGHTS.value:
      predict, size, model_align = _dex_predictor(_WEIGHTS.value)
    else:
      predict, size, model_align = age_eval.run_predictor(
          _WORKDIR.value, _WHICH.value, tasks.get)
    crops = _FACES.crops(paths, model_align, size)
    writer = photos.RowWriter(_FACES.out.value) if _FACES.out.value else None
  except (FileNotFoundError, ValueError) as e:
    common.fail(str(e))
  rows = 0
  for batch in crops:
    ages = {}
    for group in photos.groups_by_shape(batch):
      out = predict(np.stack([batch[i].crop for i in group]))
      ages.update(zip(group, out.tolist()))
    for i, face in enumerate(batch):
      row = face.row(**({"age": round(ages[i], 2)} if i in ages else {}))
      if writer:
        writer.add(row)
      elif face.error:
        print(f"{face.path}\terror: {face.error}", flush=True)
      else:
        print(f"{face.path}\t{ages[i]:.1f}\t(face {face.face})", flush=True)
      rows += 1
  if writer:
    writer.close()
  common.report_photos(crops, rows, _FACES.out.value)


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
