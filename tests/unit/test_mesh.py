"""Mesh, sharding rules, and 8-device == 1-device training."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from facejax import mesh as mesh_lib
from helpers import setup_on
from helpers import assert_trees_close, flat, smoke_config


def test_mesh_shapes_and_errors():
  assert jax.device_count() == 8
  mesh = mesh_lib.create_mesh((("data", -1), ("fsdp", 2), ("model", 1)))
  assert dict(mesh.shape) == {"data": 4, "fsdp": 2, "model": 1}
  one = mesh_lib.create_mesh((("data", 1), ("fsdp", 1), ("model", 1)))
  assert one.devices.size == 1
  with pytest.raises(ValueError, match="config key mesh"):
    mesh_lib.create_mesh((("data", -1), ("fsdp", 3), ("model", 1)))
  with pytest.raises(ValueError, match="config key mesh"):
    mesh_lib.create_mesh((("data", -1), ("model", 1)))
  with pytest.raises(ValueError, match="data.batch_size"):
    mesh_lib.check_batch_size(12, mesh_lib.create_mesh(
        (("data", -1), ("fsdp", 1), ("model", 1))), "data.batch_size")


def test_spec_rules_and_fsdp_threshold():
  mesh = mesh_lib.create_mesh((("data", 2), ("fsdp", 2), ("model", 2)))
  rules = ((r"classifier/kernel$", (None, "model")),)
  assert mesh_lib.spec_for("params/classifier/kernel", (512, 1000), mesh,
                           rules) == P(None, "model")
  # Big (4 MiB+) tensors go FSDP along the largest divisible dimension.
  assert mesh_lib.spec_for("params/fc/kernel", (1024, 2048), mesh,
                           fsdp_min_size_mb=4) == P(None, "fsdp")
  assert mesh_lib.spec_for("params/fc/kernel", (1024, 2048), mesh,
                           fsdp_min_size_mb=100) == P()
  assert mesh_lib.spec_for("params/b", (7,), mesh, fsdp_min_size_mb=0) == P()
  with pytest.raises(ValueError, match="not divisible"):
    mesh_lib.spec_for("params/classifier/kernel", (512, 999), mesh, rules)


def _run_steps(config, mesh_cfg, steps=3):
  setup, state, init = setup_on(config, mesh_cfg)
  rng = np.random.default_rng(0)
  losses = []
  for _ in range(steps):
    batch = {"image": rng.normal(size=(16, 32, 32, 3)).astype(np.float32),
             "age": rng.uniform(0, 100, size=(16,)).astype(np.float32),
             "mask": np.ones((16,), np.float32)}
    state, metrics = setup.train_step(
        state, mesh_lib.shard_batch(batch, setup.mesh), setup.frozen)
    losses.append(float(metrics["loss"]))
  return setup, init, state, losses


def test_sharded_step_equals_single_device(tmp_path, fast_compiles):
  config = smoke_config(str(tmp_path), **{"data.batch_size": 16})
  _, init1, s1, l1 = _run_steps(config, (("data", 1), ("fsdp", 1),
                                         ("model", 1)))
  # 8 devices: batch over data x fsdp, big params sharded (threshold 0).
  with config.unlocked():
    config.sharding.fsdp_min_size_mb = 0.01
  setup8, init8, s8, l8 = _run_steps(config, (("data", 4), ("fsdp", 2),
                                              ("model", 1)))
  # Each mesh compiled its own init program (FSDP-sharded parameters
  # among its outputs) and both gave the same values to the bit, which the
  # other models' sharded tests rely on (helpers.setup_on's `init`).
  init1, init8 = flat(init1), flat(init8)
  assert init1.keys() == init8.keys()
  for k, v in init1.items():
    np.testing.assert_array_equal(v, init8[k], err_msg=k)
  np.testing.assert_allclose(l1, l8, rtol=1e-5)
  assert_trees_close(s1.params, s8.params, rtol=1e-4, atol=1e-6)
  assert_trees_close(s1.batch_stats, s8.batch_stats, rtol=1e-4, atol=1e-6)
  # Some parameter really is FSDP-sharded, and the step kept the sharding.
  specs = {k: v.sharding.spec for k, v in
           jax.tree_util.tree_leaves_with_path(s8.params)
           for k in [jax.tree_util.keystr(k)]}
  assert any("fsdp" in str(s) for s in specs.values()), specs
  want = flat(jax.tree.map(lambda s: s.spec, setup8.state_sharding.params))
  got = flat(jax.tree.map(lambda a: a.sharding.spec, s8.params))
  assert {k: str(v) for k, v in want.items()} == {
      k: str(v) for k, v in got.items()}
