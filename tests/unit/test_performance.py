"""What keeps a step fast: donation, no host syncs, one compile; remat."""

import jax
import jax.numpy as jnp
import numpy as np
from facejax import mesh as mesh_lib
from facejax.models import age_transformer
from facejax.models import swin
from facejax import tasks
from helpers import smoke_config


def test_train_steps_donate_state_without_host_sync_or_recompile(age_data):
  setup = tasks.setup(smoke_config(age_data))
  state = setup.init_state()
  batch = mesh_lib.shard_batch(setup.task.dummy_batch(setup.local_batch),
                               setup.mesh)
  state, _ = setup.run(setup.train_step, state, batch)  # compiles
  # Between log steps nothing may wait for the device: an implicit
  # device->host transfer (float(x), np.asarray(x), `if x:`) would raise.
  with jax.transfer_guard_device_to_host("disallow"):
    for _ in range(3):
      before = jax.tree.leaves(state)
      state, metrics = setup.run(setup.train_step, state, batch)
      # Donated: the old state's buffers were reused for the new one.
      assert all(x.is_deleted() for x in before)
  assert len(setup._compiled) == 1  # pylint: disable=protected-access
  assert np.isfinite(float(jax.device_get(metrics["loss"])))


def _grads(module, variables, x, *args):
  def loss(params):
    out = module.apply({**variables, "params": params}, x, *args,
                       mutable=True)[0]
    out = out[1] if isinstance(out, tuple) else out
    return jnp.mean(jnp.square(out))
  lowered = jax.jit(jax.value_and_grad(loss)).lower(variables["params"])
  return lowered.as_text(), lowered.compile()(variables["params"])


def test_remat_switch_recomputes_and_keeps_gradients(fast_compiles):
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  ages = jnp.array([20.0, 60.0])
  cases = [(age_transformer.Generator(width=8, num_res_blocks=2, remat=r), (ages, True))
           for r in (False, True)]
  cases += [(swin.create("tiny", remat=r), (False,)) for r in (False, True)]
  for (plain, args), (remat, _) in (cases[:2], cases[2:]):
    # Jitted: an eager init compiles every primitive on its own, and
    # compiles that small are never kept in the persistent cache.
    init = jax.jit(lambda rngs, x, m=plain, a=args: m.init(rngs, x, *a))
    variables = init({"params": jax.random.key(1),
                      "dropout": jax.random.key(2)}, x)
    hlo_plain, (loss_plain, g_plain) = _grads(plain, variables, x, *args)
    hlo_remat, (loss_remat, g_remat) = _grads(remat, variables, x, *args)
    # Same parameters and math: same loss and gradients.
    np.testing.assert_allclose(loss_remat, loss_plain, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g_remat), jax.tree.leaves(g_plain)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # The backward pass recomputes the blocks behind a barrier.
    assert "optimization_barrier" in hlo_remat
    assert "optimization_barrier" not in hlo_plain
