"""FFHQ-Aging (Or-El et al., LATS): FFHQ with age groups and genders.

  ffhq_aging_labels.csv   image_number,age_group,age_group_confidence,
                          gender,gender_confidence,head_pitch,head_roll,
                          head_yaw,left_eye_occluded,right_eye_occluded,
                          glasses
  ffhq_aging256x256/<thousands>/<nnnnn>.png   e.g. 01000/01234.png

Labels are age groups (0-2, 3-6, 7-9, 10-14, 15-19, 20-29, 30-39, 40-49,
50-69, 70-120). A group becomes one age target, its midpoint (the open
70-120 group: 75, not 95); `age_group` is kept in `where` for the report.
Rows with age_group_confidence below data.min_age_confidence (0.6, the
LATS loader's threshold) are skipped. Split: LATS's, image_number < 69000
train, the rest test (valid: a seeded share of train). The image folder is
the one ffhq_aging*x* folder under data.root (data.image_dir to choose).
"""

import csv
import glob
import os
import re

from facejax.data import sources
from facejax.data.formats import base

NAME = "ffhq_aging"
EXPECTED = ("ffhq_aging_labels.csv and ffhq_aging<R>x<R>/<thousands>/"
            "<nnnnn>.png")
OPTIONS = {"min_age_confidence": 0.6, "image_dir": ""}
OPEN_GROUP_AGE = 75.0
TRAIN_BELOW = 69000
_GROUP = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


def group_age(group: str) -> float:
  """The age target of an FFHQ-Aging group ('20-29' -> 24.5)."""
  m = _GROUP.match(group)
  if not m:
    raise ValueError(group)
  lo, hi = int(m.group(1)), int(m.group(2))
  if hi >= 100:
    return OPEN_GROUP_AGE
  return (lo + hi) / 2.0


def _image_dir(root: str, chosen: str) -> str:
  if chosen:
    path = chosen if os.path.isabs(chosen) else os.path.join(root, chosen)
    return base.require_dir(path, NAME, EXPECTED)
  found = sorted(d for d in glob.glob(os.path.join(root, "ffhq_aging*x*"))
                 if os.path.isdir(d))
  if len(found) != 1:
    raise sources.DataError(
        f"{root}: expected one ffhq_aging<R>x<R>/ image folder, found "
        f"{[os.path.basename(d) for d in found]} (choose one with "
        "data.image_dir)")
  return found[0]


def read(root: str, cfg) -> base.AgeListing:
  base.require_dir(root, NAME, EXPECTED)
  labels = base.find_file(root, ("ffhq_aging_labels.csv",), NAME, EXPECTED)
  sources.check_text_file(labels)
  images = _image_dir(root, cfg.get("image_dir", ""))
  min_conf = float(cfg.get("min_age_confidence", 0.6))
  out = base.ListingBuilder(NAME, root)
  out.label_files.append(labels)
  with open(labels, newline="", encoding="utf-8-sig") as f:
    reader = csv.DictReader(f)
    need = ("image_number", "age_group", "age_group_confidence", "gender")
    missing = [c for c in need if c not in (reader.fieldnames or [])]
    if missing:
      raise sources.DataError(f"{labels}:1: missing columns {missing}; the "
                              f"header has {reader.fieldnames}")
    for row in reader:
      where = f"{labels}:{reader.line_num}"
      try:
        number = int(row["image_number"])
        age = group_age(row["age_group"])
        conf = float(row["age_group_confidence"])
      except (TypeError, ValueError):
        raise sources.DataError(
            f"{where}: expected an integer image_number, an age group like "
            f"'20-29' and a confidence; got {row['image_number']!r}, "
            f"{row['age_group']!r}, {row['age_group_confidence']!r}"
        ) from None
      if conf < min_conf:
        out.skip(f"age_group_confidence < {min_conf:g} "
                 "(data.min_age_confidence)", where)
        continue
      rel = f"{number - number % 1000:05d}/{number:05d}.png"
      gender = {"male": 0, "female": 1}.get(
          (row["gender"] or "").strip().lower(), -1)
      out.add(os.path.join(images, rel), age,
              f"{where} (age_group {row['age_group']})", gender=gender,
              split="train" if number < TRAIN_BELOW else "test")
  return out.build(EXPECTED, notes="group midpoints")
