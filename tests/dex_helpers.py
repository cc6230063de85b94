"""Helpers and fixtures shared by tests/unit/test_dex.py and
tests/e2e/test_dex.py."""

import os
import numpy as np
from facejax import config_lib


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# A small DEX-format VGG: two convs in some blocks (conv{b}_2 names), a
# 2x2 final map at 64 px so the fc6 flatten order matters.
GEO = {"block_sizes": (2, 1, 2, 1, 1), "channels": (4, 8, 8, 16, 16),
       "fc_width": 24, "num_ages": 101, "image_size": 64}


def _config(data_root="", **overrides):
  overrides = {"data.root": data_root, **overrides} if data_root else \
      overrides
  return config_lib.load_config(os.path.join(ROOT, "configs", "dex.py:smoke"),
                                overrides)


def _dex_state_dict(geo, seed=0, dash=True) -> dict[str, np.ndarray]:
  """Random weights under the documented DEX names, PyTorch layouts."""
  rng = np.random.default_rng(seed)
  sd, c_in = {}, 3
  for b, (n, c) in enumerate(zip(geo["block_sizes"], geo["channels"])):
    for i in range(n):
      std = np.sqrt(2.0 / (9 * c_in))
      sd[f"conv{b + 1}_{i + 1}.weight"] = (
          rng.normal(0, std, (c, c_in, 3, 3)).astype(np.float32))
      sd[f"conv{b + 1}_{i + 1}.bias"] = rng.normal(0, .1, c).astype(
          np.float32)
      c_in = c
  side = geo["image_size"] // 2**len(geo["block_sizes"])
  widths = [c_in * side * side, geo["fc_width"], geo["fc_width"],
            geo["num_ages"]]
  head = "fc8-101" if dash else "fc8_101"  # Caffe's name, or the renamed
  for name, (n_in, n_out) in zip(("fc6", "fc7", head),
                                 zip(widths[:-1], widths[1:])):
    sd[f"{name}.weight"] = rng.normal(0, np.sqrt(2.0 / n_in),
                                      (n_out, n_in)).astype(np.float32)
    sd[f"{name}.bias"] = rng.normal(0, .1, n_out).astype(np.float32)
  return sd


def _numpy_dex(sd, x_nchw) -> np.ndarray:
  """Reference forward in PyTorch's NCHW layout: logits [B, 101]."""
  x = x_nchw.astype(np.float64)
  convs = sorted({k.rsplit(".", 1)[0] for k in sd if k.startswith("conv")},
                 key=lambda k: tuple(map(int, k[4:].split("_"))))
  for block in sorted({k.split("_")[0] for k in convs}):
    for name in [k for k in convs if k.split("_")[0] == block]:
      w, b = sd[f"{name}.weight"], sd[f"{name}.bias"]
      xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
      h, wd = x.shape[2:]
      out = sum(np.einsum("bchw,oc->bohw", xp[:, :, dy:dy + h, dx:dx + wd],
                          w[:, :, dy, dx])
                for dy in range(3) for dx in range(3))
      x = np.maximum(out + b[None, :, None, None], 0)
    bsz, c, h, wd = x.shape
    x = x.reshape(bsz, c, h // 2, 2, wd // 2, 2).max(axis=(3, 5))
  x = x.reshape(x.shape[0], -1)  # C-major, as torch's x.view(B, -1)
  for name in ("fc6", "fc7"):
    x = np.maximum(x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"], 0)
  head = "fc8-101" if "fc8-101.weight" in sd else "fc8_101"
  return x @ sd[f"{head}.weight"].T + sd[f"{head}.bias"]


def _save_state_dict(sd, path) -> str:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    import safetensors.numpy  # pylint: disable=g-import-not-at-top
    path = path.replace(".pth", ".safetensors")
    safetensors.numpy.save_file(sd, path)
    return path
  torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, path)
  return path
