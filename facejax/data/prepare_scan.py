"""Listing a raw face data set for `facejax.data.prepare`: items and splits.

One scanner per input layout (cacd CSVs or CACD2000 names, CelebA, RaFD,
FIW and the released age formats of facejax.data.formats) turns the input
folder into `Item`s (input file, output name, split, labels) and the
problems found while listing; nothing is read or written here.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
import re
from typing import Any, Optional, Sequence

from absl import logging
import numpy as np

from facejax.data import formats
from facejax.data import stargan
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


_FIW_FAMILY = re.compile(r'^F(\d+)$', re.IGNORECASE)
_FIW_MEMBER = re.compile(r'^MID(\d+)$', re.IGNORECASE)


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


def label_layout(layout: str) -> str:
  """The layout whose label files an input layout writes."""
  return 'cacd' if layout in formats.AGE_FORMATS else layout
