"""Helpers and fixtures shared by tests/unit/test_reliability.py and
tests/e2e/test_reliability.py."""

import os
from facejax import config_lib
from helpers import ROOT


ONE_DEVICE = (("data", 1), ("fsdp", 1), ("model", 1))


def _config(name, data_root="", **overrides):
  overrides = dict({"mesh": ONE_DEVICE}, **overrides)
  if data_root:
    overrides["data.root"] = data_root
  return config_lib.load_config(
      os.path.join(ROOT, "configs", f"{name}.py:smoke"), overrides)
