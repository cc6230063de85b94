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

`write_synthetic` writes the 'webcaricature' layout: the foundation's
synthetic faces (facejax.data.synthetic) as photos, and an exaggerated,
stylised rendering of the *same* identities as caricatures (bigger eyes,
nose and mouth, stronger jaw, pushed away from the average face; flat
posterised colours with thick dark outlines), with landmark files.
Everything here is numpy/PIL and picklable (grain workers).
"""

from __future__ import annotations

import json
import math
import os
import re
import zlib
from typing import Sequence

import numpy as np
from PIL import Image
from PIL import ImageEnhance
from PIL import ImageFilter

from facejax.data import synthetic
from facejax.data.synthetic import drawing as synthetic_drawing
from facejax.data.synthetic import identities as synthetic_identities
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
_FIVE = ((9, 10), (11, 12), (13,), (15,), (17,))
_MARKER = "SYNTHETIC_CARICATURE.json"
_VERSION = 2  # 2: a valid_subjects.txt list
# Traits pushed away from the average face in caricatures, and extra
# multiplicative exaggeration of the features caricaturists enlarge.
_EXAGGERATE = ("face_width", "face_height", "jaw", "chin_taper",
               "eye_spacing", "eye_size", "nose_length", "nose_width",
               "mouth_width", "lip_thickness", "brow_thickness")
_ENLARGE = {"eye_size": 1.35, "nose_length": 1.2, "nose_width": 1.35,
            "mouth_width": 1.15, "lip_thickness": 1.3,
            "brow_thickness": 1.4}


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
  return np.stack([pts[[i - 1 for i in group]].mean(0) for group in _FIVE])


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


class PairSource:
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


class FacePreprocess:
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


class PairPreprocess:
  """PairSource record -> {'photo', 'cari', 'photo_id', 'cari_id', 'mask'}."""

  def __init__(self, face: FacePreprocess):
    self.face = face

  def __call__(self, item: tuple[int, dict]) -> dict:
    position, record = item
    p = self.face((2 * position, record["photo"]))
    c = self.face((2 * position + 1, record["cari"]))
    return {"photo": p["image"], "cari": c["image"],
            "photo_id": p["identity"], "cari_id": c["identity"],
            "mask": np.float32(1.0)}


# ---------------------------------------------------------------------------
# Synthetic data: the same identities as photos and as caricatures.
# ---------------------------------------------------------------------------


def exaggerate(identity: dict, gain: float = 2.2) -> dict:
  """The identity's caricature: traits pushed away from the average face.

  Each trait in _EXAGGERATE moves `gain` times further from the middle of
  its gender's range, then the features caricaturists enlarge grow
  (_ENLARGE). Values are clipped to what the renderer draws sensibly.
  """
  out = dict(identity)
  for name in _EXAGGERATE:
    lo, hi = synthetic_identities.trait_range(name, identity["gender"])
    mid = 0.5 * (lo + hi)
    value = mid + gain * (identity[name] - mid)
    value *= _ENLARGE.get(name, 1.0)
    span = hi - lo
    out[name] = float(np.clip(value, lo - 1.5 * span, hi + 1.5 * span))
  out["eye_size"] = float(np.clip(out["eye_size"], 0.12, 0.42))
  out["nose_width"] = float(np.clip(out["nose_width"], 0.1, 0.5))
  out["face_width"] = float(np.clip(out["face_width"], 0.17, 0.27))
  out["jaw"] = float(np.clip(out["jaw"], 1.6, 4.5))
  return out


def stylise(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Flat, posterised colours and thick dark outlines (uint8 -> uint8)."""
  im = Image.fromarray(image)
  size = im.size[0]
  flat = im.filter(ImageFilter.MedianFilter(5))
  flat = ImageEnhance.Color(flat).enhance(1.3 + 0.3 * rng.random())
  flat = ImageEnhance.Brightness(flat).enhance(1.15)
  # A 10-colour palette per image: flat regions, as a drawing.
  flat = flat.quantize(colors=10, method=Image.Quantize.MEDIANCUT).convert(
      "RGB")
  edges = im.filter(ImageFilter.SMOOTH).convert("L").filter(
      ImageFilter.FIND_EDGES)
  thick = 3 if size >= 48 else 1
  if thick > 1:
    edges = edges.filter(ImageFilter.MaxFilter(thick))
  e = np.asarray(edges, np.float32)[..., None]
  line = np.clip((e - 35.0) / 40.0, 0.0, 1.0)  # 1 on strong edges
  ink = np.array([25.0, 20.0, 30.0], np.float32)
  out = np.asarray(flat, np.float32) * (1.0 - line) + ink * line
  return np.clip(out, 0, 255).astype(np.uint8)


def _five_points(face: dict, size: int) -> np.ndarray:
  """The drawn face's 5 points in pixels (eyes, nose tip, mouth corners)."""
  geo = synthetic_drawing.geometry(face)
  pts = np.array([[-geo.eye_dx, geo.eye_y], [geo.eye_dx, geo.eye_y],
                  [0.0, geo.nose_bottom], [-0.5 * geo.mw, geo.mouth_y],
                  [0.5 * geo.mw, geo.mouth_y]])
  # The renderer's _Pen transform (rotation, scale, shift), at `size` px.
  rad = math.radians(face["rotation"])
  c, s = math.cos(rad), math.sin(rad)
  scale = synthetic_drawing.HEAD_SCALE * face["scale"]
  m = np.array([[c, s], [-s, c]]) * scale * size
  t = np.array([0.5 + face["shift"][0], 0.47 + face["shift"][1]]) * size
  return pts @ m + t


def _write_landmarks(path: str, five: np.ndarray) -> None:
  """17 WebCaricature-numbered lines; only the 5 used points are real
  (the others repeat the nose tip)."""
  pts = np.repeat(five[2:3], 17, axis=0)
  for k, group in enumerate(_FIVE):
    for i in group:
      pts[i - 1] = five[k]
  with open(path, "w") as f:
    for x, y in pts:
      f.write(f"{x:.2f} {y:.2f}\n")


def write_synthetic(out: str, num_identities: int = 40, photos: int = 4,
                    caricatures: int = 4, size: int = 64, seed: int = 0,
                    test_fraction: float = 0.25,
                    valid_fraction: float = 0.15) -> dict:
  """Writes a WebCaricature-layout synthetic set.

  Files: out/OriginalImages/S0001/P00001.jpg (photos) and C00001.jpg
  (caricatures of the same identity), out/FacialPoints/S0001/<stem>.txt
  (17 lines, the 5 used points exact), and the disjoint subject lists
  out/train_subjects.txt, out/valid_subjects.txt and out/test_subjects.txt
  (the last identities: test_fraction of them for test, at least 2, and
  before those valid_fraction for valid, at least 1).

  Returns:
    A summary dict.
  """
  if num_identities < 4:
    raise ValueError("write_synthetic needs num_identities >= 4")
  images = os.path.join(out, "OriginalImages")
  points = os.path.join(out, "FacialPoints")
  names = []
  for i in range(num_identities):
    rng = np.random.default_rng([seed, 4242, i])
    name = f"S{i + 1:04d}"
    names.append(name)
    identity = synthetic.sample_identity(rng)
    cari_identity = exaggerate(identity)
    for d in (images, points):
      os.makedirs(os.path.join(d, name), exist_ok=True)
    for k in range(photos + caricatures):
      shot = np.random.default_rng([seed, 4242, i, k])
      is_cari = k >= photos
      # Adults, no accessories that hide the face: identity stays visible.
      overrides = {"age": float(shot.uniform(25.0, 55.0)),
                   "eyeglasses": False}
      if is_cari:
        overrides.update(noise=0.0, blur=0.0, bg_rgb=_pastel(shot))
        face = synthetic.sample_face(shot, cari_identity, **overrides)
        pixels = stylise(synthetic.render_face(face, size), shot)
        stem = f"C{k - photos + 1:05d}"
      else:
        face = synthetic.sample_face(shot, identity, **overrides)
        pixels = synthetic.render_face(face, size)
        stem = f"P{k + 1:05d}"
      Image.fromarray(pixels).save(
          os.path.join(images, name, stem + ".jpg"), quality=95)
      _write_landmarks(os.path.join(points, name, stem + ".txt"),
                       _five_points(face, size))
  n_test = max(2, int(round(test_fraction * num_identities)))
  n_valid = max(1, int(round(valid_fraction * num_identities)))
  n_train = num_identities - n_test - n_valid
  lists = {"train": names[:n_train], "valid": names[n_train:-n_test],
           "test": names[-n_test:]}
  for split, subjects in lists.items():
    with open(os.path.join(out, f"{split}_subjects.txt"), "w") as f:
      f.writelines(f"{n} {caricatures} {photos}\n" for n in subjects)
  return {"identities": num_identities, "photos": num_identities * photos,
          "caricatures": num_identities * caricatures,
          "valid_identities": n_valid, "test_identities": n_test}


def _pastel(rng: np.random.Generator) -> list[float]:
  return [float(v) for v in rng.uniform(170.0, 240.0, size=3)]


def ensure_synthetic(out: str, **kwargs) -> str:
  """Writes the synthetic set unless `out` holds one with these args."""
  record = {"kwargs": kwargs, "version": _VERSION}
  marker = os.path.join(out, _MARKER)
  if os.path.isfile(marker):
    with open(marker) as f:
      try:
        if json.load(f) == record:
          return out
      except ValueError:
        pass
  os.makedirs(out, exist_ok=True)
  write_synthetic(out, **kwargs)
  with open(marker + ".tmp", "w") as f:
    json.dump(record, f)
  os.replace(marker + ".tmp", marker)
  return out
