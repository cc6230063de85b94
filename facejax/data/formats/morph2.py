"""MORPH II (academic release): ages, people and genders from its CSV.

  morph_2008_nonCommercial.csv   id_num,picture_num,dob,doa,race,gender,
                                 facial_hair,age,age_diff,glasses,photo
  Album2/<id_num>_<picture_num><M|F><age>.JPG     (the `photo` column)

`photo` is relative to the CSV's folder; gender is M / F; people are
id_num, so the seeded split keeps each person on one side (MORPH has no
official split; the CORAL repository's csvs can be given as
data.split_files).
"""

import csv
import glob
import os

from facejax.data import sources
from facejax.data.formats import base

NAME = "morph2"
EXPECTED = ("morph_2008_nonCommercial.csv (columns id_num,...,age,...,photo) "
            "with the Album2/ images")
CSV_NAMES = ("morph_2008_nonCommercial.csv",)
COLUMNS = ("id_num", "gender", "age", "photo")


def _csv_file(root: str) -> str:
  for name in CSV_NAMES:
    if os.path.isfile(os.path.join(root, name)):
      return os.path.join(root, name)
  found = sorted(glob.glob(os.path.join(root, "morph*.csv"))
                 + glob.glob(os.path.join(root, "MORPH*.csv")))
  if len(found) == 1:
    return found[0]
  raise sources.DataError(
      f"{root}: no morph_2008_nonCommercial.csv"
      + (f" (several candidates: {found})" if found else "")
      + f" (data.format='morph2' expects {EXPECTED})")


def read(root: str, cfg) -> base.AgeListing:
  del cfg
  base.require_dir(root, NAME, EXPECTED)
  path = _csv_file(root)
  sources.check_text_file(path)
  out = base.ListingBuilder(NAME, root)
  out.label_files.append(path)
  top = os.path.dirname(path)
  with open(path, newline="", encoding="utf-8-sig") as f:
    reader = csv.DictReader(f)
    header = [c.strip() for c in reader.fieldnames or []]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
      raise sources.DataError(f"{path}:1: missing columns {missing} "
                              f"(data.format='morph2'); the header has "
                              f"{header}")
    reader.fieldnames = header
    for row in reader:
      where = f"{path}:{reader.line_num}"
      photo = (row["photo"] or "").strip()
      try:
        age = float(row["age"])
      except (TypeError, ValueError):
        raise sources.DataError(f"{where}: age {row['age']!r} is not a "
                                "number") from None
      if not photo:
        raise sources.DataError(f"{where}: empty 'photo' value")
      gender = {"M": 0, "F": 1}.get((row["gender"] or "").strip().upper(), -1)
      out.add(os.path.join(top, photo.replace("\\", "/")), age, where,
              identity=(row["id_num"] or "").strip(), gender=gender)
  return out.build(EXPECTED)
