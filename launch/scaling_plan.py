r"""Memory per device and communication per step of a config on a big mesh.

  python -m launch.scaling_plan --config=configs/age_transformer.py \
      --mesh=data=64,fsdp=4,model=1 --global_batch=256 --image_size=1024 \
      --device_memory_gb=16 --link_gb_per_s=45

Nothing runs on the target machine: the state is built abstractly
(jax.eval_shape), every array gets the PartitionSpec that facejax's
sharding rules would give it on that mesh, and the train step is compiled
here, on one CPU device, at the per-device batch to read XLA's activation
(temporary buffer) estimate. The result is a Markdown report:
  - parameters, optimizer state and other state per device;
  - activations per device (XLA's buffer assignment for the local batch);
  - bytes each device sends per step for gradient reduction and FSDP
    parameter gathers (ring algorithms), and the time that takes at the
    given link bandwidth.
Use --activation_overrides to compile the activation estimate with the
per-device view of model-sharded layers (e.g. a classifier split over
`model`: --activation_overrides=model.num_identities=125000).
"""

import math
import re
import types

from absl import app
from absl import flags
import jax
import numpy as np
from ml_collections import config_flags

from facejax import config_lib
from facejax import mesh as mesh_lib
from facejax import tasks
from launch import common

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.",
                                          lock_config=True)
_MESH = flags.DEFINE_string("mesh", "data=8,fsdp=1,model=1",
                            "Target mesh, axis=size for data, fsdp, model.")
_BATCH = flags.DEFINE_integer("global_batch", 0, "Global batch (0: config).")
_SIZE = flags.DEFINE_integer("image_size", 0, "Image side (0: config).")
_MEMORY = flags.DEFINE_float("device_memory_gb", 16.0,
                             "Memory per device (v5e 16, H100 80).")
_LINK = flags.DEFINE_float("link_gb_per_s", 45.0, "Per-device collective "
                           "bandwidth in GB/s (v5e ICI ~45/link, H100 "
                           "NVLink ~450, inter-node IB ~50).")
_ACT = flags.DEFINE_list("activation_overrides", [], "key=value config "
                         "overrides for the activation compile only.")
_SKIP_COMPILE = flags.DEFINE_bool("skip_activation_compile", False,
                                  "Report state and communication only.")
flags.mark_flag_as_required("config")

_NOT_GRADIENTS = re.compile(r"(opt_state|opt_|batch_stats|step|sn_|"
                            r"spectral|\bu\b)")


def parse_mesh(text: str) -> dict[str, int]:
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


def plan_state(config, mesh_shape: dict[str, int]) -> dict:
  """Bytes per device and per-step communication of the sharded state."""
  task = tasks.get(config.task)(config)
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


def activation_bytes(config, local_batch: int) -> tuple[float, float]:
  """XLA's temp-buffer estimate of one train step at the local batch."""
  with config.unlocked():
    config.mesh = (("data", 1), ("fsdp", 1), ("model", 1))
    config.data.batch_size = config.data.eval_batch_size = local_batch
  setup = tasks.setup(config)
  state = setup.abstract_state
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype)
           for k, v in setup.task.dummy_batch(local_batch).items()}
  frozen = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                        setup.frozen)
  temps, flops = [], []
  for jitted in setup.train_steps.values():  # a GAN's largest kind of step
    compiled = jitted.lower(state, batch, frozen).compile()
    mem = compiled.memory_analysis()
    temps.append(float(getattr(mem, "temp_size_in_bytes", 0) or 0))
    flops.append(float((compiled.cost_analysis() or {}).get(
        "flops", float("nan"))))
  # NaN (no cost analysis) stays NaN, as with one kind of step.
  return max(temps), max(flops, key=lambda f: (f == f, f))


def report(config, mesh_shape, global_batch, act_config=None) -> str:
  gib = 2**30
  s = plan_state(config, mesh_shape)
  shards = mesh_shape["data"] * mesh_shape["fsdp"]
  if global_batch % shards:
    raise ValueError(f"--global_batch {global_batch} not divisible by "
                     f"data x fsdp = {shards}")
  local = global_batch // shards
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
  if act_config is not None:
    act, flops = activation_bytes(act_config, local)
    lines.append(f"| activations + temporaries (XLA, batch {local}) | "
                 f"{act/gib:.3f} |")
    total += act
  lines.append(f"| **total** | **{total/gib:.2f}** of "
               f"{_MEMORY.value:g} |")
  comm = s["grad_allreduce"] + s["fsdp_gather"] + s["fsdp_scatter"]
  link = _LINK.value * 1e9
  lines += ["", "| communication per device per step | GiB | ms at "
            f"{_LINK.value:g} GB/s |", "|---|---|---|"]
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


def main(argv):
  del argv
  common.start_jax()
  config = _CONFIG.value
  mesh_shape = parse_mesh(_MESH.value)
  with config.unlocked():
    if _SIZE.value:
      config.data.image_size = _SIZE.value
  global_batch = _BATCH.value or config.data.batch_size
  act_config = None
  if not _SKIP_COMPILE.value:
    act_config = config.copy_and_resolve_references()
    for kv in _ACT.value:
      key, _, value = kv.partition("=")
      old = act_config
      for part in key.split("."):
        old = old[part]  # KeyError names the part
      config_lib.set_by_path(act_config, key, type(old)(value))
  print(report(config, mesh_shape, global_batch, act_config))


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
