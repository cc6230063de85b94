"""Small helpers shared by the tests."""

import contextlib
import json
import os

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def smoke_config(data_root: str, **overrides):
  """The age regressor's smoke config on `data_root`, with overrides."""
  from facejax import config_lib  # pylint: disable=g-import-not-at-top
  overrides = {"data.root": data_root, **overrides}
  return config_lib.load_config(
      os.path.join(ROOT, "configs", "age_regressor.py:smoke"), overrides)


def flat(tree) -> dict[str, np.ndarray]:
  """{'a/b/c': array} of a pytree, pulled to host."""
  leaves = jax.tree_util.tree_leaves_with_path(jax.device_get(tree))
  return {jax.tree_util.keystr(p): np.asarray(v) for p, v in leaves}


def assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
  fa, fb = flat(a), flat(b)
  assert fa.keys() == fb.keys()
  for k in fa:
    np.testing.assert_allclose(fa[k], fb[k], rtol=rtol, atol=atol, err_msg=k)


@contextlib.contextmanager
def fast_compiles():
  """XLA's fast-compile mode, for tests that check wiring or numbers, not
  speed (whole-step compiles take about half as long on a 2-core AMD EPYC
  with AVX-512: e.g. the SwinFace sharded test 81 -> 53 s, cold cache)."""
  jax.config.update("jax_disable_most_optimizations", True)
  try:
    yield
  finally:
    jax.config.update("jax_disable_most_optimizations", False)


# The same mode for a test's subprocesses (jax reads the variable when it
# is imported), for fault and resume runs whose time is mostly compiling
# a step they run a few times. Measured cold, -n 2, on a 2-core AMD EPYC
# with AVX-512: the reliability, resume and multi-process files 309 ->
# 242 s (CPU 488 -> 354 s; the multi-process test 184 -> 116 s). Not
# used where steps run longer than they compile (tests/e2e/test_launch.py
# and test_train.py measured 127 s either way); learning runs keep the
# full optimisation.
FAST_COMPILE_ENV = {"JAX_DISABLE_MOST_OPTIMIZATIONS": "1"}


def setup_on(config, mesh, init=None):
  """(setup, initial state, a host copy of it) of `config` on `mesh` (a
  config's mesh tuple), leaving `config` as it is: the sharded ==
  single-device tests build the same config on two meshes. (The train step
  donates the state; the host copy outlives it.)

  `init`, a host copy of the initial state on another mesh, is placed on
  this one instead of compiling the init program again for it: the values
  do not depend on the sharding (tests/unit/test_mesh.py checks that).
  """
  from facejax import tasks  # pylint: disable=g-import-not-at-top
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.mesh = mesh
  setup = tasks.setup(config)
  if init is None:
    state = setup.init_state()
    return setup, state, jax.device_get(state)
  return setup, jax.device_put(init, setup.state_sharding), init


# --- learning tests: seeds and measured values ------------------------------
# Every learning test seeds its runs (init, data order, target sampling) from
# `learning_seed`. FACEJAX_LEARNING_SEED shifts all of them at once, so that
# tests/measure_learning.py can measure a test's spread over seeds; unset,
# CI runs seed offset 0.
LEARNING_SEED_OFFSET = int(os.environ.get("FACEJAX_LEARNING_SEED", "0"))


def learning_seed(base: int = 0) -> int:
  """The seed of a learning run whose config default is `base`."""
  return base + LEARNING_SEED_OFFSET


def record_learning(test: str, **values) -> None:
  """Appends a learning test's measured values as one JSON
  line to $FACEJAX_LEARNING_LOG, for tests/measure_learning.py."""
  path = os.environ.get("FACEJAX_LEARNING_LOG")
  if not path:
    return
  row = {"test": test, "seed_offset": LEARNING_SEED_OFFSET,
         "xla_flags": os.environ.get("XLA_FLAGS", "").strip(),
         **{k: float(v) for k, v in values.items()}}
  with open(path, "a") as f:
    f.write(json.dumps(row) + "\n")
