"""Two processes on jax.distributed train exactly like one process.

Two `launch.train` processes on localhost, 4 fake CPU devices each (a 2x4
mesh over gloo CPU collectives), train the smoke config for 4 steps, stop,
and resume to 8 steps from the checkpoint both processes wrote together.
One process with 8 devices trains the same 8 steps in one go. The final
parameters must agree: per-process data sharding, the collective orbax
save/restore, the resumed data order and the convolution forms process 0
timed for both (facejax.autotune) are all checked at once.
"""

import os
import socket
import subprocess
import sys

import jax
import pytest

from facejax import checkpoint as ckpt_lib
from facejax import tasks
from helpers import FAST_COMPILE_ENV, ROOT, assert_trees_close, smoke_config

pytestmark = pytest.mark.slow

# f32 forms only (runtime.cpu_bf16=False): the one-process run times its
# forms apart from the two processes (other XLA_FLAGS, so another decisions
# file), and on a CPU with bf16 dot instructions timing noise at these
# tiny shapes once chose the bf16 form in one run and not in the other
# (2-core Intel Xeon with AMX): bf16 rounding, amplified by Adam over 8
# steps, not the summation order this test allows for.
OVERRIDES = ("--config.data.batch_size=16", "--config.log_every_steps=2",
             "--config.ckpt.every_steps=4", "--config.eval_every_steps=100",
             "--config.data.num_workers=0", "--config.runtime.cpu_bf16=False")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _train(workdir, data, steps, devices, process_id=None, num_processes=1,
           port=None):
  # Autotuning on (the suite turns it off): process 0 times the forms
  # and process 1 must take them from the distributed key-value store.
  # Fast compiles in all five processes: wiring, not speed, is checked.
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             FACEJAX_AUTOTUNE="1", **FAST_COMPILE_ENV)
  cmd = [sys.executable, "-m", "launch.train",
         "--config=configs/age_regressor.py:smoke", f"--workdir={workdir}",
         f"--config.data.root={data}", f"--config.total_steps={steps}",
         *OVERRIDES]
  if num_processes > 1:
    cmd += [f"--coordinator=localhost:{port}",
            f"--num_processes={num_processes}", f"--process_id={process_id}"]
  return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _wait(procs):
  for p in procs:
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out[-3000:]
    yield out


def _two_processes(workdir, data, steps):
  port = _free_port()
  procs = [_train(workdir, data, steps, 4, i, 2, port) for i in range(2)]
  return list(_wait(procs))


def _params(workdir, data):
  config = smoke_config(data, **{"data.batch_size": 16})
  setup = tasks.setup(config)
  ckpt = ckpt_lib.Checkpointer(workdir, async_save=False)
  step = ckpt.latest_step()
  state = ckpt.restore(step, ckpt_lib.abstract_like(setup.abstract_state,
                                                    setup.state_sharding))
  ckpt.close()
  return step, jax.device_get(state.params)


def test_two_processes_with_resume_equal_one_process(age_data, tmp_path):
  multi, single = str(tmp_path / "multi"), str(tmp_path / "single")
  out = _two_processes(multi, age_data, 4)
  assert "process 0/2" in out[0] and "process 1/2" in out[1]
  assert "convolution forms measured on this CPU" in out[0], out[0][-2000:]
  assert "timing the CPU forms" not in out[1], out[1][-2000:]
  # Resume: both processes restore ckpt/4 together and go on to step 8.
  out = _two_processes(multi, age_data, 8)
  # (Only process 0 prints the progress lines.)
  assert "Resumed from" in out[0], out[0][-2000:]
  list(_wait([_train(single, age_data, 8, 8)]))

  step_m, params_m = _params(multi, age_data)
  step_s, params_s = _params(single, age_data)
  assert step_m == step_s == 8
  # Same global batches and the same all-reduced gradients; only the
  # summation order of the cross-process reduction differs.
  assert_trees_close(params_m, params_s, rtol=1e-4, atol=1e-5)
