"""StarGAN pictures: one photo's faces translated to every target of every
data set (launch.stargan). Its evaluation numbers are the task's report."""

import jax
import numpy as np

from facejax.data import stargan as sets_lib
from facejax.data.faces import photos


def translate_faces(setup, state, crops, warn, dataset: int = 0,
                    crop_size: int = 0):
  """The grid (PIL image): one row per face of `crops`, labelled; `warn`
  is told about photos without a usable face."""
  task = setup.task
  layout = task.layout
  if not 0 <= dataset < layout.num_sets:
    raise ValueError(f"--dataset={dataset}: the run has "
                     f"{layout.num_sets} data set(s)")
  block = layout.blocks[dataset]
  values = 0 if block.format == "rafd" else np.zeros(block.size, np.float32)
  label = layout.encode(dataset, values)
  pre = sets_lib.FacePreprocess(setup.config.data.image_size)
  faces, labels = photos.labelled_faces(crops, warn)
  examples = [(dataset, pre((0, {"image": f.crop, "label": label,
                                 "dataset": dataset,
                                 "crop_size": crop_size})))
              for f in faces]
  if not examples:
    raise ValueError("no face to translate in " + ", ".join(crops.paths[:5]))
  return task.translation_grid(jax.device_get(state.gen), examples, labels)
