"""What every released age data set is read into, and how it is split.

A format module (appa_real.py, afad.py, ...) reads a release folder exactly
as its authors distribute it and returns an `AgeListing`: one row per image
with its age, where the label came from (file and line, or the file name),
the person where the release names one, and the release's own split where
it has one. Rows the release itself gets wrong (malformed names, missing
labels, faces the release marks as unusable) are counted per reason in
`skipped`, never silently dropped.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
from typing import Optional, Sequence

import numpy as np

from facejax.data.sources import DataError
from facejax.data.sources import IMAGE_EXTENSIONS

SPLITS = ("train", "valid", "test")
GENDERS = {"male": 0, "female": 1}  # every format maps its codes to these


@dataclasses.dataclass
class AgeListing:
  """Images of one released age data set with their labels.

  Attributes:
    format: the format name (`data.format`).
    root: the release folder as given.
    paths: absolute image paths.
    ages: [N] float32 age labels in years.
    where: per row, where its label was read ('file:line' or the name).
    identities: per row, the person (None: the release names no people).
    genders: [N] int8, 0 male, 1 female, -1 unknown (None: no gender).
    split: per row, the release's own split ('train' | 'valid' | 'test'),
      or None where the release has no official split.
    skipped: reason -> number of release entries left out.
    skipped_examples: reason -> one example entry (file or file:line).
    label_files: the label files read (for messages).
    notes: extra words for the start-up line (e.g. 'apparent age').
  """

  format: str
  root: str
  paths: list[str]
  ages: np.ndarray
  where: list[str]
  identities: Optional[list[str]] = None
  genders: Optional[np.ndarray] = None
  split: Optional[list[str]] = None
  skipped: collections.Counter = dataclasses.field(
      default_factory=collections.Counter)
  skipped_examples: dict[str, str] = dataclasses.field(default_factory=dict)
  label_files: list[str] = dataclasses.field(default_factory=list)
  notes: str = ""

  def __len__(self) -> int:
    return len(self.paths)

  def skip(self, reason: str, example: str, count: int = 1) -> None:
    self.skipped[reason] += count
    self.skipped_examples.setdefault(reason, example)

  def subset(self, keep: Sequence[int]) -> "AgeListing":
    """The rows `keep` (skip counts and files are kept)."""
    keep = list(keep)
    pick = lambda xs: None if xs is None else [xs[i] for i in keep]
    return dataclasses.replace(
        self, paths=pick(self.paths), ages=self.ages[keep],
        where=pick(self.where), identities=pick(self.identities),
        genders=None if self.genders is None else self.genders[keep],
        split=pick(self.split))


class ListingBuilder:
  """Collects rows, then builds an AgeListing (keeps format code short)."""

  def __init__(self, fmt: str, root: str):
    self.fmt, self.root = fmt, root
    self.paths, self.ages, self.where = [], [], []
    self.identities, self.genders, self.split = [], [], []
    self.skipped = collections.Counter()
    self.examples: dict[str, str] = {}
    self.label_files: list[str] = []

  def add(self, path: str, age: float, where: str,
          identity: Optional[str] = None, gender: int = -1,
          split: Optional[str] = None) -> None:
    self.paths.append(path)
    self.ages.append(age)
    self.where.append(where)
    self.identities.append(identity)
    self.genders.append(gender)
    self.split.append(split)

  def skip(self, reason: str, example: str) -> None:
    self.skipped[reason] += 1
    self.examples.setdefault(reason, example)

  def build(self, expected: str, notes: str = "") -> AgeListing:
    """The listing; `expected` describes the layout for the empty error."""
    if not self.paths:
      why = "".join(f"; {n} {r} (e.g. {self.examples[r]})"
                    for r, n in self.skipped.items())
      raise DataError(f"{self.root}: no images found for "
                      f"data.format={self.fmt!r}{why}. Expected {expected}")
    has = lambda xs: any(x is not None for x in xs)
    return AgeListing(
        format=self.fmt, root=self.root, paths=self.paths,
        ages=np.asarray(self.ages, np.float32), where=self.where,
        identities=self.identities if has(self.identities) else None,
        genders=(np.asarray(self.genders, np.int8)
                 if any(g >= 0 for g in self.genders) else None),
        split=self.split if has(self.split) else None,
        skipped=self.skipped, skipped_examples=self.examples,
        label_files=self.label_files, notes=notes)


def require_dir(path: str, fmt: str, expected: str) -> str:
  if not os.path.isdir(path):
    raise DataError(f"{path}: folder not found (data.format={fmt!r} "
                    f"expects {expected})")
  return path


def find_file(root: str, names: Sequence[str], fmt: str,
              expected: str) -> str:
  """The first of `names` (relative paths) under root, or a DataError."""
  for name in names:
    path = os.path.join(root, name)
    if os.path.isfile(path):
      return path
  raise DataError(f"{root}: none of {list(names)} found (data.format="
                  f"{fmt!r} expects {expected})")


def is_image(name: str) -> bool:
  return (name.lower().endswith(IMAGE_EXTENSIONS)
          and not name.startswith("."))


def list_images(folder: str) -> list[str]:
  """Image file names directly in `folder`, sorted."""
  return sorted(n for n in os.listdir(folder)
                if is_image(n) and os.path.isfile(os.path.join(folder, n)))


def _bucket(key: str, seed: int) -> float:
  """A stable number in [0, 1) for a key (same on every machine)."""
  h = hashlib.sha256(f"{seed}:{key}".encode("utf-8")).hexdigest()
  return int(h[:12], 16) / float(16**12)


def seeded_split(keys: Sequence[str], fractions: Sequence[float],
                 seed: int) -> list[str]:
  """train/valid/test per row by a seeded hash of its key.

  Rows with the same key (a person) always land in the same split, so the
  split is identity-disjoint when keys are identities; it does not depend
  on the order or number of rows, so adding images never moves a person.
  """
  if len(fractions) != 3 or min(fractions) < 0 or sum(fractions) <= 0:
    raise ValueError(f"config key data.split_fractions: {fractions!r} must "
                     "be three non-negative fractions (train, valid, test)")
  total = float(sum(fractions))
  edges = np.cumsum(fractions) / total
  out = []
  for key in keys:
    i = int(np.searchsorted(edges, _bucket(key, seed), side="right"))
    out.append(SPLITS[min(i, 2)])
  return out


_announced: set = set()


def announce(line: str) -> None:
  """Prints a data set's start-up line once (process 0), and logs it."""
  if line in _announced:
    return
  _announced.add(line)
  from absl import logging  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  logging.info("%s", line)
  if jax.process_index() == 0:
    print(line, flush=True)


def summary_line(listing: AgeListing, split_sizes: dict[str, int],
                 split_rule: str) -> str:
  """The one start-up line: what was read and how it is split."""
  n_ids = (len(set(listing.identities))
           if listing.identities is not None else None)
  parts = [f"{listing.format} at {listing.root}: {len(listing)} images",
           f"{n_ids} identities" if n_ids is not None else "no identities",
           f"ages {listing.ages.min():g}-{listing.ages.max():g}"
           + (f" ({listing.notes})" if listing.notes else ""),
           "split " + split_rule + " " + " / ".join(
               f"{k} {v}" for k, v in split_sizes.items())]
  skipped = sum(listing.skipped.values())
  if skipped:
    parts.append(f"skipped {skipped}: " + ", ".join(
        f"{n} {r} (e.g. {listing.skipped_examples[r]})"
        for r, n in listing.skipped.most_common()))
  return "; ".join(parts)
