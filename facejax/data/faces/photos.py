"""From files and folders of photos to aligned face crops and result rows.

Every inference command runs photos through the same steps: expand folders,
decode each file (any PIL mode, EXIF rotation), detect its faces in batches,
crop each face as the model was trained (`align`), and hand the crops on in
batches. A file that cannot be read, or holds no face, becomes a row that
says so; it never stops the others and is never scored as a face.
"""

import csv
import dataclasses
import json
import os
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import tqdm

from facejax.data import sources
from facejax.data import images
from facejax.data.faces import align
from facejax.data.faces.mtcnn import Face


def expand_paths(args: Sequence[str]) -> list[str]:
  """Files as given; folders expanded to their image files, recursively and
  sorted (FIW keeps one person's photos in a folder of their own)."""
  paths = []
  for arg in args:
    if os.path.isdir(arg):
      found = []
      for folder, _, files in os.walk(arg):
        found += [os.path.join(folder, f) for f in files
                  if f.lower().endswith(sources.IMAGE_EXTENSIONS)]
      paths += sorted(found)
    else:
      paths.append(arg)
  return paths


def image_paths(arg: str) -> list[str]:
  """The file, or a folder's image files (sorted); errors name `arg`."""
  if not os.path.exists(arg):
    raise ValueError(f"{arg}: no such file or folder")
  paths = expand_paths([arg])
  if not paths:
    raise ValueError(f"{arg}: folder holds no image files "
                     f"({', '.join(sources.IMAGE_EXTENSIONS)})")
  return paths


@dataclasses.dataclass
class FaceCrop:
  """One face of one photo (or the photo's problem when `error` is set)."""
  path: str
  face: int = -1                # index in the photo, most confident first
  box: Optional[np.ndarray] = None
  score: float = float("nan")
  landmarks: Optional[np.ndarray] = None
  crop: Optional[np.ndarray] = None
  error: str = ""

  def row(self, **results: Any) -> dict:
    """The output row: file, face index, box, score, landmarks, results."""
    out = {"file": self.path, "face": self.face}
    if self.error:
      out["error"] = self.error
      return out
    out["box"] = [round(float(v), 1) for v in self.box]
    out["score"] = (None if np.isnan(self.score)
                    else round(float(self.score), 4))
    if self.landmarks is not None:
      out["landmarks"] = [[round(float(v), 1) for v in p]
                          for p in self.landmarks]
    out.update(results)
    return out


class FaceCrops:
  """Iterates batches of `FaceCrop`s (crops set) over photos.

  Problems (unreadable files, photos without a face) come out as FaceCrops
  with `error` set, in the batch of the photo's position, so outputs stay in
  input order; `failed` and `no_face` list them at the end.

  Args:
    paths: image files.
    detector: from `facejax.data.faces.make_detector`.
    template: one of `align.TEMPLATES`.
    size: the model's input side in pixels.
    margin: the 'box' template's margin on each side.
    batch_size: faces per batch handed on; photos are detected in groups
      of this many too.
    max_faces: keep at most this many faces per photo (most confident
      first); 0 keeps all.
  """

  def __init__(self, paths: Sequence[str], detector, template: str,
               size: int, margin: float = 0.4, batch_size: int = 16,
               max_faces: int = 0, progress: bool = True):
    if template not in align.TEMPLATES:
      raise ValueError(f"unknown alignment {template!r}; choose one of "
                       f"{', '.join(align.TEMPLATES)}")
    self.paths = list(paths)
    self.detector = detector
    self.template = template
    self.size = size
    self.margin = margin
    self.batch_size = max(1, batch_size)
    self.max_faces = max_faces
    self.progress = progress
    self.failed: list[str] = []
    self.no_face: list[str] = []

  def _faces_of(self, path: str, image: np.ndarray,
                faces: list[Face]) -> list[FaceCrop]:
    if not faces:
      self.no_face.append(path)
      return [FaceCrop(path, error="no face found")]
    if self.max_faces:
      faces = faces[:self.max_faces]
    return [FaceCrop(path, k, f.box, f.score, f.landmarks,
                     align.crop(image, self.template, self.size, f.box,
                                f.landmarks, self.margin))
            for k, f in enumerate(faces)]

  def __iter__(self) -> Iterator[list[FaceCrop]]:
    pending: list[FaceCrop] = []
    bar = tqdm.tqdm(total=len(self.paths), unit="photo", leave=False,
                    disable=None if self.progress else True)
    for start in range(0, len(self.paths), self.batch_size):
      group = self.paths[start:start + self.batch_size]
      decoded: dict[str, Any] = {}
      for path in group:
        try:
          decoded[path] = np.asarray(images.load_image(path))
        except sources.DataError as e:
          decoded[path] = e
      readable = [p for p in group if isinstance(decoded[p], np.ndarray)]
      detections = dict(zip(readable, self.detector.detect(
          [decoded[p] for p in readable]) if readable else []))
      for path in group:  # Rows in input order, problems included.
        if path in detections:
          pending += self._faces_of(path, decoded[path], detections[path])
        else:
          self.failed.append(path)
          message = str(decoded[path])  # Rows name the file already.
          if message.startswith(path + ": "):
            message = message[len(path) + 2:]
          pending.append(FaceCrop(path, error=message))
      bar.update(len(group))
      while sum(c.crop is not None for c in pending) >= self.batch_size:
        cut, faces = 0, 0
        while faces < self.batch_size:
          faces += pending[cut].crop is not None
          cut += 1
        yield pending[:cut]
        pending = pending[cut:]
    bar.close()
    if pending:
      yield pending


def labelled_faces(batches, report: Callable[[str], None]
                   ) -> tuple[list[FaceCrop], list[str]]:
  """Every face of `batches` and its grid row label ('photo.jpg #0');
  each problem row goes to `report` as 'path: error' instead."""
  found, labels = [], []
  for batch in batches:
    for face in batch:
      if face.error:
        report(f"{face.path}: {face.error}")
        continue
      found.append(face)
      labels.append(f"{os.path.basename(face.path)} #{face.face}")
  return found, labels


def groups_by_shape(crops: Sequence[FaceCrop]) -> list[list[int]]:
  """Indices of the crops, grouped by image shape (stackable together);
  '--align=none' passes photos of any size through."""
  groups: dict = {}
  for i, c in enumerate(crops):
    if c.crop is not None:
      groups.setdefault(c.crop.shape, []).append(i)
  return list(groups.values())


class RowWriter:
  """Writes result rows to a .csv or .jsonl file, one per face.

  CSV flattens nested results (`attributes.Smiling`) and writes lists as
  JSON; the columns are the first row's plus any later ones (an error row
  leaves the result columns empty).
  """

  def __init__(self, path: str):
    if not path.endswith((".csv", ".jsonl")):
      raise ValueError(f"--out {path!r}: give a .csv or .jsonl file")
    self.path = path
    self.rows: list[dict] = []

  def add(self, row: dict) -> None:
    self.rows.append(row)

  def close(self) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
    tmp = self.path + ".tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
      if self.path.endswith(".jsonl"):
        for row in self.rows:
          f.write(json.dumps(row) + "\n")
      else:
        flat = [_flatten(r) for r in self.rows]
        columns = list(dict.fromkeys(k for r in flat for k in r))
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(flat)
    os.replace(tmp, self.path)


def _flatten(row: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in row.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f"{prefix}{key}."))
    elif isinstance(value, (list, tuple)):
      out[prefix + key] = json.dumps(value)
    else:
      out[prefix + key] = value
  return out


def unique_names(paths: Sequence[str]) -> dict[str, str]:
  """A distinct file-name stem per path: the path below the common folder
  with separators as '__' (FIW repeats names like 'P00001_face0.jpg')."""
  if not paths:
    return {}
  absolute = [os.path.abspath(p) for p in paths]
  root = os.path.commonpath([os.path.dirname(p) for p in absolute])
  return {p: os.path.relpath(a, root).replace(os.sep, "__")
          for p, a in zip(paths, absolute)}
