"""ImageNet backbones from PyTorch weights: torchvision/timm ResNet, VGG.

  sd = torch_pickle.read_state_dict("resnet34-b627a593.pth")
  variables = resnet_from_torch(sd, variables, prefix="backbone", head=None)

or in one call, as the training loop does for `config.model.init_from`:

  variables = load_pretrained(path, variables, "resnet34")

The VGG fc6 input stays in PyTorch's channel-major (C, H, W) flatten order
because `facejax.models.vgg` flattens that way too.
"""

import os
import re
from typing import Mapping, Optional

import numpy as np

from facejax.convert import mapping
from facejax.convert import torch_pickle

__all__ = ["resnet_from_torch", "vgg_from_torch", "load_pretrained"]


# ResNet.

_RESNET_BLOCK = re.compile(r"^layer(\d+)_(\d+)$")
_RESNET_RENAMES = {"downsample_conv": "downsample.0",
                   "downsample_bn": "downsample.1"}


def _resnet_module_to_torch(name: str) -> str:
  m = _RESNET_BLOCK.match(name)
  if m:
    return f"layer{m.group(1)}.{m.group(2)}"
  return _RESNET_RENAMES.get(name, name)


def resnet_from_torch(state_dict: Mapping[str, np.ndarray], variables, *,
                      prefix: Optional[str] = "backbone",
                      head: Optional[str] = "head",
                      head_key: str = "fc",
                      strict: bool = True,
                      source: Optional[str] = None,
                      head_affine: Optional[tuple[float, float]] = None):
  """Maps a torchvision/timm ResNet state dict onto facejax variables.

  `conv1.weight`, `bn1.*`, `layer{i}.{j}.conv{1,2}.weight`,
  `layer{i}.{j}.bn{1,2}.*`, `layer{i}.{j}.downsample.{0,1}.*` go to
  `params|batch_stats/<prefix>/{conv1, bn1, layer{i}_{j}/...,
  layer{i}_{j}/downsample_conv, downsample_bn}`; `fc` goes to the Dense
  `head` only when its shape fits (an ImageNet 1000-way fc does not fit a
  1-unit age head and is skipped with an info log).

  Args:
    state_dict: {torch key: array}, e.g. from `read_state_dict`.
    variables: the model's flax variables ({'params', 'batch_stats'}); leaves
      may be arrays or `jax.ShapeDtypeStruct`s (from `jax.eval_shape`).
    prefix: the ResNet submodule name inside the model ('backbone' in
      AgeRegressor); None when `variables` belong to a bare ResNet.
    head: name of the Dense head to fill from `fc`, or None to ignore `fc`.
    head_key: torch name of the classifier ('fc' in torchvision and timm).
    strict: raise when a backbone variable is missing or has the wrong shape,
      or when the state dict has keys that map nowhere (`num_batches_tracked`
      is always ignored). With False, log them and keep initial values.
    source: file name for messages (default: `state_dict.source`).

  Returns:
    New nested variables; imported leaves are numpy arrays in the leaf's
    dtype, all other leaves are passed through unchanged.

  Raises:
    ValueError: in strict mode, listing missing and unexpected keys and
      shape mismatches.
  """
  return mapping.import_variables(
      state_dict, variables, prefix=prefix,
      module_to_torch=_resnet_module_to_torch, head=head, head_key=head_key,
      optional_torch=lambda k: False, strict=strict, source=source,
      arch="ResNet", head_affine=head_affine)


# VGG (DEX / Caffe-converted naming; torchvision naming is translated).

VGG_CONV = re.compile(r"^conv(\d+)_(\d+)$")
_VGG_FC = ("fc6", "fc7")


def _torchvision_vgg_to_dex(state_dict: Mapping[str, np.ndarray],
                            conv_names: list[str]) -> torch_pickle.StateDict:
  """Renames torchvision `features.N` / `classifier.N` keys to DEX names."""
  feats = sorted({int(k.split(".")[1]) for k in state_dict
                  if k.startswith("features.")})
  if len(feats) != len(conv_names):
    raise ValueError(f"torchvision VGG state dict has {len(feats)} convs, "
                     f"the facejax VGG has {len(conv_names)}.")
  rename = {f"features.{i}": name for i, name in zip(feats, conv_names)}
  rename.update({"classifier.0": "fc6", "classifier.3": "fc7",
                 "classifier.6": "fc8"})
  out = torch_pickle.StateDict(source=getattr(state_dict, "source", None))
  for key, value in state_dict.items():
    module, _, param = key.rpartition(".")
    out[f"{rename.get(module, module)}.{param}"] = value
  return out


def vgg_from_torch(state_dict: Mapping[str, np.ndarray], variables, *,
                   prefix: Optional[str] = "backbone",
                   head: Optional[str] = None,
                   head_key: Optional[str] = None,
                   strict: bool = True,
                   source: Optional[str] = None):
  """Maps a DEX (Caffe-converted) VGG-16 state dict onto facejax variables.

  Keys `conv{1_1..5_3}.{weight,bias}` go to `params/<prefix>/conv*_*/
  {kernel,bias}` (OIHW -> HWIO); `fc6`, `fc7` (`(out, in)` -> `(in, out)`)
  go to the Dense layers of a VGG built with `include_fc=True`, keeping
  PyTorch's channel-major fc6 input order, which `facejax.models.vgg`
  reproduces. A conv-only VGG (`include_fc=False`, the AgeRegressor
  backbone) ignores fc6/fc7. `fc8_101` (DEX's 101-way age classifier) goes to
  the Dense `head` if given and its shape fits. torchvision's `features.N` /
  `classifier.N` keys are renamed to these names first.

  Args:
    state_dict: {torch key: array}.
    variables: flax variables of a model containing a facejax VGG.
    prefix: the VGG submodule name; None for a bare VGG.
    head: Dense layer to fill from the classifier, or None.
    head_key: torch name of the classifier; default 'fc8_101' if present,
      else 'fc8'.
    strict: as in `resnet_from_torch`.
    source: file name for messages.

  Returns:
    New nested variables.
  """
  start = 2 if prefix else 1  # index of the layer name in a flat path
  flat_names = {p[start] for p in mapping.flatten(variables)
                if len(p) > start + 1 and (not prefix or p[1] == prefix)}
  has_fc = any(n in _VGG_FC for n in flat_names)
  if any(k.startswith("features.") for k in state_dict):
    convs = sorted((n for n in flat_names if VGG_CONV.match(n)),
                   key=lambda n: tuple(map(int, VGG_CONV.match(n).groups())))
    state_dict = _torchvision_vgg_to_dex(state_dict, convs)
  if head_key is None:
    head_key = "fc8_101" if "fc8_101.weight" in state_dict else "fc8"

  def optional(key: str) -> bool:
    # fc6/fc7 only exist in facejax when include_fc=True.
    return not has_fc and key.split(".")[0] in _VGG_FC

  return mapping.import_variables(
      state_dict, variables, prefix=prefix, module_to_torch=lambda name: name,
      head=head, head_key=head_key, optional_torch=optional, strict=strict,
      source=source, arch="VGG")


def _family(arch: str) -> Optional[str]:
  """'resnet' | 'vgg' | None for an arch or AgeRegressor backbone name."""
  for family in ("resnet", "vgg"):
    if arch.startswith(family):
      return family
  # Backbone names such as 'tiny' (the tiny ResNet) name no family.
  # pylint: disable-next=g-import-not-at-top
  from facejax.models import age_regressor
  module = age_regressor.BACKBONES.get(arch)
  name = getattr(module, "__name__", "").rsplit(".", 1)[-1]
  return name if name in ("resnet", "vgg") else None


def load_pretrained(path: "str | os.PathLike[str]", variables, arch: str,
                    **kwargs):
  """Reads `path` and imports it into `variables` for `config.model.init_from`.

  Args:
    path: weights file (see `read_state_dict`).
    variables: the model's flax variables.
    arch: 'resnet' or 'vgg', or an AgeRegressor backbone name
      (`config.model.backbone`: 'resnet34', 'tiny', 'vgg16', 'vgg_tiny').
    **kwargs: passed to `resnet_from_torch` / `vgg_from_torch` (prefix, head,
      strict, ...).

  Returns:
    New nested variables.
  """
  family = _family(arch)
  if family == "resnet":
    importer = resnet_from_torch
  elif family == "vgg":
    importer = vgg_from_torch
  else:
    raise ValueError(f"load_pretrained: no PyTorch importer for arch {arch!r}"
                     "; supported: 'resnet', 'vgg' and the AgeRegressor "
                     "backbones built from them ('resnet34', 'tiny', "
                     "'vgg16', 'vgg_tiny', ...).")
  state_dict = torch_pickle.read_state_dict(path)
  kwargs.setdefault("source", os.fspath(path))
  return importer(state_dict, variables, **kwargs)
