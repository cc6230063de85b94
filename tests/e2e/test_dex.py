"""DEX age classifier: targets, loss, weight import (fc6 order), learning."""

import json
import os
import jax.numpy as jnp
import numpy as np
import pytest
from facejax.tasks import frozen as frozen_lib
from facejax import tasks
from helpers import record_learning
from dex_helpers import GEO, ROOT, _config, _dex_state_dict, _numpy_dex, _save_state_dict


def test_smoke_training_beats_the_mean_baseline(dex_workdir):
  """configs/dex.py:smoke on the 1,500-face 64 px synthetic age set.

  400 steps (tiny VGG, 32 px, Gaussian soft labels, ~70 s on 2 cores incl.
  compile) against 23.9 years for always predicting the training mean; the
  bar is half of it (12.0). Measured over seeds 0-2: validation MAE
  7.2-8.6 years on an AMD EPYC with AVX-512, 7.6-8.5 with XLA:CPU limited
  to AVX2; the worst run clears the bar by 3.4 years, 2.4x the spread.
  """
  with open(os.path.join(dex_workdir, "result.json")) as f:
    result = json.load(f)
  mae, baseline = result["mae"], result["baseline_mae"]
  print(f"DEX smoke validation MAE {mae:.2f} vs mean baseline "
        f"{baseline:.2f}")
  record_learning("dex", mae=mae, bar=0.5 * baseline)
  assert baseline > 20.0
  assert mae < 0.5 * baseline, (mae, baseline)
  logged = [json.loads(line) for line in
            open(os.path.join(dex_workdir, "metrics.jsonl"))]
  losses = [r["train/loss"] for r in logged if "train/loss" in r]
  assert losses[-1] < losses[0], (losses[0], losses[-1])


def test_predict_cli_with_official_dex_weights_and_no_workdir(tmp_path):
  """launch.predict --weights: a DEX-format file (the release's names, a
  small geometry read from the file) straight to ages on a real photo;
  they equal the expected age of a numpy forward of the same weights."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import safetensors.numpy  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from skimage import data as skdata  # pylint: disable=g-import-not-at-top
  sd = _dex_state_dict(GEO)
  weights = str(tmp_path / "dex_imdb_wiki.caffemodel.pt")
  safetensors.numpy.save_file(sd, weights)
  face = np.asarray(Image.fromarray(skdata.astronaut()[20:220, 150:350])
                    .resize((64, 64), Image.BILINEAR))
  photo = str(tmp_path / "face.png")
  Image.fromarray(face).save(photo)
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  out = subprocess.run(
      [sys.executable, "-m", "launch.predict", f"--weights={weights}",
       "--detector=none", photo], cwd=ROOT, env=env, capture_output=True,
      text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  age = float(out.stdout.strip().split("\t")[1])
  est = frozen_lib.load_estimator({"estimator": "dex",
                                       "weights": weights})
  x = np.asarray(est.prepare(jnp.asarray(face[None] / 255.0, jnp.float32)))
  logits = _numpy_dex(sd, np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  want = float((p * np.arange(101)).sum(-1)[0])
  assert age == pytest.approx(want, abs=0.06), (age, want)


def test_evaluate_cli_scores_official_weights_on_a_release(tmp_path):
  """launch.evaluate --weights: DEX-format weights (random, the smoke's
  tiny VGG) scored on APPA-REAL as released (its official test split) with
  no training run; the MAE equals the same weights' predictions here."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import release_fixtures  # pylint: disable=g-import-not-at-top
  from facejax import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from facejax.data import pipeline  # pylint: disable=g-import-not-at-top
  from facejax import runs  # pylint: disable=g-import-not-at-top
  truth = release_fixtures.appa_real(str(tmp_path / "appa"))
  geo = dict(GEO, block_sizes=(1,) * 5, channels=(8, 16, 32, 32, 32),
             fc_width=64, image_size=32)  # the smoke's vgg_tiny at 32 px
  weights = _save_state_dict(_dex_state_dict(geo, seed=3),
                             str(tmp_path / "dex.pth"))
  data = {"data.format": "appa_real", "data.root": str(tmp_path / "appa")}
  out_dir = tmp_path / "scores"
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  run = subprocess.run(
      [sys.executable, "-m", "launch.evaluate", f"--weights={weights}",
       "--config=configs/dex.py:smoke", f"--out_dir={out_dir}",
       *[f"--config.{k}={v}" for k, v in data.items()]],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  result = json.load(open(out_dir / "eval_test.json"))
  test_ages = [t["real"] for t in truth.values() if t["split"] == "test"]
  assert result["count"] == len(test_ages) == 8
  assert (out_dir / "eval_test.png").exists()
  # The same weights and split in this process.
  config = _config(**data)
  setup, state, _ = runs.load("dex", weights=weights, config=config,
                              task_class=tasks.get)
  errors, ages = [], []
  for batch in pipeline.eval_batches(setup.task.source("test"),
                                     setup.task.preprocess(False),
                                     setup.eval_batch, 0):
    pred = np.asarray(setup.predict(
        state, mesh_lib.shard_batch(batch, setup.mesh)["image"]))
    keep = batch["mask"] > 0
    errors.append(np.abs(pred[keep] - batch["age"][keep]))
    ages.append(batch["age"][keep])
  mae = float(np.mean(np.concatenate(errors)))
  # APPA-REAL's real age (data.age_label's default) of the official test
  # split.
  np.testing.assert_allclose(np.sort(np.concatenate(ages)),
                             np.sort(test_ages), atol=1e-4)
  assert result["mae"] == pytest.approx(mae, abs=1e-3), (result["mae"], mae)
