"""Face detection and alignment for photos.

  faces = detect(images, make_detector('mtcnn'))   # list of Face per image
  crop = align.crop(image, 'arcface_112', 112, face.box, face.landmarks)

`DETECTORS`: 'mtcnn' (boxes, scores, five landmarks; facejax.data.faces.
mtcnn), 'haar' (OpenCV's frontal-face cascade: boxes only, so landmark
alignments fall back to the box crop) and 'none' (the photo is one face).
"""

from typing import Sequence

import numpy as np

from facejax.data.faces import haar as haar_lib
from facejax.data.faces.mtcnn import Face

DETECTORS = ("mtcnn", "haar", "none")


class HaarDetector:
  """OpenCV's Haar cascade behind the MTCNN interface (no landmarks, and no
  score: the cascade gives none, so `Face.score` is NaN)."""

  def __init__(self, **kwargs):
    self._haar = haar_lib.FaceDetector(multiple_faces="largest", **kwargs)

  def detect(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
    return [[Face(box=np.asarray(b, np.float32), score=float("nan"))
             for b in self._haar.detect(image)] for image in images]


class WholeImage:
  """'--detector=none': every photo is taken as one aligned face."""

  def detect(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
    return [[Face(box=np.array([0, 0, im.shape[1], im.shape[0]], np.float32),
                  score=float("nan"))] for im in images]


def make_detector(name: str, min_face_size: float = 20.0):
  """A detector by name (see DETECTORS)."""
  if name == "mtcnn":
    from facejax.data.faces import mtcnn  # pylint: disable=g-import-not-at-top
    return mtcnn.default_detector(float(min_face_size))
  if name == "haar":
    return HaarDetector()
  if name == "none":
    return WholeImage()
  raise ValueError(f"unknown detector {name!r}; choose one of "
                   f"{', '.join(DETECTORS)}")
