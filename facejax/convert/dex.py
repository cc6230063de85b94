"""The official DEX weights (Caffe-converted VGG-16 + fc8_101) for facejax.

`dex_from_torch` maps the state dict onto `facejax.models.vgg.DEX`;
`dex_geometry` reads the VGG's shape and input size off the file, so the
frozen age estimator can build the model the file describes.
"""

import os
from typing import Any, Mapping, Optional

import numpy as np

from facejax.convert import imagenet
from facejax.convert import mapping
from facejax.convert import torch_pickle

__all__ = ["DEX_HEAD_KEY", "dex_from_torch", "load_dex", "dex_geometry"]

DEX_HEAD_KEY = "fc8_101"


def dex_from_torch(state_dict: Mapping[str, np.ndarray], variables, *,
                   strict: bool = True, source: Optional[str] = None):
  """Maps the official DEX state dict onto `facejax.models.vgg.DEX` variables.

  The Caffe-converted file (`dex_imdb_wiki.caffemodel.pt`) has keys
  `conv1_1..conv5_3`, `fc6`, `fc7` and `fc8-101` (or `fc8_101`; '-' is
  replaced by '_' as the reference does). `fc6` keeps PyTorch's (C, H, W)
  input order: `facejax.models.vgg` flattens channel-major too, so no
  permutation is needed. Unlike `vgg_from_torch`, a missing or misfitting
  `fc8_101` is an error: DEX without its age head is not DEX.

  Args:
    state_dict: {torch key: array}.
    variables: variables (or `jax.eval_shape` structs) of a `vgg.DEX`.
    strict: as in `resnet_from_torch` (the head is always required).
    source: file name for messages.

  Returns:
    New nested variables.
  """
  source = source or getattr(state_dict, "source", None)
  renamed = torch_pickle.StateDict(
      {k.replace("-", "_"): v for k, v in state_dict.items()}, source=source)
  w_key = f"{DEX_HEAD_KEY}.weight"
  where = f"{source}: " if source else ""
  if w_key not in renamed:
    raise ValueError(f"{where}not a DEX state dict: no {w_key!r} (the 101-way "
                     f"age classifier); keys start "
                     f"{sorted(renamed)[:mapping.MAX_LISTED]}")
  head_shape = mapping.shape_dtype(
      mapping.flatten(variables)[("params", "head", "kernel")])[0]
  got = mapping.to_flax_layout(renamed[w_key], "kernel").shape
  if got != head_shape:
    raise ValueError(f"{where}{w_key} has shape {renamed[w_key].shape}; the "
                     f"model's head needs {head_shape[::-1]}")
  return imagenet.vgg_from_torch(
      renamed, variables, prefix="backbone", head="head",
      head_key=DEX_HEAD_KEY, strict=strict, source=source)


def load_dex(path: "str | os.PathLike[str]", variables, **kwargs):
  """Reads the official DEX weights file and imports it (see dex_from_torch)."""
  state_dict = torch_pickle.read_state_dict(path)
  kwargs.setdefault("source", os.fspath(path))
  return dex_from_torch(state_dict, variables, **kwargs)


def dex_geometry(state_dict: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """The VGG shape a DEX state dict describes (the release: VGG-16, 224 px).

  Returns:
    {'block_sizes', 'channels', 'fc_width', 'num_ages', 'image_size'}: the
    `facejax.models.vgg.VGG` fields, the head width and the input size
    implied by fc6's input width (C * s * s, s = image_size / 2**blocks).

  Raises:
    ValueError: the keys are not DEX's.
  """
  source = getattr(state_dict, "source", None)
  where = f"{source}: " if source else ""
  sd = {k.replace("-", "_"): v for k, v in state_dict.items()}
  blocks: dict[int, list[tuple[int, int]]] = {}
  for key, value in sd.items():
    m = imagenet.VGG_CONV.match(key.rsplit(".", 1)[0])
    if m and key.endswith(".weight"):
      b, i = map(int, m.groups())
      blocks.setdefault(b, []).append((i, int(value.shape[0])))
  needed = ("fc6.weight", "fc7.weight", f"{DEX_HEAD_KEY}.weight")
  absent = [k for k in needed if k not in sd]
  if not blocks or absent or sorted(blocks) != list(range(1, len(blocks) + 1)):
    raise ValueError(f"{where}not a DEX state dict (conv1_1..conv5_3, fc6, "
                     f"fc7, fc8_101); missing {absent or 'conv blocks'}")
  block_sizes = tuple(len(blocks[b]) for b in sorted(blocks))
  channels = tuple(max(blocks[b])[1] for b in sorted(blocks))
  fc6_in = int(sd["fc6.weight"].shape[1])
  side = int(round((fc6_in / channels[-1]) ** 0.5))
  if side * side * channels[-1] != fc6_in:
    raise ValueError(f"{where}fc6 input width {fc6_in} is not "
                     f"{channels[-1]} x s x s")
  return {"block_sizes": block_sizes, "channels": channels,
          "fc_width": int(sd["fc7.weight"].shape[0]),
          "num_ages": int(sd[f"{DEX_HEAD_KEY}.weight"].shape[0]),
          "image_size": side * 2 ** len(block_sizes)}
