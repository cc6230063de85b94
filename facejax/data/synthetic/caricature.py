"""The synthetic caricature set: the same identities as photos and drawings.

`write_caricature` writes the 'webcaricature' layout of
facejax.data.caricature: the synthetic faces as photos, and an
exaggerated, stylised rendering of the *same* identities as caricatures
(bigger eyes, nose and mouth, stronger jaw, pushed away from the average
face; flat posterised colours with thick dark outlines), with landmark
files.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
from PIL import Image
from PIL import ImageEnhance
from PIL import ImageFilter

from facejax.data import caricature as caricature_data
from facejax.data.synthetic import drawing
from facejax.data.synthetic import identities

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


def exaggerate(identity: dict, gain: float = 2.2) -> dict:
  """The identity's caricature: traits pushed away from the average face.

  Each trait in _EXAGGERATE moves `gain` times further from the middle of
  its gender's range, then the features caricaturists enlarge grow
  (_ENLARGE). Values are clipped to what the renderer draws sensibly.
  """
  out = dict(identity)
  for name in _EXAGGERATE:
    lo, hi = identities.trait_range(name, identity["gender"])
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
  geo = drawing.geometry(face)
  pts = np.array([[-geo.eye_dx, geo.eye_y], [geo.eye_dx, geo.eye_y],
                  [0.0, geo.nose_bottom], [-0.5 * geo.mw, geo.mouth_y],
                  [0.5 * geo.mw, geo.mouth_y]])
  # The renderer's _Pen transform (rotation, scale, shift), at `size` px.
  rad = math.radians(face["rotation"])
  c, s = math.cos(rad), math.sin(rad)
  scale = drawing.HEAD_SCALE * face["scale"]
  m = np.array([[c, s], [-s, c]]) * scale * size
  t = np.array([0.5 + face["shift"][0], 0.47 + face["shift"][1]]) * size
  return pts @ m + t


def _write_landmarks(path: str, five: np.ndarray) -> None:
  """17 WebCaricature-numbered lines; only the 5 used points are real
  (the others repeat the nose tip)."""
  pts = np.repeat(five[2:3], 17, axis=0)
  for k, group in enumerate(caricature_data.FIVE_POINTS):
    for i in group:
      pts[i - 1] = five[k]
  with open(path, "w") as f:
    for x, y in pts:
      f.write(f"{x:.2f} {y:.2f}\n")


def write_caricature(out: str, num_identities: int = 40, photos: int = 4,
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
    raise ValueError("write_caricature needs num_identities >= 4")
  images = os.path.join(out, "OriginalImages")
  points = os.path.join(out, "FacialPoints")
  names = []
  for i in range(num_identities):
    rng = np.random.default_rng([seed, 4242, i])
    name = f"S{i + 1:04d}"
    names.append(name)
    identity = identities.sample_identity(rng)
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
        face = identities.sample_face(shot, cari_identity, **overrides)
        pixels = stylise(drawing.render_face(face, size), shot)
        stem = f"C{k - photos + 1:05d}"
      else:
        face = identities.sample_face(shot, identity, **overrides)
        pixels = drawing.render_face(face, size)
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


def ensure_caricature(out: str, **kwargs) -> str:
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
  write_caricature(out, **kwargs)
  with open(marker + ".tmp", "w") as f:
    json.dump(record, f)
  os.replace(marker + ".tmp", marker)
  return out
