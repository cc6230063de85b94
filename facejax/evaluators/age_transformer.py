"""Age-transformer pictures: a grid of faces edited to target ages
(launch.age_transformer). Its evaluation numbers are the task's report."""

import jax
import numpy as np

from facejax import mesh as mesh_lib
from facejax.data.faces import photos


def load_faces(crops, preprocess, warn) -> tuple[np.ndarray, list[str]]:
  """Every face as the task's preprocess yields it, and its row label;
  `warn(message)` is told about photos without a usable face."""
  faces, labels = photos.labelled_faces(crops, warn)
  if not faces:
    raise ValueError("no face to edit in " + ", ".join(crops.paths[:5]))
  images = [preprocess((0, {"image": f.crop, "age": np.float32(0)}))["image"]
            for f in faces]
  return np.stack(images), labels


def edit_grid(setup, state, images: np.ndarray, ages: list[float],
              histogram: bool, batch_size: int = 16
              ) -> list[list[np.ndarray]]:
  """Rows [input, edit at ages[0], ...] of RGB in [0, 1], `batch_size`
  faces at a time (a folder of hundreds of faces fits in memory)."""
  fn = setup.task.edit_fn(histogram)
  devices = jax.device_count()
  # Every chunk padded to one size (a multiple of the device count, as the
  # batch is sharded): one compiled program for the whole folder.
  per = -(-min(batch_size, len(images)) // devices) * devices
  rows = [[(im + 1.0) * 0.5] for im in images]
  for start in range(0, len(images), per):
    chunk = images[start:start + per]
    padded = np.concatenate([chunk, np.repeat(chunk[-1:],
                                               per - len(chunk), 0)])
    x = mesh_lib.shard_batch({"image": padded}, setup.mesh)["image"]
    for age in ages:
      t = mesh_lib.shard_batch({"t": np.full((per,), age, np.float32)},
                               setup.mesh)["t"]
      out = np.asarray(jax.device_get(fn(state, x, t)))
      for i in range(len(chunk)):
        rows[start + i].append(out[i])
  return rows
