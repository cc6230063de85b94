"""RAF-DB basic (Real-world Affective Faces): 7 expressions, official split.

  basic/EmoLabel/list_patition_label.txt   `train_00001.jpg 5` per line
  basic/Image/aligned/train_00001_aligned.jpg   (100 x 100, the default)
  basic/Image/original/train_00001.jpg

Labels 1-7: surprise, fear, disgust, happiness, sadness, anger, neutral
(class index = label - 1, SwinFace's expression head). The split is the
file name's prefix (train_ / test_). data.root may be the `basic` folder
or the folder holding it. ('patition' is the release's own spelling.)
"""

import os

from facejax.data.sources import DataError
from facejax.data.sources import check_text_file

NAME = "raf_db"
CLASSES = ("surprise", "fear", "disgust", "happiness", "sadness", "anger",
           "neutral")
LABEL_FILE = os.path.join("EmoLabel", "list_patition_label.txt")
EXPECTED = ("basic/EmoLabel/list_patition_label.txt and "
            "basic/Image/aligned/*_aligned.jpg")


def release_dir(root: str):
  """The `basic` folder under root (or root itself), None if not RAF-DB."""
  for top in (root, os.path.join(root, "basic")):
    if os.path.isfile(os.path.join(top, LABEL_FILE)):
      return top
  return None


def read(root: str, split: str, aligned: bool = True,
         key: str = "data.expression") -> tuple[list[str], list[int], list]:
  """(image paths, class indices, label-file lines) of `split`."""
  top = release_dir(root)
  if top is None:
    raise DataError(f"{root}: no {LABEL_FILE} (config key {key}.root; "
                    f"RAF-DB basic expects {EXPECTED})")
  path = os.path.join(top, LABEL_FILE)
  check_text_file(path)
  prefix = "test_" if split in ("test", "valid", "val") else "train_"
  paths, labels, where = [], [], []
  with open(path, encoding="utf-8-sig") as f:
    for n, line in enumerate(f, start=1):
      parts = line.split()
      if not parts:
        continue
      if len(parts) != 2 or parts[1] not in "1234567" or len(parts[1]) != 1:
        raise DataError(f"{path}:{n}: expected '<name>.jpg <1-7>', got "
                        f"{line.strip()[:60]!r}")
      name = parts[0]
      if not name.startswith(prefix):
        continue
      stem, ext = os.path.splitext(name)
      image = (os.path.join(top, "Image", "aligned", f"{stem}_aligned{ext}")
               if aligned else os.path.join(top, "Image", "original", name))
      paths.append(image)
      labels.append(int(parts[1]) - 1)
      where.append(f"{path}:{n}")
  if not paths:
    raise DataError(f"{path}: no {prefix}* rows")
  missing = [i for i, p in enumerate(paths) if not os.path.isfile(p)]
  if missing:
    i = missing[0]
    raise DataError(f"{where[i]}: {len(missing)} image(s) not found, e.g. "
                    f"{paths[i]} (RAF-DB expects {EXPECTED})")
  return paths, labels, where
