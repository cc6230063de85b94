"""Every config file loads in every variant and serialises to JSON."""

import json
import pathlib

import pytest

from facejax import config_lib

_CONFIGS = sorted(
    p for p in pathlib.Path(__file__).parents[2].joinpath("configs").glob(
        "*.py") if p.stem not in ("__init__", "common"))


@pytest.mark.parametrize("path", _CONFIGS, ids=lambda p: p.stem)
@pytest.mark.parametrize("arg", ["", ":smoke", ":variant=base",
                                 ":smoke=True"])
def test_config_loads_and_serialises(path, arg):
  config = config_lib.load_config(f"{path}{arg}")
  data = json.loads(config.to_json(sort_keys=True))
  assert data["task"] and data["model"]
  # ':smoke' and ':smoke=True' name the same variant.
  if arg == ":smoke=True":
    smoke = config_lib.load_config(f"{path}:smoke")
    assert config.to_json(sort_keys=True) == smoke.to_json(sort_keys=True)


@pytest.mark.parametrize("path", _CONFIGS, ids=lambda p: p.stem)
def test_config_rejects_unknown_variant(path):
  with pytest.raises(ValueError, match="unknown variant 'large'"):
    config_lib.load_config(f"{path}:large")
