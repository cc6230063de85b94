"""CACD2000 (Cross-Age Celebrity Dataset): 163,446 images of 2,000 people.

  CACD2000/<age>_<First>_<Last>_<NNNN>.jpg      e.g. 14_Aaron_Johnson_0001.jpg
  celebrity2000_meta.mat                        (optional; v5, scipy)

With the metadata file (`celebrityImageData`: age, identity, year, rank,
lfw, birth, name per image) the labels come from it and the split is the
release's protocol: celebrities of rank 1-2 are validation, rank 3-5 test
(the manually cleaned ones), the rest train. Without it, ages and people
come from the file names and the split is seeded by person. data.root is
the CACD2000 folder or the folder holding it (and the .mat).
"""

import os
import re

import numpy as np
import scipy.io

from facejax.data import sources
from facejax.data.formats import base

NAME = "cacd2000"
EXPECTED = ("CACD2000/<age>_<First>_<Last>_<NNNN>.jpg [+ "
            "celebrity2000_meta.mat]")
META_FILES = ("celebrity2000_meta.mat", "celebrity2000.mat")
_NAME = re.compile(r"^(\d{1,3})_(.*[A-Za-z].*)_(\d{4})$")


def parse_name(file_name: str):
  """(age, person) of a CACD2000 file name, or None if it is not one.

  The person part must hold a letter: UTKFace's 25_0_1_2017....jpg is not
  a CACD name.
  """
  m = _NAME.match(os.path.splitext(file_name)[0])
  if not m:
    return None
  return int(m.group(1)), m.group(2)


def rank_split(rank: int) -> str:
  if rank <= 2:
    return "valid"
  return "test" if rank <= 5 else "train"


def _image_dir(root: str) -> str:
  inner = os.path.join(root, "CACD2000")
  return inner if os.path.isdir(inner) else root


def _meta(root: str, image_dir: str):
  for top in dict.fromkeys((root, os.path.dirname(image_dir))):
    for name in META_FILES:
      path = os.path.join(top, name)
      if os.path.isfile(path):
        return path
  return None


def _read_meta(path: str) -> dict:
  try:
    mat = scipy.io.loadmat(path)
  except NotImplementedError:
    raise sources.DataError(
        f"{path}: MATLAB v7.3 (the 4.4 GB celebrity2000.mat with LBP "
        "features); put celebrity2000_meta.mat (817 KB, the same labels, "
        "scipy-readable) beside CACD2000/ instead") from None
  except Exception as e:  # scipy raises several types for a bad file
    raise sources.DataError(f"{path}: not a readable MATLAB file "
                            f"({type(e).__name__}: {e})") from None
  if "celebrityImageData" not in mat:
    raise sources.DataError(f"{path}: no variable 'celebrityImageData'")
  s = mat["celebrityImageData"][0, 0]
  need = ("age", "identity", "rank", "name")
  missing = [k for k in need if k not in s.dtype.names]
  if missing:
    raise sources.DataError(f"{path}: celebrityImageData lacks {missing}")
  names = [str(np.ravel(x)[0]) if np.ravel(x).size else ""
           for x in np.ravel(s["name"])]
  return {"name": names,
          "age": np.ravel(s["age"]).astype(np.float64),
          "identity": np.ravel(s["identity"]).astype(np.int64),
          "rank": np.ravel(s["rank"]).astype(np.int64)}


def read(root: str, cfg) -> base.AgeListing:
  del cfg
  base.require_dir(root, NAME, EXPECTED)
  image_dir = _image_dir(root)
  out = base.ListingBuilder(NAME, root)
  meta_path = _meta(root, image_dir)
  if meta_path:
    out.label_files.append(meta_path)
    m = _read_meta(meta_path)
    n = len(m["name"])
    if {len(m["age"]), len(m["identity"]), len(m["rank"])} != {n}:
      raise sources.DataError(f"{meta_path}: celebrityImageData fields "
                              "differ in length")
    for i in range(n):
      out.add(os.path.join(image_dir, m["name"][i]), float(m["age"][i]),
              f"{meta_path}[celebrityImageData][{i}] {m['name'][i]}",
              identity=str(int(m["identity"][i])),
              split=rank_split(int(m["rank"][i])))
    return out.build(EXPECTED, notes="labels and rank split from "
                     + os.path.basename(meta_path))
  for name in base.list_images(image_dir):
    parsed = parse_name(name)
    if parsed is None:
      out.skip("names not <age>_<Name>_<NNNN>.jpg", name)
      continue
    age, person = parsed
    out.add(os.path.join(image_dir, name), float(age), name, identity=person)
  return out.build(EXPECTED, notes="labels from file names")
