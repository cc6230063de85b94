"""Two-domain (photo / caricature) face data with shared identity labels.

Layouts (config `data.layout`):

* 'webcaricature': `<root>/<image_dir>/<Name>/P*.jpg` (photos) and
  `C*.jpg` (caricatures), as WebCaricature's OriginalImages; optional
  `<root>/<landmark_dir>/<Name>/<stem>.txt` with 17 lines "x y" (the
  data set's FacialPoints). With landmarks, each image is warped by a
  5-point similarity (eye centres = mean of points 9/10 and 11/12, nose
  tip 13, mouth corners 15 and 17, 1-based) onto the SphereFace template,
  as the seed project's frontalised WebCaricature.
* 'folders': `<root>/<photo_dir>` and `<root>/<cari_dir>`, each either
  `<Name>/<file>` (identity = folder name) or flat files (identity
  unknown: -1, identity metrics are skipped); an optional list file of
  "<domain> <relative path> <Name>" lines selects files and names them.

Subjects are split into disjoint train / valid / test sets by list files
(first token of a line is a subject name, as WebCaricature's
`UnRestrictedView1_DevTrain.txt`) or, without lists, deterministically by
a hash of the name (`data.test_fraction`; `data.valid_fraction` of the
remaining training subjects become the valid subjects).

facejax.data.synthetic.caricature writes a synthetic set in the
'webcaricature' layout. Everything here is numpy/PIL and picklable (grain
workers).
"""

from __future__ import annotations

import os
import re
import zlib
from typing import Sequence

import numpy as np
from PIL import Image

from facejax.data import images as images_lib
from facejax.data import transforms
from facejax.data.faces import align as face_align
from facejax.data.faces.align import similarity  # skimage's least squares
from facejax.data.sources import DataError
from facejax.data.sources import check_text_file
from facejax.data.sources import IMAGE_EXTENSIONS

DOMAINS = ("photo", "cari")
# Translation directions: name -> (source domain, target domain).
DIRECTIONS = {"photo2cari": ("photo", "cari"), "cari2photo": ("cari", "photo")}
LAYOUTS = ("webcaricature", "folders")
# SphereFace's 5-point template in its 96 x 112 (W x H) crop.
TEMPLATE_96x112 = face_align.SPHEREFACE_96X112
# 1-based WebCaricature landmark numbers -> the 5 points (eyes averaged).
FIVE_POINTS = ((9, 10), (11, 12), (13,), (15,), (17,))


# ---------------------------------------------------------------------------
# Alignment.
# ---------------------------------------------------------------------------


def template(size: int, zoom: float = 0.7) -> np.ndarray:
  """The 5-point template in a size x size crop (faces.align's
  'caricature': SphereFace's crop padded to a square and shrunk by `zoom`
  about its centre, so the crop keeps the hair and face outline)."""
  return face_align.caricature_points(size, zoom)


def align(image: Image.Image, points: np.ndarray, size: int) -> Image.Image:
  """Warps `image` so its 5 points land on `template(size)`."""
  m = similarity(points, template(size))
  inv = np.linalg.inv(np.vstack([m, [0.0, 0.0, 1.0]]))[:2]
  return image.transform((size, size), Image.AFFINE, inv.ravel().tolist(),
                         resample=Image.BILINEAR)


def read_landmarks(path: str) -> np.ndarray:
  """17-line "x y" WebCaricature landmark file -> the 5 points [5, 2]."""
  pts = []
  with open(path) as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      parts = line.split()
      try:
        if len(parts) != 2:
          raise ValueError
        pts.append((float(parts[0]), float(parts[1])))
      except ValueError:
        raise DataError(f"{path}:{n}: expected 'x y', got "
                        f"{line.strip()!r}") from None
  if len(pts) != 17:
    raise DataError(f"{path}: expected 17 landmark lines, found {len(pts)}")
  pts = np.asarray(pts, np.float32)
  return np.stack([pts[[i - 1 for i in group]].mean(0)
                   for group in FIVE_POINTS])


# ---------------------------------------------------------------------------
# Sources.
# ---------------------------------------------------------------------------


def _stable_fraction(name: str) -> float:
  return (zlib.crc32(name.encode()) % 10007) / 10007.0


_IMAGE_ID = re.compile(r"^[CP]\d+(\.\w+)?$")


def names_in_line(line: str) -> list[str]:
  """Subject names of one WebCaricature view-file line.

  Fields are tab-separated and names hold spaces ("Adele Laurie Blue
  Adkins\tC00001\tP00001", "Jeff Bridges\t35\t25", a mismatched pair
  "Elizabeth Taylor\tC00039\tJennifer Aniston\tP00006"); a line re-saved
  with spaces instead of tabs is read the same way: every run of words
  between counts and image ids (C00001, P00001) is one name.
  """
  tokens = line.split("\t") if "\t" in line else line.split()
  names, run = [], []
  for token in (t.strip() for t in tokens):
    if not token:
      continue
    if token.isdigit() or _IMAGE_ID.match(token):
      if run:
        names.append(" ".join(run))
      run = []
    else:
      run.append(token)
  if run:
    names.append(" ".join(run))
  return names


def read_subject_list(path: str) -> list[str]:
  """Subject names of a list file, in order of first mention.

  WebCaricature's view files (FaceVerification/*View*.txt,
  FaceIdentification/FR_Train*.txt) start with a count line and hold tab-
  separated names, counts and image ids; a plain list has one name a line.
  """
  if not os.path.isfile(path):
    raise DataError(f"{path}: subject list not found")
  check_text_file(path)
  names = {}
  with open(path, encoding="utf-8-sig") as f:
    for line in f:
      for name in names_in_line(line):
        names.setdefault(name, None)
  if not names:
    raise DataError(f"{path}: no subject names")
  return list(names)


class DomainSource:
  """Images of one domain: records {'image_path', 'identity', 'points'}.

  `identity` indexes `names` (-1: unknown); `points` is [5, 2] (NaN when
  there are no landmarks). Picklable.
  """

  def __init__(self, paths: Sequence[str], identities: Sequence[int],
               names: Sequence[str], points: np.ndarray | None = None,
               domain: str = "photo"):
    self.paths = list(paths)
    self.identities = np.asarray(identities, np.int32)
    self.names = list(names)
    self.domain = domain
    self.points = (points if points is not None else
                   np.full((len(self.paths), 5, 2), np.nan, np.float32))

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, i: int) -> dict:
    return {"image_path": self.paths[i],
            "identity": np.int32(self.identities[i]),
            "points": self.points[i]}

  def __repr__(self) -> str:
    return (f"DomainSource({self.domain}, {len(self)} images, "
            f"{len(set(self.identities.tolist()) - {-1})} identities)")


class DomainPairSource:
  """Unpaired two-domain records: record i = (photo i, a caricature).

  Length is the larger domain's; the other domain is walked in a fixed
  pseudo-random order, so every image of both domains is used.
  """

  def __init__(self, photo: DomainSource, cari: DomainSource, seed: int = 0):
    if not len(photo) or not len(cari):
      raise DataError(f"empty domain: {photo!r}, {cari!r}")
    self.photo, self.cari = photo, cari
    self.n = max(len(photo), len(cari))
    rng = np.random.default_rng([seed, 77])
    self.p_order = rng.permutation(self.n) % len(photo)
    self.c_order = rng.permutation(self.n) % len(cari)

  def __len__(self) -> int:
    return self.n

  def __getitem__(self, i: int) -> dict:
    return {"photo": self.photo[int(self.p_order[i])],
            "cari": self.cari[int(self.c_order[i])]}


def _scan_webcaricature(image_root: str, landmark_root: str | None
                        ) -> dict[str, dict[str, list]]:
  """{name: {'photo': [(path, points)], 'cari': [...]}} under image_root."""
  if not os.path.isdir(image_root):
    raise DataError(f"{image_root}: image folder not found (config key "
                    f"data.root / data.image_dir)")
  out = {}
  for name in sorted(os.listdir(image_root)):
    folder = os.path.join(image_root, name)
    if not os.path.isdir(folder):
      continue
    entry = {"photo": [], "cari": []}
    for fname in sorted(os.listdir(folder)):
      stem, ext = os.path.splitext(fname)
      if ext.lower() not in IMAGE_EXTENSIONS or stem[:1] not in "PC":
        continue
      points = None
      if landmark_root:
        lm = os.path.join(landmark_root, name, stem + ".txt")
        if os.path.isfile(lm):
          points = read_landmarks(lm)
      domain = "photo" if stem[0] == "P" else "cari"
      entry[domain].append((os.path.join(folder, fname), points))
    if entry["photo"] or entry["cari"]:
      out[name] = entry
  if not out:
    raise DataError(f"{image_root}: no <Name>/P*.jpg or C*.jpg images")
  return out


def _scan_folders(root: str, photo_dir: str, cari_dir: str,
                  list_file: str) -> dict[str, dict[str, list]]:
  out: dict[str, dict[str, list]] = {}
  dirs = {"photo": os.path.join(root, photo_dir),
          "cari": os.path.join(root, cari_dir)}
  if list_file:
    path = list_file if os.path.isabs(list_file) else os.path.join(
        root, list_file)
    if not os.path.isfile(path):
      raise DataError(f"{path}: list file not found (config key "
                      f"data.list_file)")
    with open(path) as f:
      for n, line in enumerate(f, 1):
        parts = line.split()
        if not parts:
          continue
        if len(parts) != 3 or parts[0] not in DOMAINS:
          raise DataError(f"{path}:{n}: expected '<photo|cari> <path> "
                          f"<Name>', got {line.strip()!r}")
        image = os.path.join(dirs[parts[0]], parts[1])
        if not os.path.isfile(image):
          raise DataError(f"{path}:{n}: image {image} not found")
        out.setdefault(parts[2], {"photo": [], "cari": []})[
            parts[0]].append((image, None))
    return out
  for domain, d in dirs.items():
    if not os.path.isdir(d):
      raise DataError(f"{d}: folder not found (config key data."
                      f"{domain}_dir)")
    for dirpath, _, files in sorted(os.walk(d)):
      for fname in sorted(files):
        if os.path.splitext(fname)[1].lower() not in IMAGE_EXTENSIONS:
          continue
        rel = os.path.relpath(dirpath, d)
        name = "" if rel == "." else rel.split(os.sep)[0]
        out.setdefault(name, {"photo": [], "cari": []})[domain].append(
            (os.path.join(dirpath, fname), None))
  return out


def _file_split(path: str, cfg) -> str:
  """'train' | 'valid' | 'test' of an image without identity (by hash)."""
  f = _stable_fraction(os.path.basename(path))
  test = float(cfg.test_fraction)
  if f < test:
    return "test"
  return ("valid" if f < test + float(cfg.get("valid_fraction", 0.15))
          else "train")


def _listed_subjects(cfg, root: str, key: str, table: dict
                     ) -> list[str] | None:
  """The subject list of config key data.<key> (None when it is empty)."""
  listed = cfg.get(key, "")
  if not listed:
    return None
  path = listed if os.path.isabs(listed) else os.path.join(root, listed)
  names = read_subject_list(path)
  unknown = [n for n in names if n not in table]
  if unknown:
    raise DataError(f"{path}: subjects without images: {unknown[:5]} "
                    f"(config key data.{key})")
  return names


def split_subjects(cfg, root: str, table: dict) -> dict[str, list[str]]:
  """{'train', 'valid', 'test'}: disjoint subject names.

  Each split comes from its list file (data.train_list / valid_list /
  test_list) when given. Otherwise test subjects are the names whose hash
  falls below data.test_fraction, training subjects the others, and the
  valid subjects a data.valid_fraction share of those (a second hash; at
  least one), taken out of training.
  """
  names = sorted(n for n in table if n)
  test = _listed_subjects(cfg, root, "test_list", table)
  train = _listed_subjects(cfg, root, "train_list", table)
  valid = _listed_subjects(cfg, root, "valid_list", table)
  if test is None:
    frac = float(cfg.test_fraction)
    test = [n for n in names if _stable_fraction(n) < frac
            and n not in set(train or ()) | set(valid or ())]
  if train is None:
    train = [n for n in names if n not in set(test) | set(valid or ())]
  if valid is None:
    frac = float(cfg.get("valid_fraction", 0.15))
    valid = [n for n in train if _stable_fraction(n + "/valid") < frac]
    if not valid and len(train) > 1:
      valid = [min(train, key=lambda n: _stable_fraction(n + "/valid"))]
    train = [n for n in train if n not in set(valid)]
  splits = {"train": train, "valid": valid, "test": test}
  for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
    both = sorted(set(splits[a]) & set(splits[b]))
    if both:
      raise DataError(f"{root}: subjects {both[:5]} are in both the {a} and "
                      f"the {b} split (config keys data.{a}_list / "
                      f"data.{b}_list)")
  return splits


def open_domains(cfg, split: str) -> tuple[DomainSource, DomainSource]:
  """(photo, caricature) sources of `split` ('train' | 'valid' | 'test').

  `cfg` is config.data (root, layout, image_dir, landmark_dir, photo_dir,
  cari_dir, list_file, train_list, valid_list, test_list, test_fraction,
  valid_fraction, split_by). split_by 'subjects' gives disjoint train /
  valid / test identities (`split_subjects`; the WebCaricature
  protocols); 'images' keeps every (training-list) identity in every split
  and holds out each identity's last `test_per_identity` images per domain
  (identity classification; 'valid' and 'test' are then the same images).
  """
  layout = cfg.layout
  if layout not in LAYOUTS:
    raise ValueError(f"config key data.layout: unknown {layout!r}; choose "
                     f"one of {LAYOUTS}")
  if split not in ("train", "valid", "test"):
    raise ValueError(f"unknown split {split!r}: train | valid | test")
  root = cfg.root
  if layout == "webcaricature":
    lm = (os.path.join(root, cfg.landmark_dir)
          if cfg.get("landmark_dir", "") else None)
    table = _scan_webcaricature(os.path.join(root, cfg.image_dir), lm)
  else:
    table = _scan_folders(root, cfg.photo_dir, cfg.cari_dir,
                          cfg.get("list_file", ""))
  held_out = split != "train"
  by = cfg.get("split_by", "subjects")
  if by not in ("subjects", "images"):
    raise ValueError(f"config key data.split_by: unknown {by!r}; choose "
                     f"'subjects' or 'images'")
  if by == "images" and cfg.get("train_list", ""):
    # Identity classification on the training subjects only, so that a
    # network trained here never saw the held-out (valid, test) subjects.
    listed = cfg.train_list
    path = listed if os.path.isabs(listed) else os.path.join(root, listed)
    table = {n: v for n, v in table.items()
             if n in set(read_subject_list(path))}
  names = sorted(n for n in table if n)
  index = {n: i for i, n in enumerate(names)}
  if by == "subjects":
    keep = split_subjects(cfg, root, table)[split]
    if "" in table:
      keep = keep + [""]  # flat files without identity: split by file
  else:
    keep = list(table)
  out = []
  k = int(cfg.get("test_per_identity", 1))
  for domain in DOMAINS:
    paths, ids, pts = [], [], []
    for name in sorted(keep):
      items = table[name][domain]
      if by == "images" and name:
        items = items[-k:] if held_out else items[:-k]
      if by == "subjects" and not name:
        items = [it for it in items if _file_split(it[0], cfg) == split]
      for path, points in items:
        paths.append(path)
        ids.append(index.get(name, -1))
        pts.append(points if points is not None
                   else np.full((5, 2), np.nan, np.float32))
    if not paths:
      raise DataError(f"{cfg.root}: no {domain} images in the {split} "
                      f"split (config keys data.layout / data.split_by / "
                      f"data.{split}_list / data.test_fraction / "
                      f"data.valid_fraction)")
    out.append(DomainSource(paths, ids, names, np.stack(pts).astype(
        np.float32), domain))
  return out[0], out[1]


# ---------------------------------------------------------------------------
# Preprocessing.
# ---------------------------------------------------------------------------


class DomainFacePreprocess:
  """A domain record -> {'image' f32 [S,S,3] in [-1,1], 'identity', 'mask'}.

  With landmarks, a 5-point similarity warp to the template at
  `align_size` px first; then a centre crop of `crop_fraction`, resize,
  and a random flip when `flip`. Seeded by (seed, position). Picklable.
  """

  def __init__(self, image_size: int, flip: bool = False, seed: int = 0,
               crop_fraction: float = 1.0, align_size: int = 112):
    self.pre = transforms.Preprocess(image_size=image_size, normalize="unit",
                                     crop_fraction=crop_fraction, seed=seed,
                                     label_keys=())
    self.flip, self.seed, self.align_size = flip, seed, align_size

  def load(self, record: dict) -> np.ndarray:
    """uint8 [H, W, 3], aligned when the record has landmarks."""
    if "image" in record:  # A face already cropped (launch.caricature).
      return np.asarray(record["image"], np.uint8)
    im = images_lib.load_image(record["image_path"])
    points = np.asarray(record["points"])
    if np.all(np.isfinite(points)):
      im = align(im, points, self.align_size)
    return np.asarray(im, np.uint8)

  def __call__(self, item: tuple[int, dict]) -> dict:
    position, record = item
    out = self.pre((position, {"image": self.load(record)}))
    if self.flip and np.random.default_rng(
        [self.seed, position, 5]).random() < 0.5:
      out["image"] = out["image"][:, ::-1].copy()
    out["identity"] = np.int32(record["identity"])
    return out


def data_root(cfg) -> str:
  """`cfg.root`, or the synthetic photo/caricature set its keys describe
  (written on first use) when it is empty."""
  if cfg.root:
    return cfg.root
  # Imported here: the synthetic writer imports this module.
  from facejax.data.synthetic import caricature as synthetic_cari  # pylint: disable=g-import-not-at-top
  return synthetic_cari.ensure_caricature(
      cfg.synthetic_dir, num_identities=cfg.synthetic_identities,
      photos=cfg.synthetic_photos, caricatures=cfg.synthetic_caricatures,
      size=cfg.synthetic_size, seed=cfg.synthetic_seed)


def face_preprocess(cfg, train: bool, seed: int) -> "DomainFacePreprocess":
  """The face preprocessing of data config `cfg` (flip only in training)."""
  return DomainFacePreprocess(cfg.image_size, flip=train and cfg.flip,
                              seed=seed, crop_fraction=cfg.crop_fraction,
                              align_size=cfg.align_size)


class DomainPairPreprocess:
  """DomainPairSource record -> {'photo', 'cari', 'photo_id', 'cari_id', 'mask'}."""

  def __init__(self, face: DomainFacePreprocess):
    self.face = face

  def __call__(self, item: tuple[int, dict]) -> dict:
    position, record = item
    p = self.face((2 * position, record["photo"]))
    c = self.face((2 * position + 1, record["cari"]))
    return {"photo": p["image"], "cari": c["image"],
            "photo_id": p["identity"], "cari_id": c["identity"],
            "mask": np.float32(1.0)}
