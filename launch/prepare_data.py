r"""Detects and crops faces in a raw data set, writing it in the same layout.

  python -m launch.prepare_data --layout=cacd --src=DIR --out=DIR \
      [--csv=FILE] [--size=128] [--margin=0.4] [--detect=True] \
      [--detector=mtcnn|haar] [--align=box|arcface_112|ffhq|...] \
      [--multiple_faces=skip|largest] [--tfds=True] [--workers=1]

Input layouts (the output under --out has the same layout, so the facejax
loaders can read it directly):
  cacd:   CSV (--csv, columns path,age[,split]; paths relative to the CSV's
          folder) or CACD2000 names <age>_<Name>_<NNNN>.jpg directly in --src.
          Output: out/images/... and out/{train,valid,test}.csv (path,age).
          Without a split column the split is 80/10/10 by a hash of the
          person's name (--split_by=file hashes the file name instead, which
          puts one person in several splits).
  appa_real, afad, cacd2000, utkface, imdb_wiki, morph2, ffhq_aging,
  hrfae_ffhq: the released folder as unpacked, read by the same code as
          --config.data.format (facejax/data/formats/), split the same way
          (official, else seeded by person, else by file); written like
          cacd.
  celeba: list_attr_celeba.txt [+ list_eval_partition.txt] with the images in
          img_align_celeba/ or next to the txt files; both txt files are
          rewritten for the kept images.
  rafd:   src/<split>/<category>/*.jpg or src/<category>/*.jpg.
  fiw:    src/[<split>/]F0001/MID1/*.jpg, or FIW as released (src/FIDs/
          F0001/MID1/*.jpg with each family's mid.csv): the mid.csv files
          are copied and RFIW-style pair lists (train-pairs.csv,
          val-pairs.csv, test-pairs.csv; families split 80/10/10 by a
          seeded hash) are written from the relationship matrices, for
          configs/kinship.py's data.train_file / val_file / test_file.

Faces are found with MTCNN (--detector=haar: OpenCV's cascade) and cropped
as --align names (facejax.data.faces.align): 'box' is the face box grown by
--margin on each side (DEX's crop), 'arcface_112' / 'sphereface_96x112' /
'caricature' / 'ffhq' warp the five landmarks onto a model's template, as
the model's config's data.align says. Faces smaller than --min_face of the
shorter side are ignored. Images that cannot be read, have no face or
several faces (under --multiple_faces=skip) are left out and listed in
out/prepare_report.csv.
With --detect=False images are only centre-cropped to a square and resized
(for pre-aligned data sets). With --tfds=True the kept images are also
written as a TFDS ArrayRecord data set to out/tfds/ (see
facejax.data.tfds_prepared).
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import glob
import hashlib
import multiprocessing
import os
import re
import shutil
from typing import Any, Iterable, Optional, Sequence

from absl import app
from absl import flags
from absl import logging
import numpy as np
from PIL import Image
from PIL import ImageOps
import tqdm

from facejax.data import stargan
from facejax.data.faces import haar as haar_lib
from facejax.data import faces
from facejax.data import transforms
from facejax.data.faces import align as face_align
from facejax.data import formats
from facejax.data.formats import cacd2000
from facejax.data.formats import utkface

# The released age data sets (facejax/data/formats/) are written like cacd.
LAYOUTS = ('cacd', 'celeba', 'rafd', 'fiw', *formats.AGE_FORMATS)
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')
# Extensions written as they are; anything else is re-encoded as .jpg.
_KEPT_EXTENSIONS = ('.jpg', '.jpeg', '.png')
SPLIT_DIRS = ('train', 'valid', 'val', 'test')
CACD_SPLITS = ('train', 'valid', 'test')
CELEBA_SPLITS = ('train', 'val', 'test')  # Partition values 0, 1, 2.
REPORT_FILE = 'prepare_report.csv'
# Reasons counted in the summary line even when zero.
MAIN_REASONS = ('no_face', 'multiple_faces', 'unreadable')

_FIW_FAMILY = re.compile(r'^F(\d+)$', re.IGNORECASE)
_FIW_MEMBER = re.compile(r'^MID(\d+)$', re.IGNORECASE)

_LAYOUT = flags.DEFINE_enum('layout', None, LAYOUTS, 'Input layout.')
_SRC = flags.DEFINE_string('src', None, 'Input data set folder.')
_OUT = flags.DEFINE_string('out', None, 'Output folder.')
_CSV = flags.DEFINE_string(
    'csv', None, 'cacd: CSV with path,age[,split] columns.'
)
_SIZE = flags.DEFINE_integer(
    'size', 128, 'Output side in pixels (0 keeps the crop size).'
)
_MARGIN = flags.DEFINE_float(
    'margin', 0.4, 'Fraction of the face box added on each side of it.'
)
_DETECT = flags.DEFINE_boolean(
    'detect', True, 'Detect and crop faces; False only resizes.'
)
_DETECTOR = flags.DEFINE_enum(
    'detector', 'mtcnn', ('mtcnn', 'haar'),
    'Face detector: MTCNN (boxes and five landmarks) or OpenCV Haar (boxes).'
)
_ALIGN = flags.DEFINE_enum(
    'align', 'box', [t for t in face_align.TEMPLATES if t != 'none'],
    'Face crop: the box with --margin, or a landmark template (a model '
    "config's data.align).",
)
_MULTIPLE_FACES = flags.DEFINE_enum(
    'multiple_faces',
    'skip',
    haar_lib.MULTIPLE_FACE_POLICIES,
    'Images with several faces: skip them or crop the largest.',
)
_TFDS = flags.DEFINE_boolean(
    'tfds', True, 'Also write a TFDS ArrayRecord data set to out/tfds/.'
)
_PAD = flags.DEFINE_enum(
    'pad',
    'edge',
    haar_lib.PAD_MODES,
    'How crops leaving the image are filled: edge pixels or black.',
)
_SPLIT_BY = flags.DEFINE_enum(
    'split_by',
    'identity',
    ('file', 'identity'),
    'cacd without a split column: hash the person name so that no person '
    'is in two splits, or the file name.',
)
_WORKERS = flags.DEFINE_integer(
    'workers', 1, 'Processes for detection and cropping.'
)
_JPEG_QUALITY = flags.DEFINE_integer('jpeg_quality', 95, 'JPEG quality.')
_MIN_FACE = flags.DEFINE_float(
    'min_face', 0.1, 'Smallest face side, as a fraction of the shorter side.'
)
_MIN_NEIGHBORS = flags.DEFINE_integer(
    'min_neighbors', 5, 'Haar cascade minNeighbors (higher: fewer faces).'
)


class InputError(ValueError):
  """The input data set is malformed; the message names file and line."""


@dataclasses.dataclass
class Item:
  """One input image.

  Attributes:
    src: input file.
    rel: its path as reported (relative to --src or the CSV's folder).
    out_rel: output file, relative to --out.
    split: split name.
    labels: label values for the label files and the TFDS records.
  """

  src: str
  rel: str
  out_rel: str
  split: str
  labels: dict[str, Any]


@dataclasses.dataclass
class Scan:
  """What a layout scanner found.

  Attributes:
    items: images to process.
    problems: (path, reason, detail) of inputs left out before processing.
    splits: split names in output order.
    attribute_names: celeba attribute names.
    class_names: rafd categories.
    has_partition: celeba had list_eval_partition.txt.
    image_dir: celeba image folder relative to --src ('' when next to txt).
  """

  items: list[Item]
  problems: list[tuple[str, str, str]] = dataclasses.field(
      default_factory=list
  )
  splits: Sequence[str] = ('train',)
  attribute_names: list[str] = dataclasses.field(default_factory=list)
  class_names: list[str] = dataclasses.field(default_factory=list)
  has_partition: bool = False
  image_dir: str = ''


@dataclasses.dataclass(frozen=True)
class Options:
  """How each image is processed."""

  detect: bool = True
  detector: str = 'mtcnn'
  align: str = 'box'
  size: int = 128
  margin: float = 0.4
  pad: str = 'edge'
  multiple_faces: str = 'skip'
  jpeg_quality: int = 95
  min_face: float = 0.1
  min_neighbors: int = 5


def _is_image(name: str) -> bool:
  return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith('.')


def _out_name(rel: str) -> str:
  """Output name: the input name, with .jpg for formats not kept as is."""
  stem, ext = os.path.splitext(rel)
  return rel if ext.lower() in _KEPT_EXTENSIONS else stem + '.jpg'


def _subdirs(path: str) -> list[str]:
  return sorted(
      d for d in os.listdir(path)
      if not d.startswith('.') and os.path.isdir(os.path.join(path, d))
  )


def _images_in(path: str) -> list[str]:
  return sorted(
      f for f in os.listdir(path)
      if _is_image(f) and os.path.isfile(os.path.join(path, f))
  )


def hash_split(key: str, fractions: Sequence[int] = (80, 10, 10)) -> str:
  """Deterministic train/valid/test split of a key (stable across runs)."""
  bucket = int(hashlib.md5(key.encode('utf-8')).hexdigest()[:8], 16) % 100
  if bucket < fractions[0]:
    return 'train'
  if bucket < fractions[0] + fractions[1]:
    return 'valid'
  return 'test'


def _parse_age(value: str, where: str) -> float:
  try:
    age = float(value)
  except ValueError:
    raise InputError(f'{where}: age {value!r} is not a number.') from None
  if not np.isfinite(age) or age < 0:
    raise InputError(f'{where}: age {value!r} must be a finite number >= 0.')
  return age


def scan_cacd(src: str, csv_file: Optional[str], split_by: str) -> Scan:
  """Lists an age data set from a CSV or from CACD2000 file names."""
  if csv_file:
    return _scan_age_csv(csv_file)  # it names no people: split by file
  items, problems, utk = [], [], 0
  for name in _images_in(src):
    parsed = cacd2000.parse_name(name)
    if parsed is None:
      # UTKFace's 25_0_1_<datetime>.jpg has the shape of a CACD name; its
      # "person" would be gender_race.
      if utkface.parse_name(name) is not None:
        utk += 1
      problems.append((name, 'bad_name', 'expected <age>_<Name>_<NNNN>.jpg'))
      continue
    age, person = parsed
    key = person if split_by == 'identity' else name
    items.append(
        Item(
            src=os.path.join(src, name),
            rel=name,
            out_rel=os.path.join('images', _out_name(name)),
            split=hash_split(key),
            labels={'age': float(age)},
        )
    )
  if utk and utk * 2 >= len(items) + utk:
    raise InputError(
        f'{utk} images in {src} are named like UTKFace '
        '([age]_[gender]_[race]_[datetime].jpg), not CACD2000 '
        '(<age>_<Name>_<NNNN>.jpg): use --layout=utkface.'
    )
  if not items:
    raise InputError(
        f'No images named <age>_<Name>_<NNNN>.jpg directly in {src}; pass '
        'a CSV with --csv=FILE (columns path,age).'
    )
  return Scan(items=items, problems=problems, splits=CACD_SPLITS)


def _scan_age_csv(csv_file: str) -> Scan:
  """Reads path,age[,split] rows; paths are relative to the CSV's folder."""
  if not os.path.isfile(csv_file):
    raise InputError(f'CSV file {csv_file} does not exist.')
  root = os.path.dirname(os.path.abspath(csv_file))
  items, problems, seen = [], [], {}
  with open(csv_file, newline='', encoding='utf-8-sig') as f:
    reader = csv.DictReader(f)
    columns = [c.strip() for c in reader.fieldnames or []]
    missing = [c for c in ('path', 'age') if c not in columns]
    if missing:
      raise InputError(
          f'{csv_file}:1: the header lacks column(s) {", ".join(missing)} '
          f'(header is {",".join(columns)!r}; expected path,age[,split]).'
      )
    reader.fieldnames = columns
    for row in reader:
      where = f'{csv_file}:{reader.line_num}'
      path = (row.get('path') or '').strip()
      if not path:
        raise InputError(f'{where}: empty path.')
      rel = os.path.normpath(path)
      if os.path.isabs(rel) or rel.split(os.sep)[0] == '..':
        raise InputError(
            f'{where}: path {path!r} must be relative to the CSV\'s folder '
            f'{root} and inside it.'
        )
      if rel in seen:
        raise InputError(
            f'{where}: path {path!r} is repeated (first on line {seen[rel]}).'
        )
      seen[rel] = reader.line_num
      age = _parse_age((row.get('age') or '').strip(), where)
      split = (row.get('split') or '').strip().lower()
      if 'split' in columns:
        split = 'valid' if split == 'val' else split
        if split not in CACD_SPLITS:
          raise InputError(
              f'{where}: split {row.get("split")!r} is not one of '
              f'{", ".join(CACD_SPLITS)}.'
          )
      else:
        split = hash_split(os.path.basename(rel))
      file = os.path.join(root, rel)
      if not os.path.isfile(file):
        problems.append((rel, 'missing', f'listed on line {reader.line_num}'))
        continue
      items.append(
          Item(
              src=file,
              rel=rel,
              out_rel=os.path.join('images', _out_name(rel)),
              split=split,
              labels={'age': age},
          )
      )
  if not items:
    raise InputError(f'{csv_file} lists no existing images.')
  return Scan(items=items, problems=problems, splits=CACD_SPLITS)


def scan_celeba(src: str) -> Scan:
  """Lists CelebA images with their attributes and partitions."""
  attr_file = os.path.join(src, 'list_attr_celeba.txt')
  if not os.path.isfile(attr_file):
    raise InputError(f'{attr_file} does not exist.')
  image_dir = 'img_align_celeba'
  if not os.path.isdir(os.path.join(src, image_dir)):
    image_dir = ''
  with open(attr_file, encoding='utf-8') as f:
    lines = f.read().splitlines()
  if len(lines) < 2:
    raise InputError(f'{attr_file}: expected a count line and a names line.')
  try:
    declared = int(lines[0].strip())
  except ValueError:
    raise InputError(
        f'{attr_file}:1: expected the number of images, got {lines[0]!r}.'
    ) from None
  names = lines[1].split()
  if not names:
    raise InputError(f'{attr_file}:2: no attribute names.')
  attributes = {}
  for number, line in enumerate(lines[2:], start=3):
    parts = line.split()
    if not parts:
      continue
    if len(parts) != len(names) + 1:
      raise InputError(
          f'{attr_file}:{number}: expected a file name and {len(names)} '
          f'values, got {len(parts) - 1} values.'
      )
    try:
      values = [int(v) for v in parts[1:]]
    except ValueError:
      raise InputError(
          f'{attr_file}:{number}: attribute values must be -1 or 1.'
      ) from None
    if any(v not in (-1, 0, 1) for v in values):
      raise InputError(
          f'{attr_file}:{number}: attribute values must be -1 or 1.'
      )
    if parts[0] in attributes:
      raise InputError(f'{attr_file}:{number}: {parts[0]} is repeated.')
    # 0 is accepted as a negative, as some re-exports write 0/1.
    attributes[parts[0]] = [1 if v > 0 else -1 for v in values]
  if len(attributes) != declared:
    logging.warning(
        '%s declares %d images but lists %d.',
        attr_file, declared, len(attributes),
    )

  partition_file = os.path.join(src, 'list_eval_partition.txt')
  partitions = None
  if os.path.isfile(partition_file):
    partitions = _read_celeba_partitions(partition_file)

  items, problems = [], []
  for name, values in attributes.items():
    rel = os.path.join(image_dir, name)
    file = os.path.join(src, rel)
    if not os.path.isfile(file):
      problems.append((rel, 'missing', f'listed in {attr_file}'))
      continue
    if partitions is None:
      split = 'train'
    elif name in partitions:
      split = CELEBA_SPLITS[partitions[name]]
    else:
      problems.append((rel, 'no_partition', f'not in {partition_file}'))
      continue
    items.append(
        Item(
            src=file,
            rel=rel,
            out_rel=os.path.join(image_dir, _out_name(name)),
            split=split,
            labels={'attributes': values},
        )
    )
  if not items:
    raise InputError(
        f'None of the images listed in {attr_file} exist under '
        f'{os.path.join(src, image_dir)}.'
    )
  return Scan(
      items=items,
      problems=problems,
      splits=CELEBA_SPLITS if partitions is not None else ('train',),
      attribute_names=names,
      has_partition=partitions is not None,
      image_dir=image_dir,
  )


def _read_celeba_partitions(partition_file: str) -> dict[str, int]:
  try:
    return stargan.read_partition(partition_file)
  except formats.DataError as e:
    raise InputError(str(e)) from None


def _split_folders(src: str) -> list[tuple[str, str]]:
  """Returns [(split, folder relative to src)] for optional split folders."""
  subdirs = _subdirs(src)
  split_dirs = [d for d in subdirs if d.lower() in SPLIT_DIRS]
  if not split_dirs:
    return [('train', '')]
  others = [d for d in subdirs if d.lower() not in SPLIT_DIRS]
  if others:
    raise InputError(
        f'{src} mixes split folders ({", ".join(split_dirs)}) with other '
        f'folders ({", ".join(others)}).'
    )
  return [(d, d) for d in split_dirs]


def scan_rafd(src: str) -> Scan:
  """Lists src/[<split>/]<category>/* images."""
  items = []
  split_folders = _split_folders(src)
  for split, folder in split_folders:
    for category in _subdirs(os.path.join(src, folder)):
      cat_dir = os.path.join(folder, category)
      for name in _images_in(os.path.join(src, cat_dir)):
        rel = os.path.join(cat_dir, name)
        items.append(
            Item(
                src=os.path.join(src, rel),
                rel=rel,
                out_rel=_out_name(rel),
                split=split,
                labels={'label': category},
            )
        )
  if not items:
    raise InputError(
        f'No images in {src}/<category>/ or {src}/<split>/<category>/.'
    )
  return Scan(
      items=items,
      splits=[s for s, _ in split_folders],
      class_names=sorted({it.labels['label'] for it in items}),
  )


def scan_fiw(src: str) -> Scan:
  """Lists src/[<split>/]F0001/MID1/* images, or FIW as released:
  src/FIDs/F0001/MID1/* (written to out/FIDs/...)."""
  items, ignored = [], []
  if os.path.isdir(os.path.join(src, 'FIDs')):
    split_folders = [('train', 'FIDs')]
  else:
    split_folders = _split_folders(src)
  for split, folder in split_folders:
    for family in _subdirs(os.path.join(src, folder)):
      family_match = _FIW_FAMILY.match(family)
      if not family_match:
        ignored.append(os.path.join(folder, family))
        continue
      family_dir = os.path.join(folder, family)
      for member in _subdirs(os.path.join(src, family_dir)):
        member_match = _FIW_MEMBER.match(member)
        if not member_match:
          ignored.append(os.path.join(family_dir, member))
          continue
        member_dir = os.path.join(family_dir, member)
        for name in _images_in(os.path.join(src, member_dir)):
          rel = os.path.join(member_dir, name)
          items.append(
              Item(
                  src=os.path.join(src, rel),
                  rel=rel,
                  out_rel=_out_name(rel),
                  split=split,
                  labels={
                      'family': int(family_match.group(1)),
                      'mid': int(member_match.group(1)),
                  },
              )
          )
  if ignored:
    logging.warning(
        'Ignored %d folders not named F<digits>/MID<digits>, e.g. %s.',
        len(ignored), ignored[:3],
    )
  if not items:
    raise InputError(f'No images in {src}/F<digits>/MID<digits>/.')
  return Scan(items=items, splits=[s for s, _ in split_folders])


def scan(layout: str, src: str, csv_file: Optional[str], split_by: str) -> Scan:
  """Lists the input images of a layout."""
  if not os.path.isdir(src):
    raise InputError(f'--src {src} is not a folder.')
  if csv_file and layout != 'cacd':
    raise InputError('--csv is only used with --layout=cacd.')
  if layout == 'cacd':
    return scan_cacd(src, csv_file, split_by)
  if layout == 'celeba':
    return scan_celeba(src)
  if layout == 'rafd':
    return scan_rafd(src)
  if layout == 'fiw':
    return scan_fiw(src)
  if layout in formats.AGE_FORMATS:
    return scan_age_format(layout, src)
  raise InputError(f'Unknown layout {layout!r}; expected one of {LAYOUTS}.')


def scan_age_format(layout: str, src: str) -> Scan:
  """A released age data set, listed and split as training reads it."""
  try:
    listing = formats.read_age(layout, src)
  except formats.DataError as e:
    raise InputError(str(e)) from None
  assigned, rule = formats.assign_splits(listing, None)
  logging.info('%s: split %s.', layout, rule)
  items = []
  for i, path in enumerate(listing.paths):
    rel = os.path.relpath(path, src)
    items.append(Item(src=path, rel=rel,
                      out_rel=os.path.join('images', _out_name(rel)),
                      split=assigned[i],
                      labels={'age': float(listing.ages[i])}))
  problems = [(listing.skipped_examples[r], 'release_' + r.split(' (')[0]
               .replace(' ', '_'), f'{n} entries')
              for r, n in listing.skipped.items()]
  return Scan(items=items, problems=problems, splits=CACD_SPLITS)


def _label_layout(layout: str) -> str:
  """The layout whose label files an input layout writes."""
  return 'cacd' if layout in formats.AGE_FORMATS else layout


def load_image(path: str) -> np.ndarray:
  """Reads an image as uint8 RGB [H, W, 3], honouring EXIF rotation."""
  with Image.open(path) as img:
    img.load()  # Decode now, so truncated files fail here.
    return np.asarray(transforms.to_rgb(ImageOps.exif_transpose(img)))


def process_image(
    src: str,
    dst: str,
    options: Options,
    detector,
) -> tuple[Optional[str], str]:
  """Crops (or only resizes) one image and writes it.

  Args:
    src: input file.
    dst: output file.
    options: processing options.
    detector: face detector, required when options.detect.

  Returns:
    (reason, detail): reason is None if the image was written, else why it
    was left out ('unreadable', 'no_face', 'multiple_faces').
  """
  try:
    image = load_image(src)
  except Exception as e:  # pylint: disable=broad-except
    # PIL raises many types (OSError, SyntaxError, DecompressionBombError...)
    # and one bad file must not stop a run over 100k images.
    return 'unreadable', f'{type(e).__name__}: {e}'
  size = options.size or None
  if options.detect:
    short = min(image.shape[:2])
    found = [f for f in detector.detect([image])[0]
             if min(f.box[2:] - f.box[:2]) >= options.min_face * short]
    num_faces = len(found)
    if not found or (num_faces > 1 and options.multiple_faces == 'skip'):
      reason = 'no_face' if num_faces == 0 else 'multiple_faces'
      return reason, f'{num_faces} faces'
    face = max(found, key=lambda f: np.prod(f.box[2:] - f.box[:2]))
    if options.align == 'box':
      box = tuple(int(round(v)) for v in face.box)
      crop = haar_lib.crop_face(image, box, options.margin, size,
                                   options.pad)
    else:
      crop = face_align.crop(image, options.align, size or 112, face.box,
                             face.landmarks, options.margin)
    detail = f'{num_faces} faces'
  else:
    crop = haar_lib.center_square(image)
    if size:
      crop = haar_lib.resize(crop, size)
    detail = 'resized'
  os.makedirs(os.path.dirname(dst) or '.', exist_ok=True)
  pil = Image.fromarray(crop)
  if dst.lower().endswith('.png'):
    pil.save(dst, format='PNG')
  else:
    pil.save(dst, format='JPEG', quality=options.jpeg_quality)
  return None, detail


def _make_detector(options: Options):
  if not options.detect:
    return None
  if options.detector == 'haar':
    return faces.HaarDetector(min_neighbors=options.min_neighbors,
                              min_size=options.min_face)
  return faces.make_detector('mtcnn', min_face_size=20.0)


# Per-process state of the worker pool.
_worker_state: dict[str, Any] = {}


def _init_worker(options: Options) -> None:
  # MTCNN in every worker on the CPU: on a GPU host each would otherwise
  # reserve most of the GPU's memory for itself.
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  _worker_state['options'] = options
  _worker_state['detector'] = _make_detector(options)


def _work(task: tuple[str, str]) -> tuple[Optional[str], str]:
  return process_image(
      task[0], task[1], _worker_state['options'], _worker_state['detector']
  )


def _process_all(
    tasks: list[tuple[str, str]], options: Options, workers: int
) -> Iterable[tuple[Optional[str], str]]:
  """Yields process_image results in task order, in-process or in a pool."""
  desc = 'Cropping faces' if options.detect else 'Resizing'
  progress = dict(total=len(tasks), desc=desc, unit='img', smoothing=0.05)
  if workers <= 1:
    detector = _make_detector(options)
    for src, dst in tqdm.tqdm(tasks, **progress):
      yield process_image(src, dst, options, detector)
    return
  # 'spawn' avoids forking a process that may hold threads (tfds, OpenCV).
  context = multiprocessing.get_context('spawn')
  with context.Pool(workers, _init_worker, (options,)) as pool:
    yield from tqdm.tqdm(pool.imap(_work, tasks, chunksize=16), **progress)


def _write_label_files(
    layout: str, out: str, scan_result: Scan, kept: list[Item]
) -> None:
  """Writes the layout's label files for the kept images."""
  if layout == 'cacd':
    for split in CACD_SPLITS:
      with open(os.path.join(out, f'{split}.csv'), 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['path', 'age'])
        for item in kept:
          if item.split == split:
            writer.writerow(
                [item.out_rel.replace(os.sep, '/'), f'{item.labels["age"]:g}']
            )
  elif layout == 'celeba':
    def name_of(item: Item) -> str:
      return os.path.relpath(item.out_rel, scan_result.image_dir or '.')

    with open(os.path.join(out, 'list_attr_celeba.txt'), 'w') as f:
      f.write(f'{len(kept)}\n')
      f.write(' '.join(scan_result.attribute_names) + '\n')
      for item in kept:
        values = ' '.join(f'{v:2d}' for v in item.labels['attributes'])
        f.write(f'{name_of(item)} {values}\n')
    if scan_result.has_partition:
      with open(os.path.join(out, 'list_eval_partition.txt'), 'w') as f:
        for item in kept:
          f.write(f'{name_of(item)} {CELEBA_SPLITS.index(item.split)}\n')
  # rafd and fiw carry their labels in the folder tree.


def _write_report(out: str, problems: list[tuple[str, str, str]]) -> str:
  """Writes out/prepare_report.csv (path,reason,detail); returns its path."""
  path = os.path.join(out, REPORT_FILE)
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['path', 'reason', 'detail'])
    for rel, reason, detail in problems:
      writer.writerow([rel.replace(os.sep, '/'), reason, detail])
  return path


def _check_dirs(src: str, out: str) -> None:
  src_real, out_real = os.path.realpath(src), os.path.realpath(out)
  if out_real == src_real or out_real.startswith(src_real + os.sep):
    raise InputError(
        f'--out {out} must not be --src or inside it (it would be scanned '
        'or overwrite the input).'
    )


def run(
    layout: str,
    src: str,
    out: str,
    options: Options = Options(),
    csv_file: Optional[str] = None,
    write_tfds: bool = True,
    split_by: str = 'identity',
    workers: int = 1,
) -> dict[str, Any]:
  """Prepares a data set; see the module docstring.

  Args:
    layout: 'cacd', 'celeba', 'rafd', 'fiw' or an age format name.
    src: input folder.
    out: output folder.
    options: per-image processing options.
    csv_file: cacd CSV (path,age[,split]).
    write_tfds: also write out/tfds/.
    split_by: cacd hash split key, 'file' or 'identity'.
    workers: processes for the per-image work.

  Returns:
    Summary dict: 'counts' (reason -> count, with 'kept'), 'report' (path),
    'tfds_dir' (None unless written), 'splits' (split -> kept count).
  """
  _check_dirs(src, out)
  scan_result = scan(layout, src, csv_file, split_by)
  logging.info(
      'Found %d images (%d left out while listing).',
      len(scan_result.items), len(scan_result.problems),
  )
  os.makedirs(out, exist_ok=True)
  tasks = [(it.src, os.path.join(out, it.out_rel)) for it in scan_result.items]
  kept, problems = [], list(scan_result.problems)
  # Iterate the results (not zip with the items) so the progress bar sees
  # the generator finish and closes at 100%.
  results = _process_all(tasks, options, workers)
  for index, (reason, detail) in enumerate(results):
    item = scan_result.items[index]
    if reason is None:
      kept.append(item)
    else:
      problems.append((item.rel, reason, detail))
  _write_label_files(_label_layout(layout), out, scan_result, kept)
  report = _write_report(out, problems)
  pair_lists = _write_fiw_lists(src, out) if layout == 'fiw' else {}

  counts = collections.Counter({'kept': len(kept)})
  counts.update({r: 0 for r in MAIN_REASONS})
  counts.update(reason for _, reason, _ in problems)
  splits = collections.Counter(item.split for item in kept)
  tfds_dir = None
  if write_tfds and kept:
    # Imported here: tfds is slow to import and not needed otherwise.
    # pylint: disable-next=g-import-not-at-top
    from facejax.data import tfds_prepared

    records = {
        split: [{'path': it.out_rel, **it.labels}
                for it in kept if it.split == split]
        for split in scan_result.splits
    }
    tfds_dir = tfds_prepared.prepare(
        _label_layout(layout),
        records,
        os.path.join(out, 'tfds'),
        image_size=options.size or None,
        image_root=out,
        attribute_names=scan_result.attribute_names or None,
        class_names=scan_result.class_names or None,
    )
  elif write_tfds:
    logging.warning('No image was kept; the TFDS data set is not written.')
  return {
      'counts': dict(counts),
      'report': report,
      'tfds_dir': tfds_dir,
      'splits': dict(splits),
      'pair_lists': pair_lists,
  }


def _write_fiw_lists(src: str, out: str) -> dict[str, str]:
  """FIW's mid.csv files copied beside the kept faces, and pair lists
  written from them ({} when the source has no mid.csv)."""
  # pylint: disable-next=g-import-not-at-top
  from facejax.data.formats import rfiw

  src_images = rfiw.image_root(src)
  tables = sorted(glob.glob(os.path.join(src_images, 'F*', 'mid.csv')))
  if not tables:
    return {}
  out_images = os.path.join(out, os.path.relpath(src_images, src))
  for table in tables:
    family = os.path.basename(os.path.dirname(table))
    if os.path.isdir(os.path.join(out_images, family)):
      shutil.copyfile(table, os.path.join(out_images, family, 'mid.csv'))
  try:
    return rfiw.write_pair_lists(out_images, out)
  except ValueError as e:  # DataError: a malformed mid.csv, or no pairs.
    raise InputError(str(e)) from None


def _summary(result: dict[str, Any], out: str) -> str:
  counts = dict(result['counts'])
  parts = [f'kept {counts.pop("kept")}']
  parts += [f'{r} {counts.pop(r)}' for r in MAIN_REASONS]
  parts += [f'{r} {n}' for r, n in sorted(counts.items())]
  splits = ', '.join(f'{s} {n}' for s, n in sorted(result['splits'].items()))
  lines = [
      f'prepare_data: {", ".join(parts)} (splits: {splits or "none"}); '
      f'report: {result["report"]}'
  ]
  if result['tfds_dir']:
    config = os.path.basename(os.path.dirname(result['tfds_dir']))
    tfds_root = os.path.join(out, 'tfds')
    split = max(result['splits'], key=result['splits'].get)
    lines += [
        f'TFDS ArrayRecord data set: {result["tfds_dir"]}',
        '  from facejax.data import tfds_prepared',
        f'  source = tfds_prepared.load({tfds_root!r}, split={split!r})',
        '  # or raw (image = encoded bytes): tfds.data_source('
        f"'facejax_faces/{config}', data_dir={tfds_root!r}, split={split!r})",
    ]
  lists = result.get('pair_lists') or {}
  if lists:
    keys = {'train': 'train_file', 'valid': 'val_file', 'test': 'test_file'}
    lines.append('kinship pair lists: ' + ', '.join(
        f'{s} {os.path.basename(p)}' for s, p in lists.items()))
    lines.append('  python -m launch.train --config=configs/kinship.py '
                 f'--config.data.root={out} ' + ' '.join(
                     f'--config.data.{keys[s]}={os.path.basename(p)}'
                     for s, p in lists.items()))
  return '\n'.join(lines)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}')
  for flag in (_LAYOUT, _SRC, _OUT):
    if flag.value is None:
      raise app.UsageError(f'--{flag.name} is required.')
  options = Options(
      detect=_DETECT.value,
      detector=_DETECTOR.value,
      align=_ALIGN.value,
      size=_SIZE.value,
      margin=_MARGIN.value,
      pad=_PAD.value,
      multiple_faces=_MULTIPLE_FACES.value,
      jpeg_quality=_JPEG_QUALITY.value,
      min_face=_MIN_FACE.value,
      min_neighbors=_MIN_NEIGHBORS.value,
  )
  if options.size < 0 or options.margin < 0:
    raise app.UsageError('--size and --margin must be >= 0.')
  try:
    result = run(
        _LAYOUT.value,
        _SRC.value,
        _OUT.value,
        options,
        csv_file=_CSV.value,
        write_tfds=_TFDS.value,
        split_by=_SPLIT_BY.value,
        workers=_WORKERS.value,
    )
  except InputError as e:
    raise SystemExit(f'prepare_data: error: {e}') from e
  print(_summary(result, _OUT.value))


if __name__ == '__main__':
  app.run(main)
