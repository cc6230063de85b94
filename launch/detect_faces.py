r"""Finds faces in photos: boxes, scores and five landmarks, and a picture.

  python -m launch.detect_faces photo.jpg dir/ [--out=faces.csv] \
      [--figure=faces.png] [--detector=mtcnn|haar] [--min_face_size=20]

Prints one line per face (`path<TAB>face k<TAB>box<TAB>score`), or writes
rows to --out (.csv or .jsonl). --figure draws each photo with its boxes and
landmarks and every face's crop for each alignment template (the template's
points as crosses): what each model will be given.
"""

from absl import app
from absl import flags
import numpy as np

from facejax.data import images as images_lib
from facejax.evaluators import face_figure
from facejax.data.faces import photos
from launch import common

_FIGURE = flags.DEFINE_string("figure", "", "Write a picture (.png) of the "
                              "detections and aligned crops.")
_FACES = common.FaceFlags()


def main(argv):
  paths = photos.expand_paths(argv[1:])
  if not paths:
    common.fail("give one or more image files or folders after the flags")
  try:
    crops = _FACES.crops(paths, "box", 112)
    writer = photos.RowWriter(_FACES.out.value) if _FACES.out.value else None
  except (FileNotFoundError, ValueError) as e:
    common.fail(str(e))
  rows, drawn = 0, {}
  for batch in crops:
    for face in batch:
      rows += 1
      if writer:
        writer.add(face.row())
      elif face.error:
        print(f"{face.path}\terror: {face.error}", flush=True)
      else:
        box = ", ".join(f"{v:.0f}" for v in face.box)
        print(f"{face.path}\tface {face.face}\tbox ({box})\tscore "
              f"{face.score:.4f}", flush=True)
      if _FIGURE.value and not face.error:
        drawn.setdefault(face.path, []).append(face)
  if writer:
    writer.close()
  if _FIGURE.value and drawn:
    images = [np.asarray(images_lib.load_image(p)) for p in drawn]
    face_figure.draw(images, list(drawn.values()), _FIGURE.value,
                titles=[f"{p.rsplit('/', 1)[-1]}: {len(f)} face(s)"
                        for p, f in drawn.items()])
    print(f"figure written to {_FIGURE.value}", flush=True)
  common.report_photos(crops, rows, _FACES.out.value)


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
