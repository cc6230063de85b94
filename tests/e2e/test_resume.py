"""A run killed with SIGKILL (even mid-save) resumes to the same result."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import FAST_COMPILE_ENV, ROOT
from facejax import tasks

pytestmark = pytest.mark.slow


def _env():
  env = dict(os.environ, **FAST_COMPILE_ENV)
  env.pop("XLA_FLAGS", None)  # one CPU device: faster subprocesses
  env["PYTHONPATH"] = ROOT
  return env


def _cmd(workdir, data):
  return [sys.executable, "-m", "launch.train",
          "--config=configs/age_regressor.py:smoke", f"--workdir={workdir}",
          f"--config.data.root={data}", "--config.total_steps=40",
          "--config.ckpt.every_steps=10", "--config.log_every_steps=2",
          "--config.eval_every_steps=40"]


def _train_log(workdir):
  """step -> (loss, age_mean, image_mean), last record per step wins."""
  out = {}
  for line in open(os.path.join(workdir, "metrics.jsonl")):
    r = json.loads(line)
    if "train/loss" in r:
      out[r["step"]] = (r["train/loss"], r["train/age_mean"],
                        r["train/image_mean"])
  return out


def _final_params(workdir):
  from helpers import flat  # pylint: disable=g-import-not-at-top
  from facejax import runs  # pylint: disable=g-import-not-at-top
  _, state, step = runs.restore(workdir, which="latest", task_class=tasks.get)
  assert step == 40
  return flat(state.params)


def test_sigkill_and_killed_save_resume_identically(age_data, tmp_path):
  ref, run = str(tmp_path / "ref"), str(tmp_path / "run")
  # The uninterrupted reference runs beside the run to be killed (to a
  # file: a full pipe would stall it).
  ref_out = open(tmp_path / "ref.out", "w+")
  ref_proc = subprocess.Popen(_cmd(ref, age_data), cwd=ROOT, env=_env(),
                              stdout=ref_out, stderr=subprocess.STDOUT,
                              text=True)
  proc = subprocess.Popen(_cmd(run, age_data), cwd=ROOT, env=_env(),
                          stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  ckpt_dir = os.path.join(run, "ckpt")
  deadline = time.time() + 600
  while time.time() < deadline and proc.poll() is None:
    if os.path.isdir(os.path.join(ckpt_dir, "20")):
      break
    time.sleep(0.05)
  assert proc.poll() is None, "run finished before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  steps = sorted(int(d) for d in os.listdir(ckpt_dir) if d.isdigit())
  assert steps and steps[-1] < 40, steps
  # What a kill during the next save leaves behind: orbax's unfinished
  # temporary folder. The restart must ignore it and use the last good one.
  partial = os.path.join(ckpt_dir,
                         f"{steps[-1] + 10}.orbax-checkpoint-tmp-1234")
  os.makedirs(os.path.join(partial, "state"))
  with open(os.path.join(partial, "state", "garbage"), "wb") as f:
    f.write(b"\0" * 100)

  assert ref_proc.wait(timeout=600) == 0
  ref_out.seek(0)
  ref_stdout = ref_out.read()
  ref_out.close()
  # What a user sees at the end of a run: a progress line, the final eval.
  assert "steps/s" in ref_stdout and "ETA" in ref_stdout, ref_stdout[-3000:]
  assert "Done: validation mae" in ref_stdout, ref_stdout[-3000:]

  done = subprocess.run(_cmd(run, age_data), cwd=ROOT, env=_env(),
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert f"Resumed from {ckpt_dir}/{steps[-1]}" in done.stdout
  assert not os.path.exists(partial)

  # Same data order after the resume point, and the same final parameters.
  ref_log, run_log = _train_log(ref), _train_log(run)
  for step in range(steps[-1] + 2, 41, 2):
    assert run_log[step] == ref_log[step], step
  a, b = _final_params(ref), _final_params(run)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  shutil.rmtree(tmp_path, ignore_errors=True)
