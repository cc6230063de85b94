"""Faults clusters inflict: poisoned updates, inference beside a live run,
two runs on one workdir, a corrupt newest checkpoint, a changed config on
resume, and a killed parent's data workers."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import pytest
from facejax import checkpoint as ckpt_lib
from facejax.train import loop
from facejax.train import state as state_lib
from facejax import tasks
from helpers import FAST_COMPILE_ENV, ROOT
from reliability_helpers import _config


def _every_checkpoint_finite(workdir, config):
  """{step: all leaves finite} of every checkpoint in ckpt/ and best/."""
  setup = tasks.setup(config)
  abstract = ckpt_lib.abstract_like(setup.abstract_state,
                                    setup.state_sharding)
  ckpt = ckpt_lib.Checkpointer(workdir, read_only=True, async_save=False)
  out = {}
  try:
    for step in ckpt.all_steps():
      state = ckpt.restore(step, abstract)
      out[step] = bool(state_lib.all_finite(state))
  finally:
    ckpt.close()
  return out


@pytest.mark.slow
def test_overflowing_gan_never_saves_poisoned_weights(tmp_path, fast_compiles):
  """StarGAN (a GAN: two step kinds, no single loss) resumed with learning
  rates that overflow float32: its first such step still has a finite loss
  but infinite new weights. The run stops at that step, before saving it
  (it used to be saved as the "last good" checkpoint), with a message
  naming the config's own learning-rate keys; every checkpoint left holds
  finite weights, and a rerun with sane rates resumes and finishes."""
  workdir = str(tmp_path / "run")
  common = dict(log_every_steps=1, eval_every_steps=1000,
                **{"eval.samples_per_set": 0})
  tasks.train_and_evaluate(_config("stargan", total_steps=2, **common),
                          workdir)
  bad = _config("stargan", total_steps=6, **common, **{
      "ckpt.every_steps": 1, "optim.g_lr": 1e39, "optim.d_lr": 1e39})
  with pytest.raises(loop.NonFiniteLossError) as err:
    tasks.train_and_evaluate(bad, workdir)
  message = str(err.value)
  print(message)
  assert "weights not finite by step 3" in message, message
  assert "optim.d_lr / optim.g_lr" in message and "optim.lr " not in message
  finite = _every_checkpoint_finite(workdir, bad)
  print("checkpoints finite:", finite)
  assert finite == {2: True}, finite
  result = tasks.train_and_evaluate(
      _config("stargan", total_steps=4, **common), workdir)
  assert result["checkpoint"].endswith("/4")


def test_inference_never_deletes_a_live_runs_save(regressor_workdir,
                                                  tmp_path):
  """restore() opens the checkpoints read-only: the temporary folder of a
  save in progress (as a live training run has) is left alone, and so is
  everything else in the workdir."""
  from facejax import runs  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / "run")
  shutil.copytree(regressor_workdir, workdir)
  saving = os.path.join(workdir, "ckpt", "999.orbax-checkpoint-tmp-1")
  os.makedirs(os.path.join(saving, "state"))
  before = sorted(os.listdir(os.path.join(workdir, "ckpt")))
  for which in ("latest", "best", "latest"):
    runs.restore(workdir, which=which, task_class=tasks.get)
  assert os.path.isdir(saving)
  assert sorted(os.listdir(os.path.join(workdir, "ckpt"))) == before


def test_second_run_on_a_workdir_is_refused_and_the_lock_dies_with_its_holder(
    tmp_path):
  """A workdir held by a live run refuses a second run with a message
  naming the holder; once the holder is SIGKILLed the lock is free."""
  workdir = str(tmp_path / "run")
  holder = subprocess.Popen(
      [sys.executable, "-c",
       "import sys, time; from facejax import checkpoint as c; "
       f"lock = c.WorkdirLock({workdir!r}); lock.acquire(); "
       "print('held', flush=True); "
       "time.sleep(600)"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    second = subprocess.run(
        [sys.executable, "-m", "launch.train",
         "--config=configs/age_regressor.py:smoke", f"--workdir={workdir}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 1, second.stderr[-2000:]
    assert f"is in use by pid {holder.pid}" in second.stderr, second.stderr
    assert "Traceback" not in second.stderr
  finally:
    holder.kill()
    holder.wait()
  lock = ckpt_lib.WorkdirLock(workdir)
  lock.acquire()  # Free again: the kernel dropped the dead holder's lock.
  lock.release()


def test_truncated_newest_checkpoint_falls_back_to_the_previous(
    age_data, tmp_path, capsys, fast_compiles):
  """The newest checkpoint's files truncated to zero bytes: inference and a
  resumed run warn and use the previous checkpoint, and the run finishes."""
  from facejax import runs  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / "run")
  config = _config("age_regressor", age_data, total_steps=4,
                   eval_every_steps=100, **{"ckpt.every_steps": 2})
  tasks.train_and_evaluate(config, workdir)
  newest = os.path.join(workdir, "ckpt", "4", "state")
  for folder, _, files in os.walk(newest):
    for name in files:
      if not name.endswith(("_METADATA", "_CHECKPOINT_METADATA")):
        open(os.path.join(folder, name), "w").close()
  _, _, step = runs.restore(workdir, which="latest", task_class=tasks.get)
  assert step == 2
  out = capsys.readouterr().out
  assert f"checkpoint {os.path.join(workdir, 'ckpt', '4')} is unusable" in out
  longer = _config("age_regressor", age_data, total_steps=6,
                   eval_every_steps=100, **{"ckpt.every_steps": 2})
  result = tasks.train_and_evaluate(longer, workdir)
  out = capsys.readouterr().out
  assert f"Resumed from {os.path.join(workdir, 'ckpt')}/2" in out
  assert result["checkpoint"].endswith("/6")
  # The damaged one is kept aside for a post-mortem, not deleted.
  assert os.path.isdir(os.path.join(workdir, "ckpt", "4.unusable"))


def test_config_changes_on_resume_are_named(age_data, tmp_path, capsys,
                                            fast_compiles):
  """A batch-size change is refused, naming the key; allowed with
  allow_config_change; a longer run (total_steps) and a lower learning
  rate resume with the changes printed."""
  workdir = str(tmp_path / "run")
  base = dict(total_steps=2, eval_every_steps=100)
  tasks.train_and_evaluate(_config("age_regressor", age_data, **base),
                          workdir)
  bigger = _config("age_regressor", age_data, **base,
                   **{"data.batch_size": 16})
  with pytest.raises(ValueError, match=r"data\.batch_size: 32 -> 16.*"
                     r"--allow_config_change"):
    tasks.train_and_evaluate(bigger, workdir)
  larger = _config("age_regressor", age_data, **base,
                   **{"data.image_size": 48})
  with pytest.raises(ValueError, match=r"data\.image_size: 32 -> 48"):
    tasks.train_and_evaluate(larger, workdir)
  capsys.readouterr()
  longer = _config("age_regressor", age_data, total_steps=3,
                   eval_every_steps=100, **{"optim.lr": 1e-4})
  tasks.train_and_evaluate(longer, workdir)
  out = capsys.readouterr().out
  assert "config changed since the last run" in out
  assert "total_steps: 2 -> 3" in out and "optim.lr" in out
  stored = json.load(open(os.path.join(workdir, "config.json")))
  assert stored["total_steps"] == 3


def _children(pid: int) -> list[int]:
  out = []
  for entry in os.listdir("/proc"):
    if entry.isdigit():
      try:
        with open(f"/proc/{entry}/stat") as f:
          fields = f.read().rsplit(")", 1)[1].split()
      except OSError:
        continue
      if int(fields[1]) == pid:
        out.append(int(entry))
  return out


def _alive(pid: int) -> bool:
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except OSError:
    return False


@pytest.mark.slow
def test_sigkill_leaves_no_data_workers_behind(age_data, tmp_path):
  """SIGKILL to a run with 2 grain workers: 10 s later none of its child
  processes is alive (each worker watches its parent) and no shared-memory
  file it made is left in /dev/shm."""
  shm_before = set(os.listdir("/dev/shm"))
  workdir = str(tmp_path / "run")
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="", **FAST_COMPILE_ENV)
  run = subprocess.Popen(
      [sys.executable, "-m", "launch.train",
       "--config=configs/age_regressor.py:smoke", f"--workdir={workdir}",
       f"--config.data.root={age_data}", "--config.data.num_workers=2",
       "--config.total_steps=100000", "--config.log_every_steps=1"],
      cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  try:
    metrics = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + 400
    while time.time() < deadline and not (
        os.path.exists(metrics) and os.path.getsize(metrics) > 0):
      time.sleep(1)
    children = _children(run.pid)
    assert len(children) >= 2, children  # the workers (+ resource tracker)
  finally:
    run.send_signal(signal.SIGKILL)
    run.wait()
  time.sleep(10)
  alive = [c for c in children if _alive(c)]
  assert not alive, alive
  left = set(os.listdir("/dev/shm")) - shm_before
  assert not left, sorted(left)[:5]


@pytest.mark.parametrize("args,expected", [
    (["launch.train", "--config=configs/age_regressor.py:smoke",
      "--config.data.batch_size=0"], "data.batch_size=0 must be a positive"),
    (["launch.train", "--config=configs/no_such_model.py"],
     "config file configs/no_such_model.py could not be loaded"),
    (["launch.train", "--config=configs/age_regressor.py:smok"],
     "unknown variant 'smok' (base | smoke)"),
    (["launch.train", "--config=configs/age_regressor.py:smoke",
      "--config.optim.lr=-1"], "optim.lr=-1.0 must be a positive"),
    (["launch.train", "--config=configs/stargan.py:smoke",
      "--config.optim.d_lr=0"], "optim.d_lr=0.0 must be a positive"),
    (["launch.benchmark", "--config=configs/age_regressor.py:smoke",
      "--steps=0"], "--steps=0 must be >= 1"),
    (["launch.benchmark", "--suite", "--only=age_regresor"],
     "unknown suite entries ['age_regresor']"),
    (["launch.predict", "photo.jpg"], "is a 'stargan' run; launch.predict "
     "takes an age regressor or DEX run (use launch.stargan"),
])
def test_cli_mistakes_get_one_line_errors(args, expected, tmp_path):
  """Each mistake: a non-zero exit and one line naming the key, file or
  flag, never a traceback."""
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "config.json").write_text(json.dumps({"task": "stargan"}))
  (tmp_path / "photo.jpg").write_bytes(b"")
  args = args[:1] + [f"--workdir={workdir}"] + [
      str(tmp_path / a) if a == "photo.jpg" else a for a in args[1:]]
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  run = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
  assert run.returncode != 0, run.stdout[-1000:]
  assert expected in run.stderr, run.stderr[-2000:]
  assert "Traceback" not in run.stderr, run.stderr[-3000:]


def test_rerun_after_a_kill_keeps_one_metrics_row_per_step_and_rewrites_best(
    age_data, tmp_path, fast_compiles):
  """Killed after logging steps 3-4 but before saving step 4: the rerun
  resumes from step 2 and metrics.jsonl ends with one row per step. Killed
  between the final checkpoint and its eval (best/ never written): the
  rerun evaluates and writes best/."""
  workdir = str(tmp_path / "run")
  config = _config("age_regressor", age_data, total_steps=4,
                   log_every_steps=1, eval_every_steps=4,
                   **{"ckpt.every_steps": 2})
  tasks.train_and_evaluate(config, workdir)
  shutil.rmtree(os.path.join(workdir, "ckpt", "4"))
  shutil.rmtree(os.path.join(workdir, "best"))
  with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
    f.write('{"step": 4, "train/lo')  # a row cut by the kill
  tasks.train_and_evaluate(config, workdir)
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  steps = [r["step"] for r in rows if "train/loss" in r]
  assert steps == [1, 2, 3, 4], steps
  shutil.rmtree(os.path.join(workdir, "best"))
  result = tasks.train_and_evaluate(config, workdir)  # finished already
  assert result["best_checkpoint"].endswith(os.path.join("best", "4"))


def test_failed_background_save_is_reported_at_once_and_sigterm_still_saves(
    age_data, tmp_path, monkeypatch, fast_compiles):
  """A background save that failed is reported at the next log step (not
  at the next save, possibly hours later); if SIGTERM arrives meanwhile the
  run saves a fresh checkpoint and exits as preempted, so it is requeued."""
  failures = {"left": 1}

  def failed_once(self):
    if failures["left"]:
      failures["left"] -= 1
      raise OSError("[Errno 28] No space left on device")
  monkeypatch.setattr(ckpt_lib.Checkpointer, "check_for_errors", failed_once)
  config = _config("age_regressor", age_data, total_steps=6,
                   log_every_steps=1, eval_every_steps=100,
                   **{"ckpt.every_steps": 2})
  with pytest.raises(loop.CheckpointSaveError,
                     match=r"saving a checkpoint in .*ckpt failed: OSError: "
                     r"\[Errno 28\] No space left"):
    tasks.train_and_evaluate(config, str(tmp_path / "a"))

  failures["left"] = 1
  real_flag = loop._install_sigterm_handler

  def sigterm_at_once():
    flag = real_flag()
    flag["stop"] = True  # as if SIGTERM arrived during the first step
    return flag
  monkeypatch.setattr(loop, "_install_sigterm_handler", sigterm_at_once)
  workdir = str(tmp_path / "b")
  with pytest.raises(loop.Preempted, match="checkpoint saved"):
    tasks.train_and_evaluate(config, workdir)
  assert os.path.isdir(os.path.join(workdir, "ckpt", "1"))
  signal.signal(signal.SIGTERM, signal.SIG_DFL)


def test_nothing_is_moved_when_no_checkpoint_restores(regressor_workdir,
                                                      tmp_path):
  """A reader that cannot restore any step (here: another model's state
  tree, as a config that changed shapes gives) gets one error naming each
  checkpoint, and every checkpoint stays where it is."""
  workdir = str(tmp_path / "run")
  shutil.copytree(regressor_workdir, workdir)
  before = sorted(os.listdir(os.path.join(workdir, "ckpt")))
  other = tasks.setup(_config("dex"))
  ckpt = ckpt_lib.Checkpointer(workdir, async_save=False)
  try:
    with pytest.raises(ValueError, match="no usable checkpoint"):
      ckpt.restore_newest_good(ckpt_lib.abstract_like(
          other.abstract_state, other.state_sharding))
  finally:
    ckpt.close()
  assert sorted(os.listdir(os.path.join(workdir, "ckpt"))) == before
