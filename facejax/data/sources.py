"""Random-access sources over on-disk age data sets (grain protocol).

A source has `__len__` and `__getitem__(i) -> dict` of numpy values, is
picklable (grain worker processes re-create it) and reads nothing from the
network. Records carry either `image_path` (decoded later, in the workers)
or an already decoded `image`, plus labels such as `age`.
"""

import abc
import collections
import csv
import os
from typing import Sequence

from absl import logging
import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class DataError(ValueError):
  """Bad input data; the message names the file (and line)."""


def check_text_file(path: str) -> None:
  """Raises DataError naming the file and line unless `path` is UTF-8 text.

  A label file in another encoding (latin-1 from an old spreadsheet) or a
  binary file given as one (a NumPy .npy) otherwise fails deep inside the
  csv module with a UnicodeDecodeError that names neither.
  """
  with open(path, "rb") as f:
    raw = f.read()
  if raw.startswith(b"\x93NUMPY"):
    raise DataError(f"{path}: a NumPy .npy file, not a text label file "
                    "(CSV with a header line)")
  try:
    raw.decode("utf-8")
    return
  except UnicodeDecodeError:
    pass
  for line, text in enumerate(raw.splitlines(keepends=True), start=1):
    try:
      text.decode("utf-8")
    except UnicodeDecodeError as e:
      raise DataError(
          f"{path}:{line}: byte {text[e.start]:#04x} at byte offset "
          f"{e.start} of the line is not UTF-8: a text label file must be "
          f"UTF-8 (this one may be latin-1/cp1252, or not text)") from None


class AgeSource(abc.ABC):
  """Images with ages: `paths`, `ages`, `missing` (indices of absent
  files) and `csv_path` (the label file, for messages); subclasses say
  where row i's label came from (`where`)."""

  paths: list
  ages: np.ndarray
  csv_path: str

  @abc.abstractmethod
  def where(self, i: int) -> str:
    """'file:line' (or the like) of row i's label."""

  def describe(self, i: int) -> str:
    return f"{self.paths[i]} ({self.where(i)})"

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, i: int) -> dict:
    return {"image_path": self.paths[i], "age": self.ages[i],
            "where": self.describe(i)}

  def __repr__(self) -> str:
    return f"{type(self).__name__}({self.csv_path!r}, n={len(self)})"


class AgeCsvSource(AgeSource):
  """`path,age` CSV (CACD / AFAD / APPA-REAL style) with image files.

  Paths in the CSV are relative to `image_dir` (default: the CSV's folder).
  Every row is validated when the source is built, so a bad file fails
  before training starts, with the CSV's name and line number;
  `config_prefix` is the config prefix of the age-range keys the message
  names.
  """

  def __init__(self, csv_path: str, image_dir: str | None = None,
               path_column: str = "path", age_column: str = "age",
               min_age: float = 0.0, max_age: float = 100.0,
               check_files: bool = True, config_prefix: str = "data"):
    self.csv_path = csv_path
    if not os.path.exists(csv_path):
      raise DataError(f"{csv_path}: label file not found")
    image_dir = image_dir or os.path.dirname(os.path.abspath(csv_path))
    paths, ages, lines = [], [], []
    check_text_file(csv_path)
    # utf-8-sig: a CSV saved by Excel starts with a byte-order mark.
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
      reader = csv.DictReader(f)
      columns = reader.fieldnames or []
      for col, key in ((path_column, "data.path_column"),
                       (age_column, "data.age_column")):
        if col not in columns:
          raise DataError(
              f"{csv_path}:1: missing column {col!r} (config key {key}); "
              f"the header has {columns}")
      for row in reader:
        line = reader.line_num
        path, age = (row.get(path_column) or "").strip(), row.get(age_column)
        if not path:
          raise DataError(f"{csv_path}:{line}: empty {path_column!r} value")
        try:
          age = float(age)
        except (TypeError, ValueError):
          raise DataError(f"{csv_path}:{line}: age {age!r} is not a "
                          f"number") from None
        if not np.isfinite(age) or not min_age <= age <= max_age:
          raise DataError(f"{csv_path}:{line}: age {age} is outside "
                          f"[{min_age}, {max_age}] (config keys "
                          f"{config_prefix}.min_age/{config_prefix}.max_age)")
        paths.append(os.path.join(image_dir, path))
        ages.append(age)
        lines.append(line)
    if not paths:
      raise DataError(f"{csv_path}: no rows")
    self.paths = paths
    self.skipped = 0  # set by callers that drop unreadable records
    self.ages = np.asarray(ages, np.float32)
    self.lines = np.asarray(lines, np.int32)
    if check_files:
      missing = [i for i, p in enumerate(paths) if not os.path.isfile(p)]
      self.missing = missing
    else:
      self.missing = []

  def where(self, i: int) -> str:
    return f"{self.csv_path}:{self.lines[i]}"


class ConcatSource:
  """Records of several sources one after another (picklable): mixed
  evaluation splits of StarGAN, SwinFace and SphereFace."""

  def __init__(self, sources):
    self.sources = list(sources)
    self.ends = np.cumsum([len(s) for s in self.sources]).tolist()

  def __len__(self) -> int:
    return self.ends[-1] if self.ends else 0

  def __getitem__(self, i: int) -> dict:
    for k, end in enumerate(self.ends):
      if i < end:
        return self.sources[k][i - (self.ends[k - 1] if k else 0)]
    raise IndexError(i)


class SubsetSource:
  """A view of `source` restricted to `indices` (keeps `ages` if known)."""

  def __init__(self, source, indices: Sequence[int], skipped: int = 0):
    self.source = source
    self.indices = np.asarray(indices, np.int64)
    self.skipped = skipped  # records left out as unreadable
    self.csv_path = getattr(source, "csv_path", None)
    if hasattr(source, "ages"):
      self.ages = np.asarray(source.ages)[self.indices]

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, i: int) -> dict:
    return self.source[int(self.indices[i])]


def find_bad_images(source, indices: Sequence[int]) -> list[tuple[int, str]]:
  """(index, reason) of records whose file is missing or not an image.

  Uses PIL's `verify()`, which reads the file but does not decode pixels,
  so it is cheap enough to run over a data set at start-up.
  """
  bad = []
  for i in indices:
    path = source.paths[i]
    try:
      with Image.open(path) as im:
        im.verify()
    except FileNotFoundError:
      bad.append((i, "file not found"))
    except Exception as e:  # PIL raises many types for corrupt files.
      bad.append((i, f"not a readable image ({type(e).__name__}: {e})"))
  return bad


def balance_by_age(ages: np.ndarray, max_per_age: int,
                   age_range: tuple[float, float], seed: int) -> np.ndarray:
  """Indices with at most `max_per_age` images per integer age in range.

  The seed experiments' "at most 2000 per age": ages are rounded to whole
  years, images outside [lo, hi] are dropped, and the kept subset of an
  over-full age is a seeded random choice (same seed, same subset).
  """
  lo, hi = age_range
  rng = np.random.default_rng(seed)
  years = np.round(ages).astype(np.int64)
  keep = []
  for year in np.unique(years):
    if not lo <= year <= hi:
      continue
    idx = np.flatnonzero(years == year)
    if max_per_age and len(idx) > max_per_age:
      idx = np.sort(rng.choice(idx, max_per_age, replace=False))
    keep.append(idx)
  if not keep:
    raise DataError(f"no image has an age in [{lo}, {hi}] "
                    "(config key data.balance.age_range)")
  return np.sort(np.concatenate(keep))


def age_histogram(ages: np.ndarray, width: int = 10) -> str:
  """Text histogram of ages in `width`-year bins."""
  counts = collections.Counter((np.asarray(ages) // width).astype(int))
  total = max(1, len(ages))
  rows = []
  for b in sorted(counts):
    n = counts[b]
    rows.append(f"  {b * width:3d}-{b * width + width - 1:3d}: {n:7d} "
                + "#" * int(round(40 * n / total)))
  return "\n".join(rows)


def log_histogram(title: str, ages: np.ndarray) -> str:
  text = f"{title} ({len(ages)} images)\n{age_histogram(ages)}"
  logging.info("%s", text)
  return text
