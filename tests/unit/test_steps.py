"""The shared step pieces: updates, the supervised step, GAN losses."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from facejax import config_lib
from facejax.tasks import stargan as stargan_task
from facejax.train import state as state_lib
from facejax.train import steps
from helpers import ROOT, flat


def _tree():
  rng = np.random.default_rng(0)
  params = {"a": {"w": rng.normal(size=(3, 2)).astype(np.float32)},
            "b": rng.normal(size=(4,)).astype(np.float32)}
  grads = jax.tree.map(lambda p: np.float32(0.3) * p + 0.1, params)
  return params, grads


def test_apply_gradients_equals_optax():
  params, grads = _tree()
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-2))
  opt = tx.init(params)
  new, new_opt, norm = state_lib.apply_gradients(params, opt, grads, tx)
  updates, want_opt = tx.update(grads, opt, params)
  want = optax.apply_updates(params, updates)
  for k, v in flat(want).items():
    np.testing.assert_array_equal(flat(new)[k], v, err_msg=k)
  for k, v in flat(want_opt).items():
    np.testing.assert_array_equal(flat(new_opt)[k], v, err_msg=k)
  assert float(norm) == float(optax.global_norm(grads))
  # The global norm is sqrt of the sum of every squared entry.
  want_norm = np.sqrt(sum(np.sum(np.square(g))
                          for g in jax.tree.leaves(grads)))
  assert float(norm) == pytest.approx(want_norm, rel=1e-6)


def _linear_loss(params, batch_stats, batch, ctx):
  pred = batch["x"] @ params["a"]["w"] + params["b"][:2]
  loss = jnp.mean(jnp.square(pred - batch["y"]))
  noise = jax.random.uniform(ctx.rng, ())
  return loss, ({"noise": noise, "step_seen": ctx.step,
                 "frozen": ctx.frozen}, {"count": batch_stats["count"] + 1})


def test_supervised_step_update_rng_stats_and_frozen_mask():
  params, _ = _tree()
  batch = {"x": np.ones((5, 3), np.float32),
           "y": np.zeros((5, 2), np.float32)}
  tx = optax.sgd(0.1)
  trainable = {"a": {"w": True}, "b": False}
  state = state_lib.TrainState(step=jnp.int32(3), params=params,
                               batch_stats={"count": jnp.int32(0)},
                               opt_state=tx.init(params))
  new, m = jax.jit(steps.supervised_step(_linear_loss, tx, 7, trainable))(
      state, batch, jnp.float32(2.5))
  # The update: plain SGD on the trainable part, the frozen part unchanged.
  (loss, _), grads = jax.value_and_grad(_linear_loss, has_aux=True)(
      params, state.batch_stats, batch,
      steps.StepContext(jax.random.key(0), state.step, None))
  np.testing.assert_allclose(new.params["a"]["w"],
                             params["a"]["w"] - 0.1 * grads["a"]["w"],
                             rtol=1e-6)
  np.testing.assert_array_equal(new.params["b"], params["b"])
  # Metrics: the loss's own, the loss, and the norm of the gradients
  # that reach the optimizer (zero for the frozen part).
  assert float(m["loss"]) == pytest.approx(float(loss), rel=1e-6)
  assert float(m["grad_norm"]) == pytest.approx(
      float(optax.global_norm(grads["a"])), rel=1e-6)
  # The rng is fold_in(key(seed), step); the step and frozen are passed.
  want_noise = jax.random.uniform(
      jax.random.fold_in(jax.random.key(7), 3), ())
  assert float(m["noise"]) == float(want_noise)
  assert int(m["step_seen"]) == 3 and float(m["frozen"]) == 2.5
  assert int(new.step) == 4 and int(new.batch_stats["count"]) == 1


def test_make_train_step_is_the_supervised_step_with_rng_only():
  params, _ = _tree()
  batch = {"x": np.ones((5, 3), np.float32),
           "y": np.zeros((5, 2), np.float32)}
  tx = optax.adam(1e-3)
  state = state_lib.TrainState(step=jnp.int32(0), params=params,
                               batch_stats={"count": jnp.int32(0)},
                               opt_state=tx.init(params))

  def loss_fn(params, batch_stats, batch, rng):
    loss, (metrics, stats) = _linear_loss(
        params, batch_stats, batch, steps.StepContext(rng, None, None))
    del metrics["step_seen"], metrics["frozen"]
    return loss, (metrics, stats)
  trainable = jax.tree.map(lambda _: True, params)
  a, ma = steps.make_train_step(loss_fn, tx, trainable, 1)(state, batch)
  b, mb = steps.supervised_step(_linear_loss, tx, 1)(state, batch)
  for k, v in flat(a).items():
    np.testing.assert_array_equal(flat(b)[k], v, err_msg=k)
  for k in ma:
    np.testing.assert_array_equal(ma[k], mb[k], err_msg=k)


def test_gan_update_reports_prefixed_loss_norm_and_aux():
  params, _ = _tree()
  tx = optax.adam(1e-2)
  opt = tx.init(params)

  def loss_fn(p):
    loss = jnp.sum(jnp.square(p["a"]["w"])) + jnp.sum(p["b"])
    return loss, ({"d_part": 2 * loss}, "aux")
  new, new_opt, m, aux = steps.gan_update(loss_fn, params, opt, tx, "d")
  grads = jax.grad(lambda p: loss_fn(p)[0])(params)
  want, want_opt, norm = state_lib.apply_gradients(params, opt, grads, tx)
  for k, v in flat(want).items():
    np.testing.assert_array_equal(flat(new)[k], v, err_msg=k)
  assert jax.tree.structure(new_opt) == jax.tree.structure(want_opt)
  assert aux == "aux" and set(m) == {"d_loss", "d_part", "d_grad_norm"}
  assert float(m["d_part"]) == pytest.approx(2 * float(m["d_loss"]))
  assert float(m["d_grad_norm"]) == float(norm)


def test_masked_mean_ignores_padding_and_empty_masks():
  x = jnp.array([1.0, 3.0, 100.0])
  assert float(steps.masked_mean(x, jnp.array([1.0, 1.0, 0.0]))) == 2.0
  assert float(steps.masked_mean(x, jnp.zeros(3))) == 0.0


def test_adversarial_losses_hand_cases():
  real = jnp.array([[2.0, 0.0], [0.5, 0.5]])    # [B=2, 2 patches]
  fake = jnp.array([[-2.0, 0.0], [1.0, 3.0]])
  # Without a mask: means over every element.
  d_real, d_fake = steps.wgan_d(real, fake)
  assert (float(d_real), float(d_fake)) == (-0.75, 0.5)
  assert float(steps.wgan_g(fake)) == -0.5
  assert float(steps.hinge_g(fake)) == -0.5
  # relu(1 - real) = [[0, 1], [.5, .5]]; relu(1 + fake) = [[0, 1], [2, 4]]
  h_real, h_fake = steps.hinge_d(real, fake)
  assert (float(h_real), float(h_fake)) == (0.5, 1.75)
  # (real - 1)^2 = [[1, 1], [.25, .25]]; fake^2 = [[4, 0], [1, 9]]
  l_real, l_fake = steps.lsgan_d(real, fake)
  assert (float(l_real), float(l_fake)) == (0.625, 3.5)
  # (fake - 1)^2 = [[9, 1], [0, 4]]
  assert float(steps.lsgan_g(fake)) == 3.5
  # With a mask: the second example is padding.
  w = jnp.array([1.0, 0.0])
  assert float(steps.wgan_g(fake, w)) == 1.0
  assert [float(v) for v in steps.hinge_d(real, fake, w)] == [0.5, 0.5]
  assert [float(v) for v in steps.lsgan_d(real, fake, w)] == [1.0, 2.0]
  assert float(steps.lsgan_g(fake, w)) == 5.0


def test_gradient_penalty_of_a_linear_critic():
  # D(x) = <a, x> per example: every gradient is a, so gp = (|a| - 1)^2.
  a = jnp.array([[3.0, 4.0]])
  d_fn = lambda x: (x * a).sum(-1, keepdims=True)
  gp = steps.gradient_penalty(d_fn, jnp.ones((3, 2)))
  np.testing.assert_allclose(gp, [16.0] * 3, rtol=1e-6)


def test_r1_penalty_of_a_linear_critic():
  # D(x) = a * x patch-wise ([B, P=2]); the mean over 2 valid examples and
  # their 2 patches has gradient mask_b * a / (2 * 2) per example.
  a = jnp.array([1.0, 2.0])
  d_fn = lambda x: (x * a, "stats")
  x = jnp.arange(6.0).reshape(3, 2)
  w = jnp.array([1.0, 1.0, 0.0])
  pen, out, aux = steps.r1_penalty(d_fn, x, w)
  np.testing.assert_allclose(pen, [5.0 / 16, 5.0 / 16, 0.0], rtol=1e-6)
  np.testing.assert_array_equal(out, x * a)
  assert aux == "stats"
  pen, _, _ = steps.r1_penalty(d_fn, x)  # every element: 1 / (3 * 2)
  np.testing.assert_allclose(pen, [5.0 / 36] * 3, rtol=1e-6)


@pytest.mark.parametrize("schedule", ["linear", "official"])
def test_stargan_schedule_inside_optax_follows_the_global_step(
    schedule, tmp_path):
  n_critic, total = 3, 12
  config = config_lib.load_config(
      os.path.join(ROOT, "configs", "stargan.py:smoke"), {
          "data.synthetic_dir": str(tmp_path), "total_steps": total,
          "optim.decay_steps": 6, "optim.lr_update_step": 2,
          "optim.schedule": schedule, "loss.n_critic": n_critic})
  task = stargan_task.Task(config)
  o = config.optim
  params = {"w": jnp.ones((3,))}
  adam = optax.scale_by_adam(b1=o.b1, b2=o.b2)
  for tx, lr0, every in ((task.tx_d, o.d_lr, 1),
                         (task.tx_g, o.g_lr, n_critic)):
    opt, adam_opt = tx.init(params), adam.init(params)
    for count in range(total // every):
      grads = {"w": jnp.array([0.5, -1.0, 2.0]) * (count + 1)}
      upd, opt = tx.update(grads, opt, params)
      direction, adam_opt = adam.update(grads, adam_opt, params)
      # The update is -lr * Adam's direction, lr at the global step of the
      # count-th update of a network updated every `every` steps.
      lr = stargan_task.learning_rate(o, lr0, total,
                                      (count + 1) * every - 1)
      np.testing.assert_allclose(upd["w"], -float(lr) * direction["w"],
                                 rtol=1e-6, err_msg=f"{every} {count}")
