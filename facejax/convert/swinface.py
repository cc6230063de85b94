"""Importer for the official SwinFace PyTorch checkpoint (lxq1000/SwinFace).

The released `checkpoint_step_79999_gpu_0.pt` holds `state_dict_backbone`,
`state_dict_fam`, `state_dict_tss`, `state_dict_om` (plus the Partial-FC
classifier and optimizer state, not used here); `read_state_dict` flattens
it to 'state_dict_backbone.layers.0.blocks.0.attn.qkv.weight', ... A bare
backbone state dict (no prefixes) loads the backbone and recognition only.

Layout changes: Linear (out, in) -> kernel (in, out); Conv (O, I, kh, kw)
-> (kh, kw, I, O); the eleven FAM/TSS branches are stacked on axis 0
(`branches/...`); output head j goes to columns HEAD_SLOTS[j] of its
branch's `om` layer. Buffers recomputed here (relative_position_index,
attn_mask) and the unused `head` are skipped.
"""

import re
from typing import Any, Mapping

from absl import logging
import numpy as np

from facejax.models import swinface

PREFIXES = ("state_dict_backbone.", "state_dict_fam.", "state_dict_tss.",
            "state_dict_om.")
_SKIP = re.compile(r"(relative_position_index|attn_mask|num_batches_tracked"
                   r"|^head\.)")


def _linear(w):
  return np.asarray(w).T


def _conv(w):
  return np.asarray(w).transpose(2, 3, 1, 0)


def _entries(variables) -> list[tuple[str, str, tuple, Any, Any]]:
  """(torch key, collection, path, index or None, transform) to fill."""
  p = variables["params"]
  out = []
  ident = np.asarray

  def norm(tkey, path, stats=False):
    out.append((f"{tkey}.weight", "params", path + ("scale",), None, ident))
    out.append((f"{tkey}.bias", "params", path + ("bias",), None, ident))
    if stats:
      out.append((f"{tkey}.running_mean", "batch_stats", path + ("mean",),
                  None, ident))
      out.append((f"{tkey}.running_var", "batch_stats", path + ("var",),
                  None, ident))

  def dense(tkey, path, bias=True, index=None):
    out.append((f"{tkey}.weight", "params", path + ("kernel",), index,
                _linear))
    if bias:
      out.append((f"{tkey}.bias", "params", path + ("bias",), index, ident))

  b = "state_dict_backbone."
  sw = ("swin",)
  out.append((f"{b}patch_embed.proj.weight", "params",
              sw + ("patch_embed_proj", "kernel"), None, _conv))
  out.append((f"{b}patch_embed.proj.bias", "params",
              sw + ("patch_embed_proj", "bias"), None, ident))
  norm(f"{b}patch_embed.norm", sw + ("patch_embed_norm",))
  for name in p["swin"]:
    m = re.fullmatch(r"layers_(\d+)_blocks_(\d+)", name)
    if m:
      t = f"{b}layers.{m[1]}.blocks.{m[2]}."
      q = sw + (name,)
      norm(t + "norm1", q + ("norm1",))
      norm(t + "norm2", q + ("norm2",))
      out.append((t + "attn.relative_position_bias_table", "params",
                   q + ("attn", "relative_position_bias_table"), None, ident))
      dense(t + "attn.qkv", q + ("attn", "qkv"))
      dense(t + "attn.proj", q + ("attn", "proj"))
      dense(t + "mlp.fc1", q + ("mlp", "fc1"))
      dense(t + "mlp.fc2", q + ("mlp", "fc2"))
    m = re.fullmatch(r"layers_(\d+)_downsample", name)
    if m:
      t = f"{b}layers.{m[1]}.downsample."
      norm(t + "norm", sw + (name, "norm"))
      dense(t + "reduction", sw + (name, "reduction"), bias=False)
  norm(f"{b}norm", sw + ("norm",))
  rec = ("recognition",)
  dense(f"{b}feature.0", rec + ("feature_0",), bias=False)
  norm(f"{b}feature.1", rec + ("feature_1",), stats=True)
  dense(f"{b}feature.2", rec + ("feature_2",), bias=False)
  norm(f"{b}feature.3", rec + ("feature_3",), stats=True)
  if "branches" not in p:
    return out
  br = ("branches",)
  for i in range(len(swinface.BRANCHES)):
    f = f"state_dict_fam.nets.{i}."
    for lv in range(4):
      out.append((f"{f}conv.convs.{lv}.weight", "params",
                  br + (f"conv_{lv}", "kernel"), i, _conv))
    dense(f + "channel_attention.mlp.1",
          br + ("channel_attention", "mlp_1"), index=i)
    dense(f + "channel_attention.mlp.3",
          br + ("channel_attention", "mlp_3"), index=i)
    for tk, fk, coll in (("weight", "scale", "params"),
                         ("bias", "bias", "params"),
                         ("running_mean", "mean", "batch_stats"),
                         ("running_var", "var", "batch_stats")):
      out.append((f"{f}norm.{tk}", coll, br + ("norm", fk), i, ident))
    t = f"state_dict_tss.nets.{i}.feature."
    dense(t + "0", br + ("tss_0",), index=i)
    dense(t + "3", br + ("tss_3",), index=i)
  for j, (_, bi, first, k) in enumerate(swinface.HEAD_SLOTS):
    t = f"state_dict_om.output_fcs.{j}."
    cols = slice(first, first + k)
    out.append((t + "weight", "params", br + ("om", "kernel"),
                (bi, slice(None), cols), _linear))
    out.append((t + "bias", "params", br + ("om", "bias"), (bi, cols),
                ident))
  return out


def _get(tree, path):
  for k in path:
    tree = tree[k]
  return tree


def _set(tree, path, value):
  for k in path[:-1]:
    tree = tree[k]
  tree[path[-1]] = value


def convert(state_dict: Mapping[str, np.ndarray], variables: dict
            ) -> dict:
  """Variables {'params', 'batch_stats'} of `swinface.SwinFace` filled from
  a SwinFace state dict (keys with or without the `state_dict_*.` prefix
  for a backbone-only dict). Raises ValueError naming missing keys or
  shape mismatches."""
  source = getattr(state_dict, "source", "state dict")
  sd = dict(state_dict)
  if not any(k.startswith(PREFIXES) for k in sd):
    sd = {"state_dict_backbone." + k: v for k, v in sd.items()}
  has_heads = any(k.startswith("state_dict_fam.") for k in sd)
  new = {c: _copy(variables.get(c, {})) for c in ("params", "batch_stats")}
  if not has_heads:
    new["params"].pop("branches", None)
  missing, bad, used = [], [], set()
  for tkey, coll, path, index, fn in _entries(new):
    if tkey not in sd:
      missing.append(tkey)
      continue
    used.add(tkey)
    value = fn(sd[tkey]).astype(np.float32)
    target = _get(new[coll], path)
    want = target[index].shape if index is not None else target.shape
    if value.shape != want:
      bad.append(f"{tkey}: {value.shape} vs {want}")
      continue
    if index is None:
      _set(new[coll], path, value)
    else:
      target[index] = value
  if missing or bad:
    raise ValueError(f"{source}: not a SwinFace checkpoint for this model "
                     f"(model.swin.*): missing {missing[:8]} "
                     f"({len(missing)} in all); shape mismatches {bad[:8]}")
  unused = [k for k in sd if k not in used and not (
      k.startswith(PREFIXES) and _SKIP.search(k.split(".", 1)[1]))]
  if unused:
    logging.warning("%s: %d weights not used, e.g. %s", source, len(unused),
                    unused[:5])
  if not has_heads:
    new["params"]["branches"] = _copy(variables["params"]["branches"])
    logging.info("%s: backbone only; analysis branches keep their init",
                 source)
  return new


def _copy(tree):
  if isinstance(tree, Mapping):
    return {k: _copy(v) for k, v in tree.items()}
  return np.array(tree, np.float32, copy=True)


def load_checkpoint(path: str, variables: dict) -> dict:
  """`convert` of a SwinFace .pt/.safetensors file (torch not needed)."""
  from facejax.convert import torch_pickle  # pylint: disable=g-import-not-at-top
  return convert(torch_pickle.read_state_dict(path), variables)
