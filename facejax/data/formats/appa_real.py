"""APPA-REAL (ChaLearn LAP 2016): real and apparent ages, official splits.

  appa-real-release/
    train/000000.jpg, train/000000.jpg_face.jpg, ...   (valid/, test/ too)
    gt_avg_train.csv  file_name,num_ratings,apparent_age_avg,
                      apparent_age_std,real_age         (valid, test too)

`data.age_label`: 'real' (default) or 'apparent' (the raters' mean).
`data.face_crop`: True (default) reads the release's `<name>_face.jpg`
crops, False the full images. The release names no people; its train /
valid / test folders are the official split.
"""

import csv
import os

from facejax.data import sources
from facejax.data.formats import base

NAME = "appa_real"
EXPECTED = ("appa-real-release/ with gt_avg_{train,valid,test}.csv and the "
            "train/ valid/ test/ image folders")
OPTIONS = {"age_label": "real", "face_crop": True}
LABEL_COLUMNS = {"real": "real_age", "apparent": "apparent_age_avg"}
SPLIT_NAMES = {"train": "train", "valid": "valid", "test": "test"}


def _release_dir(root: str) -> str:
  base.require_dir(root, NAME, EXPECTED)
  if not os.path.isfile(os.path.join(root, "gt_avg_train.csv")):
    inner = os.path.join(root, "appa-real-release")
    if os.path.isdir(inner):
      return inner
  return root


def read(root: str, cfg) -> base.AgeListing:
  label = cfg.get("age_label", "real")
  if label not in LABEL_COLUMNS:
    raise ValueError(f"config key data.age_label: {label!r} is not one of "
                     f"{list(LABEL_COLUMNS)} (APPA-REAL)")
  column = LABEL_COLUMNS[label]
  face_crop = bool(cfg.get("face_crop", True))
  top = _release_dir(root)
  out = base.ListingBuilder(NAME, root)
  found = False
  for split, folder in SPLIT_NAMES.items():
    gt = os.path.join(top, f"gt_avg_{folder}.csv")
    if not os.path.isfile(gt):
      continue
    found = True
    out.label_files.append(gt)
    sources.check_text_file(gt)
    with open(gt, newline="", encoding="utf-8-sig") as f:
      reader = csv.DictReader(f)
      for col in ("file_name", column):
        if col not in (reader.fieldnames or []):
          raise sources.DataError(
              f"{gt}:1: no column {col!r} (data.format='appa_real', "
              f"data.age_label={label!r}); the header has "
              f"{reader.fieldnames}")
      for row in reader:
        where = f"{gt}:{reader.line_num}"
        name = (row["file_name"] or "").strip()
        try:
          age = float(row[column])
        except (TypeError, ValueError):
          raise sources.DataError(
              f"{where}: {column} {row[column]!r} is not a number") from None
        image = name + "_face.jpg" if face_crop else name
        path = os.path.join(top, folder, image)
        out.add(path, age, where, split=split)
  if not found:
    raise sources.DataError(
        f"{top}: no gt_avg_train.csv / gt_avg_valid.csv / gt_avg_test.csv "
        f"(data.format='appa_real' expects {EXPECTED})")
  return out.build(EXPECTED, notes=f"{label} age"
                   + (", _face.jpg crops" if face_crop else ""))
