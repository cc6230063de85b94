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


# FIW's relationship codes (FIW_RIDs.csv): entry [i][j] of a family's
# mid.csv matrix is what member i is to member j.
CHILD, SIBLING, GRANDCHILD, PARENT, SPOUSE, GRANDPARENT = 1, 2, 3, 4, 5, 6


def read_mid_matrix(path: str) -> tuple[dict, dict]:
  """({mid: gender 1 male / 0 female}, {(mid_i, mid_j): code}) of a
  family's mid.csv (`MID 1 2 ... Name Gender`, spaces or commas)."""
  check_text_file(path)
  with open(path, encoding="utf-8-sig") as f:
    lines = [(n, ln.replace(",", " ").split())
             for n, ln in enumerate(f, start=1) if ln.strip()]
  if not lines:
    raise DataError(f"{path}: empty")
  header = lines[0][1]
  columns = [int(c) for c in header if c.isdigit()]
  if not columns or header[-1].lower() != "gender":
    raise DataError(f"{path}:1: expected a header 'MID 1 2 ... Name Gender', "
                    f"got {' '.join(header)!r}")
  genders, matrix = {}, {}
  for n, fields in lines[1:]:
    if len(fields) < len(columns) + 2 or not fields[0].isdigit():
      raise DataError(f"{path}:{n}: expected a member id, {len(columns)} "
                      f"relationship codes, a name and a gender")
    mid = int(fields[0])
    gender = GENDERS.get(fields[-1].lower())
    if gender is None:
      raise DataError(f"{path}:{n}: gender {fields[-1]!r} is not m / f / "
                      "male / female")
    genders[mid] = gender
    for other, code in zip(columns, fields[1:1 + len(columns)]):
      if not code.lstrip("-").isdigit():
        raise DataError(f"{path}:{n}: relationship code {code!r} for MID"
                        f"{other} is not a number")
      matrix[(mid, other)] = int(code)
  return genders, matrix


def _ptype(code: int, gender_a: int, gender_b: int) -> str:
  """RFIW's pair type of member a being `code` to member b ('' if none)."""
  if code == PARENT:
    return ("f" if gender_a else "m") + ("s" if gender_b else "d")
  if code == GRANDPARENT:
    return ("gf" if gender_a else "gm") + ("gs" if gender_b else "gd")
  if code == SIBLING:
    return {2: "bb", 0: "ss"}.get(gender_a + gender_b, "sibs")
  return ""


def kin_pairs(images: str) -> list[tuple[str, str, str, int]]:
  """(member a, member b, ptype, gender of b) of every kin pair FIW's
  relationship matrices name, for members that have face images; parents
  and grandparents first (as RFIW lists them), each sibling pair once."""
  pairs = []
  for path in sorted(glob.glob(os.path.join(images, "F*", "mid.csv"))):
    family = os.path.basename(os.path.dirname(path))
    genders, matrix = read_mid_matrix(path)
    present = {m for m in genders
               if os.path.isdir(os.path.join(images, family, f"MID{m}"))
               and base.list_images(os.path.join(images, family, f"MID{m}"))}
    for (a, b), code in sorted(matrix.items()):
      if a == b or a not in present or b not in present:
        continue
      if code == SIBLING and a > b:
        continue
      ptype = _ptype(code, genders[a], genders[b])
      if ptype:
        pairs.append((f"{family}/MID{a}", f"{family}/MID{b}", ptype,
                      genders[b]))
  return pairs


def write_pair_lists(images: str, out_dir: str, fractions=(0.8, 0.1, 0.1),
                     seed: int = 0) -> dict[str, str]:
  """RFIW-style member-level lists from FIW's relationship matrices.

  Families go to train / val / test by a seeded hash (no family in two
  lists). Every kin pair is listed with label 1; val and test also get one
  non-kin pair per kin pair: the same first member with a member of
  another family of that list, of the second member's gender, so the lists
  are balanced as RFIW's are. Returns {split: csv path}.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  pairs = kin_pairs(images)
  if not pairs:
    raise DataError(f"{images}: no kin pairs: no F*/mid.csv relationship "
                    "matrix names parents, siblings or grandparents with "
                    "face images")
  families = sorted({a.split("/")[0] for a, *_ in pairs})
  split_of = dict(zip(families, base.seeded_split(families, fractions, seed)))
  for split in ("valid", "test"):
    count = sum(s == split for s in split_of.values())
    if count < 2:
      base.announce(
          f"warning: {count} of {len(families)} families fell in the "
          f"{split} list" + (" (no list written)" if not count else
                             " (all its pairs are kin: no other family to "
                             "pair with)")
          + "; a verification threshold needs more: use more families or "
          "RFIW's own lists")
  written = {}
  for split, name in (("train", "train-pairs.csv"), ("valid", "val-pairs.csv"),
                      ("test", "test-pairs.csv")):
    kin = [p for p in pairs if split_of[p[0].split("/")[0]] == split]
    if not kin:
      continue
    rows = [(a, b, t, 1) for a, b, t, _ in kin]
    if split != "train":
      rng = np.random.default_rng([seed, len(written)])
      members = sorted({(b, g) for _, b, _, g in kin})
      for a, _, t, g in kin:
        others = [m for m, mg in members
                  if mg == g and m.split("/")[0] != a.split("/")[0]]
        if others:
          rows.append((a, others[int(rng.integers(len(others)))], t, 0))
    path = os.path.join(out_dir, name)
    with open(path, "w", newline="") as f:
      writer = csv.writer(f)
      writer.writerow(["p1", "p2", "ptype", "label"])
      writer.writerows(rows)
    written[split] = path
  return written
