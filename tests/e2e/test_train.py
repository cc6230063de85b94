"""End-to-end training: learning, bad config/workdir, NaN guard, SIGTERM."""

import json
import os
import re
import signal
import threading
import jax
import numpy as np
import pytest
from facejax import checkpoint as ckpt_lib
from facejax.train import loop
from facejax import tasks
from helpers import record_learning, smoke_config


ONE_DEVICE = (("data", 1), ("fsdp", 1), ("model", 1))


def _config(data, **kw):
  config = smoke_config(data, **kw)
  with config.unlocked():
    config.mesh = ONE_DEVICE
  return config


def test_smoke_training_beats_the_mean_baseline(regressor_run):
  """The smoke config learns age from the synthetic faces.

  300 steps (tiny ResNet, 32 px, 1,200 training faces) against 23.9 years
  for always predicting the training mean; the bar is half of it (12.0).
  Measured over seeds 0-2 (tests/measure_learning.py): validation MAE
  7.7-8.9 years on an AMD EPYC with AVX-512, 7.6-8.6 with XLA:CPU limited
  to AVX2; the worst run clears the bar by 3.0 years, 2.3x the spread.
  """
  workdir, result = regressor_run
  mae, baseline = result["mae"], result["baseline_mae"]
  print(f"smoke validation MAE {mae:.2f} vs mean baseline {baseline:.2f}")
  record_learning("regressor", mae=mae, bar=0.5 * baseline)
  assert baseline > 20.0
  assert mae < 0.5 * baseline, (mae, baseline)
  assert os.path.isdir(result["checkpoint"])
  assert os.path.isdir(result["best_checkpoint"])
  lines = open(os.path.join(workdir, "metrics.jsonl")).read().splitlines()
  logged = [json.loads(l) for l in lines]
  assert any("eval/mae" in r for r in logged)
  assert os.listdir(os.path.join(workdir, "tensorboard"))


def test_workdir_of_another_model_is_refused(age_data, tmp_path):
  workdir = str(tmp_path / "run")
  tasks.train_and_evaluate(_config(age_data, total_steps=2), workdir)
  other = _config(age_data, total_steps=2, **{"model.backbone": "vgg_tiny"})
  with pytest.raises(ckpt_lib.WorkdirMismatchError,
                     match=r"model\.json.*backbone: workdir has 'tiny', "
                     r"config asks 'vgg_tiny'"):
    tasks.train_and_evaluate(other, workdir)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(age_data, tmp_path):
  workdir = str(tmp_path / "run")
  config = _config(age_data, total_steps=60, log_every_steps=1, **{
      "optim.name": "sgd", "optim.lr": 1e12, "optim.clip_norm": 0.0,
      "optim.warmup_steps": 0, "optim.schedule": "constant",
      "ckpt.every_steps": 1, "loss": "mse"})
  with pytest.raises(loop.NonFiniteLossError,
                     match="last good checkpoint") as err:
    tasks.train_and_evaluate(config, workdir)
  bad_step = int(re.search(r"by step (\d+)", str(err.value)).group(1))
  setup = tasks.setup(config)
  ckpt = ckpt_lib.Checkpointer(workdir)
  step = ckpt.latest_step()
  state = ckpt.restore(step, ckpt_lib.abstract_like(setup.abstract_state,
                                                    setup.state_sharding))
  ckpt.close()
  losses = {r["step"]: r["train/loss"] for r in map(
      json.loads, open(os.path.join(workdir, "metrics.jsonl")))
            if "train/loss" in r}
  # The checkpoint is from the last step whose loss was finite.
  assert step == bad_step - 1 == max(losses), (step, bad_step, losses)
  assert all(np.isfinite(v) for v in losses.values())
  for leaf in jax.tree.leaves(jax.device_get(state.params)):
    assert np.all(np.isfinite(leaf))


def test_sigterm_saves_a_checkpoint_and_stops(age_data, tmp_path):
  workdir = str(tmp_path / "run")
  config = _config(age_data, total_steps=1000, log_every_steps=1, **{
      "ckpt.every_steps": 500})
  fired = {}

  def send_when_training():
    # Wait until a few steps ran, then deliver SIGTERM to ourselves.
    import time  # pylint: disable=g-import-not-at-top
    metrics = os.path.join(workdir, "metrics.jsonl")
    for _ in range(1200):
      if os.path.exists(metrics) and sum(1 for _ in open(metrics)) >= 5:
        break
      time.sleep(0.1)
    fired["at"] = True
    os.kill(os.getpid(), signal.SIGTERM)

  timer = threading.Thread(target=send_when_training, daemon=True)
  timer.start()
  with pytest.raises(loop.Preempted, match="checkpoint saved"):
    tasks.train_and_evaluate(config, workdir)
  assert fired.get("at")
  ckpt = ckpt_lib.Checkpointer(workdir)
  step = ckpt.latest_step()
  ckpt.close()
  assert step is not None and 0 < step < 500
  signal.signal(signal.SIGTERM, signal.SIG_DFL)


def test_resume_past_an_existing_best_checkpoint(age_data, tmp_path):
  """best/<s> written, ckpt/<s> lost (killed in between): rerun finishes."""
  workdir = str(tmp_path / "run")
  config = _config(age_data, total_steps=20, eval_every_steps=10,
                   **{"ckpt.every_steps": 10})
  tasks.train_and_evaluate(config, workdir)
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.rmtree(os.path.join(workdir, "ckpt", "20"))
  assert os.path.isdir(os.path.join(workdir, "best", "20")) or os.path.isdir(
      os.path.join(workdir, "best", "10"))
  result = tasks.train_and_evaluate(config, workdir)
  assert result["checkpoint"].endswith(os.path.join("ckpt", "20"))


def _loss_curve(config, steps: int) -> np.ndarray:
  setup = tasks.setup(config)
  state, batches = setup.init_state(), loop.train_iterator(setup)
  losses = []
  for _ in range(steps):
    state, metrics = setup.run(setup.train_step, state, next(batches))
    losses.append(float(metrics["loss"]))
  return np.array(losses)


def test_bf16_convolutions_follow_the_f32_loss_curve(age_data):
  """Issue 22's bf16 form (bf16 operands, f32 sums; autotuning offers it on
  CPUs with bf16 dot instructions) against the same run in f32: the smoke
  config for 60 steps, every convolution as im2col in f32 or in bf16.

  Single steps do not compare after a few dozen steps: two f32 forms that
  only sum in another order (XLA's and im2col) drift apart by up to 93 %
  in one step's loss. So the test compares 10-step means. Measured on a
  2-core Intel Xeon with AMX: bf16 within 4.4 % of f32 in every window of
  these 60 steps (14.3 % over 100 steps, where XLA's f32 form came within
  8.2 %); the bar is 20 %. A wrong gradient or a lost scale would leave
  the curve far outside it.
  """
  curves = {impl: _loss_curve(_config(age_data, **{
      "model.conv_impl": impl}), 60) for impl in ("im2col", "im2col_bf16")}
  f32, bf16 = (curves[k].reshape(-1, 10).mean(1)
               for k in ("im2col", "im2col_bf16"))
  gap = np.abs(bf16 - f32) / f32
  print(f"10-step mean losses, f32 {np.round(f32, 2)}, bf16 "
        f"{np.round(bf16, 2)}; largest gap {gap.max():.1%}")
  # The first step sees the same weights and batch: only rounding differs.
  assert abs(curves["im2col_bf16"][0] / curves["im2col"][0] - 1) < 0.01
  assert gap.max() < 0.2
  assert bf16[-1] < 0.7 * bf16[0]  # and it learns
