"""HRFAE's FFHQ labels: data/ffhq.npy beside the data/ffhq/ images.

`ffhq.npy` is an (N, 2) array of strings, [file name, age] per row (ages
estimated by the DEX IMDB-WIKI classifier). HRFAE's split: the first 95%
of rows train, the rest test (valid: a seeded share of train); its
20-69 range filter is the age transformer's data.balance.age_range.
data.root is the folder holding ffhq.npy and ffhq/.
"""

import os

import numpy as np

from facejax.data import sources
from facejax.data.formats import base

NAME = "hrfae_ffhq"
EXPECTED = "ffhq.npy ((N, 2) file name, age) with the images in ffhq/"
TRAIN_FRACTION = 0.95


def read(root: str, cfg) -> base.AgeListing:
  del cfg
  base.require_dir(root, NAME, EXPECTED)
  path = base.find_file(root, ("ffhq.npy",), NAME, EXPECTED)
  try:
    label = np.load(path, allow_pickle=False)
  except ValueError as e:
    raise sources.DataError(f"{path}: not HRFAE's label array ({e}); it "
                            "must be a plain (N, 2) array of strings") from None
  if label.ndim != 2 or label.shape[1] != 2:
    raise sources.DataError(f"{path}: shape {label.shape}, expected (N, 2) "
                            "rows of [file name, age]")
  images = os.path.join(root, "ffhq")
  if not os.path.isdir(images):
    images = root
  out = base.ListingBuilder(NAME, root)
  out.label_files.append(path)
  train_len = int(TRAIN_FRACTION * len(label))
  for i, (name, age) in enumerate(label):
    where = f"{path}[{i}]"
    try:
      age = float(age)
    except ValueError:
      raise sources.DataError(f"{where}: age {age!r} is not a number") from None
    out.add(os.path.join(images, str(name)), age, f"{where} {name}",
            split="train" if i < train_len else "test")
  return out.build(EXPECTED, notes="DEX-estimated ages")
