"""Helpers and fixtures shared by tests/unit/test_kinship.py and
tests/e2e/test_kinship.py."""

import os
import pytest
from helpers import ROOT


ONE = (("data", 1), ("fsdp", 1), ("model", 1))


@pytest.fixture(scope="session")
def fiw(tmp_path_factory):
  """Synthetic FIW: 60 families at 64 px (42 train / 9 val / 9 test)."""
  from facejax.data import synthetic  # pylint: disable=g-import-not-at-top
  out = str(tmp_path_factory.mktemp("fiw"))
  synthetic.write_fiw(out, num_families=60, size=64, seed=0)
  return out


def _config(fiw_root, **overrides):
  from facejax import config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.load_config(
      os.path.join(ROOT, "configs", "kinship.py:smoke"),
      {"data.root": fiw_root, "mesh": ONE, **overrides})
