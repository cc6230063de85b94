"""Device mesh, batch and parameter shardings, sharding rules, multi-host
start-up.

One `Mesh` over all devices with three named axes:
  data  - pure data parallelism (batch split, parameters replicated),
  fsdp  - batch split too, and large parameters sharded along it (ZeRO-3),
  model - tensor parallelism for layers that opt in by rule (e.g. a
          million-identity classifier).
The same config runs on 1 CPU device, 8 fake ones or a pod: `-1` in
`config.mesh` absorbs whatever devices there are.
"""

import math
import re
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
