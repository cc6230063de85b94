"""Test set-up: 8 fake CPU devices, absl flags, shared tiny data sets."""

import os
import sys

# Must happen before JAX initialises its backend (simulated 8-device mesh).
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from absl import flags  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

from facejax import parallel  # pylint: disable=g-import-not-at-top

# Compiled executables are cached across tests and test subprocesses.
CACHE_DIR = os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", "/tmp/facejax_test_jax_cache")
parallel.configure_runtime(CACHE_DIR)

# grain workers and absl-flag modules read FLAGS; pytest owns argv.
flags.FLAGS.mark_as_parsed()


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
  from facejax.train import loop  # pylint: disable=g-import-not-at-top
  config = config_lib.load_config(
      os.path.join(ROOT, "configs", f"{config_name}.py:smoke"),
      {"data.root": data_root})
  with config.unlocked():
    config.mesh = ONE_DEVICE
  return loop.train_and_evaluate(config, workdir)


@pytest.fixture(scope="session")
def regressor_run(age_data, tmp_path_factory):
  """(workdir, result) of the age regressor's smoke run on `age_data`."""
  workdir = str(tmp_path_factory.mktemp("regressor") / "run")
  return workdir, _train_smoke("age_regressor", age_data, workdir)


@pytest.fixture(scope="session")
def regressor_workdir(regressor_run):
  """A trained smoke age regressor (frozen estimator for GAN losses/evals)."""
  return regressor_run[0]


@pytest.fixture(scope="session")
def dex_workdir(age_data, tmp_path_factory):
  """A trained smoke DEX classifier on `age_data`."""
  workdir = str(tmp_path_factory.mktemp("dex") / "run")
  _train_smoke("dex", age_data, workdir)
  return workdir


# pytest-xdist (`-n 2` in pytest.ini): each worker takes whole modules, so
# a module's fixtures (often a trained smoke model) are built once. The
# modules that share the session's trained regressor and DEX form one group,
# so those are trained once too.
_SHARED_SESSION_MODELS = {"regressor_run", "regressor_workdir", "dex_workdir"}


def pytest_collection_modifyitems(config, items):  # pylint: disable=unused-argument
  shared = {item.module.__name__ for item in items
            if _SHARED_SESSION_MODELS & set(item.fixturenames)}
  for item in items:
    module = item.module.__name__
    group = "trained_age_models" if module in shared else module
    item.add_marker(pytest.mark.xdist_group(group))
