"""Helpers and fixtures shared by tests/unit/test_stargan.py and
tests/e2e/test_stargan.py."""

import os
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from facejax import config_lib
from facejax.models import stargan as model_lib
from facejax.convert import stargan as stargan_convert
from helpers import ROOT


ONE_DEVICE = (("data", 1), ("fsdp", 1), ("model", 1))


CONFIG = os.path.join(ROOT, "configs", "stargan.py:smoke")


def _release_generator(label_dim: int, scale: float = 1.0):
  """(G's abstract params, a random state dict under the release's names
  and PyTorch layouts) of the 128 px, 6-block generator."""
  gen = model_lib.Generator(impl="xla")
  g_abs = jax.eval_shape(gen.init, jax.random.key(0),
                         jnp.zeros((1, 128, 128, 3)),
                         jnp.zeros((1, label_dim)))["params"]
  flat_abs = traverse_util.flatten_dict(g_abs, sep="/")
  rng = np.random.default_rng(0)
  sd = {}
  for path, (key, kind) in stargan_convert.generator_names(6).items():
    shape = flat_abs[path].shape
    if kind == "conv":
      shape = (shape[3], shape[2], shape[0], shape[1])
    elif kind == "convt":
      shape = (shape[2], shape[3], shape[0], shape[1])
    sd[key] = (scale * rng.normal(size=shape)).astype(np.float32)
  return g_abs, sd


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("stargan_data"))


def _config(data_dir, **overrides):
  return config_lib.load_config(CONFIG, {
      "mesh": ONE_DEVICE, "data.synthetic_dir": data_dir, **overrides})
