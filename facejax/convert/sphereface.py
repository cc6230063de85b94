"""sphereface_pytorch (`net_sphere.sphere20a`) weights -> facejax SphereFace.

Key mapping (shared/reference/caricature.md section 4):
  conv{s}_{i}.weight [O, I, 3, 3] -> trunk/conv{s}_{i}/kernel [3, 3, I, O]
  conv{s}_{i}.bias                -> trunk/conv{s}_{i}/bias
  relu{s}_{i}.weight [C]          -> trunk/relu{s}_{i}/alpha
  fc5.weight [512, C*H*W]         -> trunk/fc5/kernel [H*W*C, 512]: the
      PyTorch flatten order is (C, H, W), facejax's (H, W, C)
  fc5.bias                        -> trunk/fc5/bias
  fc6.weight [512, classes]       -> fc6/kernel, as is: AngleLinear stores
      its weight (in, out), transposed relative to nn.Linear
fc6 is optional (the frozen identity net only needs fc5), and skipped
when its class count differs from the model's (fine-tuning on other
identities starts a new head).
"""

from typing import Any, Mapping

from absl import logging
import numpy as np
from flax import traverse_util

from facejax.convert import torch_pickle


def _flat(tree, prefix=()):
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(_flat(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = v
  return out


def last_map(input_size: tuple[int, int]) -> tuple[int, int]:
  """(h, w) of the last feature map: four stride-2 pad-1 3x3 convs."""
  h, w = input_size
  for _ in range(4):
    h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
  return h, w


def convert(state_dict: Mapping[str, np.ndarray], params: Any,
            input_size: tuple[int, int], source: str = "state dict"
            ) -> tuple[Any, list[str]]:
  """(new params, skipped keys); shapes checked against `params`.

  Args:
    state_dict: {sphereface_pytorch key: array}.
    params: the model's params ({'trunk': ..., 'fc6': ...}).
    input_size: the model's input (H, W) (fc5's flatten order).
    source: named in errors.

  Raises:
    ValueError: a needed key is missing or has the wrong shape (the
      message names the key, both shapes and `source`).
  """
  flat = _flat(params)
  new = dict(flat)
  used = set()
  h, w = last_map(input_size)
  for path, leaf in flat.items():
    shape = tuple(np.shape(leaf))
    if path[0] == "fc6":
      key = "fc6.weight"
      if key not in state_dict:
        continue
      value = np.asarray(state_dict[key], np.float32)
      if value.shape != shape:
        continue  # another class count: keep the fresh head
    else:
      layer, name = path[-2], path[-1]
      if layer.startswith("relu"):
        key = f"{layer}.weight"
      else:
        key = f"{layer}.{'weight' if name == 'kernel' else 'bias'}"
      if key not in state_dict:
        raise ValueError(f"{source}: missing key {key!r} (needed for "
                         f"{'/'.join(path)})")
      value = np.asarray(state_dict[key], np.float32)
      if layer == "fc5" and name == "kernel":
        c = shape[0] // (h * w)
        if value.shape != (shape[1], c * h * w):
          raise ValueError(f"{source}: {key} has shape {value.shape}, "
                           f"expected {(shape[1], c * h * w)} (input "
                           f"{tuple(input_size)})")
        value = value.reshape(shape[1], c, h, w)
        value = value.transpose(2, 3, 1, 0).reshape(shape)
      elif name == "kernel":
        value = value.transpose(2, 3, 1, 0)
      if value.shape != shape:
        raise ValueError(f"{source}: {key} has shape {value.shape}, "
                         f"expected {shape} after conversion")
    new[path] = value
    used.add(key)
  skipped = sorted(set(state_dict) - used)
  return traverse_util.unflatten_dict(new), skipped


def load(path: str, params: Any, input_size: tuple[int, int]) -> Any:
  """Params with the sphereface_pytorch weights of `path` filled in."""
  state_dict = torch_pickle.read_state_dict(path)
  new, skipped = convert(state_dict, params, input_size, path)
  if skipped:
    logging.warning("%s: %d entries not used (not SphereFace weights of "
                    "this model): %s", path, len(skipped), skipped[:8])
  return new
