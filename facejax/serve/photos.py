"""Uploaded photos: base64 in, decoded RGB arrays, detected faces.

Uploads are decoded in memory (nothing is written to disk) through
facejax.data.images, the decoder every command uses: any PIL mode, EXIF
orientation applied. Faces are found with the same detectors and cropped
with the same templates as the photo commands (facejax.data.faces).
"""

import base64
import binascii
import dataclasses
import io

import cv2
import numpy as np
from PIL import Image

from facejax.data import faces as faces_lib
from facejax.data import images as images_lib
from facejax.data.faces.mtcnn import Face


class BadInput(ValueError):
  """A request the server refuses: HTTP `status` and a message."""

  def __init__(self, message: str, status: int = 400):
    super().__init__(message)
    self.status = status


@dataclasses.dataclass(frozen=True)
class Limits:
  """What one request may hold.

  max_images: images per request.
  max_pixels: pixels per decoded image (decompression bombs).
  max_faces: faces answered per image, most confident first.
  detect_side: photos are shrunk to this longer side for detection only
    (crops come from the full photo; boxes are in its pixels).
  """
  max_images: int = 16
  max_pixels: int = 40_000_000
  max_faces: int = 8
  detect_side: int = 1280


def decode(data: str, where: str, limits: Limits) -> np.ndarray:
  """A base64 image (optionally a data: URL) -> uint8 RGB [H, W, 3].

  Raises:
    BadInput: not base64, not an image, or too many pixels; the message
      names `where` (e.g. 'images[2]').
  """
  if not isinstance(data, str) or not data:
    raise BadInput(f"{where}: expected a base64-encoded image file")
  if data.startswith("data:"):
    head, _, data = data.partition(",")
    if ";base64" not in head:
      raise BadInput(f"{where}: a data: URL must be base64 "
                     f"('data:image/jpeg;base64,...')")
  try:
    raw = base64.b64decode(data, validate=True)
  except (binascii.Error, ValueError):
    raise BadInput(f"{where}: not valid base64") from None
  # The header first: a decompression bomb is refused before decoding.
  # (PIL's own limit, Image.MAX_IMAGE_PIXELS, is process-wide: not changed
  # here, where requests decode on several threads.)
  try:
    with Image.open(io.BytesIO(raw)) as probe:
      w, h = probe.size
    if w * h > limits.max_pixels:
      raise BadInput(f"{where}: {w}x{h} pixels is more than the server's "
                     f"limit of {limits.max_pixels:,} (--max_pixels)", 413)
    image = images_lib.decode(io.BytesIO(raw))
  except BadInput:
    raise
  except Image.DecompressionBombError as e:
    raise BadInput(f"{where}: too many pixels ({e})", 413) from None
  except Exception as e:  # PIL raises many types for bad files.
    kind = ("not an image file" if isinstance(e, Image.UnidentifiedImageError)
            else f"cannot decode image ({type(e).__name__}: {e})")
    raise BadInput(f"{where}: {kind}") from None
  return np.asarray(image)


def face_json(face: Face) -> dict:
  """A detected face's box, score and landmarks (photo pixels)."""
  out = {"box": [round(float(v), 1) for v in face.box],
         "score": None if np.isnan(face.score) else round(float(face.score),
                                                          4),
         "landmarks": None}
  if face.landmarks is not None:
    out["landmarks"] = [[round(float(v), 1) for v in p]
                        for p in face.landmarks]
  return out


class Detector:
  """A face detector over a batch of photos, large ones shrunk first."""

  def __init__(self, name: str = "mtcnn", min_face_size: float = 20.0,
               limits: Limits = Limits()):
    self.name = name
    self.limits = limits
    self._detector = faces_lib.make_detector(name, min_face_size)

  def __call__(self, photos: list[np.ndarray]) -> list[list[Face]]:
    """Faces of each photo, most confident first, at most max_faces."""
    shrunk, scales = [], []
    for photo in photos:
      scale = min(1.0, self.limits.detect_side / max(photo.shape[:2]))
      scales.append(scale)
      if scale < 1.0:
        size = (max(1, round(photo.shape[1] * scale)),
                max(1, round(photo.shape[0] * scale)))
        photo = cv2.resize(photo, size, interpolation=cv2.INTER_AREA)
      shrunk.append(photo)
    found = self._detector.detect(shrunk)
    out = []
    for faces, scale in zip(found, scales):
      faces = faces[:self.limits.max_faces]
      out.append([Face(box=f.box / scale, score=f.score,
                       landmarks=None if f.landmarks is None
                       else f.landmarks / scale) for f in faces])
    return out
