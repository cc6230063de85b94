"""SwinFace predictions for face crops (used by launch.analyze).

Kept out of launch/ so that it can be imported without launch.analyze's
absl flags.
"""

import os
from typing import Iterable, Iterator

import jax
import numpy as np

from facejax import mesh as mesh_lib
from facejax.data.faces import photos
from facejax.models import swinface


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def analyze(setup, state, batches: Iterable[list[photos.FaceCrop]],
            npy_dir: str = "", names: dict | None = None) -> Iterator[dict]:
  """One row of predictions per face (problems as rows with 'error').

  With `npy_dir`, each face's L2-normalised recognition embedding goes to
  `<npy_dir>/<name>.face<k>.npy`, `name` from `names` (path -> distinct
  name; `photos.unique_names`) or else the file's base name.
  """
  task = setup.task
  pre = task.preprocess(train=False).base
  classes = task.expression_classes()
  if npy_dir:
    os.makedirs(npy_dir, exist_ok=True)
  for batch in batches:
    outputs = {}
    for group in photos.groups_by_shape(batch):
      x = np.stack([pre((0, {"image": batch[i].crop}))["image"]
                    for i in group])
      out = jax.device_get(setup.predict(
          state, mesh_lib.shard_images(x, setup.mesh)))
      for k, i in enumerate(group):
        outputs[i] = jax.tree.map(lambda a, k=k: np.asarray(a)[k], out)
    for i, face in enumerate(batch):
      if i not in outputs:
        yield face.row()
        continue
      out = outputs[i]
      yield face.row(
          age=round(float(out["Age"]), 2),
          expression=classes[int(np.argmax(out["Expression"]))],
          gender=("male" if _softmax(out["Gender"])[1] > 0.5 else "female"),
          attributes={n: round(float(_softmax(out[n])[1]), 4)
                      for n in swinface.BINARY_TASKS if n != "Gender"})
      if npy_dir:
        name = (names or {}).get(face.path, os.path.basename(face.path))
        np.save(os.path.join(npy_dir, f"{name}.face{face.face}.npy"),
                out["embedding"].astype(np.float32))
