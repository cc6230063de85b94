"""Helpers and fixtures shared by tests/unit/test_swinface.py and
tests/e2e/test_swinface.py."""

import os
import numpy as np
from facejax import config_lib
from helpers import ROOT


CONFIG = os.path.join(ROOT, "configs", "swinface.py")


ONE = (("data", 1), ("fsdp", 1), ("model", 1))


def _config(arg="smoke", **overrides):
  return config_lib.load_config(f"{CONFIG}:{arg}", overrides)


def _official_state_dict(embed, depths, heads, window, res0, fam_split,
                         fam, emb, hidden, rng):
  """Keys and shapes as documented for the released SwinFace checkpoint."""
  sd = {}
  r = lambda *s: rng.normal(size=s).astype(np.float32)
  b = "state_dict_backbone."
  sd[b + "patch_embed.proj.weight"] = r(embed, 3, 2, 2)
  sd[b + "patch_embed.proj.bias"] = r(embed)
  for k in ("weight", "bias"):
    sd[b + "patch_embed.norm." + k] = r(embed)
  res = res0
  for s, (depth, h) in enumerate(zip(depths, heads)):
    c = embed * 2**s
    w = min(window, res)
    for i in range(depth):
      t = f"{b}layers.{s}.blocks.{i}."
      for n in ("norm1", "norm2"):
        sd[t + n + ".weight"], sd[t + n + ".bias"] = r(c), r(c)
      sd[t + "attn.relative_position_bias_table"] = r((2 * w - 1)**2, h)
      sd[t + "attn.relative_position_index"] = np.zeros((w * w,) * 2,
                                                         np.int64)
      sd[t + "attn.qkv.weight"], sd[t + "attn.qkv.bias"] = r(3 * c, c), r(
          3 * c)
      sd[t + "attn.proj.weight"], sd[t + "attn.proj.bias"] = r(c, c), r(c)
      sd[t + "mlp.fc1.weight"], sd[t + "mlp.fc1.bias"] = r(4 * c, c), r(4 * c)
      sd[t + "mlp.fc2.weight"], sd[t + "mlp.fc2.bias"] = r(c, 4 * c), r(c)
      if i % 2 and res > window:
        sd[t + "attn_mask"] = r((res // w)**2, w * w, w * w)
    if s < len(depths) - 1:
      t = f"{b}layers.{s}.downsample."
      sd[t + "reduction.weight"] = r(2 * c, 4 * c)
      sd[t + "norm.weight"], sd[t + "norm.bias"] = r(4 * c), r(4 * c)
      res //= 2
  cl = embed * 2**(len(depths) - 1)
  sd[b + "norm.weight"], sd[b + "norm.bias"] = r(cl), r(cl)
  sd[b + "head.weight"], sd[b + "head.bias"] = r(emb, cl), r(emb)
  sd[b + "feature.0.weight"] = r(cl, cl)
  sd[b + "feature.2.weight"] = r(emb, cl)
  for i, n in (("1", cl), ("3", emb)):
    for k in ("weight", "bias", "running_mean"):
      sd[f"{b}feature.{i}.{k}"] = r(n)
    sd[f"{b}feature.{i}.running_var"] = np.abs(r(n)) + 0.5
    sd[f"{b}feature.{i}.num_batches_tracked"] = np.zeros((), np.int64)
  dims = [embed * 2**(i + 1) for i in range(3)] + [cl]
  for i in range(11):
    f = f"state_dict_fam.nets.{i}."
    for lv, (o, d) in enumerate(zip(fam_split, dims)):
      sd[f"{f}conv.convs.{lv}.weight"] = r(o, d, 3, 3)
    sd[f + "channel_attention.mlp.1.weight"] = r(fam // 16, fam)
    sd[f + "channel_attention.mlp.1.bias"] = r(fam // 16)
    sd[f + "channel_attention.mlp.3.weight"] = r(fam, fam // 16)
    sd[f + "channel_attention.mlp.3.bias"] = r(fam)
    for k in ("weight", "bias", "running_mean"):
      sd[f + "norm." + k] = r(fam)
    sd[f + "norm.running_var"] = np.abs(r(fam)) + 0.5
    t = f"state_dict_tss.nets.{i}.feature."
    sd[t + "0.weight"], sd[t + "0.bias"] = r(hidden, fam), r(hidden)
    sd[t + "3.weight"], sd[t + "3.bias"] = r(hidden, hidden), r(hidden)
  sizes = [1 if j == 1 else 7 if j == 3 else 2 for j in range(42)]
  for j, k in enumerate(sizes):
    sd[f"state_dict_om.output_fcs.{j}.weight"] = r(k, hidden)
    sd[f"state_dict_om.output_fcs.{j}.bias"] = r(k)
  return sd
