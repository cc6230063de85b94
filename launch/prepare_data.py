r"""Detects and crops faces in a raw data set, writing it in the same layout.

  python -m launch.prepare_data --layout=cacd --src=DIR --out=DIR \
      [--csv=FILE] [--size=128] [--margin=0.4] [--detect=True] \
      [--detector=mtcnn|haar] [--align=box|arcface_112|ffhq|...] \
      [--multiple_faces=skip|largest] [--tfds=True] [--workers=1]

Layouts (cacd, celeba, rafd, fiw and the released age formats), the crops
and the report are described in facejax/data/prepare.py.
"""

from typing import Sequence

from absl import app
from absl import flags

from facejax.data import prepare
from facejax.data import prepare_scan
from facejax.data.faces import align as face_align
from facejax.data.faces import haar as haar_lib

_LAYOUT = flags.DEFINE_enum('layout', None, prepare_scan.LAYOUTS,
                            'Input layout.')
_SRC = flags.DEFINE_string('src', None, 'Input data set folder.')
_OUT = flags.DEFINE_string('out', None, 'Output folder.')
_CSV = flags.DEFINE_string('csv', None,
                           'cacd: CSV with path,age[,split] columns.')
_SIZE = flags.DEFINE_integer(
    'size', 128, 'Output side in pixels (0 keeps the crop size).')
_MARGIN = flags.DEFINE_float(
    'margin', 0.4, 'Fraction of the face box added on each side of it.')
_DETECT = flags.DEFINE_boolean(
    'detect', True, 'Detect and crop faces; False only resizes.')
_DETECTOR = flags.DEFINE_enum(
    'detector', 'mtcnn', ('mtcnn', 'haar'),
    'Face detector: MTCNN (boxes and five landmarks) or OpenCV Haar (boxes).')
_ALIGN = flags.DEFINE_enum(
    'align', 'box', [t for t in face_align.TEMPLATES if t != 'none'],
    'Face crop: the box with --margin, or a landmark template (a model '
    "config's data.align).")
_MULTIPLE_FACES = flags.DEFINE_enum(
    'multiple_faces', 'skip', haar_lib.MULTIPLE_FACE_POLICIES,
    'Images with several faces: skip them or crop the largest.')
_TFDS = flags.DEFINE_boolean(
    'tfds', True, 'Also write a TFDS ArrayRecord data set to out/tfds/.')
_PAD = flags.DEFINE_enum(
    'pad', 'edge', haar_lib.PAD_MODES,
    'How crops leaving the image are filled: edge pixels or black.')
_SPLIT_BY = flags.DEFINE_enum(
    'split_by', 'identity', ('file', 'identity'),
    'cacd without a split column: hash the person name so that no person '
    'is in two splits, or the file name.')
_WORKERS = flags.DEFINE_integer(
    'workers', 1, 'Processes for detection and cropping.')
_JPEG_QUALITY = flags.DEFINE_integer('jpeg_quality', 95, 'JPEG quality.')
_MIN_FACE = flags.DEFINE_float(
    'min_face', 0.1, 'Smallest face side, as a fraction of the shorter side.')
_MIN_NEIGHBORS = flags.DEFINE_integer(
    'min_neighbors', 5, 'Haar cascade minNeighbors (higher: fewer faces).')


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  for flag in (_LAYOUT, _SRC, _OUT):
    if flag.value is None:
      raise app.UsageError(f'--{flag.name} is required.')
  options = prepare.Options(
      detect=_DETECT.value, detector=_DETECTOR.value, align=_ALIGN.value,
      size=_SIZE.value, margin=_MARGIN.value, pad=_PAD.value,
      multiple_faces=_MULTIPLE_FACES.value,
      jpeg_quality=_JPEG_QUALITY.value, min_face=_MIN_FACE.value,
      min_neighbors=_MIN_NEIGHBORS.value)
  if options.size < 0 or options.margin < 0:
    raise app.UsageError('--size and --margin must be >= 0.')
  try:
    result = prepare.run(
        _LAYOUT.value, _SRC.value, _OUT.value, options, csv_file=_CSV.value,
        write_tfds=_TFDS.value, split_by=_SPLIT_BY.value,
        workers=_WORKERS.value)
  except prepare_scan.InputError as e:
    raise SystemExit(f'prepare_data: error: {e}') from e
  print(prepare.summary(result, _OUT.value))


if __name__ == '__main__':
  app.run(main)
