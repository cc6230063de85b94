"""insightface's verification sets: lfw.bin, cfp_fp.bin, agedb_30.bin, ...

Each .bin is a pickle of `(bins, issame_list)`: 2N encoded images (JPEG or
PNG bytes, 112 x 112 aligned faces; pairs are images 2i and 2i + 1) and N
booleans, True where the pair shows one person. They ship beside the
MS1MV2 / Glint360K RecordIO files (faces_emore/, glint360k/).

The pickle is read by an unpickler that builds only lists, tuples, bytes,
booleans and numpy byte arrays: a .bin can carry no code.
"""

import io
import os
import pickle

import numpy as np
from PIL import Image

from facejax.data import images as images_lib
from facejax.data.sources import DataError

_ALLOWED = {("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"),
            # Python 3 writes bytes as _codecs.encode(str, 'latin1') in
            # protocol 2, the protocol of Python 2's (the .bins' era).
            ("_codecs", "encode")}


class _SafeUnpickler(pickle.Unpickler):

  def find_class(self, module, name):
    if (module, name) in _ALLOWED:
      return super().find_class(module, name)
    raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in "
                                 "a verification .bin")


def read_bin(path: str) -> tuple[np.ndarray, np.ndarray]:
  """(images uint8 [2N, H, W, 3], issame bool [N]) of a verification .bin."""
  if not os.path.isfile(path):
    raise DataError(f"{path}: verification .bin not found")
  try:
    with open(path, "rb") as f:
      bins, issame = _SafeUnpickler(f, encoding="bytes").load()
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
    raise DataError(f"{path}: not an insightface verification .bin (a "
                    f"pickled (images, issame) pair): {e}") from None
  issame = np.asarray(issame, bool)
  if len(bins) != 2 * len(issame):
    raise DataError(f"{path}: {len(bins)} images for {len(issame)} pairs "
                    "(expected two images a pair)")
  images = []
  for i, data in enumerate(bins):
    raw = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    try:
      with Image.open(io.BytesIO(raw)) as im:
        images.append(np.asarray(images_lib.to_rgb(im)))
    except Exception as e:  # PIL raises many types for bad bytes
      raise DataError(f"{path}: image {i} cannot be decoded "
                      f"({type(e).__name__}: {e})") from None
  shapes = {im.shape for im in images}
  if len(shapes) != 1:
    raise DataError(f"{path}: images of several sizes {sorted(shapes)}")
  return np.stack(images), issame
