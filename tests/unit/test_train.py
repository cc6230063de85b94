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


def test_metric_writer_writes_tensorboard_without_loading_torch(tmp_path):
  """tensorboardX's writer imports torch whenever it is installed (as it is
  beside the parity tests); facejax's writer keeps it out of a training
  process (metrics._summary_writer_class), in a fresh interpreter here."""
  import json  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from helpers import ROOT  # pylint: disable=g-import-not-at-top
  code = (
      "import sys\n"
      "from facejax import metrics\n"
      f"w = metrics.MetricWriter({str(tmp_path)!r})\n"
      "w.write(3, {'loss': 1.5})\n"
      "w.close()\n"
      "print('torch loaded:', 'torch' in sys.modules)\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True,
                       capture_output=True, text=True,
                       env=dict(os.environ, JAX_PLATFORMS="cpu",
                                XLA_FLAGS="")).stdout
  assert "torch loaded: False" in out, out
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert rows == [{"step": 3, "loss": 1.5}]
  events = os.listdir(tmp_path / "tensorboard")
  assert len(events) == 1 and events[0].startswith("events.out.tfevents")
  assert os.path.getsize(tmp_path / "tensorboard" / events[0]) > 0
