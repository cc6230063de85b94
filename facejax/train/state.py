"""The train state pytrees and the one way a step applies its gradients."""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  """One set of parameters with one optimizer (the supervised tasks)."""
  step: jax.Array          # int32 scalar
  params: Any
  batch_stats: Any         # BatchNorm running statistics ({} if none)
  opt_state: Any


@flax.struct.dataclass
class GanState:
  """A generator and a discriminator, each with its own optimizer.

  `gen_stats` / `disc_stats` hold each network's non-trained variables
  (spectral-norm vectors, BatchNorm statistics; {} when it has none).
  `g_metrics` carries the latest generator metrics across steps that do
  not update the generator (StarGAN's n_critic), so every step reports
  them; {} for GANs that update both networks every step.
  """
  step: jax.Array          # int32 scalar: steps done
  gen: Any                 # generator params
  disc: Any                # discriminator params
  gen_opt: Any
  disc_opt: Any
  gen_stats: Any = flax.struct.field(default_factory=dict)
  disc_stats: Any = flax.struct.field(default_factory=dict)
  g_metrics: Any = flax.struct.field(default_factory=dict)


def apply_gradients(params: Any, opt_state: Any, grads: Any,
                    tx: optax.GradientTransformation
                    ) -> tuple[Any, Any, jax.Array]:
  """One optimizer update: (new params, new opt_state, global grad norm).

  The only place a train step turns gradients into new parameters: every
  learning rate, schedule and per-parameter scale lives in `tx`.
  """
  updates, opt_state = tx.update(grads, opt_state, params)
  return (optax.apply_updates(params, updates), opt_state,
          optax.global_norm(grads))


def count_params(params: Any) -> int:
  return int(sum(jnp.size(x) for x in jax.tree.leaves(params)))


def all_finite(tree: Any) -> jax.Array:
  """True when every floating leaf of `tree` is finite (a bool scalar).

  Run inside every train step on the new state (parameters, optimizer
  moments, statistics), so a step that poisons the weights is caught at
  that step, whatever its loss was, and never reaches a checkpoint.
  """
  checks = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(checks)) if checks else jnp.asarray(True)
