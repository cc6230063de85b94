"""Image files in, uint8 RGB out: decoding, EXIF orientation, square crops.

Every loader (training pipelines, the CLIs, launch.prepare_data, the TFDS
writer, the face detectors) decodes through here, so a 16-bit grey PNG, a
transparent PNG or a phone photo's EXIF rotation comes out the same way
wherever it is read.
"""

from __future__ import annotations

import io
from typing import BinaryIO

import numpy as np
from PIL import Image
from PIL import ImageOps

from facejax.data.sources import DataError

EXIF_ORIENTATION = 0x0112  # the EXIF tag; 1 means upright


def to_rgb(im: Image.Image) -> Image.Image:
  """8-bit RGB of any PIL mode.

  PIL's convert('RGB') clips 16-bit and 32-bit integer images ('I;16',
  'I') at 255, so a 16-bit grey PNG becomes white: those are scaled from
  their type's range. Float images ('F') are taken as 0..1 if their values
  lie there, else as 0..255. Transparent pixels are composed on white.
  """
  if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
    a = np.asarray(im).astype(np.float64)
    if im.mode.startswith("I;16"):
      a = a / 257.0
    elif im.mode == "I":
      a = a / 257.0 if a.max(initial=0) > 255 else a
    elif a.max(initial=0) <= 1.0:
      a = a * 255.0
    grey = np.clip(np.round(a), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, "L").convert("RGB")
  if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P"
                                         and "transparency" in im.info):
    rgba = im.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")
  return im.convert("RGB")


def is_rotated(im: Image.Image) -> bool:
  """Whether the image's EXIF orientation asks for a rotation or flip."""
  return im.getexif().get(EXIF_ORIENTATION, 1) != 1


def decode(source: str | BinaryIO) -> Image.Image:
  """Decodes a file (path or file object) to upright 8-bit RGB.

  PIL's own errors propagate (OSError, SyntaxError, ...); `load_image`
  turns them into a DataError naming the file.
  """
  with Image.open(source) as im:
    im.load()  # Decode now, so truncated files fail here.
    return to_rgb(ImageOps.exif_transpose(im))


def load_image(path: str, where: str | None = None) -> Image.Image:
  """Opens an image as RGB (EXIF orientation applied); clear errors.

  `recordio:<train.rec>@<offset>` names an image inside an insightface
  RecordIO file (facejax.data.formats.recordio).

  Raises:
    DataError: the file is missing or cannot be decoded; the message
      names `where` (default: the path).
  """
  try:
    source = path
    if path.startswith("recordio:"):
      from facejax.data.formats import recordio  # pylint: disable=g-import-not-at-top
      source = io.BytesIO(recordio.read_image_bytes(path))
    return decode(source)
  except FileNotFoundError:
    raise DataError(f"{where or path}: image file not found") from None
  except Exception as e:  # PIL raises many types for corrupt files.
    raise DataError(f"{where or path}: cannot decode image "
                    f"({type(e).__name__}: {e})") from None


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
  """Checks an image array and returns it as uint8 HxWx3."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise ValueError(f"Expected a uint8 image, got dtype {image.dtype}.")
  if image.ndim == 2:
    return np.repeat(image[:, :, None], 3, axis=2)
  if image.ndim == 3 and image.shape[2] in (3, 4):
    return image[:, :, :3]
  raise ValueError(f"Expected an HxW or HxWx3 image, got shape {image.shape}.")


def resize(image: np.ndarray, size: int) -> np.ndarray:
  """Resizes a uint8 image to size x size with a good-quality filter."""
  if size <= 0:
    raise ValueError(f"size must be positive, got {size}.")
  pil = Image.fromarray(image)
  # LANCZOS for both directions: antialiased when shrinking, sharp enough
  # when enlarging small crops.
  return np.asarray(pil.resize((size, size), Image.Resampling.LANCZOS))


def center_square(image: np.ndarray) -> np.ndarray:
  """Crops the largest centred square, for pre-aligned images."""
  h, w = image.shape[:2]
  side = min(h, w)
  top, left = (h - side) // 2, (w - side) // 2
  return image[top:top + side, left:left + side]
