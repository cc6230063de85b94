"""Memory per device and communication per step of a config on a big mesh.

Nothing runs on the target machine: the state is built abstractly
(jax.eval_shape), every array gets the PartitionSpec that facejax's
sharding rules (facejax.mesh) would give it on that mesh, and the train
step can be compiled here, on one CPU device, at the per-device batch to
read XLA's activation (temporary buffer) estimate. launch.scaling_plan
prints the result.
"""

from __future__ import annotations

import math
import re
import types

import jax
import numpy as np

from facejax import mesh as mesh_lib
from facejax import runtime

_NOT_GRADIENTS = re.compile(r"(opt_state|opt_|batch_stats|step|sn_|"
                            r"spectral|\bu\b)")


def parse_mesh(text: str) -> dict[str, int]:
  """{'data': 8, 'fsdp': 1, 'model': 1} from 'data=8,fsdp=1,model=1'."""
  sizes = {}
  for part in text.split(","):
    name, _, size = part.partition("=")
    sizes[name.strip()] = int(size)
  if sorted(sizes) != sorted(mesh_lib.AXES):
    raise ValueError(f"--mesh needs sizes for {mesh_lib.AXES}, got {text!r}")
  return sizes


def _bytes(leaf) -> int:
  return math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize


def _shards(spec, mesh_shape) -> int:
  n = 1
  for axes in spec:
    for axis in (axes if isinstance(axes, tuple) else (axes,)):
      if axis is not None:
        n *= mesh_shape[axis]
  return n


def plan_state(task, config, mesh_shape: dict[str, int]) -> dict:
  """Bytes per device and per-step communication of the sharded state.

  Args:
    task: the config's task (a facejax.tasks.base.Task), built by the
      caller.
    config: its config (the `sharding` section gives the rules).
    mesh_shape: {axis: size} of the target mesh.

  Returns:
    Bytes per device of params, optimizer, other state and frozen
    networks; bytes each device sends per step for gradient all-reduce and
    FSDP gathers / reduce-scatters (ring algorithms).
  """
  abstract = jax.eval_shape(task.init_state, jax.random.key(0))
  fake_mesh = types.SimpleNamespace(shape=mesh_shape)
  sh = config.sharding
  d, f = mesh_shape["data"], mesh_shape["fsdp"]
  # Frozen networks (e.g. the age estimator) are step arguments: counted
  # by their own shardings, with no gradients or optimizer state.
  frozen = 0.0
  for path, leaf in jax.tree_util.tree_leaves_with_path(task.load_frozen()):
    if hasattr(leaf, "shape"):
      spec = mesh_lib.spec_for(
          mesh_lib._path_str(path), leaf.shape,  # pylint: disable=protected-access
          types.SimpleNamespace(shape=mesh_shape), tuple(
              config.sharding.rules), config.sharding.fsdp_min_size_mb,
          np.dtype(leaf.dtype).itemsize)
      frozen += _bytes(leaf) / _shards(spec, mesh_shape)
  out = {"frozen": frozen, "params": 0, "optimizer": 0, "other": 0,
         "params_total": 0,
         "grad_allreduce": 0.0, "fsdp_gather": 0.0, "fsdp_scatter": 0.0,
         "sharded_over_model": [], "num_params": 0}
  for path, leaf in jax.tree_util.tree_leaves_with_path(abstract):
    if not hasattr(leaf, "shape"):
      continue
    name = mesh_lib._path_str(path)  # pylint: disable=protected-access
    spec = mesh_lib.spec_for(name, leaf.shape, fake_mesh, tuple(sh.rules),
                             sh.fsdp_min_size_mb,
                             np.dtype(leaf.dtype).itemsize)
    full = _bytes(leaf)
    local = full / _shards(spec, mesh_shape)
    flat = [a for axes in spec for a in
            (axes if isinstance(axes, tuple) else (axes,))]
    if "opt_state" in name or re.search(r"(^|/)opt", name):
      out["optimizer"] += local
      continue
    is_grad = (np.issubdtype(leaf.dtype, np.floating) and
               not _NOT_GRADIENTS.search(name))
    if not is_grad:
      out["other"] += local
      continue
    out["params"] += local
    out["params_total"] += full
    out["num_params"] += math.prod(leaf.shape)
    if "model" in flat:
      out["sharded_over_model"].append(name)
    if "fsdp" in flat:
      # Gather the full array for the forward and again for the backward
      # pass; reduce-scatter its gradient; all-reduce the shard over data.
      unsharded = local * f
      out["fsdp_gather"] += 2 * (f - 1) / f * unsharded
      out["fsdp_scatter"] += (f - 1) / f * unsharded
      out["grad_allreduce"] += 2 * (d - 1) / d * local
    else:
      n = d * f  # the batch axes: gradients are summed over both
      out["grad_allreduce"] += 2 * (n - 1) / n * local
  return out


def local_config(config, local_batch: int):
  """`config` on one device at the per-device batch, for `activation_bytes`.

  Changes `config` in place and returns it.
  """
  with config.unlocked():
    config.mesh = (("data", 1), ("fsdp", 1), ("model", 1))
    config.data.batch_size = config.data.eval_batch_size = local_batch
  return config


def activation_bytes(setup, local_batch: int) -> tuple[float, float]:
  """XLA's temp-buffer estimate and FLOPs of one train step.

  Args:
    setup: the facejax.train.loop.Setup of a `local_config`.
    local_batch: the per-device batch.

  Returns:
    (temporary bytes, FLOPs) of the largest kind of step.
  """
  state = setup.abstract_state
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype)
           for k, v in setup.task.dummy_batch(local_batch).items()}
  frozen = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                        setup.frozen)
  temps, flops = [], []
  for jitted in setup.train_steps.values():  # a GAN's largest kind of step
    compiled = jitted.lower(state, batch, frozen).compile()
    temps.append(float(runtime.temp_bytes(compiled)))
    flops.append(float((compiled.cost_analysis() or {}).get(
        "flops", float("nan"))))
  # NaN (no cost analysis) stays NaN, as with one kind of step.
  return max(temps), max(flops, key=lambda f: (f == f, f))


def per_device_batch(global_batch: int, mesh_shape: dict[str, int]) -> int:
  """The per-device batch; a ValueError if the batch axes do not divide."""
  shards = mesh_shape["data"] * mesh_shape["fsdp"]
  if global_batch % shards:
    raise ValueError(f"--global_batch {global_batch} not divisible by "
                     f"data x fsdp = {shards}")
  return global_batch // shards


def report(config, s: dict, mesh_shape: dict[str, int], global_batch: int,
           device_memory_gb: float, link_gb_per_s: float,
           activations: tuple[float, float] | None = None) -> str:
  """The Markdown report of a `plan_state` (and `activation_bytes`)."""
  gib = 2**30
  local = per_device_batch(global_batch, mesh_shape)
  lines = [f"## {config.task} on mesh {mesh_shape} "
           f"({math.prod(mesh_shape.values())} devices), global batch "
           f"{global_batch} ({local} per device), image "
           f"{config.data.image_size}px", "",
           "| per device | GiB |", "|---|---|",
           f"| parameters ({s['num_params']/1e6:.1f} M, "
           f"{s['params_total']/gib:.2f} GiB unsharded) | "
           f"{s['params']/gib:.3f} |",
           f"| optimizer state | {s['optimizer']/gib:.3f} |",
           f"| frozen networks (loss estimators) | {s['frozen']/gib:.3f} |",
           f"| other state (BN stats, SN vectors, step) | "
           f"{s['other']/gib:.4f} |"]
  total = s["params"] + s["optimizer"] + s["other"] + s["frozen"]
  flops = float("nan")
  if activations is not None:
    act, flops = activations
    lines.append(f"| activations + temporaries (XLA, batch {local}) | "
                 f"{act/gib:.3f} |")
    total += act
  lines.append(f"| **total** | **{total/gib:.2f}** of "
               f"{device_memory_gb:g} |")
  comm = s["grad_allreduce"] + s["fsdp_gather"] + s["fsdp_scatter"]
  link = link_gb_per_s * 1e9
  lines += ["", "| communication per device per step | GiB | ms at "
            f"{link_gb_per_s:g} GB/s |", "|---|---|---|"]
  for key, label in (("grad_allreduce", "gradient all-reduce (data)"),
                     ("fsdp_gather", "FSDP parameter all-gather (fwd+bwd)"),
                     ("fsdp_scatter", "FSDP gradient reduce-scatter")):
    lines.append(f"| {label} | {s[key]/gib:.3f} | "
                 f"{1e3 * s[key] / link:.1f} |")
  lines.append(f"| **total** | **{comm/gib:.3f}** | "
               f"**{1e3 * comm / link:.1f}** |")
  if math.isfinite(flops):
    lines.append(f"\nXLA FLOPs per device per step: {flops/1e12:.2f} "
                 f"TFLOP (local batch {local}).")
  if s["sharded_over_model"]:
    lines.append("\nSplit over `model`: " + ", ".join(
        sorted(set(re.sub(r"^.*?params/", "", n)
                   for n in s["sharded_over_model"]))[:6]))
  return "\n".join(lines)
