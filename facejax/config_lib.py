"""Config helpers: `file.py:arg` parsing and loading configs from Python.

Configs are ml_collections files with `get_config(arg)`. The launch scripts
load them through absl's `config_flags`; notebooks and tests use
`load_config`, which applies the same `:arg` convention and the same
locking (an unknown key fails instead of silently adding a new one).
"""

import importlib.util
import os
from typing import Any

import ml_collections


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """Parses 'smoke' or 'variant=smoke,image_size=64' into typed values.

  A bare word sets `variant` (the first default key) and, if the word is a
  boolean default's name, that flag. Types follow the defaults.

  Args:
    arg: the text after ':' in `--config=configs/x.py:arg`, or None.
    **defaults: allowed keys and their default values.

  Returns:
    A ConfigDict with one entry per default key.
  """
  out = ml_collections.ConfigDict(defaults)
  for part in filter(None, (arg or "").split(",")):
    if "=" in part:
      key, value = part.split("=", 1)
    elif isinstance(defaults.get(part), bool):
      key, value = part, "True"
    else:
      key, value = "variant", part
    if key not in defaults:
      raise ValueError(f"config argument {part!r}: unknown key {key!r}; "
                       f"known: {sorted(defaults)}")
    default = defaults[key]
    if isinstance(default, bool):
      value = value.lower() in ("1", "true", "yes")
    elif default is not None:
      value = type(default)(value)
    out[key] = value
  return out


def load_config(spec: str, overrides: dict[str, Any] | None = None
                ) -> ml_collections.ConfigDict:
  """Loads `path/to/config.py[:arg]` with optional dotted-key overrides.

  Args:
    spec: config file path, optionally followed by ':arg'.
    overrides: {'data.batch_size': 8, ...}; unknown keys raise KeyError.

  Returns:
    The locked config.
  """
  path, _, arg = spec.partition(":")
  if not os.path.exists(path):
    raise FileNotFoundError(f"config file {path!r} does not exist")
  module_spec = importlib.util.spec_from_file_location("_facejax_cfg", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(arg or None) if arg else module.get_config()
  config.lock()
  for key, value in (overrides or {}).items():
    set_by_path(config, key, value)
  return config


def set_by_path(config: ml_collections.ConfigDict, key: str, value: Any):
  """Sets `a.b.c` on a locked config, naming the bad key on failure."""
  node = config
  parts = key.split(".")
  for i, part in enumerate(parts[:-1]):
    if part not in node:
      raise KeyError(f"unknown config key {'.'.join(parts[:i + 1])!r}")
    node = node[part]
  if parts[-1] not in node:
    known = ", ".join(sorted(node.keys()))
    raise KeyError(f"unknown config key {key!r} (known here: {known})")
  with node.ignore_type():
    node[parts[-1]] = value


def changed_keys(old: Any, new: Any, prefix: str = ""
                 ) -> list[tuple[str, Any, Any]]:
  """(dotted key, old value, new value) wherever two config dicts (as JSON
  values) differ; a key present on one side only has None on the other."""
  if isinstance(old, dict) and isinstance(new, dict):
    out = []
    for key in sorted(set(old) | set(new), key=str):
      out += changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")
    return out
  if old != new:
    return [(prefix.rstrip("."), old, new)]
  return []


def learning_rates(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """{'optim.lr': value, ...}: the learning-rate keys of `optim` and of the
  GANs' `optim_g` / `optim_d` (a key named lr or ending in _lr)."""
  return {f"{section}.{key}": value
          for section in config.keys() if section.startswith("optim")
          and isinstance(config[section], ml_collections.ConfigDict)
          for key, value in config[section].items()
          if key == "lr" or key.endswith("_lr")}


def validate(config: ml_collections.ConfigDict) -> None:
  """Values every model's config must satisfy; a ValueError names the key.

  Task-specific checks live with the tasks; these are the shared keys a
  typo makes silently wrong (a negative learning rate trains backwards).
  """
  import math  # pylint: disable=g-import-not-at-top
  for key, value in learning_rates(config).items():
    if (not isinstance(value, (int, float)) or not math.isfinite(value)
        or value <= 0):
      raise ValueError(f"config key {key}={value!r} must be a positive "
                       "learning rate")
  for key in ("total_steps",):
    value = config.get(key)
    if value is not None and (not isinstance(value, int) or value < 0):
      raise ValueError(f"config key {key}={value!r} must be an integer >= 0")
  for key in ("log_every_steps", "eval_every_steps"):
    value = config.get(key)
    if value is not None and (not isinstance(value, int) or value < 1):
      raise ValueError(f"config key {key}={value!r} must be an integer >= 1")
  every = (config.get("ckpt") or {}).get("every_steps")
  if every is not None and (not isinstance(every, int) or every < 1):
    raise ValueError(f"config key ckpt.every_steps={every!r} must be an "
                     "integer >= 1")
