"""What keeps a step fast: donation, no host syncs, one compile; remat."""

import json
import os
import resource
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from facejax import mesh as mesh_lib

from facejax import runtime
from facejax.models import age_transformer
from facejax.models import swin
from facejax.train import loop
from helpers import ROOT
from helpers import smoke_config


def test_train_steps_donate_state_without_host_sync_or_recompile(age_data):
  setup = loop.Setup(smoke_config(age_data))
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


def test_remat_switch_recomputes_and_keeps_gradients():
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


# A donated step with a 32 MB temporary buffer, timed in a fresh process
# the way a training run meets it; prints the temp size and per-step faults.
_HEAP_PROBE = """
import json, resource
from facejax import mesh as mesh_lib
from facejax import runtime
runtime.configure_runtime()
import jax, jax.numpy as jnp
step = jax.jit(lambda x: jnp.tanh(x @ x) @ x * 1e-3 + jnp.sin(x @ x),
               donate_argnums=0)
x = jnp.ones((2048, 2048))
temp = step.lower(x).compile().memory_analysis().temp_size_in_bytes
faults = []
for _ in range(24):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  x = jax.block_until_ready(step(x))
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps(dict(kept=runtime.host_heap_kept(), temp=temp,
                      faults=faults[8:])))
"""


def _heap_probe(keep):
  env = dict(os.environ, PYTHONPATH=ROOT, FACEJAX_KEEP_HEAP=keep)
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run([sys.executable, "-c", _HEAP_PROBE], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=300,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_host_heap_is_reused_between_steps():
  """A step's 32 MB temporary buffer is not page-faulted in again.

  Default glibc malloc unmaps it after every step (256 faults per MB,
  plus the matmuls' packing buffers); with `runtime.keep_host_heap` the
  steps reuse the pages. The kept heap still grows by a buffer now and then
  while frees from the pool threads interleave (a few of the first ten
  steps), so the test compares the median of steps 9-24, in fresh processes.
  """
  expected = runtime.keep_host_heap_applies()
  assert runtime.host_heap_kept() == expected
  kept, default = _heap_probe("1"), _heap_probe("0")
  pages = kept["temp"] // resource.getpagesize()
  assert pages >= 2048  # the temp buffer is >= 8 MB
  print(f"temp {pages} pages; minor faults per step kept {kept['faults']}, "
        f"default {default['faults']}")
  assert not default["kept"] and kept["kept"] == expected
  if expected:  # glibc, not configured by the user
    # The measurement can see the faults: without the setting every step
    # faults its temp buffer in again.
    assert np.median(default["faults"]) >= pages // 2
    assert np.median(kept["faults"]) < pages // 4
