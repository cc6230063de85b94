"""Import PyTorch-format state dicts into facejax (flax Linen) variables.

For users who hold ImageNet or official weights on disk; nothing is
downloaded. Two steps:

  sd = read_state_dict("resnet34-b627a593.pth")        # {key: np.ndarray}
  variables = resnet_from_torch(sd, variables, prefix="backbone", head=None)

or in one call, as the training loop does for `config.model.init_from`:

  variables = load_pretrained(path, variables, "resnet34")

Supported files: `.safetensors` (via safetensors.numpy) and PyTorch's zip
checkpoints `.pth/.pt/.bin/.pth.tar/.ckpt`. With torch installed those are read
by `torch.load(..., weights_only=True)`; without torch a small restricted
reader of the zip pickle format handles plain tensor state dicts, so core
users need no torch. Floating tensors come back as float32 and integer
tensors keep their dtype.

Layout conversions: conv kernels OIHW -> HWIO, linear weights (out, in) ->
(in, out). The VGG fc6 input stays in PyTorch's channel-major (C, H, W)
flatten order because `facejax.models.vgg` flattens that way too.

Only numpy is needed at import time; flax is imported lazily by the
mapping functions.
"""

import collections
import io
import json
import os
import pickle
import re
import zipfile
from typing import Any, Callable, Mapping, Optional

from absl import logging
import numpy as np

__all__ = [
    "read_state_dict",
    "resnet_from_torch",
    "vgg_from_torch",
    "dex_from_torch",
    "load_pretrained",
    "load_dex",
    "dex_geometry",
]

_TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".pth.tar", ".ckpt", ".tar")
# Keys under which training scripts nest the weights, tried in this order.
_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "module",
                   "net", "network")
# Running-statistic counters PyTorch stores next to BatchNorm stats.
_IGNORED_SUFFIXES = (".num_batches_tracked",)
_MAX_LISTED = 8  # keys listed per category in a strict-mode error


class StateDict(dict):
  """A `dict[str, np.ndarray]` that remembers the file it came from."""

  def __init__(self, *args, source: Optional[str] = None, **kwargs):
    super().__init__(*args, **kwargs)
    self.source = source


# ---------------------------------------------------------------------------
# Reading files.
# ---------------------------------------------------------------------------


def read_state_dict(path: "str | os.PathLike[str]") -> StateDict:
  """Reads a PyTorch-format state dict from disk into numpy arrays.

  Args:
    path: a `.safetensors` file or a PyTorch checkpoint (`.pth`, `.pt`,
      `.bin`, `.pth.tar`, `.ckpt`). Common containers are unwrapped
      ('state_dict', 'model', ... entries; a 'module.' prefix from
      DataParallel on every key).

  Returns:
    {torch key: np.ndarray}; floating tensors as float32. The result's
    `.source` attribute holds the path, for error messages.

  Raises:
    FileNotFoundError: the file does not exist.
    ValueError: the file is neither safetensors nor a readable PyTorch
      checkpoint, or holds no tensors.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no weights file at {path!r}")
  lower = path.lower()
  # By content first: releases name files freely (HRFAE's is `checkpoint`).
  if _looks_like_safetensors(path):
    tensors = _read_safetensors(path)
  elif zipfile.is_zipfile(path) or _looks_like_torch_legacy(path):
    tensors = _read_torch_file(path)
  elif lower.endswith(".safetensors"):
    tensors = _read_safetensors(path)
  elif lower.endswith(_TORCH_SUFFIXES):
    tensors = _read_torch_file(path)
  else:
    raise ValueError(
        f"{path}: not a weights file facejax can read: neither safetensors "
        "nor a PyTorch checkpoint (zip, or the legacy format of torch < 1.6)"
        " by its content.")
  if not tensors:
    raise ValueError(f"{path}: no tensors found in the file.")
  return StateDict(tensors, source=path)


# torch < 1.6 (`torch.save(..., _use_new_zipfile_serialization=False)`):
# a protocol-2 pickle of this magic number comes first.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_HEAD = pickle.dumps(_LEGACY_MAGIC, protocol=2)


def _looks_like_torch_legacy(path: str) -> bool:
  with open(path, "rb") as f:
    return f.read(len(_LEGACY_HEAD)) == _LEGACY_HEAD


def _looks_like_safetensors(path: str) -> bool:
  """True when the file starts with a safetensors JSON header."""
  with open(path, "rb") as f:
    head = f.read(9)
  if len(head) < 9:
    return False
  size = int.from_bytes(head[:8], "little")
  return 2 <= size < 100_000_000 and head[8:9] == b"{"


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
  import safetensors.numpy  # pylint: disable=g-import-not-at-top
  try:
    raw = safetensors.numpy.load_file(path)
  except TypeError:
    # numpy has no bfloat16, which safetensors.numpy refuses; parse the
    # (simple) format directly.
    raw = _read_safetensors_raw(path)
  return {k: _as_output_dtype(v) for k, v in raw.items()}


_SAFETENSORS_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "BF16": "bfloat16", "I64": np.int64, "I32": np.int32, "I16": np.int16,
    "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}


def _read_safetensors_raw(path: str) -> dict[str, np.ndarray]:
  with open(path, "rb") as f:
    size = int.from_bytes(f.read(8), "little")
    header = json.loads(f.read(size))
    data = f.read()
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    dtype = _SAFETENSORS_DTYPES.get(info["dtype"])
    if dtype is None:
      raise ValueError(f"{path}: tensor {name!r} has unsupported dtype "
                       f"{info['dtype']}")
    start, end = info["data_offsets"]
    buf = data[start:end]
    if dtype == "bfloat16":
      arr = _bf16_to_f32(np.frombuffer(buf, "<u2"))
    else:
      arr = np.frombuffer(buf, np.dtype(dtype).newbyteorder("<"))
    out[name] = arr.reshape(info["shape"])
  return out


def _bf16_to_f32(bits: np.ndarray) -> np.ndarray:
  return (bits.astype(np.uint32) << 16).view(np.float32)


def _as_output_dtype(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x)
  dtype = np.float32 if np.issubdtype(x.dtype, np.floating) else x.dtype
  if x.dtype == dtype and x.flags.c_contiguous and x.flags.writeable:
    return x
  return np.array(x, dtype=dtype, order="C")


def _read_torch_file(path: str) -> dict[str, np.ndarray]:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    torch = None
  if torch is not None:
    try:
      obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
      # weights_only refuses any non-allowlisted object (argparse
      # namespaces, numpy scalars, ... next to the weights). The restricted
      # reader below never imports them, it only skips them.
      legacy = _looks_like_torch_legacy(path)
      if not (legacy or zipfile.is_zipfile(path)):
        raise ValueError(
            f"{path}: torch.load(weights_only=True) failed: {e}") from e
      logging.info("%s: torch.load(weights_only=True) refused a non-tensor "
                   "object; reading the tensors with facejax's restricted "
                   "reader instead.", path)
      obj = _load_torch_legacy(path) if legacy else _load_torch_zip(path)
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f"{path}: torch.load failed: {e}") from e
    return _tensors_from_container(obj, path, _torch_to_numpy)
  if _looks_like_torch_legacy(path):
    return _tensors_from_container(_load_torch_legacy(path), path, None)
  if not zipfile.is_zipfile(path):
    raise ValueError(
        f"{path}: not a PyTorch checkpoint: neither the zip format (torch "
        ">= 1.6) nor the legacy format (a pickled magic number first).")
  return _tensors_from_container(_load_torch_zip(path), path, None)


def _torch_to_numpy(value: Any) -> Optional[np.ndarray]:
  import torch  # pylint: disable=g-import-not-at-top
  if isinstance(value, np.ndarray):  # from the restricted reader
    return value
  if not isinstance(value, torch.Tensor):
    return None
  t = value.detach().cpu()
  if t.is_floating_point():
    t = t.float()
  return t.numpy()


def _tensors_from_container(obj: Any, path: str,
                            convert: Optional[Callable[[Any], Any]]
                            ) -> dict[str, np.ndarray]:
  """Unwraps checkpoint containers and returns {key: array}."""
  if convert is None:
    convert = lambda v: v if isinstance(v, np.ndarray) else None
  for _ in range(4):  # e.g. {'model': {'state_dict': {...}}}
    if not isinstance(obj, Mapping):
      break
    nested = [k for k in _CONTAINER_KEYS
              if isinstance(obj.get(k), Mapping) and obj.get(k)]
    if not nested:
      break
    obj = obj[nested[0]]
  if not isinstance(obj, Mapping):
    raise ValueError(f"{path}: expected a state dict (a mapping of names to "
                     f"tensors), found {type(obj).__name__}.")
  out = {}

  def visit(mapping, prefix):
    for key, value in mapping.items():
      name = f"{prefix}{key}"
      if isinstance(value, Mapping):
        visit(value, f"{name}.")
        continue
      arr = convert(value)
      if arr is not None:
        out[name] = _as_output_dtype(arr)

  visit(obj, "")
  if out and all(k.startswith("module.") for k in out):
    out = {k[len("module."):]: v for k, v in out.items()}
  return out


# PyTorch zip pickle reader (no torch needed).

_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}

_SAFE_BUILTINS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "list"): list,
    ("builtins", "dict"): dict,
    ("builtins", "tuple"): tuple,
    ("builtins", "slice"): slice,
    ("builtins", "int"): int,
    ("builtins", "float"): float,
    ("builtins", "complex"): complex,
    ("builtins", "bool"): bool,
    ("builtins", "str"): str,
    ("builtins", "bytes"): bytes,
    ("builtins", "bytearray"): bytearray,
}


class _StorageType:
  """Stands for torch.<X>Storage in a storage's persistent id."""

  def __init__(self, name: str):
    self.name = name
    self.dtype = _STORAGE_DTYPES[name]


class _Opaque:
  """Placeholder for any non-tensor global; never imports the real one."""

  def __new__(cls, *args, **kwargs):
    del args, kwargs
    return object.__new__(cls)

  def __init__(self, *args, **kwargs):
    del args, kwargs

  def __setstate__(self, state):
    del state


def _opaque(module: str, name: str) -> type:
  return type(name, (_Opaque,), {"__module__": f"<unloaded {module}>"})


def _rebuild_tensor_v2(storage, storage_offset, size, stride,
                       requires_grad=False, backward_hooks=None,
                       metadata=None):
  del requires_grad, backward_hooks, metadata
  size, stride = tuple(size), tuple(stride)
  if isinstance(storage, _LazyStorage):  # legacy: data after the pickle
    return _LazyTensor(storage, storage_offset, size, stride)
  if not size:
    return np.array(storage[storage_offset])
  needed = storage_offset + 1 + sum((n - 1) * s for n, s in zip(size, stride)
                                    if n > 0)
  if any(n == 0 for n in size):
    return np.zeros(size, storage.dtype)
  if needed > storage.size:
    raise ValueError(f"tensor of size {size}, stride {stride} at offset "
                     f"{storage_offset} overruns its storage of "
                     f"{storage.size} elements")
  base = storage[storage_offset:]
  item = storage.itemsize
  view = np.lib.stride_tricks.as_strided(
      base, shape=size, strides=tuple(s * item for s in stride),
      writeable=False)
  return np.array(view)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None,
                       state=None):
  del requires_grad, backward_hooks, state
  return data


def _rebuild_from_type_v2(func, new_type, args, state):
  del new_type, state
  return func(*args)


def _rebuild_tensor(storage, storage_offset, size, stride):
  """torch < 1.0's form of _rebuild_tensor_v2."""
  return _rebuild_tensor_v2(storage, storage_offset, size, stride)


_TORCH_FUNCS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
}


class _TorchZipUnpickler(pickle.Unpickler):
  """Unpickles `data.pkl` of a torch zip checkpoint into numpy arrays."""

  def __init__(self, file, archive: zipfile.ZipFile, prefix: str,
               byteorder: str, path: str):
    super().__init__(file)
    self._archive = archive
    self._prefix = prefix
    self._byteorder = "<" if byteorder == "little" else ">"
    self._path = path
    self._storages: dict[str, np.ndarray] = {}

  def find_class(self, module, name):
    if (module, name) in _TORCH_FUNCS:
      return _TORCH_FUNCS[(module, name)]
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(name)
    if (module, name) in _SAFE_BUILTINS:
      return _SAFE_BUILTINS[(module, name)]
    return _opaque(module, name)

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
      raise pickle.UnpicklingError(f"{self._path}: unsupported persistent id "
                                   f"{pid!r}")
    storage_type, key = pid[1], str(pid[2])
    if not isinstance(storage_type, _StorageType):
      raise ValueError(f"{self._path}: storage {key} has an unsupported type "
                       f"({getattr(storage_type, '__name__', storage_type)}); "
                       "install torch to read this file.")
    if key not in self._storages:
      raw = self._archive.read(f"{self._prefix}data/{key}")
      if storage_type.dtype == "bfloat16":
        bits = np.frombuffer(raw, f"{self._byteorder}u2")
        arr = _bf16_to_f32(bits.astype(np.uint16))
      else:
        dtype = np.dtype(storage_type.dtype).newbyteorder(self._byteorder)
        arr = np.frombuffer(raw, dtype).astype(dtype.newbyteorder("="))
      self._storages[key] = arr
    return self._storages[key]


def _load_torch_zip(path: str) -> Any:
  """Loads a torch>=1.6 zip checkpoint with tensors as numpy arrays."""
  with zipfile.ZipFile(path) as archive:
    pkls = [n for n in archive.namelist()
            if n == "data.pkl" or n.endswith("/data.pkl")]
    if len(pkls) != 1:
      raise ValueError(f"{path}: not a PyTorch zip checkpoint (found "
                       f"{len(pkls)} data.pkl entries).")
    prefix = pkls[0][:-len("data.pkl")]
    try:
      byteorder = archive.read(f"{prefix}byteorder").decode().strip()
    except KeyError:
      byteorder = "little"
    unpickler = _TorchZipUnpickler(io.BytesIO(archive.read(pkls[0])),
                                   archive, prefix, byteorder, path)
    return unpickler.load()


class _LazyStorage:
  """A legacy-format storage: its bytes follow the main pickle."""

  def __init__(self, dtype, numel: int):
    self.dtype, self.numel = dtype, numel
    self.data: Optional[np.ndarray] = None
    self.view_of: Optional[tuple["_LazyStorage", int, int]] = None

  def array(self) -> np.ndarray:
    if self.view_of is not None:
      root, offset, size = self.view_of
      return root.array()[offset:offset + size]
    return self.data


class _LazyTensor:

  def __init__(self, storage, offset, size, stride):
    self.args = (storage, offset, size, stride)

  def build(self) -> np.ndarray:
    storage, offset, size, stride = self.args
    return _rebuild_tensor_v2(storage.array(), offset, size, stride)


class _TorchLegacyUnpickler(_TorchZipUnpickler):
  """The main pickle of a legacy checkpoint; storages stay lazy."""

  def __init__(self, file, path: str, storages: dict):
    pickle.Unpickler.__init__(self, file, encoding="latin1")
    self._path = path
    self._storages = storages

  def persistent_load(self, pid):
    if isinstance(pid, tuple) and pid and pid[0] == "module":
      return None  # the source of a pickled nn.Module: never run
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
      raise pickle.UnpicklingError(f"{self._path}: unsupported persistent id "
                                   f"{pid!r}")
    storage_type, root_key, _, numel = pid[1:5]
    view = pid[5] if len(pid) > 5 else None
    if not isinstance(storage_type, _StorageType):
      raise ValueError(f"{self._path}: storage {root_key} has an unsupported "
                       "type; install torch to read this file.")
    root_key = str(root_key)
    if root_key not in self._storages:
      self._storages[root_key] = _LazyStorage(storage_type.dtype, int(numel))
    root = self._storages[root_key]
    if view is None:
      return root
    view_key, offset, size = view
    view_key = str(view_key)
    if view_key not in self._storages:
      lazy = _LazyStorage(storage_type.dtype, int(size))
      lazy.view_of = (root, int(offset), int(size))
      self._storages[view_key] = lazy
    return self._storages[view_key]


def _materialize(obj):
  if isinstance(obj, _LazyTensor):
    return obj.build()
  if isinstance(obj, collections.OrderedDict):
    return collections.OrderedDict((k, _materialize(v))
                                   for k, v in obj.items())
  if isinstance(obj, dict):
    return {k: _materialize(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return type(obj)(_materialize(v) for v in obj)
  return obj


def _load_torch_legacy(path: str) -> Any:
  """Loads a torch < 1.6 checkpoint (torch.save's legacy format).

  Layout: pickles of the magic number, the protocol version (1001) and
  system info; the main pickle (tensors name storages by persistent id);
  a pickled list of storage keys; then per key an int64 element count and
  the raw little-endian bytes.
  """
  storages: dict[str, _LazyStorage] = {}
  with open(path, "rb") as f:
    try:
      if pickle.load(f) != _LEGACY_MAGIC:
        raise ValueError(f"{path}: not a legacy PyTorch checkpoint")
      version = pickle.load(f)
      if version != 1001:
        raise ValueError(f"{path}: legacy checkpoint protocol {version}, "
                         "expected 1001")
      info = pickle.load(f)
      if isinstance(info, dict) and not info.get("little_endian", True):
        raise ValueError(f"{path}: a big-endian checkpoint")
      obj = _TorchLegacyUnpickler(f, path, storages).load()
      keys = pickle.load(f)
    except (pickle.UnpicklingError, EOFError) as e:
      raise ValueError(f"{path}: a damaged legacy PyTorch checkpoint ({e})"
                       ) from None
    for key in keys:
      lazy = storages.get(str(key))
      if lazy is None:
        raise ValueError(f"{path}: storage {key} is listed but not used")
      count = int.from_bytes(f.read(8), "little", signed=True)
      dtype = np.dtype(np.uint16 if lazy.dtype == "bfloat16"
                       else lazy.dtype)
      raw = f.read(count * dtype.itemsize)
      if count != lazy.numel or len(raw) != count * dtype.itemsize:
        raise ValueError(f"{path}: storage {key} is truncated or its size "
                         f"({count}) disagrees with the pickle "
                         f"({lazy.numel})")
      arr = np.frombuffer(raw, dtype.newbyteorder("<")).astype(dtype)
      lazy.data = _bf16_to_f32(arr) if lazy.dtype == "bfloat16" else arr
  return _materialize(obj)


# ---------------------------------------------------------------------------
# Mapping torch keys onto facejax variables.
# ---------------------------------------------------------------------------


def _flatten(variables) -> dict[tuple[str, ...], Any]:
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  from flax.core import frozen_dict  # pylint: disable=g-import-not-at-top
  return traverse_util.flatten_dict(frozen_dict.unfreeze(variables))


def _unflatten(flat):
  from flax import traverse_util  # pylint: disable=g-import-not-at-top
  return traverse_util.unflatten_dict(flat)


def _shape_dtype(leaf) -> tuple[tuple[int, ...], np.dtype]:
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


def _convert(torch_value: np.ndarray, leaf_name: str) -> np.ndarray:
  """Torch layout -> flax layout for one tensor."""
  if leaf_name == "kernel":
    if torch_value.ndim == 4:  # conv OIHW -> HWIO
      return np.transpose(torch_value, (2, 3, 1, 0))
    if torch_value.ndim == 2:  # linear (out, in) -> (in, out)
      return np.transpose(torch_value)
  return torch_value


def _import(state_dict: Mapping[str, np.ndarray], variables, *,
            prefix: Optional[str], module_to_torch: Callable[[str], str],
            head: Optional[str], head_key: Optional[str],
            optional_torch: Callable[[str], bool], strict: bool,
            source: Optional[str], arch: str,
            head_affine: Optional[tuple[float, float]] = None):
  """Shared mapping: walks facejax leaves under `prefix`, fills from torch."""
  source = source or getattr(state_dict, "source", None)
  where = f" from {source}" if source else ""
  flat = _flatten(variables)
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
    value = _convert(state_dict[key], path[-1])
    shape, dtype = _shape_dtype(leaf)
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
                if k not in used and not k.endswith(_IGNORED_SUFFIXES)
                and not (head_key and k.split(".")[0] == head_key)
                and not optional_torch(k)]
  problems = []
  if missing:
    problems.append(_listing("missing in the state dict", missing))
  if mismatched:
    problems.append(_listing("shape mismatch", mismatched))
  if unexpected:
    problems.append(_listing("unexpected in the state dict", unexpected))
  if problems:
    msg = (f"{arch} import{where} into {prefix or 'the model'!r}: "
           + "; ".join(problems))
    if strict:
      raise ValueError(msg)
    logging.warning("%s (strict=False: kept the initial values)", msg)
  logging.info("%s import%s: %d of %d variables under %r%s.", arch, where,
               n_backbone - len(missing) - len(mismatched), n_backbone,
               prefix, f" and head {head!r}" if head_done else "")
  return _unflatten(new_flat)


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
  kernel = _convert(state_dict[w_key], "kernel")
  k_shape, k_dtype = _shape_dtype(flat[k_path])
  has_bias = b_path in flat
  fits = kernel.shape == k_shape and (
      not has_bias or (b_key in state_dict and
                       state_dict[b_key].shape == _shape_dtype(
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
    new_flat[b_path] = bias.astype(_shape_dtype(flat[b_path])[1])
    used.add(b_key)
  return True


def _listing(title: str, items: list[str]) -> str:
  shown = ", ".join(items[:_MAX_LISTED])
  more = f", ... ({len(items) - _MAX_LISTED} more)" if len(
      items) > _MAX_LISTED else ""
  return f"{len(items)} {title}: {shown}{more}"


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
  return _import(state_dict, variables, prefix=prefix,
                 module_to_torch=_resnet_module_to_torch, head=head,
                 head_key=head_key, optional_torch=lambda k: False,
                 strict=strict, source=source, arch="ResNet",
                 head_affine=head_affine)


# VGG (DEX / Caffe-converted naming; torchvision naming is translated).

_VGG_CONV = re.compile(r"^conv(\d+)_(\d+)$")
_VGG_FC = ("fc6", "fc7")


def _torchvision_vgg_to_dex(state_dict: Mapping[str, np.ndarray],
                            conv_names: list[str]) -> StateDict:
  """Renames torchvision `features.N` / `classifier.N` keys to DEX names."""
  feats = sorted({int(k.split(".")[1]) for k in state_dict
                  if k.startswith("features.")})
  if len(feats) != len(conv_names):
    raise ValueError(f"torchvision VGG state dict has {len(feats)} convs, "
                     f"the facejax VGG has {len(conv_names)}.")
  rename = {f"features.{i}": name for i, name in zip(feats, conv_names)}
  rename.update({"classifier.0": "fc6", "classifier.3": "fc7",
                 "classifier.6": "fc8"})
  out = StateDict(source=getattr(state_dict, "source", None))
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
  flat_names = {p[start] for p in _flatten(variables)
                if len(p) > start + 1 and (not prefix or p[1] == prefix)}
  has_fc = any(n in _VGG_FC for n in flat_names)
  if any(k.startswith("features.") for k in state_dict):
    convs = sorted((n for n in flat_names if _VGG_CONV.match(n)),
                   key=lambda n: tuple(map(int, _VGG_CONV.match(n).groups())))
    state_dict = _torchvision_vgg_to_dex(state_dict, convs)
  if head_key is None:
    head_key = "fc8_101" if "fc8_101.weight" in state_dict else "fc8"

  def optional(key: str) -> bool:
    # fc6/fc7 only exist in facejax when include_fc=True.
    return not has_fc and key.split(".")[0] in _VGG_FC

  return _import(state_dict, variables, prefix=prefix,
                 module_to_torch=lambda name: name, head=head,
                 head_key=head_key, optional_torch=optional, strict=strict,
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
  state_dict = read_state_dict(path)
  kwargs.setdefault("source", os.fspath(path))
  return importer(state_dict, variables, **kwargs)



# DEX (VGG-16 + fc8_101, Caffe-converted).

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
  renamed = StateDict({k.replace("-", "_"): v for k, v in state_dict.items()},
                      source=source)
  w_key = f"{DEX_HEAD_KEY}.weight"
  where = f"{source}: " if source else ""
  if w_key not in renamed:
    raise ValueError(f"{where}not a DEX state dict: no {w_key!r} (the 101-way "
                     f"age classifier); keys start "
                     f"{sorted(renamed)[:_MAX_LISTED]}")
  head_shape = _shape_dtype(_flatten(variables)[("params", "head",
                                                 "kernel")])[0]
  got = _convert(renamed[w_key], "kernel").shape
  if got != head_shape:
    raise ValueError(f"{where}{w_key} has shape {renamed[w_key].shape}; the "
                     f"model's head needs {head_shape[::-1]}")
  return vgg_from_torch(renamed, variables, prefix="backbone", head="head",
                        head_key=DEX_HEAD_KEY, strict=strict, source=source)


def load_dex(path: "str | os.PathLike[str]", variables, **kwargs):
  """Reads the official DEX weights file and imports it (see dex_from_torch)."""
  state_dict = read_state_dict(path)
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
    m = _VGG_CONV.match(key.rsplit(".", 1)[0])
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
