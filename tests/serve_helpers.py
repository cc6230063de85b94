"""Workdirs for the server's tests: every served model, smoke-sized.

The age regressor is the session's trained smoke run (`regressor_workdir`).
The other five are their smoke configs at initialisation, written as the
training loop writes a workdir (config.json, model.json, an orbax
checkpoint at step 0), so the server loads them through the same
`--workdir` path as trained runs. The API's behaviour does not depend on
what the weights learned, and training five more GANs and transformers
here would cost minutes of compiling that the models' own e2e tests
already spend; the answers' values are checked only where the regressor
(trained) gives them.
"""

import contextlib
import json
import os
import socket
import subprocess
import sys
import time

import httpx

from facejax import checkpoint as ckpt_lib
from facejax import config_lib
from facejax import tasks
from facejax.evaluators import kinship as kinship_eval
from facejax.data.formats import raf_db
from helpers import ROOT, fast_compiles

ONE = (("data", 1), ("fsdp", 1), ("model", 1))

# config name -> (config argument, overrides) of the untrained smoke runs.
_UNTRAINED = {
    "swinface": ("swinface.py:smoke", {
        "data.expression.classes": tuple(raf_db.CLASSES)}),
    "age_transformer": ("age_transformer.py:smoke", {
        "age_loss.random_init": "tiny"}),
    "stargan": ("stargan.py:smoke", {}),
    "caricature": ("caricature.py:smoke", {
        "identity.source": "none", "loss.identity_w": 0.0}),
    "kinship": ("kinship.py:smoke", {}),
}


def write_untrained_run(name: str, root: str) -> str:
  """`root`/<name>: a workdir holding the smoke config's initial state.

  Its init compiles in XLA's fast-compile mode: these weights are only
  loaded and served (the five builds: 38 -> 29 s with an empty compilation
  cache on a 2-core AMD EPYC with AVX-512).
  """
  arg, overrides = _UNTRAINED[name]
  workdir = os.path.join(root, name)
  config = config_lib.load_config(os.path.join(ROOT, "configs", arg), {
      "data.root": os.path.join(root, "no_data"),
      **({"data.synthetic_dir": os.path.join(root, "no_data")}
         if name in ("swinface", "stargan", "caricature") else {}),
      **overrides})
  with config.unlocked():
    config.mesh = ONE
  setup = tasks.setup(config)
  with fast_compiles():
    state = setup.init_state()
  os.makedirs(workdir, exist_ok=True)
  ckpt_lib.check_workdir_model(workdir, setup.task.meta())
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  checkpointer = ckpt_lib.Checkpointer(workdir, async_save=False)
  checkpointer.save(0, state, None)
  checkpointer.close()
  if name == "kinship":  # What launch.evaluate stores for launch.kinship.
    with open(os.path.join(workdir, kinship_eval.THRESHOLD_FILE), "w") as f:
      json.dump({"threshold": 0.5, "head": config.model.head, "step": 0}, f)
  return workdir


def untrained_workdirs(root: str) -> dict[str, str]:
  """config name -> workdir below `root` of every untrained served model."""
  return {name: write_untrained_run(name, root) for name in _UNTRAINED}


def served_workdirs(untrained: dict[str, str],
                    regressor_workdir: str) -> dict[str, str]:
  """config name -> workdir of every model the server serves."""
  return {"age_regressor": regressor_workdir, **untrained}


def astronaut_jpeg() -> bytes:
  """scikit-image's astronaut (Eileen Collins, NASA, public domain): a
  real photo that ships in a package, one face."""
  import io  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from skimage import data  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  Image.fromarray(data.astronaut()).save(buf, format="JPEG", quality=92)
  return buf.getvalue()


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def running_server(args: list[str], log: str, timeout: float = 240):
  """The base URL of `python -m launch.serve <args>` on a free port, one
  CPU device, once it answers /healthz; its output goes to `log` (a file,
  so a chatty server never blocks on a full pipe). Stopped on exit."""
  port = free_port()
  env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu",
             PYTHONPATH=ROOT)
  with open(log, "w") as out:
    proc = subprocess.Popen(
        [sys.executable, "-m", "launch.serve", f"--port={port}", *args],
        cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
  url = f"http://127.0.0.1:{port}"
  tail = lambda: open(log, errors="replace").read()[-4000:]
  try:
    deadline = time.time() + timeout
    while True:
      if proc.poll() is not None:
        raise AssertionError(f"launch.serve exited with {proc.returncode}:"
                             f"\n{tail()}")
      try:
        if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
          break
      except httpx.TransportError:
        pass  # Not listening yet.
      if time.time() > deadline:
        raise AssertionError(f"launch.serve did not answer /healthz in "
                             f"{timeout:.0f} s:\n{tail()}")
      time.sleep(0.5)
    yield url
  finally:
    proc.terminate()
    try:
      proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()
