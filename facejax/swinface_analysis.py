"""SwinFace predictions for face photos (used by launch.analyze).

Kept out of launch/ so that it can be imported without launch.analyze's
absl flags (two launch modules in one process would define --detect twice).
"""

import os

import jax
import numpy as np

from facejax import parallel
from facejax.data import sources
from facejax.data import transforms
from facejax.models import swinface


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def analyze(setup, state, paths, npy_dir: str = "", detector=None
            ) -> list[dict]:
  """One dict of predictions per readable image (errors as 'error')."""
  task = setup.task
  pre = task.preprocess(train=False).base
  classes = task.expression_classes()
  rows = []
  if npy_dir:
    os.makedirs(npy_dir, exist_ok=True)
  for path in paths:
    try:
      image = np.asarray(transforms.load_image(path))
    except sources.DataError as e:
      rows.append({"path": path, "error": str(e)})
      continue
    if detector is not None:
      crop, _ = detector.detect_and_crop(image, margin=0.4)
      image = image if crop is None else crop
    x = pre((0, {"image": image}))["image"]
    images = np.repeat(x[None], jax.local_device_count(), 0)
    images = parallel.shard_batch({"image": images}, setup.mesh)["image"]
    out = jax.tree.map(lambda a: np.asarray(a)[0],
                       jax.device_get(setup.predict(state, images)))
    row = {"path": path, "age": float(out["Age"]),
           "expression": classes[int(np.argmax(out["Expression"]))],
           "gender": "male" if _softmax(out["Gender"])[1] > 0.5
                     else "female",
           "attributes": {n: float(_softmax(out[n])[1])
                          for n in swinface.BINARY_TASKS if n != "Gender"}}
    if npy_dir:
      np.save(os.path.join(npy_dir, os.path.basename(path) + ".npy"),
              out["embedding"].astype(np.float32))
    rows.append(row)
  return rows
