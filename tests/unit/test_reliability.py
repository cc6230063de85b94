"""Faults clusters inflict: poisoned updates, inference beside a live run,
two runs on one workdir, a corrupt newest checkpoint, a changed config on
resume, and a killed parent's data workers."""

import json
import numpy as np
import pytest
from facejax.train import loop
from facejax.train import state as state_lib
from reliability_helpers import _config


def test_all_finite_sees_every_float_leaf():
  tree = {"w": np.ones((2, 3), np.float32), "step": np.int32(3),
          "m": [np.zeros(4, np.float32)]}
  assert bool(state_lib.all_finite(tree))
  tree["m"][0][2] = np.inf
  assert not bool(state_lib.all_finite(tree))
  tree["m"][0][2] = np.nan
  assert not bool(state_lib.all_finite(tree))


def test_config_keys_safe_to_change_on_resume(tmp_path):
  """Learning rates of every optimizer section and keys the stored config
  predates resume; weight decay switched on does not."""
  config = _config("age_transformer")
  stored = json.loads(config.to_json_best_effort())
  del stored["data"]["align"]  # a config.json written before data.align
  (tmp_path / "config.json").write_text(json.dumps(stored))
  with config.unlocked():
    config.optim_g.lr = config.optim_g.lr / 10
  changes = loop.check_config_change(str(tmp_path), config, allow=False)
  assert any(c.startswith("optim_g.lr") for c in changes), changes
  assert any(c.startswith("data.align: None") for c in changes), changes
  with config.unlocked():
    config.optim_d.weight_decay = 1e-4
  with pytest.raises(ValueError, match=r"optim_d\.weight_decay"):
    loop.check_config_change(str(tmp_path), config, allow=False)
