"""Read PyTorch-format weight files into numpy, without torch.

  sd = read_state_dict("resnet34-b627a593.pth")        # {key: np.ndarray}

Supported files: `.safetensors` (via safetensors.numpy) and PyTorch's zip
checkpoints `.pth/.pt/.bin/.pth.tar/.ckpt` (and the legacy format of
torch < 1.6), read by a small restricted reader of the pickle format
that rebuilds tensors as numpy arrays and never imports what a file names
(functions, classes, argparse namespaces are skipped), so users need no
torch and a checkpoint cannot run code. Floating tensors come back as
float32 and integer tensors keep their dtype.

Mapping the keys onto facejax variables is the importers' job:
`facejax.convert.imagenet` (torchvision/timm ResNet and VGG),
`facejax.convert.dex` and one module per official checkpoint.
"""

import collections
import io
import json
import os
import pickle
import zipfile
from typing import Any, Mapping, Optional

import numpy as np

__all__ = ["StateDict", "read_state_dict"]

_TORCH_SUFFIXES = (".pth", ".pt", ".bin", ".pth.tar", ".ckpt", ".tar")
# Keys under which training scripts nest the weights, tried in this order.
_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "module",
                   "net", "network")


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
  if _looks_like_torch_legacy(path):
    return _tensors_from_container(_load_torch_legacy(path), path)
  if not zipfile.is_zipfile(path):
    raise ValueError(
        f"{path}: not a PyTorch checkpoint: neither the zip format (torch "
        ">= 1.6) nor the legacy format (a pickled magic number first).")
  return _tensors_from_container(_load_torch_zip(path), path)


def _tensors_from_container(obj: Any, path: str) -> dict[str, np.ndarray]:
  """Unwraps checkpoint containers and returns {key: array} (the arrays
  among the values; anything else the file held is left out)."""
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
      if isinstance(value, np.ndarray):
        out[name] = _as_output_dtype(value)

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
