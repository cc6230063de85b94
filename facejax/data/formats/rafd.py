"""RaFD (Radboud Faces Database) as released: labels in flat file names.

  Rafd<angle>_<subject>_<ethnicity>_<gender>_<expression>_<gaze>.jpg
  e.g. Rafd090_01_Caucasian_female_angry_frontal.jpg

angle: camera 000 / 045 / 090 / 135 / 180 (090 frontal); subject: two
digits (67 people, numbered up to 73); ethnicity: Caucasian, Moroccan,
Kid; gender: male, female; expression: the 8 below (alphabetical, as
StarGAN's ImageFolder orders its class folders); gaze: frontal, left,
right. StarGAN's 4,824 images are 67 people x 8 expressions x 3 gazes x 3
cameras: the three frontal-facing cameras 045 / 090 / 135, the default
here. The release has no split: test people are a seeded share (StarGAN's
RaFD.md asks for 90% / 10%), so nobody is on both sides.
"""

import dataclasses
import os
import re
from typing import Sequence

from facejax.data.formats import base
from facejax.data.sources import DataError

EXPRESSIONS = ("angry", "contemptuous", "disgusted", "fearful", "happy",
               "neutral", "sad", "surprised")
GAZES = ("frontal", "left", "right")
DEFAULT_CAMERAS = (45, 90, 135)
_NAME = re.compile(r"^Rafd(\d{3})_(\d+)_([A-Za-z]+)_(male|female)_"
                   r"([a-z]+)_(frontal|left|right)$")


@dataclasses.dataclass(frozen=True)
class RafdImage:
  path: str
  camera: int
  subject: str
  ethnicity: str
  gender: str
  expression: str
  gaze: str


def parse_name(path: str):
  """The labels of a released RaFD file name, or None if not one."""
  m = _NAME.match(os.path.splitext(os.path.basename(path))[0])
  if not m or m.group(5) not in EXPRESSIONS:
    return None
  return RafdImage(path, int(m.group(1)), m.group(2), m.group(3),
                   m.group(4), m.group(5), m.group(6))


def is_release(root: str) -> bool:
  """True when `root` holds released RaFD names (not class folders)."""
  if not os.path.isdir(root):
    return False
  return any(n.startswith("Rafd") and base.is_image(n)
             for n in os.listdir(root))


def scan(root: str, cameras: Sequence[int] = DEFAULT_CAMERAS,
         key: str = "data") -> tuple[list[RafdImage], dict]:
  """(images of the chosen cameras, {reason: count} of the others)."""
  images, skipped = [], {}
  for name in base.list_images(root):
    item = parse_name(os.path.join(root, name))
    if item is None:
      reason = "names not Rafd<angle>_<id>_<ethnicity>_<gender>_<expression>"
      skipped[reason] = skipped.get(reason, 0) + 1
      continue
    if item.camera not in cameras:
      reason = f"cameras other than {tuple(cameras)} ({key}.cameras)"
      skipped[reason] = skipped.get(reason, 0) + 1
      continue
    images.append(item)
  if not images:
    raise DataError(f"{root}: no RaFD images of cameras {tuple(cameras)} "
                    "named Rafd<angle>_<id>_<ethnicity>_<gender>_"
                    f"<expression>_<gaze>.jpg (config key {key}.root)")
  return images, skipped


def split_of(images: Sequence[RafdImage], split: str, test_fraction: float,
             seed: int) -> list[RafdImage]:
  """The images of `split` ('train' | 'test'), split by person."""
  subjects = [im.subject for im in images]
  assigned = base.seeded_split(subjects, (1 - test_fraction, 0.0,
                                          test_fraction), seed)
  return [im for im, s in zip(images, assigned) if s == split]
