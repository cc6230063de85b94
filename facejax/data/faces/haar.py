"""Face detection and cropping of raw photos before training.

The seed projects detected faces with OpenCV and cropped a square around each
face enlarged by a margin (DEX used 40%) before training an age model. This
module does the same with the frontal-face Haar cascade that ships with
opencv-python(-headless), so nothing has to be downloaded.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from facejax.data import images

# A face box as (x0, y0, x1, y1) pixel coordinates, x1/y1 exclusive.
Box = tuple[int, int, int, int]

_CASCADE_FILE = 'haarcascade_frontalface_default.xml'
MULTIPLE_FACE_POLICIES = ('skip', 'largest')
PAD_MODES = ('edge', 'constant')


def _import_cv2() -> Any:
  """Imports OpenCV lazily so the rest of facejax works without it."""
  try:
    import cv2  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        'Face detection needs OpenCV: pip install opencv-python-headless'
    ) from e
  return cv2


class FaceDetector:
  """Frontal-face detector based on OpenCV's Haar cascade.

  The cascade is loaded on first use and dropped when pickled, so a detector
  can be handed to worker processes.
  """

  def __init__(
      self,
      scale_factor: float = 1.1,
      min_neighbors: int = 5,
      min_size: float = 0.1,
      multiple_faces: str = 'skip',
      cascade_path: Optional[str] = None,
  ):
    """Creates the detector.

    Args:
      scale_factor: image pyramid step of `detectMultiScale` (> 1).
      min_neighbors: how many overlapping detections a face needs; higher
        means fewer false positives.
      min_size: smallest face side as a fraction of the image's shorter side.
      multiple_faces: what `detect_and_crop` does when it finds several faces:
        'skip' (return no crop) or 'largest' (crop the largest face).
      cascade_path: a Haar cascade XML file; defaults to OpenCV's
        frontal-face default cascade.
    """
    if scale_factor <= 1.0:
      raise ValueError(f'scale_factor must be > 1, got {scale_factor}.')
    if not 0.0 <= min_size < 1.0:
      raise ValueError(f'min_size must be in [0, 1), got {min_size}.')
    if multiple_faces not in MULTIPLE_FACE_POLICIES:
      raise ValueError(
          f'multiple_faces must be one of {MULTIPLE_FACE_POLICIES}, got '
          f'{multiple_faces!r}.'
      )
    self.scale_factor = scale_factor
    self.min_neighbors = min_neighbors
    self.min_size = min_size
    self.multiple_faces = multiple_faces
    self.cascade_path = cascade_path
    self._cascade = None

  def __getstate__(self) -> dict[str, Any]:
    # cv2.CascadeClassifier cannot be pickled; workers reload it lazily.
    state = self.__dict__.copy()
    state['_cascade'] = None
    return state

  def _get_cascade(self) -> Any:
    if self._cascade is None:
      cv2 = _import_cv2()
      path = self.cascade_path or os.path.join(
          cv2.data.haarcascades, _CASCADE_FILE
      )
      cascade = cv2.CascadeClassifier(path)
      if cascade.empty():
        raise FileNotFoundError(f'Could not load the Haar cascade {path}.')
      self._cascade = cascade
    return self._cascade

  def detect(self, image: np.ndarray) -> list[Box]:
    """Finds frontal faces.

    Args:
      image: uint8 RGB image [H, W, 3] (grayscale [H, W] also accepted).

    Returns:
      Face boxes (x0, y0, x1, y1), largest first.
    """
    cv2 = _import_cv2()
    image = np.asarray(image)
    if image.dtype != np.uint8:
      raise ValueError(f'Expected a uint8 image, got dtype {image.dtype}.')
    if image.ndim == 3:
      gray = cv2.cvtColor(images.as_rgb_uint8(image), cv2.COLOR_RGB2GRAY)
    elif image.ndim == 2:
      gray = image
    else:
      raise ValueError(f'Expected an HxWx3 image, got shape {image.shape}.')
    side = int(round(self.min_size * min(gray.shape)))
    faces = self._get_cascade().detectMultiScale(
        gray,
        scaleFactor=self.scale_factor,
        minNeighbors=self.min_neighbors,
        minSize=(side, side),
    )
    boxes = [(int(x), int(y), int(x + w), int(y + h)) for x, y, w, h in faces]
    boxes.sort(key=lambda b: (b[2] - b[0]) * (b[3] - b[1]), reverse=True)
    return boxes

  def detect_and_crop(
      self,
      image: np.ndarray,
      margin: float = 0.4,
      size: Optional[int] = None,
      pad_mode: str = 'edge',
  ) -> tuple[Optional[np.ndarray], int]:
    """Detects the face and crops it.

    Args:
      image: uint8 RGB image [H, W, 3].
      margin: see `crop_face`.
      size: see `crop_face`.
      pad_mode: see `crop_face`.

    Returns:
      (crop, num_faces): crop is None when no face was found, or when several
      were found and the policy is 'skip'.
    """
    boxes = self.detect(image)
    if not boxes or (len(boxes) > 1 and self.multiple_faces == 'skip'):
      return None, len(boxes)
    # detect() sorts largest first, which is what 'largest' wants.
    return crop_face(image, boxes[0], margin, size, pad_mode), len(boxes)


def square_box(box: Box, margin: float = 0.4) -> Box:
  """Returns the square crop window around a face box.

  Args:
    box: face box (x0, y0, x1, y1).
    margin: fraction of the box's longer side added on EACH side, as in the
      DEX / age-gender-estimation crops (0.4 makes the side 1.8x the box).

  Returns:
    (x0, y0, x1, y1) of the square window; it may extend past the image.
  """
  x0, y0, x1, y1 = box
  if x1 <= x0 or y1 <= y0:
    raise ValueError(f'Empty face box {box}.')
  if margin < 0:
    raise ValueError(f'margin must be >= 0, got {margin}.')
  side = int(round(max(x1 - x0, y1 - y0) * (1.0 + 2.0 * margin)))
  cx2, cy2 = x0 + x1, y0 + y1  # Twice the centre, to stay in integers.
  left = (cx2 - side) // 2
  top = (cy2 - side) // 2
  return left, top, left + side, top + side


def crop_face(
    image: np.ndarray,
    box: Box,
    margin: float = 0.4,
    size: Optional[int] = None,
    pad_mode: str = 'edge',
) -> np.ndarray:
  """Crops a square around a face box, padding where it leaves the image.

  Args:
    image: uint8 image [H, W, 3] (or [H, W]).
    box: face box (x0, y0, x1, y1).
    margin: fraction of the box side added on each side (see `square_box`).
    size: if given, the crop is resized to size x size.
    pad_mode: 'edge' repeats the border pixels, 'constant' pads with black.

  Returns:
    The square crop, uint8, with the channels of `image`.
  """
  if pad_mode not in PAD_MODES:
    raise ValueError(f'pad_mode must be one of {PAD_MODES}, got {pad_mode!r}.')
  image = np.asarray(image)
  h, w = image.shape[:2]
  x0, y0, x1, y1 = square_box(box, margin)
  # Slice the part inside the image, then pad only what is missing; this
  # avoids padding the whole (possibly large) photo.
  inner = image[max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)]
  pads = [
      (max(-y0, 0), max(y1 - h, 0)),
      (max(-x0, 0), max(x1 - w, 0)),
  ] + [(0, 0)] * (image.ndim - 2)
  if inner.size == 0:
    # The window lies fully outside the image: nothing to repeat.
    crop = np.zeros((y1 - y0, x1 - x0) + image.shape[2:], image.dtype)
  elif any(p != (0, 0) for p in pads):
    crop = np.pad(inner, pads, mode=pad_mode)
  else:
    crop = inner
  if size is not None and crop.shape[:2] != (size, size):
    crop = images.resize(crop, size)
  return np.ascontiguousarray(crop)
