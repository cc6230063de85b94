"""Optimizers, schedules and freeze policies from `config.optim`.

Freeze policies (the three regimes the age-estimation seed compared):
  finetune            - every parameter trains;
  feature_extraction  - only the head trains;
  last_block          - the backbone's last stage and the head train.
Frozen parameters get `optax.set_to_zero()` through `optax.multi_transform`,
so their values stay bit-identical and they carry no optimizer moments.
"""

from typing import Any, Sequence

import jax
import ml_collections
import optax
from flax import traverse_util

FREEZE_POLICIES = ("finetune", "feature_extraction", "last_block")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step", "linear")


def create_schedule(cfg: ml_collections.ConfigDict,
                    total_steps: int) -> optax.Schedule:
  """Learning-rate schedule with optional linear warm-up."""
  lr, warmup = cfg.lr, int(cfg.get("warmup_steps", 0))
  name = cfg.get("schedule", "constant")
  decay_steps = max(1, total_steps - warmup)
  if name == "constant":
    main = optax.constant_schedule(lr)
  elif name == "cosine":
    main = optax.cosine_decay_schedule(lr, decay_steps,
                                       alpha=cfg.get("final_lr_fraction", 0.))
  elif name == "linear":
    main = optax.linear_schedule(lr, lr * cfg.get("final_lr_fraction", 0.),
                                 decay_steps)
  elif name == "step":
    # Multiply by decay_factor at each boundary (fractions of training).
    boundaries = {int(f * total_steps) - warmup: cfg.get("decay_factor", 0.1)
                  for f in cfg.get("decay_at", (0.5, 0.75))}
    main = optax.piecewise_constant_schedule(lr, boundaries)
  else:
    raise ValueError(f"config key optim.schedule: unknown {name!r}; "
                     f"choose one of {SCHEDULES}")
  if warmup:
    return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, warmup), main], [warmup])
  return main


def _base_optimizer(cfg, schedule) -> optax.GradientTransformation:
  name = cfg.get("name", "adam")
  wd = cfg.get("weight_decay", 0.0)
  if name in ("sgd", "adam"):
    if name == "sgd":
      tx = optax.sgd(schedule, momentum=cfg.get("momentum", 0.9) or None,
                     nesterov=cfg.get("nesterov", False))
    else:
      tx = optax.adam(schedule, b1=cfg.get("b1", 0.9),
                      b2=cfg.get("b2", 0.999))
    # L2 regularisation added to the gradient, as torch.optim does.
    return optax.chain(optax.add_decayed_weights(wd), tx) if wd else tx
  if name == "adamw":
    # No decay on biases and norm scales (1-D parameters).
    mask = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
    return optax.adamw(schedule, b1=cfg.get("b1", 0.9),
                       b2=cfg.get("b2", 0.999), weight_decay=wd, mask=mask)
  raise ValueError(f"config key optim.name: unknown optimizer {name!r}; "
                   f"choose one of {OPTIMIZERS}")


def trainable_mask(params: Any, policy: str,
                   last_block_prefixes: Sequence[str] = (),
                   head_prefixes: Sequence[str] = ("head",)) -> Any:
  """Pytree of bools: True where the parameter trains under `policy`."""
  if policy not in FREEZE_POLICIES:
    raise ValueError(f"config key optim.freeze: unknown policy {policy!r}; "
                     f"choose one of {FREEZE_POLICIES}")
  if policy == "finetune":
    prefixes = ("",)
  elif policy == "feature_extraction":
    prefixes = tuple(head_prefixes)
  else:
    prefixes = tuple(last_block_prefixes) + tuple(head_prefixes)
  flat = traverse_util.flatten_dict(params, sep="/")
  mask = {k: any(k.startswith(p) for p in prefixes) for k in flat}
  if not any(mask.values()):
    raise ValueError(f"freeze policy {policy!r} leaves no parameter "
                     f"trainable (prefixes {prefixes})")
  return traverse_util.unflatten_dict(mask, sep="/")


def create_optimizer(cfg: ml_collections.ConfigDict, total_steps: int,
                     trainable: Any
                     ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Full transformation: clip -> optimizer; frozen parts set to zero.

  Args:
    cfg: `config.optim`.
    total_steps: for the schedule.
    trainable: params-shaped bool mask from `trainable_mask`; None when
      every parameter trains.
  """
  schedule = create_schedule(cfg, total_steps)
  tx = _base_optimizer(cfg, schedule)
  if cfg.get("clip_norm", 0.0):
    tx = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), tx)
  if trainable is None:
    return tx, schedule
  labels = jax.tree.map(lambda m: "train" if m else "freeze", trainable)
  tx = optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()},
                             labels)
  return tx, schedule
