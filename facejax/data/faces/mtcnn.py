"""The MTCNN cascade on photos: boxes, scores and five landmarks per face.

The networks are `facejax.models.mtcnn`; their weights are the ones every
MTCNN port carries, read from the `mtcnn` pip package (MIT), where they lie
as NumPy arrays, so nothing is downloaded and TensorFlow is not needed.

The cascade follows the paper: an image pyramid (scale 12 / min face size,
then x0.709 while the short side keeps 12 px) scored by P-Net, greedy
non-maximum suppression within and across scales, box regression and
squaring, then R-Net on 24x24 and O-Net on 48x48 crops of the survivors.
Work is batched across all images given to `detect`: pyramid levels are
zero-padded to a few bucket sizes (P-Net is told each level's true size, so
the scores are those of the unpadded level), and every image's crops go
through R-Net and O-Net together, in batches padded to powers of two, so a
folder of photos compiles a handful of shapes, not one per photo.

Coordinates are pixels with (0, 0) the top-left corner of the top-left
pixel; a box is (x0, y0, x1, y1) with x1, y1 exclusive.
"""

import dataclasses
import functools
import importlib.util
import io
import math
import os
from typing import Optional, Sequence

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from facejax.data import images as images_lib
from facejax.models import mtcnn as nets

_PACKAGE_HINT = "pip install mtcnn==1.0.0 (MIT; weights only, no TensorFlow)"


@dataclasses.dataclass(frozen=True)
class Face:
  """One detected face.

  box: (x0, y0, x1, y1) float pixels, x1/y1 exclusive.
  score: the last stage's face probability.
  landmarks: [5, 2] (x, y) of left eye, right eye, nose, left and right
    mouth corner as seen in the image; None from detectors without them.
  """
  box: np.ndarray
  score: float
  landmarks: Optional[np.ndarray] = None


# --- Weights -------------------------------------------------------------

# Order of the arrays in the package's files: (module, param) per array.
# Conv layers carry kernel, bias and then their PReLU's slopes; the heads
# come box offsets first, then landmarks (O-Net), then class scores.
def _conv(i):
  return [(f"conv{i}", "kernel"), (f"conv{i}", "bias"), (f"prelu{i}", "alpha")]


_ORDER = {
    "pnet": _conv(1) + _conv(2) + _conv(3) + [
        ("conv4_2", "kernel"), ("conv4_2", "bias"),
        ("conv4_1", "kernel"), ("conv4_1", "bias")],
    "rnet": _conv(1) + _conv(2) + _conv(3) + [
        ("dense4", "kernel"), ("dense4", "bias"), ("prelu4", "alpha"),
        ("dense5_2", "kernel"), ("dense5_2", "bias"),
        ("dense5_1", "kernel"), ("dense5_1", "bias")],
    "onet": _conv(1) + _conv(2) + _conv(3) + _conv(4) + [
        ("dense5", "kernel"), ("dense5", "bias"), ("prelu5", "alpha"),
        ("dense6_2", "kernel"), ("dense6_2", "bias"),
        ("dense6_3", "kernel"), ("dense6_3", "bias"),
        ("dense6_1", "kernel"), ("dense6_1", "bias")],
}
_MODULES = {"pnet": (nets.PNet, 12), "rnet": (nets.RNet, 24),
            "onet": (nets.ONet, 48)}


def weights_dir() -> str:
  """The folder of the installed `mtcnn` package's weight files."""
  spec = importlib.util.find_spec("mtcnn")  # Locates without importing it.
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        f"The MTCNN detector's weights come from the mtcnn package: "
        f"{_PACKAGE_HINT}. Or use --detector=haar.")
  return os.path.join(spec.submodule_search_locations[0], "assets", "weights")


def _read_joblib_arrays(path: str) -> list:
  """Reads a joblib+lz4 file of NumPy arrays, unpickling nothing else."""
  import joblib.numpy_pickle as jnp_pickle  # pylint: disable=g-import-not-at-top
  import lz4.frame  # pylint: disable=g-import-not-at-top

  allowed = {("joblib.numpy_pickle", "NumpyArrayWrapper"),
             ("numpy", "ndarray"), ("numpy", "dtype"),
             ("numpy.core.multiarray", "_reconstruct"),
             ("numpy._core.multiarray", "_reconstruct")}

  class ArraysOnly(jnp_pickle.NumpyUnpickler):

    def find_class(self, module, name):
      if (module, name) not in allowed:
        raise ValueError(f"{path}: holds {module}.{name}; expected only "
                         "NumPy arrays")
      return super().find_class(module, name)

  with open(path, "rb") as f:
    stream = io.BytesIO(lz4.frame.decompress(f.read()))
  try:  # joblib >= 1.5 asks whether to byte-swap to native order.
    unpickler = ArraysOnly(path, stream, ensure_native_byte_order=True)
  except TypeError:
    unpickler = ArraysOnly(path, stream)
  arrays = unpickler.load()
  if not isinstance(arrays, list):
    raise ValueError(f"{path}: expected a list of arrays, got "
                     f"{type(arrays).__name__}")
  return arrays


def load_params(name: str, folder: Optional[str] = None) -> dict:
  """One network's Flax params from the package file `<name>.lz4`."""
  path = os.path.join(folder or weights_dir(), f"{name}.lz4")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: MTCNN weights missing ({_PACKAGE_HINT})")
  arrays = _read_joblib_arrays(path)
  module, size = _MODULES[name]
  shapes = jax.eval_shape(module().init, jax.random.PRNGKey(0),
                          jnp.zeros((1, size, size, 3)))["params"]
  order = _ORDER[name]
  if len(arrays) != len(order):
    raise ValueError(f"{path}: {len(arrays)} arrays, expected {len(order)} "
                     f"for {name}")
  params = {}
  for (layer, key), array in zip(order, arrays):
    want = shapes[layer][key].shape
    array = np.asarray(array, np.float32)
    if array.size != math.prod(want) or (array.ndim > 1 and array.shape !=
                                         want and key != "alpha"):
      raise ValueError(f"{path}: {layer}.{key} has shape {array.shape}, "
                       f"expected {want}")
    params.setdefault(layer, {})[key] = array.reshape(want)
  return {"params": params}


# --- Jitted networks -----------------------------------------------------


@jax.jit
def _run_pnet(params, x, valid_hw):
  return nets.PNet().apply(params, x, valid_hw)


@jax.jit
def _run_rnet(params, x):
  return nets.RNet().apply(params, x)


@jax.jit
def _run_onet(params, x):
  return nets.ONet().apply(params, x)


def _normalize(pixels: np.ndarray) -> np.ndarray:
  return (pixels.astype(np.float32) - 127.5) * 0.0078125


def _bucket(n: int) -> int:
  """Rounds a side up to one of a few sizes (even, about 19% apart)."""
  if n <= 64:
    return max(16, -(-n // 16) * 16)
  step = 2 ** (math.ceil(4 * math.log2(n / 64)) / 4) * 64
  return int(-(-math.ceil(step) // 16) * 16)


def _pow2(n: int) -> int:
  return 1 << max(0, (n - 1).bit_length())


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float,
        mode: str = "union") -> np.ndarray:
  """Greedy non-maximum suppression; returns kept indices, best first.

  mode 'union' divides the overlap by the union (IoU), 'min' by the smaller
  box's area (MTCNN's last stage, which drops a face box inside another).
  """
  order = np.argsort(-scores, kind="stable")
  area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
  keep = []
  while order.size:
    i, rest = order[0], order[1:]
    keep.append(i)
    w = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2])
                - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None)
    h = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3])
                - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None)
    inter = w * h
    if mode == "min":
      overlap = inter / np.maximum(np.minimum(area[i], area[rest]), 1e-9)
    else:
      overlap = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
    order = rest[overlap <= threshold]
  return np.asarray(keep, np.int64)


def _regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
  """Moves each edge by its offset times the box's width or height."""
  wh = np.concatenate([boxes[:, 2:4] - boxes[:, 0:2]] * 2, axis=1)
  return boxes + offsets * wh


def _square(boxes: np.ndarray) -> np.ndarray:
  """Grows each box to a square on its longer side, about its centre."""
  centre = (boxes[:, 0:2] + boxes[:, 2:4]) / 2
  half = np.max(boxes[:, 2:4] - boxes[:, 0:2], axis=1, keepdims=True) / 2
  return np.concatenate([centre - half, centre + half], axis=1)


def _crops(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
  """Integer-pixel crops of `boxes` (zero outside the image) at size x size."""
  h, w = image.shape[:2]
  out = np.empty((len(boxes), size, size, 3), np.uint8)
  for k, (x0, y0, x1, y1) in enumerate(boxes.astype(np.int64)):
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
    patch = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if sx1 > sx0 and sy1 > sy0:
      patch[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
    out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
  return out


class MTCNN:
  """Finds faces with MTCNN: `detect(images)` -> a list of `Face` per image.

  Args:
    min_face_size: smallest face side searched for, in pixels.
    thresholds: face-probability cut of P-Net, R-Net and O-Net.
    scale_factor: pyramid step.
    max_batch: the largest batch sent to R-Net and O-Net at once.
    weights: folder of pnet/rnet/onet.lz4 (default: the mtcnn package's).
  """

  def __init__(self, min_face_size: float = 20.0,
               thresholds: Sequence[float] = (0.6, 0.7, 0.7),
               scale_factor: float = 0.709, max_batch: int = 256,
               weights: Optional[str] = None):
    if min_face_size < 12:
      raise ValueError(f"min_face_size must be >= 12, got {min_face_size}")
    if not 0 < scale_factor < 1:
      raise ValueError(f"scale_factor must be in (0, 1), got {scale_factor}")
    self.min_face_size = float(min_face_size)
    self.thresholds = tuple(float(t) for t in thresholds)
    self.scale_factor = float(scale_factor)
    self.max_batch = int(max_batch)
    self._params = {name: load_params(name, weights) for name in _MODULES}

  def _scales(self, h: int, w: int) -> list[float]:
    scale = 12.0 / self.min_face_size
    scales = []
    while min(h, w) * scale >= 12:
      scales.append(scale)
      scale *= self.scale_factor
    return scales

  def _stage1(self, images: list[np.ndarray]) -> list[np.ndarray]:
    """P-Net over every image's pyramid: candidate boxes [N, 5] per image."""
    levels = {}  # bucket shape -> [(image index, scale, level pixels)]
    for i, image in enumerate(images):
      h, w = image.shape[:2]
      for scale in self._scales(h, w):
        hs, ws = math.ceil(h * scale), math.ceil(w * scale)
        level = cv2.resize(image, (ws, hs), interpolation=cv2.INTER_AREA)
        levels.setdefault((_bucket(hs), _bucket(ws)), []).append(
            (i, scale, level))
    found = [[] for _ in images]
    for (bh, bw), group in levels.items():
      # About 4 M pixels per call bounds the memory of a batch.
      per_call = max(1, min(len(group), 4_000_000 // (bh * bw)))
      for start in range(0, len(group), per_call):
        chunk = group[start:start + per_call]
        batch = np.zeros((_pow2(len(chunk)), bh, bw, 3), np.float32)
        valid = np.full((len(batch), 2), 12, np.int32)
        for k, (_, _, level) in enumerate(chunk):
          batch[k, :level.shape[0], :level.shape[1]] = _normalize(level)
          valid[k] = level.shape[:2]
        prob, offsets = jax.device_get(
            _run_pnet(self._params["pnet"], batch, valid))
        for k, (i, scale, level) in enumerate(chunk):
          found[i].append(self._cells_to_boxes(
              prob[k], offsets[k], level.shape[:2], scale))
    out = []
    for boxes in found:
      boxes = np.concatenate(boxes) if boxes else np.zeros((0, 9), np.float32)
      if len(boxes):
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
        boxes = _square(_regress(boxes[:, :4], boxes[:, 5:9]))
        boxes = np.concatenate([boxes, np.zeros((len(boxes), 1))], axis=1)
      out.append(boxes[:, :5])
    return out

  def _cells_to_boxes(self, prob, offsets, level_hw, scale) -> np.ndarray:
    """Boxes of the level's cells above threshold: [N, 9] box, score, offs."""
    # Cells of the unpadded level: conv 3x3, ceil pool 2, two convs 3x3.
    oh, ow = (math.ceil((n - 2) / 2) - 4 for n in level_hw)
    prob, offsets = prob[:oh, :ow], offsets[:oh, :ow]
    ys, xs = np.nonzero(prob > self.thresholds[0])
    if not len(ys):
      return np.zeros((0, 9), np.float32)
    corner = np.stack([xs, ys], axis=1) * 2.0
    boxes = np.concatenate([corner / scale, (corner + 12.0) / scale], axis=1)
    rows = np.concatenate(
        [boxes, prob[ys, xs, None], offsets[ys, xs]], axis=1)
    return rows[nms(rows[:, :4], rows[:, 4], 0.5)]

  def _refine(self, images, candidates, net: str, size: int, threshold):
    """R-Net or O-Net on crops of every image's candidates, in batches."""
    crops, owner, boxes = [], [], []
    for i, (image, cand) in enumerate(zip(images, candidates)):
      rounded = np.round(cand[:, :4])
      crops.append(_crops(image, rounded, size))
      owner += [i] * len(cand)
      boxes.append(rounded)
    if not owner:
      return ([np.zeros((0, 5))] * len(images),
              [np.zeros((0, 5, 2))] * len(images))
    crops, boxes = np.concatenate(crops), np.concatenate(boxes)
    outputs = []
    for start in range(0, len(crops), self.max_batch):
      chunk = crops[start:start + self.max_batch]
      batch = np.zeros((_pow2(len(chunk)), size, size, 3), np.float32)
      batch[:len(chunk)] = _normalize(chunk)
      run = _run_rnet if net == "rnet" else _run_onet
      result = jax.device_get(run(self._params[net], batch))
      outputs.append([r[:len(chunk)] for r in result])
    prob, offsets, *rest = (np.concatenate(parts) for parts in zip(*outputs))
    owner = np.asarray(owner)
    kept, marks = [], []
    for i in range(len(images)):
      sel = np.nonzero((owner == i) & (prob > threshold))[0]
      b = boxes[sel]
      if net == "onet":
        wh = b[:, 2:4] - b[:, 0:2]
        points = rest[0][sel]
        marks_i = np.stack([b[:, None, 0] + points[:, :5] * wh[:, None, 0],
                            b[:, None, 1] + points[:, 5:] * wh[:, None, 1]],
                           axis=-1)
        b = _regress(b, offsets[sel])
        keep = nms(b, prob[sel], 0.7, mode="min")
        kept.append(np.concatenate([b, prob[sel, None]], axis=1)[keep])
        marks.append(marks_i[keep])
      else:
        keep = nms(b, prob[sel], 0.7)
        b = _square(_regress(b[keep], offsets[sel][keep]))
        kept.append(np.concatenate([b, prob[sel][keep, None]], axis=1))
        marks.append(None)
    return kept, marks

  def detect(self, images: Sequence[np.ndarray]) -> list[list[Face]]:
    """Faces in each uint8 RGB [H, W, 3] image, most confident first."""
    images = [np.ascontiguousarray(images_lib.as_rgb_uint8(im))
              for im in images]
    candidates = self._stage1(images)
    candidates, _ = self._refine(images, candidates, "rnet", 24,
                                 self.thresholds[1])
    final, marks = self._refine(images, candidates, "onet", 48,
                                self.thresholds[2])
    return [[Face(box=row[:4].astype(np.float32), score=float(row[4]),
                  landmarks=points.astype(np.float32))
             for row, points in zip(rows, pts)]
            for rows, pts in zip(final, marks)]


@functools.lru_cache(maxsize=4)
def default_detector(min_face_size: float = 20.0) -> MTCNN:
  """A shared detector (weights read once per process)."""
  return MTCNN(min_face_size=min_face_size)
