"""Train steps built from shared pieces.

Supervised tasks (one set of parameters, one optimizer) get their whole
step from `supervised_step` (`make_train_step` is its form for the
`loss_fn(params, batch_stats, batch, rng)` tasks). GAN tasks write their
losses and call `gan_update` once for D and once for G; the adversarial
losses and penalties they use are here, so each is defined once:

  WGAN-GP (StarGAN)   wgan_d, wgan_g, gradient_penalty
  LSGAN + R1 (HRFAE)  lsgan_d, lsgan_g, r1_penalty
  hinge (caricature)  hinge_d, hinge_g (and lsgan_d/lsgan_g)

Every loss takes a discriminator output [B, ...] and an optional example
mask [B]: without it the mean runs over every element, with it over the
examples (each example's own mean over its patches, padding weighted 0).
"""

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from facejax.train import state as state_lib


class StepContext(NamedTuple):
  """What a supervised loss may need besides params, stats and batch."""
  rng: jax.Array     # fold_in(key(seed), step): a resumed run draws the same
  step: jax.Array    # int32: the state's step before this update
  frozen: Any        # the task's frozen networks (`load_frozen`)


def supervised_step(loss_fn: Callable, tx: optax.GradientTransformation,
                    seed: int, trainable: Any = None) -> Callable:
  """Builds `train_step(state, batch, frozen) -> (state, metrics)`.

  Args:
    loss_fn: (params, batch_stats, batch, StepContext) ->
      (loss, (metrics dict, new batch_stats)). Only `params` is
      differentiated: frozen networks enter through the context.
    tx: the optax transformation (frozen parts already set to zero).
    seed: root seed of the step's rng.
    trainable: None (everything trains) or a params-shaped bool mask.
      Frozen parameters enter the loss through stop_gradient, so XLA
      skips their backward pass entirely.

  The metrics are the loss's own plus `loss` and `grad_norm`.
  """
  def train_step(state: state_lib.TrainState, batch: dict, frozen=None):
    ctx = StepContext(jax.random.fold_in(jax.random.key(seed), state.step),
                      state.step, frozen)

    def frozen_aware_loss(params, *args):
      if trainable is not None:
        params = jax.tree.map(
            lambda p, t: p if t else jax.lax.stop_gradient(p), params,
            trainable)
      return loss_fn(params, *args)

    grad_fn = jax.value_and_grad(frozen_aware_loss, has_aux=True)
    (loss, (metrics, batch_stats)), grads = grad_fn(
        state.params, state.batch_stats, batch, ctx)
    params, opt_state, grad_norm = state_lib.apply_gradients(
        state.params, state.opt_state, grads, tx)
    metrics = dict(metrics, loss=loss, grad_norm=grad_norm)
    new_state = state.replace(step=state.step + 1, params=params,
                              batch_stats=batch_stats, opt_state=opt_state)
    return new_state, metrics
  return train_step


def make_train_step(loss_fn: Callable, tx: optax.GradientTransformation,
                    trainable: Any, seed: int) -> Callable:
  """`train_step(state, batch) -> (state, metrics)` of a supervised task.

  Args:
    loss_fn: (params, batch_stats, batch, rng) ->
      (loss, (metrics dict, new batch_stats)).
    tx: the optax transformation (frozen parts already set to zero).
    trainable: params-shaped bool mask (see `supervised_step`).
    seed: root seed; the step's rng is fold_in(key(seed), step) so a
      resumed run draws the same dropout masks.
  """
  step = supervised_step(
      lambda params, stats, batch, ctx: loss_fn(params, stats, batch,
                                                ctx.rng),
      tx, seed, trainable)
  return lambda state, batch: step(state, batch)


# ---------------------------------------------------------------------------
# GAN updates.
# ---------------------------------------------------------------------------


def gan_update(loss_fn: Callable, params: Any, opt_state: Any,
               tx: optax.GradientTransformation, prefix: str):
  """One network's GAN update (the D update or the G update).

  Args:
    loss_fn: params -> (loss, (metrics dict, aux)); aux is whatever the
      step needs afterwards (new statistics, outputs).
    params, opt_state, tx: the network being updated.
    prefix: 'd' or 'g': the loss and gradient norm are reported as
      <prefix>_loss and <prefix>_grad_norm beside the loss's metrics.

  Returns:
    (new params, new opt_state, metrics, aux).
  """
  (loss, (metrics, aux)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(params)
  params, opt_state, grad_norm = state_lib.apply_gradients(
      params, opt_state, grads, tx)
  metrics = {f"{prefix}_loss": loss, **metrics,
             f"{prefix}_grad_norm": grad_norm}
  return params, opt_state, metrics, aux


# ---------------------------------------------------------------------------
# Adversarial losses and penalties.
# ---------------------------------------------------------------------------


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of per-example values [B] over the examples with mask 1."""
  return (values * mask).sum() / jnp.maximum(mask.sum(), 1.0)


def per_example_mean(x: jax.Array) -> jax.Array:
  """[B, ...] -> [B]: each example's mean (e.g. over a patch map)."""
  return x.reshape(x.shape[0], -1).mean(axis=1)


def _mean(x: jax.Array, mask: jax.Array | None) -> jax.Array:
  if mask is None:
    return jnp.mean(x)
  return masked_mean(per_example_mean(x), mask)


def wgan_d(real: jax.Array, fake: jax.Array, mask=None):
  """Wasserstein critic terms (-mean D(real), mean D(fake))."""
  return -_mean(real, mask), _mean(fake, mask)


def wgan_g(fake: jax.Array, mask=None) -> jax.Array:
  """-mean D(fake) (WGAN and hinge generators alike)."""
  return -_mean(fake, mask)


def hinge_d(real: jax.Array, fake: jax.Array, mask=None):
  """Hinge terms (mean relu(1 - D(real)), mean relu(1 + D(fake)))."""
  return (_mean(jax.nn.relu(1.0 - real), mask),
          _mean(jax.nn.relu(1.0 + fake), mask))


hinge_g = wgan_g


def lsgan_d(real: jax.Array, fake: jax.Array, mask=None):
  """Least-squares terms (mean (D(real) - 1)^2, mean D(fake)^2)."""
  return (_mean(jnp.square(real - 1.0), mask),
          _mean(jnp.square(fake), mask))


def lsgan_g(fake: jax.Array, mask=None) -> jax.Array:
  """mean (D(fake) - 1)^2."""
  return _mean(jnp.square(fake - 1.0), mask)


def gradient_penalty(d_fn: Callable, x_hat: jax.Array) -> jax.Array:
  """WGAN-GP: [B] (||d sum(D(x_hat)) / d x_hat_b||_2 - 1)^2 per example.

  D has no batch-coupling layers, so the gradient of the sum gives every
  example its own gradient (the reference's grad_outputs=ones).
  """
  grad = jax.grad(lambda x: d_fn(x).sum())(x_hat)
  sq = jnp.sum(jnp.square(grad.reshape(grad.shape[0], -1)), axis=-1)
  # The tiny epsilon keeps the second derivative finite at a zero gradient.
  return jnp.square(jnp.sqrt(sq + 1e-12) - 1.0)


def r1_penalty(d_fn: Callable, x: jax.Array, mask=None):
  """R1: [B] ||d mean(D(x)) / d x_b||^2 per example, on real images.

  The gradient is of the mean over the batch *and* D's patches (HRFAE's
  scaling, 1/(B*P)); scale by gamma/2 and average to get the penalty.

  Args:
    d_fn: x -> (D output [B, ...], aux), e.g. aux = D's new statistics.
    x: the real images.
    mask: example mask [B] of the mean (None: every element).

  Returns:
    (penalty [B], D output, aux): D's forward pass on x comes for free.
  """
  def mean_out(x):
    out, aux = d_fn(x)
    return _mean(out, mask), (out, aux)
  (_, (out, aux)), grad = jax.value_and_grad(mean_out, has_aux=True)(x)
  return jnp.square(grad).reshape(grad.shape[0], -1).sum(1), out, aux
