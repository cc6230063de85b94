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

from absl import app
from absl import flags
from ml_collections import config_flags

from facejax import config_lib
from facejax.evaluators import scaling
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


def main(argv):
  del argv
  common.start_jax()
  config = _CONFIG.value
  mesh_shape = scaling.parse_mesh(_MESH.value)
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
  plan = scaling.plan_state(tasks.get(config.task)(config), config,
                            mesh_shape)
  activations = None
  if act_config is not None:
    local = scaling.per_device_batch(global_batch, mesh_shape)
    setup = tasks.setup(scaling.local_config(act_config, local))
    activations = scaling.activation_bytes(setup, local)
  print(scaling.report(config, plan, mesh_shape, global_batch,
                       _MEMORY.value, _LINK.value, activations))


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
