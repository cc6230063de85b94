"""Face-region crop, resize, augment and normalise (numpy/PIL).

Images are decoded by facejax.data.images. These run inside grain worker
processes, so they are plain picklable classes with no JAX. Randomness
comes from a generator seeded by (seed, global example position): the same
example gets the same augmentation whatever the number of processes or
workers, and after resume.
"""

import dataclasses

from absl import logging
import numpy as np
from PIL import Image, ImageEnhance

from facejax.data import images
from facejax.data.sources import DataError

NORMALIZATIONS = ("imagenet", "unit", "caffe_bgr")
_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)


def normalize(image: np.ndarray, mode: str) -> np.ndarray:
  """uint8 RGB [H,W,3] -> float32 network input."""
  x = image.astype(np.float32)
  if mode == "imagenet":
    return (x / 255.0 - _IMAGENET_MEAN) / _IMAGENET_STD
  if mode == "unit":
    return x / 127.5 - 1.0
  if mode == "caffe_bgr":  # DEX / VGG-Face: BGR, 0..255, mean subtracted
    return x[..., ::-1] - _CAFFE_MEAN_BGR
  raise ValueError(f"config key data.normalize: unknown {mode!r}; "
                   f"choose one of {NORMALIZATIONS}")


def denormalize(x: np.ndarray, mode: str) -> np.ndarray:
  """Inverse of `normalize`, back to uint8 RGB (for sample grids)."""
  x = np.asarray(x, np.float32)
  if mode == "imagenet":
    x = (x * _IMAGENET_STD + _IMAGENET_MEAN) * 255.0
  elif mode == "unit":
    x = (x + 1.0) * 127.5
  else:
    x = (x + _CAFFE_MEAN_BGR)[..., ::-1]
  return np.clip(np.round(x), 0, 255).astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class Augment:
  flip: bool = True
  rotate_deg: float = 0.0
  scale_jitter: float = 0.0     # random crop of (1 - u * jitter) of the side
  color_jitter: float = 0.0     # brightness/contrast/saturation factor range


@dataclasses.dataclass(frozen=True)
class Preprocess:
  """Record -> {'image': f32 [S,S,3], labels..., 'mask': 1.0}.

  `crop_fraction` keeps the central square fraction of the shorter side
  (the face region of an aligned crop with margin); 1.0 keeps it all.
  """
  image_size: int
  normalize: str = "imagenet"
  crop_fraction: float = 1.0
  augment: Augment | None = None
  seed: int = 0
  skip_bad: bool = False
  label_keys: tuple[str, ...] = ("age",)

  def _pil(self, record: dict) -> Image.Image:
    if "image" in record:
      return Image.fromarray(np.asarray(record["image"], np.uint8))
    return images.load_image(record["image_path"], record.get("where"))

  def _crop_box(self, w: int, h: int, rng) -> tuple[float, ...]:
    side = min(w, h) * self.crop_fraction
    cx, cy = w / 2, h / 2
    aug = self.augment
    if rng is not None and aug and aug.scale_jitter:
      side *= 1.0 - rng.uniform(0, aug.scale_jitter)
      slack = min(w, h) * self.crop_fraction - side
      cx += rng.uniform(-slack, slack) / 2
      cy += rng.uniform(-slack, slack) / 2
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)

  def placeholder(self, record: dict) -> dict:
    """A masked-out example standing in for an unreadable one.

    Keeps batch shapes static (no recompilation) and the data order intact;
    `mask=0` removes it from losses and metrics.
    """
    out = {"image": np.zeros((self.image_size, self.image_size, 3),
                             np.float32), "mask": np.float32(0.0)}
    for key in self.label_keys:
      out[key] = np.zeros_like(np.asarray(record[key]))
    return out

  def __call__(self, item: tuple[int, dict]) -> dict:
    position, record = item
    rng = (np.random.default_rng([self.seed, position])
           if self.augment is not None else None)
    try:
      im = self._pil(record)
    except DataError as e:
      if self.skip_bad:
        logging.warning("skipping bad record: %s", e)
        return self.placeholder(record)
      raise
    aug = self.augment
    im = im.resize((self.image_size,) * 2, Image.BILINEAR,
                   box=self._crop_box(*im.size, rng), reducing_gap=None)
    # Augment at the output size: 4x fewer pixels than at 128 px source.
    if rng is not None and aug.rotate_deg:
      im = im.rotate(rng.uniform(-aug.rotate_deg, aug.rotate_deg),
                     resample=Image.BILINEAR)
    if rng is not None and aug.color_jitter:
      for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast,
                      ImageEnhance.Color):
        im = enhance(im).enhance(
            1.0 + rng.uniform(-aug.color_jitter, aug.color_jitter))
    image = np.asarray(im, np.uint8)
    if rng is not None and aug.flip and rng.random() < 0.5:
      image = image[:, ::-1]
    out = {"image": normalize(image, self.normalize),
           "mask": np.float32(1.0)}
    for key in self.label_keys:
      out[key] = np.asarray(record[key])
    return out
