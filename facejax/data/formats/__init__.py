"""Released data sets read as they are unpacked: `data.format` names one.

Age formats give an `AgeListing` (base.py); `open_age_split` turns one into
the source of a split: the split files the user gives (data.split_files,
e.g. the CORAL repository's csvs, for numbers comparable with the
literature), else the release's official split, else a seeded split by
person (by file where the release names no people).
"""

from __future__ import annotations

import csv
import functools
import os
import re
from typing import Any

import numpy as np

from facejax.data import sources
from facejax.data.formats import afad
from facejax.data.formats import appa_real
from facejax.data.formats import base
from facejax.data.formats import cacd2000
from facejax.data.formats import ffhq_aging
from facejax.data.formats import hrfae_ffhq
from facejax.data.formats import imdb_wiki
from facejax.data.formats import morph2
from facejax.data.formats import utkface

DataError = sources.DataError
AGE_CSV = "age_csv"  # facejax's own path,age CSVs (train.csv, valid.csv, ...)
AGE_FORMATS = {m.NAME: m for m in (appa_real, afad, cacd2000, utkface,
                                   imdb_wiki, morph2, ffhq_aging,
                                   hrfae_ffhq)}


def check_age_format(fmt: str, key: str = "data.format") -> None:
  if fmt != AGE_CSV and fmt not in AGE_FORMATS:
    raise ValueError(f"config key {key}: unknown age data set {fmt!r}; "
                     f"choose one of {[AGE_CSV, *AGE_FORMATS]}")


def _option(cfg, key: str, default: Any) -> Any:
  value = cfg.get(key, default) if cfg is not None else default
  return tuple(value) if isinstance(value, list) else value


@functools.lru_cache(maxsize=8)
def _read_cached(fmt: str, root: str, options: tuple) -> base.AgeListing:
  return AGE_FORMATS[fmt].read(root, dict(options))


def read_age(fmt: str, root: str, cfg=None) -> base.AgeListing:
  """The whole release at `root` (cached: every split reads it once)."""
  check_age_format(fmt)
  module = AGE_FORMATS[fmt]
  options = tuple((k, _option(cfg, k, d))
                  for k, d in getattr(module, "OPTIONS", {}).items())
  return _read_cached(fmt, os.path.abspath(root), options)


def _in_range(listing: base.AgeListing, lo: float, hi: float,
              prefix: str) -> base.AgeListing:
  ok = (listing.ages >= lo) & (listing.ages <= hi)
  if ok.all():
    return listing
  bad = int(np.flatnonzero(~ok)[0])
  out = listing.subset(np.flatnonzero(ok))
  out.skipped = listing.skipped.copy()
  out.skipped_examples = dict(listing.skipped_examples)
  out.skip(f"ages outside [{lo:g}, {hi:g}] ({prefix}.min_age/max_age)",
           f"{listing.where[bad]}: {listing.ages[bad]:g}",
           count=int((~ok).sum()))
  return out


def _rel(listing: base.AgeListing, i: int) -> str:
  return os.path.relpath(listing.paths[i], listing.root).replace(os.sep, "/")


def _name_index(listing: base.AgeListing) -> dict[str, int]:
  """Row of every way a split file may name an image.

  Published split csvs name images relative to some folder of the release
  (AFAD's '39/112/406208-0.jpg'), by file name (CACD), or by a converted
  copy's name (CORAL's MORPH '273546_01M22.jpg' for Album2/..._01M22.JPG):
  every path suffix, and the file stem in lower case, are keys.
  """
  index: dict[str, int] = {}
  for i in range(len(listing)):
    parts = _rel(listing, i).split("/")
    for k in range(len(parts)):
      index.setdefault("/".join(parts[k:]), i)
    index.setdefault(os.path.splitext(parts[-1])[0].lower(), i)
  return index


def _read_split_file(path: str, listing: base.AgeListing,
                     prefix: str = "data") -> list[int]:
  """Rows of `listing` named by a published split csv."""
  if not os.path.isfile(path):
    raise DataError(f"{path}: split file not found (config key "
                    f"{prefix}.split_files)")
  sources.check_text_file(path)
  index = _name_index(listing)
  rows = []
  with open(path, newline="", encoding="utf-8-sig") as f:
    reader = csv.DictReader(f)
    header = reader.fieldnames or []
    # path > file > the unnamed index column of a pandas csv (MORPH's).
    cols = [c for c in ("path", "file", "file_name", "filename", "image", "")
            if c in header]
    if not cols:
      raise DataError(f"{path}:1: a split file needs a 'path' or 'file' "
                      f"column; the header has {header}")
    for row in reader:
      name = (row[cols[0]] or "").strip().replace("\\", "/")
      name = name[2:] if name.startswith("./") else name
      i = index.get(name)
      if i is None:
        i = index.get(os.path.splitext(os.path.basename(name))[0].lower())
      if i is None:
        raise DataError(
            f"{path}:{reader.line_num}: {name!r} is not an image of the "
            f"{listing.format} release at {listing.root} (or it was left "
            f"out: a malformed entry of the release, or an age outside "
            f"{prefix}.min_age/max_age)")
      rows.append(i)
  if not rows:
    raise DataError(f"{path}: no rows")
  return rows


def assign_splits(listing: base.AgeListing, cfg, prefix: str = "data"
                  ) -> tuple[np.ndarray, str]:
  """(split name of every row, '' where a row is in none; how the split
  was made). `prefix` is where the keys live in the config, for errors."""
  files = _option(cfg, "split_files", None)
  given = {s: files.get(s, "") for s in base.SPLITS} if files else {}
  given = {s: p for s, p in given.items() if p}
  fractions = tuple(_option(cfg, "split_fractions", (0.8, 0.1, 0.1)))
  seed = int(_option(cfg, "split_seed", 0))
  if given:
    return _from_split_files(listing, given, fractions, seed, prefix)
  if listing.split is not None:
    assigned = np.asarray(listing.split, object)
    if "valid" not in listing.split:
      # Valid people/files carved from the official train split.
      train = np.flatnonzero(assigned == "train")
      assigned[train] = base.seeded_split(
          _keys(listing, train), (fractions[0], fractions[1], 0.0), seed)
      return assigned, "official (valid: seeded share of train)"
    return assigned, "official"
  assigned = base.seeded_split(_keys(listing, range(len(listing))),
                               fractions, seed)
  return np.asarray(assigned, object), (
      "seeded by identity" if listing.identities is not None
      else "seeded by file")


def split_rows(listing: base.AgeListing, split: str, cfg,
               prefix: str = "data") -> tuple[np.ndarray, str]:
  """(row indices of `split`, how the split was made)."""
  assigned, rule = assign_splits(listing, cfg, prefix)
  return np.flatnonzero(assigned == split), rule


def _from_split_files(listing, given, fractions, seed, prefix="data"):
  """Rows named by the split files; splits without a file share the rows
  no file names (seeded by person, by their fractions), so the splits never
  overlap (UTKFace's published splits have no valid file). With a file for
  every split, rows no file names are in none."""
  assigned = np.full(len(listing), "", object)
  for s, path in given.items():
    for i in _read_split_file(path, listing, prefix):
      if assigned[i] and assigned[i] != s:
        raise DataError(f"{path}: {listing.paths[i]} is also in the "
                        f"{assigned[i]} split file {given[assigned[i]]}")
      assigned[i] = s
  rest = np.flatnonzero(assigned == "")
  missing = [s for s in base.SPLITS if s not in given]
  if missing and len(rest):
    weights = tuple(f if s in missing else 0.0
                    for s, f in zip(base.SPLITS, fractions))
    assigned[rest] = base.seeded_split(_keys(listing, rest), weights, seed)
  rule = "from split files" + (
      f" ({', '.join(missing)}: the rows they leave out)" if missing else "")
  return assigned, rule


def _keys(listing: base.AgeListing, rows) -> list[str]:
  if listing.identities is not None:
    return [str(listing.identities[i]) for i in rows]
  return [_rel(listing, i) for i in rows]


class ListingSource(sources.AgeSource):
  """The rows of one split of an AgeListing (AgeCsvSource's protocol)."""

  def __init__(self, listing: base.AgeListing, rows: np.ndarray, split: str,
               prefix: str = "data"):
    self.split = split
    self.csv_path = (f"{listing.root} ({prefix}.format={listing.format!r}, "
                     f"{split})")
    self.paths = [listing.paths[i] for i in rows]
    self.ages = listing.ages[rows]
    self.labels_at = [listing.where[i] for i in rows]
    self.genders = None if listing.genders is None else listing.genders[rows]
    self.skipped = 0
    self.missing = [i for i, p in enumerate(self.paths)
                    if not os.path.isfile(p)]

  def where(self, i: int) -> str:
    return self.labels_at[i]


# Config keys the formats name in their errors, as `data.<key>`.
_KEYS_NAMED = re.compile(
    r"\bdata\.(format|root|age_label|face_crop|min_face_score|single_face|"
    r"min_age_confidence|image_dir|split_files|split_fractions|split_seed|"
    r"min_age|max_age)\b")


def open_age_split(cfg, split: str, config_prefix: str = "data"):
  """The source of `split` of the release `cfg.format` at `cfg.root`.

  `config_prefix` is where `cfg` sits in the config (SwinFace's age task:
  'data.age'): every error names the keys there.
  """
  if config_prefix == "data":
    return _open_age_split(cfg, split, config_prefix)
  try:
    return _open_age_split(cfg, split, config_prefix)
  except (DataError, ValueError) as e:
    message = _KEYS_NAMED.sub(f"{config_prefix}.\\1", str(e))
    raise type(e)(message) from None


def _open_age_split(cfg, split: str, config_prefix: str):
  if not cfg.root:
    raise DataError(f"config key {config_prefix}.root is empty: "
                    f"{config_prefix}.format={cfg.format!r} reads the "
                    "release folder given there")
  listing = read_age(cfg.format, cfg.root, cfg)
  listing = _in_range(listing, float(cfg.get("min_age", 0.0)),
                      float(cfg.get("max_age", 200.0)), config_prefix)
  assigned, rule = assign_splits(listing, cfg, config_prefix)
  sizes = {s: int(np.sum(assigned == s)) for s in base.SPLITS}
  base.announce(base.summary_line(listing, sizes, rule))  # once a run
  rows = np.flatnonzero(assigned == split)
  if not len(rows):
    raise DataError(f"{cfg.root}: the {split!r} split of "
                    f"{config_prefix}.format={cfg.format!r} is empty "
                    f"({rule})")
  return ListingSource(listing, rows, split, config_prefix)
