"""Mapping PyTorch state-dict keys onto facejax (flax Linen) variables.

The generic part of the ImageNet and DEX importers: walk the facejax leaves
under a prefix, name each one's torch key, convert the layout (conv kernels
OIHW -> HWIO, linear weights (out, in) -> (in, out)), check shapes and
report what is missing, mismatched or unexpected. Only numpy is needed at
import time; flax is imported lazily.
"""

from typing import Any, Callable, Mapping, Optional

from absl import logging
import numpy as np

# Running-statistic counters PyTorch stores next to BatchNorm stats.
IGNORED_SUFFIXES = (".num_batches_tracked",)
MAX_LISTED = 8  # keys listed per category in a strict-mode error


def flatten(variables) -> dict[tuple[str, ...], Any]:
  """{(collection, module, ..., leaf): value} of nested flax variables."""
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  from flax.core import frozen_dict  # pylint: disable=g-import-not-at-top
  return traverse_util.flatten_dict(frozen_dict.unfreeze(variables))


def unflatten(flat):
  """The inverse of `flatten`."""
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  return traverse_util.unflatten_dict(flat)


def shape_dtype(leaf) -> tuple[tuple[int, ...], np.dtype]:
  """Works for numpy/jax arrays and jax.ShapeDtypeStruct leaves."""
  return tuple(leaf.shape), np.dtype(leaf.dtype)


# facejax leaf name -> (torch parameter name, is a BatchNorm statistic)
_LEAF_TO_TORCH = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}


def to_flax_layout(torch_value: np.ndarray, leaf_name: str) -> np.ndarray:
  """Torch layout -> flax layout for one tensor."""
  if leaf_name == "kernel":
    if torch_value.ndim == 4:  # conv OIHW -> HWIO
      return np.transpose(torch_value, (2, 3, 1, 0))
    if torch_value.ndim == 2:  # linear (out, in) -> (in, out)
      return np.transpose(torch_value)
  return torch_value


def import_variables(state_dict: Mapping[str, np.ndarray], variables, *,
                     prefix: Optional[str],
                     module_to_torch: Callable[[str], str],
                     head: Optional[str], head_key: Optional[str],
                     optional_torch: Callable[[str], bool], strict: bool,
                     source: Optional[str], arch: str,
                     head_affine: Optional[tuple[float, float]] = None):
  """Walks the facejax leaves under `prefix` and fills them from torch keys.

  Args:
    state_dict: {torch key: array}.
    variables: flax variables (arrays or `jax.ShapeDtypeStruct`s).
    prefix: the submodule to fill; None for a bare model.
    module_to_torch: facejax module name -> torch module name.
    head: the Dense head to fill from `head_key` if it fits, or None.
    head_key: the torch name of the classifier.
    optional_torch: torch keys that may stay unused without an error.
    strict: raise on missing, mismatched or unexpected keys (else log).
    source: file name for messages (default: `state_dict.source`).
    arch: the architecture's name for messages.
    head_affine: see `_import_head`.

  Returns:
    New nested variables.
  """
  source = source or getattr(state_dict, "source", None)
  where = f" from {source}" if source else ""
  flat = flatten(variables)
  new_flat = dict(flat)
  used: set[str] = set()
  missing, mismatched = [], []
  n_backbone = 0

  def torch_key(path: tuple[str, ...], start: int,
                name_fn: Callable[[str], str]) -> Optional[str]:
    collection, modules, leaf = path[0], path[start:-1], path[-1]
    param = _LEAF_TO_TORCH.get((collection, leaf))
    if param is None or not modules:
      return None
    return ".".join(name_fn(m) for m in modules) + "." + param

  def in_backbone(path: tuple[str, ...]) -> bool:
    if prefix:
      return len(path) >= 3 and path[1] == prefix
    return head is None or path[1] != head

  for path, leaf in flat.items():
    if not in_backbone(path):
      continue
    n_backbone += 1
    fj_name = "/".join(path)
    key = torch_key(path, 2 if prefix else 1, module_to_torch)
    if key is None or key not in state_dict:
      missing.append(f"{fj_name} <- {key or '?'}")
      continue
    used.add(key)
    value = to_flax_layout(state_dict[key], path[-1])
    shape, dtype = shape_dtype(leaf)
    if tuple(value.shape) != shape:
      mismatched.append(f"{key} {tuple(state_dict[key].shape)} -> "
                        f"{fj_name} {shape}")
      continue
    new_flat[path] = value.astype(dtype)

  if n_backbone == 0:
    raise ValueError(
        f"{arch} import{where}: no variables under prefix {prefix!r}; "
        f"top-level names are {sorted({p[1] for p in flat if len(p) > 1})}.")

  head_done = False
  if head is not None and head_key is not None:
    head_done = _import_head(state_dict, flat, new_flat, head, head_key,
                             head_affine,
                             used, where)

  unexpected = [k for k in state_dict
                if k not in used and not k.endswith(IGNORED_SUFFIXES)
                and not (head_key and k.split(".")[0] == head_key)
                and not optional_torch(k)]
  problems = []
  if missing:
    problems.append(listing("missing in the state dict", missing))
  if mismatched:
    problems.append(listing("shape mismatch", mismatched))
  if unexpected:
    problems.append(listing("unexpected in the state dict", unexpected))
  if problems:
    msg = (f"{arch} import{where} into {prefix or 'the model'!r}: "
           + "; ".join(problems))
    if strict:
      raise ValueError(msg)
    logging.warning("%s (strict=False: kept the initial values)", msg)
  logging.info("%s import%s: %d of %d variables under %r%s.", arch, where,
               n_backbone - len(missing) - len(mismatched), n_backbone,
               prefix, f" and head {head!r}" if head_done else "")
  return unflatten(new_flat)


def _import_head(state_dict, flat, new_flat, head, head_key, head_affine,
                 used, where) -> bool:
  """Copies `head_key.{weight,bias}` into Dense `head` if shapes fit.

  `head_affine` (scale, shift): the facejax model computes
  head(x) * scale + shift (the age regressor's age_scale / age_shift) while
  the torch head predicts the value itself; the imported weights are
  divided through so that the model's output equals the torch head's.
  """
  w_key, b_key = f"{head_key}.weight", f"{head_key}.bias"
  k_path, b_path = ("params", head, "kernel"), ("params", head, "bias")
  if k_path not in flat:
    raise ValueError(f"head {head!r} not found in the variables (no "
                     f"params/{head}/kernel).")
  if w_key not in state_dict:
    logging.info("No %r in the state dict%s; head %r keeps its "
                 "initialisation.", w_key, where, head)
    return False
  kernel = to_flax_layout(state_dict[w_key], "kernel")
  k_shape, k_dtype = shape_dtype(flat[k_path])
  has_bias = b_path in flat
  fits = kernel.shape == k_shape and (
      not has_bias or (b_key in state_dict and
                       state_dict[b_key].shape == shape_dtype(
                           flat[b_path])[0]))
  if not fits:
    logging.warning("Ignored %r %s%s: it does not fit head %r %s; the head "
                    "keeps its initialisation.", w_key,
                    tuple(state_dict[w_key].shape), where, head, k_shape)
    return False
  bias = state_dict[b_key] if has_bias else None
  if head_affine is not None:
    scale, shift = head_affine
    kernel = kernel / scale
    if bias is not None:
      bias = (bias - shift) / scale
    logging.warning("Imported %r%s as the model's output itself: divided "
                    "through by age_scale %g after subtracting age_shift %g.",
                    head_key, where, scale, shift)
  new_flat[k_path] = kernel.astype(k_dtype)
  used.add(w_key)
  if has_bias:
    new_flat[b_path] = bias.astype(shape_dtype(flat[b_path])[1])
    used.add(b_key)
  return True


def listing(title: str, items: list[str]) -> str:
  """'N title: a, b, ... (k more)' for an error message."""
  shown = ", ".join(items[:MAX_LISTED])
  more = f", ... ({len(items) - MAX_LISTED} more)" if len(
      items) > MAX_LISTED else ""
  return f"{len(items)} {title}: {shown}{more}"
