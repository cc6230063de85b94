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

