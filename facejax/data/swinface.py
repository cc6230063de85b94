"""Mixed-label face data: one example format with a mask per task.

SwinFace trains on data sets that each label some tasks only: identity
folders (recognition), age CSVs (age, gender), CelebA-format attribute
files (40 attributes incl. gender) and RaFD-format folders (expression).
Every example carries every label field plus a mask saying which are real:

  image f32[S,S,3]; mask f32 (0 = padding / unreadable)
  identity i32, identity_mask f32
  age f32, age_mask f32
  expression i32, expression_mask f32
  attrs f32[40] (0/1, swinface.BINARY_TASKS order), attrs_mask f32[40]
Evaluation examples also have verification pairs:
  image_b f32[S,S,3], same f32 (1 = same identity), pair_mask f32

Training batches are mixed like the reference (32 recognition + 32 age +
32 CelebA + 32 expression per device): `data.mix` gives each source's
share of every batch; each source walks its own seeded order
(`pipeline.GlobalOrder`), so batches are a function of the step.
Parsing reuses `sources.AgeCsvSource` and facejax.data.stargan's
CelebA/RaFD readers.
"""

import csv
import dataclasses
import os
from typing import Sequence

import grain
import jax
import numpy as np

from facejax.data import stargan
from facejax.data import pipeline
from facejax.data import sources as sources_lib
from facejax.data import transforms
from facejax.data.formats import base as formats_base
from facejax.data.formats import raf_db
from facejax.data.formats import recordio
from facejax.data.sources import DataError, IMAGE_EXTENSIONS
from facejax.data.sources import check_text_file

KINDS = ("identity", "age", "celeba", "expression")


def empty_labels(num_attrs: int) -> dict[str, np.ndarray]:
  """Every label field, all masked out."""
  return {"identity": np.int32(0), "identity_mask": np.float32(0),
          "age": np.float32(0), "age_mask": np.float32(0),
          "expression": np.int32(0), "expression_mask": np.float32(0),
          "attrs": np.zeros((num_attrs,), np.float32),
          "attrs_mask": np.zeros((num_attrs,), np.float32)}


class LabelledSource:
  """Image paths with per-example label fields (picklable)."""

  def __init__(self, name: str, paths: Sequence[str],
               labels: dict[str, np.ndarray], where: Sequence[str] = ()):
    self.name, self.paths = name, list(paths)
    self.labels = {k: np.asarray(v) for k, v in labels.items()}
    self.where = list(where) or self.paths
    for k, v in self.labels.items():
      assert len(v) == len(self.paths), (name, k)

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, i: int) -> dict:
    out = {k: v[i] for k, v in self.labels.items()}
    out.update(image_path=self.paths[i], where=self.where[i])
    return out


def _fill(n: int, num_attrs: int, **given) -> dict[str, np.ndarray]:
  out = {k: np.repeat(np.asarray(v)[None], n, 0)
         for k, v in empty_labels(num_attrs).items()}
  out.update({k: np.asarray(v) for k, v in given.items()})
  return out


# ---------------------------------------------------------------------------
# Per-format readers.
# ---------------------------------------------------------------------------


NOT_IDENTITY_FOLDERS = ("unrelated_and_nonfaces",)


def identity_folders(root: str, key: str) -> list[tuple[str, list[str]]]:
  """(identity, sorted image paths) for every folder holding images.

  The identity is the folder's path relative to `root` (FIW's
  F0001/MID1, or one folder per person as insightface's image folders).
  """
  if not os.path.isdir(root):
    raise DataError(f"{root}: identity folder root not found (config key "
                    f"{key}.root)")
  if recordio.is_recordio(root):  # MS1MV2 / Glint360K as insightface ships
    return recordio.identities(root, key)
  if celeba_identity_file(root):  # CelebA's 10,177 people
    return celeba_identities(root, key)
  out = []
  for dirpath, dirnames, files in os.walk(root):
    # FIW keeps photos of no family member (and non-faces) in each family's
    # unrelated_and_nonfaces/ folder: not an identity.
    dirnames[:] = sorted(d for d in dirnames
                         if d.lower() not in NOT_IDENTITY_FOLDERS)
    images = sorted(f for f in files if f.lower().endswith(IMAGE_EXTENSIONS))
    if images:
      out.append((os.path.relpath(dirpath, root),
                  [os.path.join(dirpath, f) for f in images]))
  out.sort()
  if not out:
    raise DataError(f"{root}: no image folders (config key {key}.root)")
  return out


def celeba_identity_file(root: str) -> str:
  """CelebA's identity_CelebA.txt under root (flat or Drive's Anno/), or ''."""
  path = stargan.first_file(root, ("", "Anno"), "identity_CelebA.txt")
  return path if os.path.isfile(path) else ""


def celeba_identities(root: str, key: str) -> list[tuple[str, list[str]]]:
  """(identity, image paths) from CelebA's identity_CelebA.txt
  (`000001.jpg 2880` lines), images in img_align_celeba/ (flat or Img/)."""
  path = celeba_identity_file(root)
  image_dir = stargan.first_dir(root, ("", "Img"), "img_align_celeba")
  if not os.path.isdir(image_dir):
    raise DataError(f"{root}: no img_align_celeba/ (flat or under Img/) "
                    f"for {path} (config key {key}.root)")
  check_text_file(path)
  groups: dict[int, list[str]] = {}
  with open(path, encoding="utf-8-sig") as f:
    for n, line in enumerate(f, start=1):
      fields = line.split()
      if not fields:
        continue
      if len(fields) != 2 or not fields[1].isdigit():
        raise DataError(f"{path}:{n}: expected '<image> <identity number>', "
                        f"got {line.strip()!r}")
      groups.setdefault(int(fields[1]), []).append(
          os.path.join(image_dir, fields[0]))
  if not groups:
    raise DataError(f"{path}: no identities")
  images = sum(len(v) for v in groups.values())
  formats_base.announce(f"celeba identities at {root}: {images} images of "
                        f"{len(groups)} people ({path})")
  return [(f"celeba{ident}", sorted(paths))
          for ident, paths in sorted(groups.items())]


def split_identities(ids: list, valid_fraction: float, seed: int
                     ) -> tuple[list, list]:
  """(train, valid) identity lists: a seeded share held out for pairs."""
  order = np.random.default_rng(seed).permutation(len(ids))
  n_valid = max(2, int(round(valid_fraction * len(ids))))
  if len(ids) - n_valid < 2:
    raise DataError(f"{len(ids)} identities are too few to split off "
                    f"{n_valid} for verification")
  valid = sorted(order[:n_valid].tolist())
  train = sorted(order[n_valid:].tolist())
  return [ids[i] for i in train], [ids[i] for i in valid]


def identity_source(folders, num_attrs: int) -> LabelledSource:
  paths, labels = [], []
  for label, (_, files) in enumerate(folders):
    paths += files
    labels += [label] * len(files)
  n = len(paths)
  return LabelledSource("identity", paths, _fill(
      n, num_attrs, identity=np.asarray(labels, np.int32),
      identity_mask=np.ones(n, np.float32)))


class VerificationPairSource:
  """Verification pairs: half same identity, half different (seeded)."""

  def __init__(self, folders, num_pairs: int, seed: int, num_attrs: int):
    rng = np.random.default_rng(seed)
    multi = [f for _, f in folders if len(f) >= 2]
    if not multi or len(folders) < 2:
      raise DataError("verification pairs need identities with >= 2 images "
                      "and >= 2 identities")
    pairs = []
    for i in range(num_pairs):
      if i % 2 == 0:
        files = multi[rng.integers(len(multi))]
        a, b = rng.choice(len(files), 2, replace=False)
        pairs.append((files[a], files[b], 1.0))
      else:
        p, q = rng.choice(len(folders), 2, replace=False)
        fa, fb = folders[p][1], folders[q][1]
        pairs.append((fa[rng.integers(len(fa))], fb[rng.integers(len(fb))],
                      0.0))
    self.pairs, self.num_attrs = pairs, num_attrs

  def __len__(self) -> int:
    return len(self.pairs)

  def __getitem__(self, i: int) -> dict:
    a, b, same = self.pairs[i]
    out = empty_labels(self.num_attrs)
    out.update(image_path=a, where=a, image_b_path=b, same=np.float32(same),
               pair_mask=np.float32(1.0))
    return out


def _age_labelled(src, num_attrs: int, gender_index: int,
                  male=None, known=None) -> LabelledSource:
  """A LabelledSource of an age source; `male` (where `known`) labels the
  Gender head."""
  if src.missing:
    raise DataError(f"{src.csv_path}: {len(src.missing)} image file(s) not "
                    f"found, e.g. {src.describe(src.missing[0])}")
  n = len(src)
  attrs = np.zeros((n, num_attrs), np.float32)
  attrs_mask = np.zeros((n, num_attrs), np.float32)
  if male is not None:
    attrs[:, gender_index] = male
    attrs_mask[:, gender_index] = known
  return LabelledSource("age", src.paths, _fill(
      n, num_attrs, age=src.ages, age_mask=np.ones(n, np.float32),
      attrs=attrs, attrs_mask=attrs_mask),
                        [src.describe(i) for i in range(n)])


def age_source(csv_path: str, num_attrs: int, gender_column: str,
               gender_index: int, key: str, min_age: float = 0.0,
               max_age: float = 100.0) -> LabelledSource:
  """Age CSV (`path,age[,gender]`); gender 1 = male labels the Gender head.

  Ages outside [min_age, max_age] (config keys `key`.min_age/max_age) are
  an error naming the line.
  """
  src = sources_lib.AgeCsvSource(csv_path, min_age=min_age, max_age=max_age,
                                 config_prefix=key)
  if not gender_column:
    return _age_labelled(src, num_attrs, gender_index)
  with open(csv_path, newline="", encoding="utf-8-sig") as f:
    reader = csv.DictReader(f)
    if gender_column not in (reader.fieldnames or []):
      raise DataError(f"{csv_path}:1: no column {gender_column!r} (config "
                      f"key {key}.gender_column; empty for none)")
    by_line = {}
    for row in reader:
      value = (row.get(gender_column) or "").strip()
      try:
        by_line[reader.line_num] = float(value) >= 0.5
      except ValueError:
        raise DataError(f"{csv_path}:{reader.line_num}: gender {value!r} "
                        f"is not 0/1") from None
  male = [by_line[int(ln)] for ln in src.lines]
  return _age_labelled(src, num_attrs, gender_index, male, 1.0)


def release_age_source(spec, split: str, num_attrs: int, gender_index: int,
                       key: str) -> LabelledSource:
  """The `split` of a released age data set (`key`.format, e.g. utkface);
  its genders, where the release has them, label the Gender head."""
  from facejax.data import formats  # pylint: disable=g-import-not-at-top
  src = formats.open_age_split(spec, split, config_prefix=key)
  if src.genders is None:
    return _age_labelled(src, num_attrs, gender_index)
  return _age_labelled(src, num_attrs, gender_index, src.genders == 0,
                       src.genders >= 0)  # release: 0 = male


def celeba_source(root: str, columns: Sequence[str], split: str, spec,
                  key: str) -> LabelledSource:
  """CelebA-format attributes (`stargan.CelebaFormatSource`)."""
  src = stargan.CelebaFormatSource(
      root, spec.get("image_dir", "img_align_celeba"),
      spec.get("attr_file", "list_attr_celeba.txt"), tuple(columns),
      "test" if split in ("valid", "test") else "train",
      int(spec.get("test_count", 200)), int(spec.get("split_seed", 1234)),
      0, None, 0, key, partition=spec.get("partition", "reference"))
  n = len(src)
  return LabelledSource("celeba", src.paths, _fill(
      n, len(columns), attrs=src.values,
      attrs_mask=np.ones_like(src.values)),
                        [src.describe(i) for i in range(n)])


def expression_source(root: str, split: str, num_attrs: int, spec,
                      num_classes: int, key: str) -> LabelledSource:
  """RaFD-format folders `root/<split>/<class>/*` (alphabetical classes),
  a released RaFD folder, or RAF-DB basic (its 7 classes, its split)."""
  if raf_db.release_dir(root):
    if num_classes != len(raf_db.CLASSES):
      raise DataError(f"{root}: RAF-DB has {len(raf_db.CLASSES)} classes; "
                      f"the Expression head has {num_classes}")
    paths, labels, _ = raf_db.read(root, split, bool(spec.get("aligned",
                                                               True)), key)
    n = len(paths)
    return LabelledSource("expression", paths, _fill(
        n, num_attrs, expression=np.asarray(labels, np.int32),
        expression_mask=np.ones(n, np.float32)))
  classes = tuple(spec.get("classes", ()) or stargan.rafd_classes(
      root, spec.get("train_dir", "train"), key))
  if len(classes) != num_classes:
    raise DataError(f"{root}: {len(classes)} expression classes {classes}; "
                    f"the Expression head has {num_classes} (config key "
                    f"{key}.classes)")
  split_dir = spec.get("train_dir" if split == "train" else "test_dir",
                       "train" if split == "train" else "test")
  release = {n: spec[n] for n in ("cameras", "test_fraction", "split_seed")
             if n in spec}
  src = stargan.RafdFormatSource(
      root, split_dir, classes, 0, None, 0, key, release,
      split="train" if split == "train" else "test")
  n = len(src)
  return LabelledSource("expression", src.paths, _fill(
      n, num_attrs, expression=src.labels,
      expression_mask=np.ones(n, np.float32)))


# ---------------------------------------------------------------------------
# Preprocessing and batches.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MultitaskPreprocess:
  """Record -> example with every label field (and pairs when `pairs`)."""
  base: transforms.Preprocess
  num_attrs: int
  pairs: bool = False

  def __call__(self, item: tuple[int, dict]) -> dict:
    position, record = item
    out = self.base((position, record))
    labels = empty_labels(self.num_attrs)
    for k in labels:
      out[k] = np.asarray(record.get(k, labels[k]), labels[k].dtype)
    if self.pairs:
      if "image_b_path" in record:
        b = self.base((position, {"image_path": record["image_b_path"],
                                  "where": record["image_b_path"]}))
        out["image_b"] = b["image"]
        out["same"] = np.float32(record["same"])
        out["pair_mask"] = np.float32(record["pair_mask"]) * b["mask"]
      else:
        out["image_b"] = np.zeros_like(out["image"])
        out["same"] = out["pair_mask"] = np.float32(0)
    return out


class _LoadMixedBatch:
  """Step -> this process's batch: each source's share, concatenated."""

  def __init__(self, parts):
    self.parts = parts  # [(source, GlobalOrder, preprocess)]

  def __call__(self, step: int) -> dict:
    examples = []
    for src, order, pre in self.parts:
      examples += [pre((g, src[order.record(g)]))
                   for g in order.positions(step)]
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def share_counts(global_batch: int, mix: Sequence[float], key: str
                 ) -> list[int]:
  """Examples per source in a global batch (divisible by processes)."""
  if not mix or any(m < 0 for m in mix) or sum(mix) <= 0:
    raise ValueError(f"config key {key}: needs non-negative shares, got "
                     f"{tuple(mix)}")
  total = sum(mix)
  counts = [int(round(global_batch * m / total)) for m in mix]
  counts[int(np.argmax(mix))] += global_batch - sum(counts)
  pc = jax.process_count()
  if any(c % pc for c in counts):
    raise ValueError(f"config key {key}: per-source counts {counts} of the "
                     f"batch {global_batch} must divide by {pc} processes")
  return counts


def mixed_dataset(sources: Sequence, preprocesses: Sequence,
                  counts: Sequence[int], seed: int, num_workers: int = 0,
                  start_step: int = 0) -> grain.IterDataset:
  """Endless, checkpointable batches mixing `sources` by `counts`."""
  parts = []
  for k, (src, pre, n) in enumerate(zip(sources, preprocesses, counts)):
    if n:
      order = pipeline.GlobalOrder(len(src), seed + k, n,
                                   jax.process_index(), jax.process_count())
      parts.append((src, order, pre))
  ds = grain.MapDataset.range(start_step, pipeline.ENDLESS).map(
      _LoadMixedBatch(parts))
  return pipeline.prefetch(ds, num_workers)
