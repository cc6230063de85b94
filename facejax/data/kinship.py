"""Families-in-the-Wild (FIW) kinship data: readers, sources, batch sampler.

Layout (FIW track 1, and facejax.data.synthetic.write_fiw):
  images/F0001/MID1/P00001_face0.jpg      family / member / photo
  txt/{train,val,test}.txt                `id path1 path2 relation is_kin`
                                          (a trailing extra column is
                                          allowed, as in train_sort.txt)
  txt/train_triplets.txt                  `id anchor positive negative
                                          relation 1`
  families.csv (optional)                 `family,mid,gender,skin_group,...`
Paths in the lists are relative to images/. Every malformed line raises a
DataError naming file:line before training starts.

The kinship batch sampler (TeamCNU's sorted list / the reference's
KinshipBatchSampler) fills every training batch with *positive* pairs of
distinct families, so the other in-batch samples are valid negatives for
the contrastive losses. The order is a pure function of (seed, step) and
each process reads its contiguous block of the global batch, as
facejax.data.pipeline does: 1 or N processes, 0 or 2 workers and resumed
runs see the same global batches.
"""

import collections
import csv
import dataclasses
import os
import re
from typing import Sequence

import grain
import jax
import numpy as np

from facejax.data import pipeline
from facejax.data import transforms
from facejax.data.sources import DataError

# Relation names and label numbers of the reference (0 = non-kin).
RELATION_LABELS = {
    "non-kin": 0, "md": 1, "ms": 2, "sibs": 3, "ss": 4, "bb": 5, "fd": 6,
    "fs": 7, "gfgd": 8, "gfgs": 9, "gmgd": 10, "gmgs": 11,
}
RELATIONS = tuple(k for k in RELATION_LABELS if k != "non-kin")
NUM_RELATIONS = len(RELATION_LABELS)
# The generic pipeline's endless step range and optional multiprocessing.
_FAMILY = re.compile(r"^F(\d+)$")
_MEMBER = re.compile(r"^MID(\d+)$")


@dataclasses.dataclass(frozen=True)
class Pair:
  path_a: str           # relative to the image root
  path_b: str
  relation: int         # RELATION_LABELS value of the relation column
  is_kin: int           # 1 kin, 0 not
  where: str            # file:line, for error messages


def family_and_member(path: str) -> tuple[int, int]:
  """(family id, member id) from `.../F0012/MID3/x.jpg`; -1 if absent."""
  parts = path.replace("\\", "/").split("/")
  for k in range(len(parts) - 1):
    fam = _FAMILY.match(parts[k])
    if fam:
      mid = _MEMBER.match(parts[k + 1])
      return int(fam.group(1)), int(mid.group(1)) if mid else -1
  return -1, -1


def _lines(path: str):
  if not os.path.exists(path):
    raise DataError(f"{path}: pair list not found")
  with open(path) as f:
    for n, line in enumerate(f, start=1):
      fields = line.split()
      if fields:
        yield n, fields


def _relation(value: str, where: str) -> int:
  if value not in RELATION_LABELS:
    raise DataError(f"{where}: unknown relation {value!r}; expected one of "
                    f"{', '.join(RELATION_LABELS)}")
  return RELATION_LABELS[value]


def read_pairs(path: str) -> list[Pair]:
  """Reads `id path1 path2 relation is_kin [extra]` lines."""
  pairs = []
  for n, fields in _lines(path):
    where = f"{path}:{n}"
    if len(fields) not in (5, 6):
      raise DataError(f"{where}: expected 5 space-separated columns `id "
                      f"path1 path2 relation is_kin`, got {len(fields)}")
    if fields[4] not in ("0", "1"):
      raise DataError(f"{where}: is_kin must be 0 or 1, got {fields[4]!r}")
    pairs.append(Pair(fields[1], fields[2], _relation(fields[3], where),
                      int(fields[4]), where))
  if not pairs:
    raise DataError(f"{path}: no pairs")
  return pairs


def read_triplets(path: str) -> list[tuple[str, str, str, int]]:
  """Reads `id anchor positive negative relation 1` lines."""
  out = []
  for n, fields in _lines(path):
    where = f"{path}:{n}"
    if len(fields) != 6:
      raise DataError(f"{where}: expected 6 columns `id anchor positive "
                      f"negative relation 1`, got {len(fields)}")
    out.append((fields[1], fields[2], fields[3], _relation(fields[4], where)))
  return out


def read_families(path: str) -> dict[tuple[int, int], tuple[int, int]]:
  """families.csv -> {(family, member): (gender, skin_group)}; {} if absent.

  gender 1 = male, 0 = female; skin_group is the demographic group used
  for debiasing (FIW has ethnicity labels in the KFC work; the synthetic
  set draws a skin-tone group 0..3).
  """
  if not os.path.exists(path):
    return {}
  out = {}
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    need = ("family", "mid", "gender", "skin_group")
    missing = [c for c in need if c not in (reader.fieldnames or [])]
    if missing:
      raise DataError(f"{path}:1: missing column(s) {missing}; the header "
                      f"has {reader.fieldnames}")
    for row in reader:
      where = f"{path}:{reader.line_num}"
      fam, mid = _FAMILY.match(row["family"]), _MEMBER.match(row["mid"])
      if not (fam and mid):
        raise DataError(f"{where}: expected family like F0001 and mid like "
                        f"MID1, got {row['family']!r} {row['mid']!r}")
      try:
        value = (int(row["gender"]), int(row["skin_group"]))
      except ValueError:
        raise DataError(f"{where}: gender and skin_group must be "
                        f"integers") from None
      out[(int(fam.group(1)), int(mid.group(1)))] = value
  return out


class KinPairSource:
  """Random-access source of kinship pairs (grain protocol, picklable).

  Records: image_a_path, image_b_path, label (is_kin), relation, family
  (of image a; -1 unknown), and per image gender_* / group_* (-1 unknown).
  """

  def __init__(self, pairs: Sequence[Pair], image_root: str,
               families: dict | None = None, check_files: bool = True):
    self.pairs, self.image_root = list(pairs), image_root
    families = families or {}
    self.members = [(family_and_member(p.path_a),
                     family_and_member(p.path_b)) for p in self.pairs]
    self.attrs = [tuple(families.get(m, (-1, -1)) for m in ms)
                  for ms in self.members]
    if check_files:
      for p in self.pairs:
        for path in (p.path_a, p.path_b):
          if not os.path.exists(os.path.join(image_root, path)):
            raise DataError(f"{p.where}: image {path!r} not found under "
                            f"{image_root}")
    self.labels = np.array([p.is_kin for p in self.pairs], np.int32)
    self.relations = np.array([p.relation for p in self.pairs], np.int32)
    self.families = np.array([m[0][0] for m in self.members], np.int32)

  def __len__(self) -> int:
    return len(self.pairs)

  def __getitem__(self, i: int) -> dict:
    p = self.pairs[i]
    (g_a, s_a), (g_b, s_b) = self.attrs[i]
    return {"image_a_path": os.path.join(self.image_root, p.path_a),
            "image_b_path": os.path.join(self.image_root, p.path_b),
            "where": p.where,
            "label": np.float32(p.is_kin), "relation": np.int32(p.relation),
            "family": np.int32(self.members[i][0][0]),
            "gender_a": np.int32(g_a), "gender_b": np.int32(g_b),
            "group_a": np.int32(s_a), "group_b": np.int32(s_b)}

  def positives(self) -> "KinPairSource":
    keep = [k for k, p in enumerate(self.pairs) if p.is_kin]
    out = KinPairSource.__new__(KinPairSource)
    out.pairs = [self.pairs[k] for k in keep]
    out.image_root = self.image_root
    out.members = [self.members[k] for k in keep]
    out.attrs = [self.attrs[k] for k in keep]
    out.labels, out.relations, out.families = (
        x[keep] for x in (self.labels, self.relations, self.families))
    return out


LABEL_KEYS = ("label", "relation", "family", "gender_a", "gender_b",
              "group_a", "group_b")


@dataclasses.dataclass(frozen=True)
class KinPairPreprocess:
  """Pair record -> {'image_a', 'image_b', labels..., 'mask'} (picklable).

  Both images go through the same `transforms.Preprocess` (each with its
  own augmentation draw).
  """
  preprocess: transforms.Preprocess

  def __call__(self, item: tuple[int, dict]) -> dict:
    position, record = item
    out = {k: np.asarray(record[k]) for k in LABEL_KEYS}
    mask = np.float32(1.0)
    for side, offset in (("a", 0), ("b", 2**40)):
      ex = self.preprocess((position + offset, {
          "image_path": record[f"image_{side}_path"],
          "where": f"{record['where']} ({record[f'image_{side}_path']})"}))
      out[f"image_{side}"] = ex["image"]
      mask = np.float32(mask * ex["mask"])
    out["mask"] = mask
    return out


class KinshipOrder:
  """Global batch -> pair indices; every batch has B distinct families.

  Epoch e shuffles the pairs of each relation type with rng(seed, e, pass)
  and interleaves the relation types (round robin), so every batch mixes
  relations and every type comes up each epoch. Batches are then filled
  greedily in that order, deferring a pair whose family is already in the
  batch to the next batch. An epoch has floor(N / B) batches; if the
  deferred pairs cannot fill them (a few large families), a new pass over
  all pairs continues the epoch. Picklable; the result for an epoch is
  cached.
  """

  def __init__(self, families: np.ndarray, relations: np.ndarray, seed: int,
               global_batch: int):
    self.families = np.asarray(families)
    self.relations = np.asarray(relations)
    self.seed, self.batch = seed, global_batch
    distinct = len(set(self.families.tolist()))
    if distinct < global_batch:
      raise ValueError(
          f"config key data.batch_size: a kinship batch holds pairs of "
          f"distinct families, but the training list has only {distinct} "
          f"families for a batch of {global_batch}")
    self.per_epoch = max(1, len(self.families) // global_batch)
    self._cache = (None, None)

  def _interleaved(self, epoch: int, pass_: int) -> list[int]:
    rng = np.random.default_rng([self.seed, epoch, pass_])
    groups = [rng.permutation(np.flatnonzero(self.relations == r)).tolist()
              for r in np.unique(self.relations)]
    groups = [groups[k] for k in rng.permutation(len(groups))]
    order = []
    for k in range(max(len(g) for g in groups)):
      order += [g[k] for g in groups if k < len(g)]
    return order

  def epoch_batches(self, epoch: int) -> list[list[int]]:
    if self._cache[0] == epoch:
      return self._cache[1]
    batches, pass_ = [], 0
    while len(batches) < self.per_epoch:
      pending = collections.deque(self._interleaved(epoch, pass_))
      pass_ += 1
      while pending and len(batches) < self.per_epoch:
        batch, used, deferred = [], set(), []
        while pending and len(batch) < self.batch:
          k = pending.popleft()
          fam = int(self.families[k])
          if fam in used:
            deferred.append(k)
          else:
            batch.append(k)
            used.add(fam)
        pending.extendleft(reversed(deferred))
        if len(batch) < self.batch:
          break  # the rest cannot fill a batch: start a new pass
        batches.append(batch)
    self._cache = (epoch, batches)
    return batches

  def global_batch(self, step: int) -> list[int]:
    epoch, k = divmod(step, self.per_epoch)
    return self.epoch_batches(epoch)[k]


class _LoadKinshipBatch:
  """Step -> this process's block of that step's global batch."""

  def __init__(self, source: KinPairSource, order: KinshipOrder,
               preprocess: KinPairPreprocess, slice_: pipeline.ProcessSlice):
    self.source, self.order = source, order
    self.preprocess, self.slice = preprocess, slice_

  def __call__(self, step: int) -> dict:
    indices = self.order.global_batch(step)
    lo = self.slice.offset
    rows = []
    for j, k in enumerate(indices[lo:lo + self.slice.local_batch]):
      position = step * self.slice.global_batch + lo + j
      rows.append(self.preprocess((position, self.source[k])))
    return {key: np.stack([r[key] for r in rows]) for key in rows[0]}


def kinship_train_dataset(source: KinPairSource, preprocess: KinPairPreprocess,
                          global_batch: int, seed: int, num_workers: int = 0,
                          start_step: int = 0) -> grain.IterDataset:
  """Endless training batches of positive pairs from distinct families.

  `source` should hold positive pairs (KinPairSource.positives()); the
  iterator's state is the step, as in pipeline.train_dataset.
  """
  if not len(source):
    raise DataError("the training pair list has no positive (is_kin=1) "
                    "pairs")
  order = KinshipOrder(source.families, source.relations, seed, global_batch)
  slice_ = pipeline.ProcessSlice(global_batch, jax.process_index(),
                                 jax.process_count())
  ds = grain.MapDataset.range(start_step, pipeline.ENDLESS).map(
      _LoadKinshipBatch(source, order, preprocess, slice_))
  return pipeline.prefetch(ds, num_workers)


def load_split(root: str, list_file: str, check_files: bool = True
               ) -> KinPairSource:
  """KinPairSource of `root/txt/<list_file>` (or a path given directly)."""
  if list_file.lower().endswith(".csv"):
    # RFIW's pair csvs beside FIW's FIDs/ (facejax.data.formats.rfiw).
    from facejax.data.formats import rfiw  # pylint: disable=g-import-not-at-top
    path = list_file if os.path.isabs(list_file) else os.path.join(
        root, list_file)
    images = rfiw.image_root(root)
    return KinPairSource(rfiw.read_pair_csv(path, images), images,
                      rfiw.read_mid_genders(images), check_files=check_files)
  path = list_file if os.path.isabs(list_file) else os.path.join(
      root, "txt", list_file)
  families = read_families(os.path.join(root, "families.csv"))
  return KinPairSource(read_pairs(path), os.path.join(root, "images"),
                    families, check_files=check_files)
