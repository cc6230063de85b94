"""Multi-data-set attribute labels: CelebA- and RaFD-format sources.

StarGAN trains one generator on several data sets labelled with different
attributes. Every example carries the *full* label vector

  [block of set 0 | block of set 1 | ... | one-hot data-set mask]

where only the example's own block is filled in (the other blocks are
zero) and the mask says which block is valid. Two kinds of block:

* CelebA format: an image folder plus a `list_attr_celeba.txt`-style file
  (count line, names line, then `file v1 v2 ...` with values 1/-1); the
  block holds the selected attributes as 0/1 (binary cross-entropy);
* RaFD format: `<root>/<split>/<class>/<image>`, one subfolder per
  mutually exclusive class (alphabetical, as torchvision's ImageFolder);
  the block is a one-hot class vector (softmax cross-entropy).

Host side (numpy/PIL, picklable for grain workers): `open_sets` reads the
config's `data.sets`, `LabelLayout` builds label vectors, `AttributeFacePreprocess`
crops/flips/resizes as the reference (centre crop, resize, [-1, 1]).
Device side (JAX): `masked_cls_loss`, `block_accuracy`, `sample_targets`.
"""

import dataclasses
import os
import random
from typing import Any, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax
from PIL import Image

from facejax.data import images as images_lib
from facejax.data import transforms
from facejax.data.formats import base as formats_base
from facejax.data.formats import rafd as rafd_release
from facejax.data.sources import DataError, IMAGE_EXTENSIONS
from facejax.data.sources import check_text_file

FORMATS = ("celeba", "rafd")
# Attributes of which exactly one is on in a sampled target (StarGAN's
# create_labels treats the hair colours this way).
DEFAULT_ONE_HOT_GROUP = ("Black_Hair", "Blond_Hair", "Brown_Hair",
                         "Gray_Hair")
TARGET_MODES = ("random", "shuffle")


# ---------------------------------------------------------------------------
# Label layout.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Block:
  """One data set's slice of the classification vector."""
  name: str
  format: str                  # 'celeba' | 'rafd'
  names: tuple[str, ...]       # attribute or class names
  offset: int                  # first index in the classification vector
  # Indices (within the block) of attributes of which one is on at a time.
  one_hot_group: tuple[int, ...] = ()

  @property
  def size(self) -> int:
    return len(self.names)

  @property
  def slice(self) -> slice:
    return slice(self.offset, self.offset + self.size)


@dataclasses.dataclass(frozen=True)
class LabelLayout:
  """The concatenated label vector of several data sets plus the mask."""
  blocks: tuple[Block, ...]

  @property
  def num_sets(self) -> int:
    return len(self.blocks)

  @property
  def cls_dim(self) -> int:
    """Classification outputs (all blocks, no mask)."""
    return sum(b.size for b in self.blocks)

  @property
  def mask_dim(self) -> int:
    """The one-hot data-set mask: none for a single data set, as in the
    official StarGAN (a CelebA-only generator takes 3 + c_dim channels)."""
    return self.num_sets if self.num_sets > 1 else 0

  @property
  def label_dim(self) -> int:
    """Full label vector: all blocks plus the one-hot data-set mask."""
    return self.cls_dim + self.mask_dim

  def active(self, labels: jax.Array, k: int) -> jax.Array:
    """[B] bool: the examples of data set `k` (all of a single set)."""
    if not self.mask_dim:
      return jnp.ones(labels.shape[:1], bool)
    return labels[:, self.cls_dim + k] > 0.5

  def encode(self, k: int, values) -> np.ndarray:
    """Full label of an example of data set `k`.

    Args:
      k: data set index.
      values: CelebA format: the block's 0/1 values; RaFD format: the
        class index.
    """
    block = self.blocks[k]
    out = np.zeros((self.label_dim,), np.float32)
    if block.format == "celeba":
      values = np.asarray(values, np.float32)
      if values.shape != (block.size,):
        raise ValueError(f"{block.name}: expected {block.size} values, got "
                         f"shape {values.shape}")
      out[block.slice] = values
    else:
      out[block.offset + int(values)] = 1.0
    if self.mask_dim:
      out[self.cls_dim + k] = 1.0
    return out

  def summary(self) -> str:
    return "; ".join(f"{b.name} ({b.format}): {', '.join(b.names)}"
                     for b in self.blocks)

  def to_json(self) -> list[dict[str, Any]]:
    return [{"name": b.name, "format": b.format, "names": list(b.names)}
            for b in self.blocks]

  def target_settings(self, k: int, labels: np.ndarray
                      ) -> list[tuple[str, int, np.ndarray]]:
    """The reference's test-time targets for examples of data set `k`.

    CelebA format: one target per attribute; a one-hot-group attribute is
    set (and the rest of the group cleared), any other is flipped. RaFD
    format: one target per class.

    Args:
      k: data set index.
      labels: [B, label_dim] original labels (all of data set k).

    Returns:
      [(column name, index in the classification vector, targets
      [B, label_dim])]; the index is the attribute a classifier should
      find in the translated image.
    """
    block = self.blocks[k]
    out = []
    for i, name in enumerate(block.names):
      trg = np.array(labels, np.float32, copy=True)
      j = block.offset + i
      if block.format == "rafd":
        trg[:, block.slice] = 0.0
        trg[:, j] = 1.0
      elif i in block.one_hot_group:
        for g in block.one_hot_group:
          trg[:, block.offset + g] = 0.0
        trg[:, j] = 1.0
      else:
        trg[:, j] = 1.0 - trg[:, j]
      out.append((name, j, trg))
    return out


def dummy_batch(layout: LabelLayout, image_size: int,
                batch_size: int) -> dict[str, np.ndarray]:
  """A batch of blank images labelled as examples of data set 0
  (benchmarks, shape inference)."""
  label = np.zeros((batch_size, layout.label_dim), np.float32)
  if layout.mask_dim:
    label[:, layout.cls_dim] = 1.0
  return {"image": np.zeros((batch_size, image_size, image_size, 3),
                            np.float32),
          "label": label, "dataset": np.zeros((batch_size,), np.int32),
          "mask": np.ones((batch_size,), np.float32)}


def make_block(name: str, fmt: str, names: Sequence[str], offset: int,
               one_hot_group: Sequence[str] = DEFAULT_ONE_HOT_GROUP) -> Block:
  group = ()
  if fmt == "celeba":
    group = tuple(i for i, n in enumerate(names) if n in one_hot_group)
    # A "group" of one attribute would pin it to 1: leave it binary.
    group = group if len(group) > 1 else ()
  return Block(name, fmt, tuple(names), offset, group)


# ---------------------------------------------------------------------------
# Sources.
# ---------------------------------------------------------------------------


class CelebaFormatSource:
  """Images + a `list_attr_celeba.txt`-style file; selected attributes.

  The split follows the reference: the data lines are shuffled with
  Python's `random.seed(split_seed)` and the first `test_count` are the
  test set, the rest train.
  """

  def __init__(self, root: str, image_dir: str, attr_file: str,
               attributes: Sequence[str], split: str, test_count: int,
               split_seed: int | None, set_index: int,
               layout: "LabelLayout | None", crop_size: int,
               key: str = "data.sets[0]", check_files: bool = True,
               partition: str = "reference"):
    # Flat (files beside the image folder) or the Google Drive layout:
    # Anno/list_attr_celeba.txt, Eval/list_eval_partition.txt,
    # Img/img_align_celeba/.
    self.attr_path = first_file(root, ("", "Anno"), attr_file)
    self.image_dir = first_dir(root, ("", "Img"), image_dir)
    if not os.path.isfile(self.attr_path):
      raise DataError(f"{self.attr_path}: attribute file not found (config "
                      f"keys {key}.root / {key}.attr_file)")
    if not os.path.isdir(self.image_dir):
      raise DataError(f"{self.image_dir}: image folder not found (config "
                      f"keys {key}.root / {key}.image_dir)")
    header, rows = _read_attr_file(self.attr_path)
    missing = [a for a in attributes if a not in header]
    if missing:
      raise DataError(
          f"{self.attr_path}:2: attribute(s) {missing} (config key "
          f"{key}.attributes) not in the header; known: {' '.join(header)}")
    cols = [header.index(a) for a in attributes]
    if split not in ("train", "test"):
      raise ValueError(f"unknown split {split!r} (train | valid | test)")
    if partition == "official":
      # list_eval_partition.txt: 0 train, 1 val, 2 test; val joins train
      # (StarGAN-style runs hold out one test set).
      part_path = first_file(root, ("", "Eval"), "list_eval_partition.txt")
      if not os.path.isfile(part_path):
        raise DataError(f"{part_path}: not found ({key}.partition="
                        "'official' reads CelebA's list_eval_partition.txt)")
      parts = read_partition(part_path)
      unknown = [r[1] for r in rows if r[1] not in parts]
      if unknown:
        raise DataError(f"{part_path}: no partition for {unknown[:3]} "
                        f"({len(unknown)} images of {self.attr_path})")
      want = (2,) if split == "test" else (0, 1)
      rows = [r for r in rows if parts[r[1]] in want]
      formats_base.announce(
          f"celeba at {root}: {split} {len(rows)} images of "
          f"{len(parts)} (official partition, {part_path})")
    elif partition == "reference":
      if split_seed is not None:
        random.seed(split_seed)
        random.shuffle(rows)
      rows = rows[:test_count] if split == "test" else rows[test_count:]
    else:
      raise ValueError(f"config key {key}.partition: {partition!r} is not "
                       "'reference' or 'official'")
    if not rows:
      raise DataError(f"{self.attr_path}: no {split} rows (config key "
                      f"{key}.test_count={test_count} / {key}.partition)")
    self.set_index, self.crop_size, self.layout = set_index, crop_size, layout
    self.paths = [os.path.join(self.image_dir, r[1]) for r in rows]
    self.lines = [r[0] for r in rows]
    self.values = np.asarray([[r[2][c] for c in cols] for r in rows],
                             np.float32)
    if check_files:
      gone = [i for i, p in enumerate(self.paths) if not os.path.isfile(p)]
      if gone:
        shown = "\n  ".join(self.describe(i) for i in gone[:5])
        raise DataError(f"{self.attr_path}: {len(gone)} image file(s) not "
                        f"found, e.g.\n  {shown}")

  def describe(self, i: int) -> str:
    return f"{self.paths[i]} ({self.attr_path}:{self.lines[i]})"

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, i: int) -> dict:
    return {"image_path": self.paths[i], "where": self.describe(i),
            "label": self.layout.encode(self.set_index, self.values[i]),
            "dataset": np.int32(self.set_index),
            "crop_size": np.int32(self.crop_size)}


def first_file(root: str, subdirs: Sequence[str], name: str) -> str:
  """root/<sub>/name for the first sub where it exists (else the first)."""
  paths = [os.path.join(root, d, name) for d in subdirs]
  return next((p for p in paths if os.path.isfile(p)), paths[0])


def first_dir(root: str, subdirs: Sequence[str], name: str) -> str:
  paths = [os.path.join(root, d, name) for d in subdirs]
  return next((p for p in paths if os.path.isdir(p)), paths[0])


def read_partition(path: str) -> dict[str, int]:
  """list_eval_partition.txt: `000001.jpg 0` lines -> {file: 0|1|2}."""
  check_text_file(path)
  out = {}
  with open(path, encoding="utf-8-sig") as f:
    for n, line in enumerate(f, start=1):
      parts = line.split()
      if not parts:
        continue
      if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
        raise DataError(f"{path}:{n}: expected '<file> 0|1|2', got "
                        f"{line.strip()[:60]!r}")
      out[parts[0]] = int(parts[1])
  return out


def _read_attr_file(path: str):
  """(attribute names, [(line, file, values)]) of a CelebA attribute file."""
  check_text_file(path)
  with open(path, encoding="utf-8-sig") as f:
    lines = f.read().splitlines()
  if len(lines) < 2:
    raise DataError(f"{path}: expected a count line and a names line")
  header = lines[1].split()
  rows = []
  for n, text in enumerate(lines[2:], start=3):
    parts = text.split()
    if not parts:
      continue
    if len(parts) != len(header) + 1:
      raise DataError(f"{path}:{n}: expected a file name and {len(header)} "
                      f"values, got {len(parts)} fields")
    try:
      values = [int(v) for v in parts[1:]]
    except ValueError:
      raise DataError(f"{path}:{n}: values must be 1 or -1") from None
    if any(v not in (1, -1) for v in values):
      raise DataError(f"{path}:{n}: values must be 1 or -1")
    rows.append((n, parts[0], [float(v == 1) for v in values]))
  # Line 1 is the image count (202599 in the release); a file cut short in
  # a download or edited by hand disagrees with it.
  try:
    count = int(lines[0].split()[0])
  except (IndexError, ValueError):
    raise DataError(f"{path}:1: expected the image count, got "
                    f"{lines[0][:40]!r}") from None
  if count != len(rows):
    raise DataError(f"{path}:1: the count line says {count} images, the "
                    f"file has {len(rows)} rows (truncated or edited?)")
  return header, rows


def rafd_classes(root: str, split_dir: str, key: str) -> tuple[str, ...]:
  """Sorted class subfolders of `root/split_dir` (ImageFolder order), or
  the expressions in a released RaFD folder's file names."""
  folder = os.path.join(root, split_dir)
  if not os.path.isdir(folder) and rafd_release.is_release(root):
    found = {rafd_release.parse_name(n) for n in os.listdir(root)}
    return tuple(sorted({f.expression for f in found if f}))
  if not os.path.isdir(folder):
    raise DataError(f"{folder}: folder not found (config keys {key}.root / "
                    f"{key}.train_dir)")
  classes = sorted(d for d in os.listdir(folder)
                   if os.path.isdir(os.path.join(folder, d)))
  if len(classes) < 2:
    raise DataError(f"{folder}: needs one subfolder per class (at least 2), "
                    f"found {classes}")
  return tuple(classes)


class RafdFormatSource:
  """`root/split_dir/<class>/<image>` with mutually exclusive classes."""

  def __init__(self, root: str, split_dir: str, classes: Sequence[str],
               set_index: int, layout: "LabelLayout | None", crop_size: int,
               key: str = "data.sets[0]", release=None,
               split: str | None = None):
    self.folder = os.path.join(root, split_dir)
    self.set_index, self.crop_size, self.layout = set_index, crop_size, layout
    if not os.path.isdir(self.folder) and rafd_release.is_release(root):
      self._read_release(root, split or split_dir, classes, release or {},
                         key)
      return
    if not os.path.isdir(self.folder):
      raise DataError(f"{self.folder}: folder not found (config keys "
                      f"{key}.root / {key}.train_dir / {key}.test_dir)")
    # A class in the data but not in the config is an error, never dropped
    # (RaFD's 8th expression, 'contemptuous', is easy to leave out).
    extra = sorted(d for d in os.listdir(self.folder)
                   if os.path.isdir(os.path.join(self.folder, d))
                   and d not in classes and not d.startswith("."))
    if extra:
      raise DataError(f"{self.folder}: class folder(s) {extra} are not in "
                      f"the classes {list(classes)} (config key "
                      f"{key}.classes): add them, or leave {key}.classes "
                      "empty to take every folder")
    paths, labels = [], []
    for c, name in enumerate(classes):
      sub = os.path.join(self.folder, name)
      if not os.path.isdir(sub):
        raise DataError(f"{sub}: class folder missing (classes from config "
                        f"key {key}.classes or the train folder)")
      files = sorted(f for f in os.listdir(sub)
                     if f.lower().endswith(IMAGE_EXTENSIONS))
      paths += [os.path.join(sub, f) for f in files]
      labels += [c] * len(files)
    if not paths:
      raise DataError(f"{self.folder}: no images in the class folders")
    self.paths, self.labels = paths, np.asarray(labels, np.int32)

  def _read_release(self, root, split, classes, release, key):
    """Flat Rafd090_01_..._angry_frontal.jpg names: split by person."""
    images, skipped = rafd_release.scan(
        root, tuple(release.get("cameras", rafd_release.DEFAULT_CAMERAS)),
        key)
    for reason, n in skipped.items():
      logging.warning("%s: left out %d image(s): %s", root, n, reason)
    extra = sorted({im.expression for im in images} - set(classes))
    if extra:
      raise DataError(f"{root}: expression(s) {extra} are in the file names "
                      f"but not in the classes {list(classes)} (config key "
                      f"{key}.classes)")
    split = "test" if split in ("test", "valid", "val") else "train"
    chosen = rafd_release.split_of(
        images, split, float(release.get("test_fraction", 0.1)),
        int(release.get("split_seed", 0)))
    if not chosen:
      raise DataError(f"{root}: the RaFD {split} split is empty (config key "
                      f"{key}.test_fraction)")
    people = {im.subject for im in chosen}
    formats_base.announce(
        f"rafd release at {root}: {split} {len(chosen)} images of "
        f"{len(people)} people ({len(images)} of cameras "
        f"{tuple(release.get('cameras', rafd_release.DEFAULT_CAMERAS))}; "
        f"test people a seeded share); skipped: "
        + (", ".join(f"{n} {r}" for r, n in skipped.items()) or "none"))
    self.folder = root
    self.paths = [im.path for im in chosen]
    self.labels = np.asarray([classes.index(im.expression) for im in chosen],
                             np.int32)

  def describe(self, i: int) -> str:
    return self.paths[i]

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, i: int) -> dict:
    return {"image_path": self.paths[i], "where": self.paths[i],
            "label": self.layout.encode(self.set_index, self.labels[i]),
            "dataset": np.int32(self.set_index),
            "crop_size": np.int32(self.crop_size)}


# ---------------------------------------------------------------------------
# Config -> layout and sources.
# ---------------------------------------------------------------------------

_CELEBA_KEYS = {"name", "format", "root", "image_dir", "attr_file",
                "attributes", "test_count", "split_seed", "crop_size",
                # 'reference': StarGAN's shuffled test_count; 'official':
                # list_eval_partition.txt (test = 2, train = 0 and 1).
                "partition",
                "synthetic_num", "synthetic_size"}
_RAFD_KEYS = {"name", "format", "root", "train_dir", "test_dir", "classes",
              "crop_size", "synthetic_num", "synthetic_size",
              # A released (flat) RaFD folder: cameras kept, test people.
              "cameras", "test_fraction", "split_seed"}


def _get(spec, name, default=None):
  return spec[name] if name in spec else default


def check_specs(sets: Sequence[Any]) -> None:
  """Validates `data.sets` entries, naming the bad config key."""
  if not sets:
    raise ValueError("config key data.sets: at least one data set needed")
  names = set()
  for k, spec in enumerate(sets):
    key = f"data.sets[{k}]"
    fmt = _get(spec, "format")
    if fmt not in FORMATS:
      raise ValueError(f"config key {key}.format: unknown {fmt!r}; choose "
                       f"one of {FORMATS}")
    allowed = _CELEBA_KEYS if fmt == "celeba" else _RAFD_KEYS
    unknown = set(spec.keys()) - allowed
    if unknown:
      raise ValueError(f"config key {key}: unknown key(s) {sorted(unknown)} "
                       f"for format {fmt!r}; known: {sorted(allowed)}")
    name = _get(spec, "name")
    if not name or name in names:
      raise ValueError(f"config key {key}.name: needs a unique name, got "
                       f"{name!r}")
    names.add(name)
    if fmt == "celeba" and not _get(spec, "attributes"):
      raise ValueError(f"config key {key}.attributes: name the attributes")


def set_root(spec, data_cfg) -> str:
  """The data set's folder (the synthetic set when `root` is empty)."""
  root = _get(spec, "root", "")
  if root:
    base = data_cfg.get("root", "") or ""
    return root if os.path.isabs(root) else os.path.join(base, root)
  return os.path.join(data_cfg.synthetic_dir, spec["name"])


def ensure_synthetic(data_cfg) -> None:
  """Writes the synthetic stand-in of every set without a `root`."""
  from facejax.data import synthetic  # pylint: disable=g-import-not-at-top
  for spec in data_cfg.sets:
    if _get(spec, "root", ""):
      continue
    kwargs = {"num": int(_get(spec, "synthetic_num", 1000)),
              "size": int(_get(spec, "synthetic_size", 128)),
              "seed": int(data_cfg.get("synthetic_seed", 0))}
    synthetic.ensure(spec["format"], set_root(spec, data_cfg), **kwargs)


def make_layout(data_cfg) -> LabelLayout:
  """The label layout of `data.sets` (RaFD classes read from disk)."""
  sets = data_cfg.sets
  check_specs(sets)
  group = tuple(data_cfg.get("one_hot_group", DEFAULT_ONE_HOT_GROUP))
  blocks, offset = [], 0
  for k, spec in enumerate(sets):
    key = f"data.sets[{k}]"
    if spec["format"] == "celeba":
      names = tuple(spec["attributes"])
      if len(set(names)) != len(names):
        raise ValueError(f"config key {key}.attributes: duplicates in "
                         f"{names}")
    else:
      names = tuple(_get(spec, "classes", ()) or rafd_classes(
          set_root(spec, data_cfg), _get(spec, "train_dir", "train"), key))
    blocks.append(make_block(spec["name"], spec["format"], names, offset,
                             group))
    offset += len(names)
  return LabelLayout(tuple(blocks))


def open_source(data_cfg, layout: LabelLayout, k: int, split: str):
  """Data set k's source of `split` ('valid' is the test split)."""
  spec = data_cfg.sets[k]
  key = f"data.sets[{k}]"
  root = set_root(spec, data_cfg)
  split = "test" if split == "valid" else split
  crop = int(_get(spec, "crop_size", 0))
  if spec["format"] == "celeba":
    seed = _get(spec, "split_seed", 1234)
    return CelebaFormatSource(
        root, _get(spec, "image_dir", "img_align_celeba"),
        _get(spec, "attr_file", "list_attr_celeba.txt"),
        tuple(spec["attributes"]), split,
        int(_get(spec, "test_count", 1999)),
        None if seed is None else int(seed), k, layout, crop, key,
        partition=_get(spec, "partition", "reference"))
  split_dir = _get(spec, f"{split}_dir", split)
  release = {n: spec[n] for n in ("cameras", "test_fraction", "split_seed")
             if n in spec}
  return RafdFormatSource(root, split_dir, layout.blocks[k].names, k, layout,
                          crop, key, release, split=split)


# ---------------------------------------------------------------------------
# Preprocessing (host).
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AttributeFacePreprocess:
  """Record -> {'image' [S,S,3] in [-1,1], 'label', 'dataset', 'mask'}.

  As the reference's get_loader: (random horizontal flip,) centre crop of
  the record's `crop_size` pixels (0: the shorter side), resize to
  `image_size`, scale to [-1, 1]. The flip is seeded by (seed, position).
  """
  image_size: int
  flip: bool = False
  seed: int = 0

  def __call__(self, item: tuple[int, dict]) -> dict:
    position, record = item
    if "image" in record:
      im = Image.fromarray(np.asarray(record["image"], np.uint8))
    else:
      im = images_lib.load_image(record["image_path"], record.get("where"))
    w, h = im.size
    crop = int(record.get("crop_size", 0)) or min(w, h)
    if crop > min(w, h):
      raise DataError(f"{record.get('where', record.get('image_path'))}: "
                      f"image {w}x{h} is smaller than the centre crop of "
                      f"{crop} px (config key data.sets[i].crop_size)")
    left, top = (w - crop) / 2, (h - crop) / 2
    im = im.resize((self.image_size,) * 2, Image.BILINEAR,
                   box=(left, top, left + crop, top + crop),
                   reducing_gap=None)
    image = np.asarray(im, np.uint8)
    if self.flip:
      rng = np.random.default_rng([self.seed, position])
      if rng.random() < 0.5:
        image = image[:, ::-1]
    return {"image": transforms.normalize(image, "unit"),
            "label": np.asarray(record["label"], np.float32),
            "dataset": np.int32(record["dataset"]),
            "mask": np.float32(1.0)}


# ---------------------------------------------------------------------------
# Losses, accuracy and target sampling (device).
# ---------------------------------------------------------------------------


def dataset_index(labels: jax.Array, layout: LabelLayout) -> jax.Array:
  """[B] data set index from the one-hot mask part of the labels."""
  if not layout.mask_dim:
    return jnp.zeros(labels.shape[:1], jnp.int32)
  return jnp.argmax(labels[:, layout.cls_dim:], axis=-1)


def masked_cls_loss(logits: jax.Array, labels: jax.Array,
                    layout: LabelLayout) -> jax.Array:
  """[B] classification loss of each example's own block only.

  CelebA-format blocks: binary cross-entropy summed over the block's
  attributes (the reference sums and divides by the batch). RaFD-format
  blocks: softmax cross-entropy. Other blocks' logits do not enter (not
  even as NaN: `where`, not a multiplication by zero).

  Args:
    logits: [B, cls_dim].
    labels: [B, label_dim] full labels (blocks + mask).
    layout: the label layout.
  """
  total = jnp.zeros(logits.shape[:1], jnp.float32)
  for k, block in enumerate(layout.blocks):
    active = layout.active(labels, k)
    lg = logits[:, block.slice].astype(jnp.float32)
    lg = jnp.where(active[:, None], lg, 0.0)
    y = labels[:, block.slice]
    if block.format == "celeba":
      loss = optax.sigmoid_binary_cross_entropy(lg, y).sum(-1)
    else:
      loss = optax.softmax_cross_entropy(lg, y)
    total = total + jnp.where(active, loss, 0.0)
  return total


def block_correct(logits: jax.Array, labels: jax.Array,
                  layout: LabelLayout) -> jax.Array:
  """[B, cls_dim] 1 where the attribute/class is right (active block).

  CelebA blocks: per attribute, sign of the logit vs the label. RaFD
  blocks: the block's argmax vs the label, written to every column of the
  block (so a block's mean over columns is the class accuracy).
  Inactive blocks are 0; pair with `active_columns` for counts.
  """
  cols = []
  for k, block in enumerate(layout.blocks):
    active = layout.active(labels, k)[:, None]
    lg, y = logits[:, block.slice], labels[:, block.slice]
    if block.format == "celeba":
      ok = (lg > 0) == (y > 0.5)
    else:
      ok = jnp.argmax(lg, -1) == jnp.argmax(y, -1)
      ok = jnp.broadcast_to(ok[:, None], lg.shape)
    cols.append(jnp.where(active, ok, False))
  return jnp.concatenate(cols, axis=-1).astype(jnp.float32)


def active_columns(labels: jax.Array, layout: LabelLayout) -> jax.Array:
  """[B, cls_dim] 1 on the columns of each example's own block."""
  return jnp.concatenate(
      [jnp.broadcast_to(layout.active(labels, k)[:, None].astype(
          labels.dtype), (labels.shape[0], b.size))
       for k, b in enumerate(layout.blocks)], axis=-1)


def sample_targets(rng: jax.Array, labels: jax.Array, layout: LabelLayout,
                   mode: str = "random") -> jax.Array:
  """Target labels within each example's own block (same mask).

  'random': CelebA attributes are fair coin flips, except the one-hot
  group (e.g. hair colours), of which exactly one is on; RaFD blocks get a
  uniform class. 'shuffle' (the reference): the labels of a random
  permutation of the batch, where that example is from the same data set,
  else the 'random' draw.
  """
  if mode not in TARGET_MODES:
    raise ValueError(f"config key model.target_mode: unknown {mode!r}; "
                     f"choose one of {TARGET_MODES}")
  b = labels.shape[0]
  dataset = dataset_index(labels, layout)
  keys = jax.random.split(rng, 2 * layout.num_sets + 1)
  parts = []
  for k, block in enumerate(layout.blocks):
    if block.format == "celeba":
      part = jax.random.bernoulli(keys[2 * k], 0.5, (b, block.size))
      part = part.astype(jnp.float32)
      group = block.one_hot_group
      if group:
        pick = jax.random.randint(keys[2 * k + 1], (b,), 0, len(group))
        onehot = jax.nn.one_hot(pick, len(group))
        part = part.at[:, jnp.asarray(group)].set(onehot)
    else:
      pick = jax.random.randint(keys[2 * k], (b,), 0, block.size)
      part = jax.nn.one_hot(pick, block.size)
    parts.append(jnp.where((dataset == k)[:, None], part, 0.0))
  parts.append(labels[:, layout.cls_dim:])
  drawn = jnp.concatenate(parts, axis=-1)
  if mode == "random":
    return drawn
  perm = jax.random.permutation(keys[-1], b)
  same = (dataset[perm] == dataset)[:, None]
  return jnp.where(same, labels[perm], drawn)
