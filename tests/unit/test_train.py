"""End-to-end training: learning, bad config/workdir, NaN guard, SIGTERM."""

import os
import pytest
from facejax import config_lib
from facejax.train import loop
from helpers import smoke_config


def test_unknown_config_key_is_named(age_data):
  with pytest.raises(KeyError, match="data.imagesize"):
    smoke_config(age_data, **{"data.imagesize": 64})
  with pytest.raises(ValueError, match="unknown key 'smok'"):
    config_lib.parse_arg("smok=1", variant="base", smoke=False)


def test_paths_of_other_runs_are_recorded_absolute(tmp_path, monkeypatch):
  import ml_collections  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(tmp_path)
  os.makedirs("runs/sphereface")
  c = ml_collections.ConfigDict({
      "identity": {"source": "workdir", "workdir": "runs/sphereface",
                   "weights": ""},
      "eval": {"classifier_workdir": "runs/missing"}})
  loop._absolute_run_paths(c)  # pylint: disable=protected-access
  assert c.identity.workdir == str(tmp_path / "runs/sphereface")
  assert c.identity.source == "workdir" and c.identity.weights == ""
  assert c.eval.classifier_workdir == "runs/missing"  # not on disk: as given
