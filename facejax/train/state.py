"""The train state pytree and the generic supervised train step."""

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  step: jax.Array          # int32 scalar
  params: Any
  batch_stats: Any         # BatchNorm running statistics ({} if none)
  opt_state: Any


def make_train_step(loss_fn: Callable, tx: optax.GradientTransformation,
                    trainable: Any, seed: int) -> Callable:
  """Builds `train_step(state, batch) -> (state, metrics)`.

  Args:
    loss_fn: (params, batch_stats, batch, rng) ->
      (loss, (metrics dict, new batch_stats)).
    tx: the optax transformation (frozen parts already set to zero).
    trainable: params-shaped bool mask. Frozen parameters enter the loss
      through stop_gradient, so XLA skips their backward pass entirely.
    seed: root seed; the step's rng is fold_in(key(seed), step) so a
      resumed run draws the same dropout masks.
  """
  def train_step(state: TrainState, batch: dict):
    rng = jax.random.fold_in(jax.random.key(seed), state.step)
    def frozen_aware_loss(params, *args):
      params = jax.tree.map(
          lambda p, t: p if t else jax.lax.stop_gradient(p), params,
          trainable)
      return loss_fn(params, *args)

    grad_fn = jax.value_and_grad(frozen_aware_loss, has_aux=True)
    (loss, (metrics, batch_stats)), grads = grad_fn(
        state.params, state.batch_stats, batch, rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics, loss=loss,
                   grad_norm=optax.global_norm(grads))
    new_state = state.replace(step=state.step + 1, params=params,
                              batch_stats=batch_stats, opt_state=opt_state)
    return new_state, metrics
  return train_step


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
