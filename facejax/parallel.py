"""Device mesh, sharding rules and multi-host start-up.

One `Mesh` over all devices with three named axes:
  data  - pure data parallelism (batch split, parameters replicated),
  fsdp  - batch split too, and large parameters sharded along it (ZeRO-3),
  model - tensor parallelism for layers that opt in by rule (e.g. a
          million-identity classifier).
The same config runs on 1 CPU device, 8 fake ones or a pod: `-1` in
`config.mesh` absorbs whatever devices there are.
"""

import ctypes
import importlib.metadata
import importlib.util
import math
import os
import platform
import re
import sys
from typing import Any, Sequence

from absl import logging
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXES = ("data", "fsdp", "model")
BATCH_AXES = ("data", "fsdp")  # the batch dimension is split over both


def maybe_initialize_distributed(coordinator: str = "",
                                 num_processes: int = 0,
                                 process_id: int = -1,
                                 auto: bool = False) -> None:
  """Starts jax.distributed when asked (explicit flags or auto-detection).

  Args:
    coordinator: 'host:port' of process 0; empty to let JAX auto-detect
      (TPU VMs, SLURM, Kubernetes) when `auto` is True.
    num_processes: total number of processes (with coordinator).
    process_id: this process's index (with coordinator).
    auto: call `jax.distributed.initialize()` with no arguments.
  """
  if coordinator:
    jax.distributed.initialize(coordinator_address=coordinator,
                               num_processes=num_processes,
                               process_id=process_id)
  elif auto:
    jax.distributed.initialize()
  else:
    return
  logging.info("jax.distributed: process %d of %d, %d local / %d devices",
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())


def create_mesh(mesh_config: Sequence[tuple[str, int]],
                devices: Sequence[Any] | None = None) -> Mesh:
  """Builds the mesh from [('data', -1), ('fsdp', 1), ('model', 1)].

  Args:
    mesh_config: (axis name, size) pairs; one size may be -1 (the rest).
    devices: defaults to all devices.

  Returns:
    A Mesh with Auto axis types over the given devices.
  """
  devices = list(devices if devices is not None else jax.devices())
  names = [name for name, _ in mesh_config]
  if sorted(names) != sorted(AXES):
    raise ValueError(f"config key mesh: axes must be {AXES}, got {names}")
  sizes = [int(size) for _, size in mesh_config]
  if sizes.count(-1) > 1:
    raise ValueError("config key mesh: at most one axis may be -1")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes and len(devices) % known:
    raise ValueError(f"config key mesh: sizes {sizes} do not divide the "
                     f"{len(devices)} devices")
  sizes = [len(devices) // known if s == -1 else s for s in sizes]
  if math.prod(sizes) > len(devices):
    raise ValueError(f"config key mesh: {dict(zip(names, sizes))} needs "
                     f"{math.prod(sizes)} devices, have {len(devices)}")
  if math.prod(sizes) < len(devices) and jax.process_count() > 1:
    raise ValueError(f"config key mesh: {dict(zip(names, sizes))} uses "
                     f"{math.prod(sizes)} of {len(devices)} devices; with "
                     "several processes every device must be in the mesh")
  if math.prod(sizes) < len(devices):
    # Explicit sizes with no -1 may use a subset (e.g. 1-device benchmarks).
    logging.info("mesh uses %d of %d devices", math.prod(sizes),
                 len(devices))
    devices = devices[:math.prod(sizes)]
  shape = dict(zip(names, sizes))
  device_array = np.asarray(devices).reshape([shape[a] for a in AXES])
  return Mesh(device_array, AXES,
              axis_types=(jax.sharding.AxisType.Auto,) * len(AXES))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension over data x fsdp, the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _path_str(path) -> str:
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def spec_for(path: str, shape: Sequence[int], mesh: Mesh,
             rules: Sequence[tuple[str, Sequence[str | None]]] = (),
             fsdp_min_size_mb: float = 4.0, itemsize: int = 4) -> P:
  """PartitionSpec of one array from explicit rules, then FSDP by size.

  Args:
    path: '/'-joined key path of the array (e.g. 'params/head/kernel').
    shape: the array's shape.
    mesh: the mesh (axis sizes decide divisibility).
    rules: (regex, spec) pairs; the first regex that `re.search`es the path
      wins; spec is a tuple of axis names or None per dimension.
    fsdp_min_size_mb: arrays at least this large are sharded over 'fsdp'
      along their largest dimension divisible by the fsdp size.
    itemsize: bytes per element for the size threshold.

  Returns:
    The PartitionSpec.
  """
  for pattern, spec in rules:
    if re.search(pattern, path):
      spec = tuple(spec)[:len(shape)]
      for dim, axis in zip(shape, spec):
        if axis is not None and dim % mesh.shape[axis]:
          raise ValueError(f"sharding rule {pattern!r}: {path} dim {dim} "
                           f"not divisible by mesh axis {axis!r}")
      return P(*spec)
  fsdp = mesh.shape["fsdp"]
  size_mb = math.prod(shape) * itemsize / 2**20
  if fsdp > 1 and shape and size_mb >= fsdp_min_size_mb:
    for dim in np.argsort(shape)[::-1]:
      if shape[dim] % fsdp == 0:
        spec = [None] * len(shape)
        spec[dim] = "fsdp"
        return P(*spec)
  return P()


def tree_shardings(tree: Any, mesh: Mesh, rules=(), fsdp_min_size_mb=4.0):
  """NamedShardings for every leaf of a (possibly abstract) pytree.

  Optimizer states contain the parameter paths as suffixes and the same
  shapes, so one rule set shards parameters and their moments alike.
  """
  def leaf_sharding(path, leaf):
    shape = getattr(leaf, "shape", ())
    itemsize = np.dtype(getattr(leaf, "dtype", np.float32)).itemsize
    spec = spec_for(_path_str(path), shape, mesh, rules, fsdp_min_size_mb,
                    itemsize)
    return NamedSharding(mesh, spec)
  return jax.tree_util.tree_map_with_path(leaf_sharding, tree)


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict:
  """Process-local numpy batch -> global jax.Arrays sharded on the batch.

  Works on one host and on many: each process passes its own slice.
  """
  sharding = batch_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


def shard_images(images: np.ndarray, mesh: Mesh) -> jax.Array:
  """A host batch of any size [n, ...], sharded for inference: padded to a
  multiple of this process's devices by repeating its last row (drop the
  outputs past n)."""
  pad = -len(images) % jax.local_device_count()
  if pad:
    images = np.concatenate([images, np.repeat(images[-1:], pad, 0)])
  return shard_batch({"image": images}, mesh)["image"]


def check_batch_size(global_batch: int, mesh: Mesh, key: str) -> int:
  """Checks divisibility and returns the per-process batch size."""
  if not isinstance(global_batch, int) or global_batch < 1:
    raise ValueError(f"config key {key}={global_batch!r} must be a positive "
                     "integer")
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  if global_batch % shards:
    raise ValueError(f"config key {key}={global_batch} must be divisible by "
                     f"the data x fsdp mesh size {shards}")
  if global_batch % jax.process_count():
    raise ValueError(f"config key {key}={global_batch} must be divisible by "
                     f"the number of processes {jax.process_count()}")
  return global_batch // jax.process_count()


# XLA:CPU flags facejax applies before the CPU backend starts. This jaxlib
# hands convolutions to YNNPACK by default; its kernels, and their gradients
# above all, are 2-3x slower on this 2-core AVX2 CPU than XLA's Eigen
# convolutions (measured, docs/performance.md section 4). Dots and
# reductions stay on YNNPACK. A flag the user already put in XLA_FLAGS wins.
CPU_XLA_FLAGS = {
    "xla_cpu_experimental_ynn_fusion_type":
        "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE",
}
_cpu_flags_active = False
# XLA flags facejax added to XLA_FLAGS itself (not the user's).
_flags_added: set[str] = set()


def cpu_native_conv_is_fast() -> bool:
  """True when CPU convolutions run on XLA's Eigen path (CPU_XLA_FLAGS).

  `facejax.models.layers.Conv(impl='auto')` then uses the native
  convolution on CPU; otherwise it falls back to im2col matmuls.
  """
  return _cpu_flags_active


def apply_cpu_xla_flags() -> bool:
  """Adds CPU_XLA_FLAGS to XLA_FLAGS if JAX's backends have not started.

  The flags only change how XLA:CPU compiles, so they are harmless on
  GPU/TPU hosts. Returns whether they are in effect.
  """
  global _cpu_flags_active
  # pylint: disable-next=g-import-not-at-top
  from jax._src import xla_bridge
  current = os.environ.get("XLA_FLAGS", "")
  user_set = [k for k in CPU_XLA_FLAGS if f"--{k}=" in current]
  if xla_bridge.backends_are_initialized():
    # XLA reads XLA_FLAGS once, when the first backend starts.
    if not _cpu_flags_active and not user_set:
      logging.warning("JAX backends started before configure_runtime: "
                      "XLA:CPU flags %s not applied", CPU_XLA_FLAGS)
    return _cpu_flags_active
  extra = " ".join(f"--{k}={v}" for k, v in CPU_XLA_FLAGS.items()
                   if k not in user_set)
  if extra:
    os.environ["XLA_FLAGS"] = f"{current} {extra}".strip()
    _flags_added.update(k for k in CPU_XLA_FLAGS if k not in user_set)
  # The user's own value of a flag may keep YNNPACK convolutions.
  _cpu_flags_active = not user_set or all(
      "CONVOLUTION" not in (current.split(f"--{k}=")[1].split() or [""])[0]
      for k in user_set)
  return _cpu_flags_active


def step_compiler_options(task) -> dict[str, str] | None:
  """Per-executable XLA options a task asks for on CPU (None: the defaults).

  A task may define `xla_cpu_options()`; it applies to its train and eval
  steps only on the CPU backend, and never over a flag the user put in
  XLA_FLAGS.
  """
  wanted = getattr(task, "xla_cpu_options", None)
  if wanted is None or jax.default_backend() != "cpu":
    return None
  current = os.environ.get("XLA_FLAGS", "")
  options = {k: v for k, v in wanted().items()
             if k in _flags_added or f"--{k}=" not in current}
  return options or None


# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_heap_kept = False  # keep_host_heap took effect in this process
_MALLOC_ENV = ("GLIBC_TUNABLES", "MALLOC_ARENA_MAX", "MALLOC_MMAP_MAX_",
               "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_",
               "LD_PRELOAD")


def _accelerator_plugin_installed() -> bool:
  """Whether JAX could start a GPU/TPU backend in this environment."""
  if os.environ.get("JAX_PLATFORMS", "").strip().lower() == "cpu":
    return False
  if importlib.metadata.entry_points(group="jax_plugins"):
    return True
  names = ("jax_plugins", "libtpu", "jax_cuda12_plugin", "jax_rocm_plugin")
  return any(importlib.util.find_spec(n) is not None for n in names)


def keep_host_heap_applies() -> bool:
  """Whether `keep_host_heap` should act here (see its docstring)."""
  if os.environ.get("FACEJAX_KEEP_HEAP", "1") == "0":
    return False
  if any(os.environ.get(k) for k in _MALLOC_ENV):
    return False
  if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
    return False
  return not _accelerator_plugin_installed()


def keep_host_heap() -> bool:
  """Makes glibc keep freed memory for reuse (CPU-only hosts); True if set.

  XLA:CPU allocates each step's temporary buffer (gigabytes for a Swin-T
  batch of 32) and its matmuls' packing buffers afresh, on pool threads.
  glibc serves those from mmap (or per-thread arenas it unmaps again), so
  every step page-faults all of it back in: 1.7 M faults per SwinFace step
  (docs/performance.md section 8). One arena, no mmap and no trimming keep
  the pages mapped: 14.4 -> 10.4 s per step, CPU time 26.6 -> 19.0 s.

  The price is that the process keeps its peak heap until it exits, which a
  training process does anyway. Skipped when the user configures malloc
  (GLIBC_TUNABLES, MALLOC_*, LD_PRELOAD), with FACEJAX_KEEP_HEAP=0, off
  glibc, and on hosts with an accelerator plugin, whose many host threads
  would contend for one arena. Call it before JAX starts its threads.
  """
  if not keep_host_heap_applies():
    return False
  try:
    mallopt = ctypes.CDLL("libc.so.6").mallopt
  except (OSError, AttributeError):
    return False
  global _heap_kept
  # -1 as M_TRIM_THRESHOLD is SIZE_MAX: never return the heap top.
  _heap_kept = all([mallopt(_M_ARENA_MAX, 1) == 1,
                    mallopt(_M_MMAP_MAX, 0) == 1,
                    mallopt(_M_TRIM_THRESHOLD, -1) == 1])
  return _heap_kept


def host_heap_kept() -> bool:
  """Whether `keep_host_heap` is in effect in this process."""
  return _heap_kept


def configure_runtime(compilation_cache_dir: str = "") -> None:
  """Process-wide JAX settings facejax relies on.

  Call it before anything starts a JAX backend (jax.devices(), arrays):
  it first adds the XLA:CPU flags of CPU_XLA_FLAGS to XLA_FLAGS.

  On CPU, non-partitionable threefry compiles parameter initialisation
  about 4x faster (measured: tiny ResNet init 36 s -> 9 s on 2 cores); its
  values do not depend on the sharding either, so 1 and 8 devices
  initialise identically. Accelerators keep the partitionable default,
  which never materialises a full random tensor per device.

  On a CPU-only Linux host it also keeps freed heap memory mapped
  (`keep_host_heap`): XLA:CPU's per-step buffers otherwise page-fault back
  in on every step.
  """
  apply_cpu_xla_flags()
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
  if not xla_bridge.backends_are_initialized() and keep_host_heap():
    logging.info("glibc heap kept for reuse (one arena, no mmap, no trim); "
                 "FACEJAX_KEEP_HEAP=0 turns this off")
  if jax.default_backend() == "cpu":
    jax.config.update("jax_threefry_partitionable", False)
  if compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", compilation_cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
