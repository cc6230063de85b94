"""Config sections shared by every model: mesh, sharding, checkpoints, logs."""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.total_steps = 1000
  c.log_every_steps = 20
  c.eval_every_steps = 500
  # (axis, size); -1 takes the remaining devices. Batch is split over
  # data x fsdp; parameters >= fsdp_min_size_mb are sharded over fsdp.
  c.mesh = (("data", -1), ("fsdp", 1), ("model", 1))
  c.sharding = ml_collections.ConfigDict()
  c.sharding.fsdp_min_size_mb = 4.0
  c.sharding.rules = ()  # ((regex, (axis | None, ...)), ...), first match
  c.ckpt = ml_collections.ConfigDict()
  c.ckpt.every_steps = 200
  c.ckpt.keep = 3
  c.ckpt.async_save = True
  c.wandb = ml_collections.ConfigDict()
  c.wandb.enabled = True   # used only if the wandb package is installed
  c.wandb.project = "facejax"
  c.wandb.mode = "offline"
  return c
