"""FIW as released and the RFIW kinship-verification (track I) pair lists.

  FIDs/F0001/MID1/P00001_face0.jpg     family / member / face
  FIDs/F0001/mid.csv                   `MID 1 2 3 Name Gender` (relationship
                                       matrix, gender m / f / male / female)
  FIDs/F0001/unrelated_and_nonfaces/   no member: never read
  train-pairs.csv, val-pairs.csv, ...  `p1,p2,ptype[,label]` with a header

p1 / p2 name a member (`F0001/MID1`, member level: expanded to face pairs,
face k of one with face k of the other, cycling the shorter list, so every
face is used) or a face (`F0001/MID1/P00001_face0.jpg`, face level).
ptype is the relation (fd, fs, md, ms, bb, ss, sibs, gfgd, gfgs, gmgd,
gmgs; 'sib' is read as sibs); `label` (or labels / is_kin) is 1 for kin,
0 for not, and 1 when absent (train lists list kin only). Other columns
(fold, set, ...) are ignored.
"""

import csv
import glob
import os

from facejax.data import kinship as kin_data
from facejax.data.formats import base
from facejax.data.sources import DataError
from facejax.data.sources import check_text_file

RELATION_ALIASES = {"sib": "sibs"}
LABEL_COLUMNS = ("label", "labels", "is_kin")
GENDERS = {"m": 1, "male": 1, "f": 0, "female": 0}  # kinship: 1 = male


def image_root(root: str) -> str:
  """FIDs/ under root (the release), else root itself."""
  fids = os.path.join(root, "FIDs")
  return fids if os.path.isdir(fids) else root


def _faces(image_dir: str, member: str, cache: dict) -> list[str]:
  if member not in cache:
    folder = os.path.join(image_dir, member)
    cache[member] = (sorted(os.path.join(member, n)
                            for n in base.list_images(folder))
                     if os.path.isdir(folder) else [])
  return cache[member]


def read_pair_csv(path: str, images: str) -> list[kin_data.Pair]:
  """Pairs of an RFIW csv; face paths relative to `images` (FIDs/)."""
  if not os.path.isfile(path):
    raise DataError(f"{path}: pair list not found")
  check_text_file(path)
  pairs, cache = [], {}
  with open(path, newline="", encoding="utf-8-sig") as f:
    reader = csv.DictReader(f)
    header = [c.strip().lower() for c in reader.fieldnames or []]
    reader.fieldnames = header
    rel_col = next((c for c in ("ptype", "relation", "type", "tags")
                    if c in header), None)
    if "p1" not in header or "p2" not in header or rel_col is None:
      raise DataError(f"{path}:1: an RFIW pair list needs columns p1, p2 "
                      f"and ptype; the header has {reader.fieldnames}")
    label_col = next((c for c in LABEL_COLUMNS if c in header), None)
    for row in reader:
      where = f"{path}:{reader.line_num}"
      a, b = ((row[c] or "").strip().strip("/") for c in ("p1", "p2"))
      rel = (row[rel_col] or "").strip().lower()
      rel = RELATION_ALIASES.get(rel, rel)
      if rel not in kin_data.RELATION_LABELS:
        raise DataError(f"{where}: unknown relation {rel!r}; expected one "
                        f"of {', '.join(kin_data.RELATIONS)}")
      is_kin = 1
      if label_col:
        value = (row[label_col] or "").strip()
        if value not in ("0", "1"):
          raise DataError(f"{where}: {label_col} must be 0 or 1, got "
                          f"{value!r}")
        is_kin = int(value)
      if base.is_image(a) and base.is_image(b):
        pairs.append(kin_data.Pair(a, b, kin_data.RELATION_LABELS[rel],
                                   is_kin, where))
        continue
      fa, fb = _faces(images, a, cache), _faces(images, b, cache)
      if not fa or not fb:
        raise DataError(f"{where}: member {a if not fa else b!r} has no "
                        f"face images under {images}")
      for k in range(max(len(fa), len(fb))):
        pairs.append(kin_data.Pair(fa[k % len(fa)], fb[k % len(fb)],
                                   kin_data.RELATION_LABELS[rel], is_kin,
                                   where))
  if not pairs:
    raise DataError(f"{path}: no pairs")
  kin = sum(p.is_kin for p in pairs)
  base.announce(f"rfiw pairs {path}: {len(pairs)} face pairs ({kin} kin, "
                f"{len(pairs) - kin} not) under {images}")
  return pairs


def read_mid_genders(images: str) -> dict:
  """{(family, member): (gender, -1)} from every family's mid.csv."""
  out = {}
  for path in sorted(glob.glob(os.path.join(images, "F*", "mid.csv"))):
    family = int(os.path.basename(os.path.dirname(path))[1:])
    with open(path, encoding="utf-8-sig") as f:
      lines = [ln.replace(",", " ").split() for ln in f if ln.strip()]
    if not lines:
      continue
    header = [h.lower() for h in lines[0]]
    if "gender" not in header:
      continue
    g = header.index("gender") - len(header)  # from the end: names vary
    for n, fields in enumerate(lines[1:], start=2):
      if not fields or not fields[0].isdigit() or len(fields) < -g:
        continue
      gender = GENDERS.get(fields[g].lower())
      if gender is None:
        raise DataError(f"{path}:{n}: gender {fields[g]!r} is not m / f / "
                        "male / female")
      out[(family, int(fields[0]))] = (gender, -1)
  return out
