"""Test set-up: 8 fake CPU devices, absl flags, shared tiny data sets."""

import fcntl
import json
import os
import sys

# Must happen before JAX initialises its backend (simulated 8-device mesh).
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The fixed convolution rules, not forms timed on this machine: learning
# margins were measured with them, and timing would add to every cold
# run. tests/unit/test_autotune.py turns it back on where it is tested.
os.environ.setdefault("FACEJAX_AUTOTUNE", "0")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import pytest  # pylint: disable=g-import-not-at-top

try:
  from absl import flags  # pylint: disable=g-import-not-at-top
  from facejax import runtime  # pylint: disable=g-import-not-at-top
except ImportError as missing:
  # This interpreter lacks facejax's requirements: one clear line, not an
  # import traceback per test file.
  pytest.exit(f"{missing.name} is not installed for {sys.executable}: run "
              "`pip install -r requirements.txt` first (README, command 2)",
              returncode=4)

from helpers import (  # pylint: disable=g-import-not-at-top
    fast_compiles as xla_fast_compiles, learning_seed)

# Compiled executables are cached across tests and test subprocesses.
CACHE_DIR = os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", "/tmp/facejax_test_jax_cache")
runtime.configure_runtime(CACHE_DIR)

# Data fixtures that a model's unit and e2e tests share.
pytest_plugins = ["formats_helpers", "kinship_helpers", "stargan_helpers"]

# grain workers and absl-flag modules read FLAGS; pytest owns argv.
flags.FLAGS.mark_as_parsed()


@pytest.fixture
def fast_compiles():
  """XLA's fast-compile mode (helpers.fast_compiles) for one test: for
  tests that check wiring or numbers of a step they run only a few times,
  whose time is mostly compiling it."""
  with xla_fast_compiles():
    yield


@pytest.fixture(scope="session")
def age_data(tmp_path_factory):
  """A small synthetic age-CSV data set (64 px), shared by the session."""
  from facejax.data import synthetic  # pylint: disable=g-import-not-at-top
  out = str(tmp_path_factory.mktemp("age_csv"))
  synthetic.write_age_csv(out, num=1500, size=64, seed=0)
  return out



ONE_DEVICE = (("data", 1), ("fsdp", 1), ("model", 1))


def _train_smoke(config_name: str, data_root: str, workdir: str):
  from facejax import config_lib  # pylint: disable=g-import-not-at-top
  from facejax import tasks  # pylint: disable=g-import-not-at-top
  config = config_lib.load_config(
      os.path.join(ROOT, "configs", f"{config_name}.py:smoke"),
      {"data.root": data_root, "seed": learning_seed()})
  with config.unlocked():
    config.mesh = ONE_DEVICE
  return tasks.train_and_evaluate(config, workdir)


def _built_once(tmp_path_factory, name: str, build) -> tuple[str, dict]:
  """(workdir, result) of `build(workdir)`, run once per test session.

  Under pytest-xdist (`-n 2` in pytest.ini) each worker has its own temp
  dir below a shared one: the first worker to ask builds there, the other
  waits on the lock and reuses it.
  """
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent
  out = root / name
  with open(root / f"{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    done = out / "result.json"
    if not done.exists():
      out.mkdir(exist_ok=True)
      done.write_text(json.dumps(build(str(out / "run"))))
    return str(out / "run"), json.loads(done.read_text())


@pytest.fixture(scope="session")
def regressor_run(age_data, tmp_path_factory):
  """(workdir, result) of the age regressor's smoke run on `age_data`."""
  return _built_once(tmp_path_factory, "regressor",
                     lambda w: _train_smoke("age_regressor", age_data, w))


@pytest.fixture(scope="session")
def regressor_workdir(regressor_run):
  """A trained smoke age regressor (frozen estimator for GAN losses/evals)."""
  return regressor_run[0]


@pytest.fixture(scope="session")
def untrained_workdirs(tmp_path_factory):
  """name -> workdir of the server's five untrained smoke models, written
  once per session and shared read-only by the server's two test files."""
  import serve_helpers  # pylint: disable=g-import-not-at-top
  return _built_once(tmp_path_factory, "untrained_served",
                     serve_helpers.untrained_workdirs)[1]


@pytest.fixture(scope="session")
def dex_workdir(age_data, tmp_path_factory):
  """A trained smoke DEX classifier on `age_data`."""
  return _built_once(tmp_path_factory, "dex",
                     lambda w: _train_smoke("dex", age_data, w))[0]


# The slowest files first, so that neither xdist worker is left with a long
# file at the end while the other idles (whole files per worker). Ordered
# by their time in a cold `.ci/run` (`--durations=0`, summed per file).
# pytest.ini's --no-loadscope-reorder keeps this order: by default xdist
# (3.8) hands out the files with the most tests first, which left the
# learning files (few tests, minutes each) to the end.
_SLOWEST_FILES = ("e2e.test_age_transformer", "e2e.test_formats",
                  "e2e.test_caricature", "e2e.test_reliability",
                  "e2e.test_swinface", "e2e.test_serve", "unit.test_models",
                  "unit.test_caricature", "e2e.test_multiprocess",
                  "e2e.test_train", "unit.test_kinship", "e2e.test_launch",
                  "e2e.test_stargan", "e2e.test_kinship",
                  "unit.test_swinface", "unit.test_stargan",
                  "unit.test_export", "e2e.test_serve_page",
                  "unit.test_performance", "e2e.test_resume")


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(_SLOWEST_FILES)}
  items.sort(key=lambda item: rank.get(item.module.__name__,
                                       len(_SLOWEST_FILES)))
