"""Freeze policies leave frozen parameters bit-identical; schedules."""

import numpy as np
import pytest

from facejax import optim
from facejax import mesh as mesh_lib
from facejax import tasks
from helpers import flat, smoke_config


@pytest.mark.parametrize("policy,trained_prefixes", [
    ("feature_extraction", ("['head']",)),
    ("last_block", ("['head']", "['backbone']['layer4_0']")),
    ("finetune", ("",)),
])
def test_freeze_policy(tmp_path, policy, trained_prefixes, fast_compiles):
  config = smoke_config(str(tmp_path), **{"optim.freeze": policy,
                                          "data.batch_size": 8})
  with config.unlocked():
    config.mesh = (("data", 1), ("fsdp", 1), ("model", 1))
  setup = tasks.setup(config)
  state = setup.init_state()
  before = flat(state.params)
  stats_before = flat(state.batch_stats)
  rng = np.random.default_rng(0)
  for _ in range(3):
    batch = {"image": rng.normal(size=(8, 32, 32, 3)).astype(np.float32),
             "age": rng.uniform(0, 100, size=(8,)).astype(np.float32),
             "mask": np.ones((8,), np.float32)}
    state, _ = setup.train_step(
        state, mesh_lib.shard_batch(batch, setup.mesh), setup.frozen)
  after = flat(state.params)
  for k in before:
    trained = any(k.startswith(p) for p in trained_prefixes)
    if trained:
      assert not np.array_equal(before[k], after[k]), f"{k} did not train"
    else:
      assert np.array_equal(before[k], after[k]), f"{k} changed (frozen)"
  for k, v in flat(state.batch_stats).items():
    if not any(k.startswith(p) for p in trained_prefixes):
      assert np.array_equal(stats_before[k], v), f"{k} stats changed"


def test_unknown_policy_and_optimizer_errors():
  params = {"head": {"kernel": np.zeros((2, 1))}}
  with pytest.raises(ValueError, match="optim.freeze"):
    optim.trainable_mask(params, "everything")
  cfg = smoke_config("/nonexistent").optim
  with cfg.unlocked():
    cfg.name = "rmsprop_typo"
  with pytest.raises(ValueError, match="optim.name"):
    optim.create_optimizer(cfg, 10, {"head": {"kernel": True}})


def test_schedules_warmup_and_decay():
  cfg = smoke_config("/nonexistent").optim
  with cfg.unlocked():
    cfg.lr, cfg.warmup_steps = 1.0, 10
  for name in optim.SCHEDULES:
    cfg.schedule = name
    s = optim.create_schedule(cfg, 100)
    assert float(s(0)) == 0.0 and abs(float(s(10)) - 1.0) < 1e-6, name
    if name != "constant":
      assert float(s(99)) < 0.5, name
