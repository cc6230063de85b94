"""DEX age classifier: targets, loss, weight import (fc6 order), learning."""

import importlib.util
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from facejax.tasks import frozen as frozen_lib
from facejax.convert import dex as dex_import
from facejax.convert import torch_pickle
from facejax.models import vgg
from facejax.tasks import dex
from facejax import tasks
from dex_helpers import GEO, _config, _dex_state_dict, _numpy_dex, _save_state_dict


ONE_DEVICE = (("data", 1), ("fsdp", 1), ("model", 1))


def _torch_dex(sd, x_nchw) -> np.ndarray:
  torch = pytest.importorskip("torch")
  f = torch.nn.functional
  t = {k: torch.from_numpy(v) for k, v in sd.items()}
  x = torch.from_numpy(x_nchw)
  for block in range(1, 6):
    i = 1
    while f"conv{block}_{i}.weight" in t:
      x = f.relu(f.conv2d(x, t[f"conv{block}_{i}.weight"],
                          t[f"conv{block}_{i}.bias"], padding=1))
      i += 1
    x = f.max_pool2d(x, 2, 2)
  x = x.flatten(1)
  x = f.relu(f.linear(x, t["fc6.weight"], t["fc6.bias"]))
  x = f.relu(f.linear(x, t["fc7.weight"], t["fc7.bias"]))
  head = "fc8-101" if "fc8-101.weight" in t else "fc8_101"
  return f.linear(x, t[f"{head}.weight"], t[f"{head}.bias"]).numpy()


def _small_dex():
  return vgg.DEX(backbone=vgg.VGG(
      block_sizes=GEO["block_sizes"], channels=GEO["channels"],
      fc_width=GEO["fc_width"], include_fc=True, dropout_rate=0.0))


def test_age_targets_one_hot_smoothing_and_gaussian():
  age = jnp.array([0.2, 37.5, 37.49, 120.0])
  t = np.asarray(dex.age_targets(age, 101))
  np.testing.assert_array_equal(t.argmax(-1), [0, 38, 37, 100])
  np.testing.assert_array_equal(t.sum(-1), 1.0)
  assert t.max() == 1.0
  s = np.asarray(dex.age_targets(age, 101, label_smoothing=0.1))
  np.testing.assert_allclose(s.sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_allclose(s.min(), 0.1 / 101, rtol=1e-6)
  np.testing.assert_allclose(s.max(), 0.9 + 0.1 / 101, rtol=1e-6)
  g = np.asarray(dex.age_targets(age, 101, sigma=2.0))
  ref = np.exp(-(np.arange(101) - 37.5)**2 / 8.0)
  np.testing.assert_allclose(g[1], ref / ref.sum(), atol=1e-6)


def test_loss_is_cross_entropy_and_predict_is_expectation():
  config = _config(**{"loss.sigma": 0.0, "loss.label_smoothing": 0.0,
                      "data.image_size": 32})
  task = dex.Task(config)
  rng = np.random.default_rng(0)
  # numpy weights: compiling jax.random for each shape is slow on CPU.
  variables = jax.tree.map(
      lambda s: rng.normal(0, 0.05, s.shape).astype(s.dtype),
      jax.eval_shape(task.init_variables, jax.random.key(0)))
  batch = {"image": rng.normal(0, 50, (4, 32, 32, 3)).astype(np.float32),
           "age": np.array([3.0, 40.4, 40.6, 99.0], np.float32),
           "mask": np.array([1, 1, 1, 0], np.float32)}
  params = variables["params"]
  loss, (metrics, _) = jax.jit(task.loss_fn)(params, {}, batch,
                                             jax.random.key(1))
  logits, age = jax.jit(lambda p, x: (task.logits(p, {}, x)[0],
                                      task.forward(p, {}, x)[0]))(
                                          params, batch["image"])
  logp = np.asarray(jax.nn.log_softmax(logits))
  want = -np.mean([logp[0, 3], logp[1, 40], logp[2, 41]])
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  np.testing.assert_allclose(
      np.asarray(age), np.exp(logp) @ np.arange(101), rtol=1e-5)
  want_mae = np.mean(np.abs(np.asarray(age) - batch["age"])[:3])
  np.testing.assert_allclose(float(metrics["mae"]), want_mae, rtol=1e-5)


@pytest.mark.parametrize("key,value,match", [
    ("model.backbone", "resnet34", "model.backbone"),
    ("loss.label_smoothing", 1.5, "loss.label_smoothing"),
    ("loss.sigma", -1.0, "loss.sigma"),
])
def test_bad_config_values_are_named(key, value, match):
  with pytest.raises(ValueError, match=match):
    dex.Task(_config(**{key: value}))


def test_dex_import_matches_reference_forward_fc6_order():
  """Import the documented key names; logits equal a NCHW reference."""
  sd = _dex_state_dict(GEO)
  model = _small_dex()
  x = np.random.default_rng(1).normal(0, 40, (2, 64, 64, 3)).astype(
      np.float32)
  abstract = jax.eval_shape(
      lambda r: model.init(r, jnp.asarray(x), train=False),
      jax.random.key(0))
  variables = dex_import.dex_from_torch(sd, abstract)
  got = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False)[0])(
      variables, x))
  nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
  want = _numpy_dex(sd, nchw)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
  # The final map is 2x2: flattening HWC instead of CHW would differ.
  wrong = dict(sd)
  c, s = GEO["channels"][-1], 2
  wrong["fc6.weight"] = sd["fc6.weight"].reshape(-1, c, s, s).transpose(
      0, 2, 3, 1).reshape(-1, c * s * s)
  assert np.abs(_numpy_dex(wrong, nchw) - want).max() > 1e-2
  if importlib.util.find_spec("torch") is not None:
    np.testing.assert_allclose(got, _torch_dex(sd, nchw), rtol=1e-4,
                               atol=1e-3)


def test_dex_import_of_full_size_names_and_shapes():
  """The documented VGG-16 DEX names/shapes map onto facejax's vgg16 DEX."""
  model = vgg.create_dex("vgg16")
  abstract = jax.eval_shape(
      lambda r: model.init(r, jnp.zeros((1, 224, 224, 3)), train=False),
      jax.random.key(0))["params"]
  documented = {"fc6": (4096, 25088), "fc7": (4096, 4096),
                "fc8_101": (101, 4096)}
  c_in = 3
  for b, (n, c) in enumerate(zip((2, 2, 3, 3, 3), (64, 128, 256, 512, 512))):
    for i in range(n):
      documented[f"conv{b + 1}_{i + 1}"] = (c, c_in, 3, 3)
      c_in = c
  flat = {}
  for name, leaf in abstract["backbone"].items():
    flat[name] = leaf["kernel"].shape
  flat["fc8_101"] = abstract["head"]["kernel"].shape
  assert set(flat) == set(documented)
  for name, shape in documented.items():
    # OIHW -> HWIO, (out, in) -> (in, out)
    want = (shape[2], shape[3], shape[1], shape[0]) if len(shape) == 4 else \
        shape[::-1]
    assert flat[name] == want, name
  n = sum(int(np.prod(s)) + s[0] for s in documented.values())
  assert n == 134_674_341  # the reference's parameter count


def test_dex_geometry_and_errors():
  sd = torch_pickle.StateDict(_dex_state_dict(GEO), source="dex.pth")
  assert dex_import.dex_geometry(sd) == GEO
  no_head = {k: v for k, v in sd.items() if not k.startswith("fc8")}
  with pytest.raises(ValueError, match="fc8_101"):
    dex_import.dex_geometry(no_head)
  abstract = jax.eval_shape(
      lambda r: _small_dex().init(r, jnp.zeros((1, 64, 64, 3)), train=False),
      jax.random.key(0))
  with pytest.raises(ValueError, match="not a DEX state dict"):
    dex_import.dex_from_torch(
        torch_pickle.StateDict(no_head, source="x.pth"), abstract)
  bad = dict(sd, **{"fc8-101.weight": np.zeros((100, 24), np.float32)})
  with pytest.raises(ValueError, match="head needs"):
    dex_import.dex_from_torch(bad, abstract)


def test_init_from_dex_file_via_the_task(tmp_path):
  """config.model.init_from with a DEX-format file sets every layer."""
  geo = dict(GEO, block_sizes=(1,) * 5, channels=(8, 16, 32, 32, 32),
             fc_width=64, image_size=32)  # the smoke's vgg_tiny at 32 px
  sd = _dex_state_dict(geo, seed=3)
  path = _save_state_dict(sd, str(tmp_path / "dex.pth"))
  config = _config(**{"model.init_from": path})
  with config.unlocked():
    config.mesh = ONE_DEVICE
  setup = tasks.setup(config)
  state = setup.init_state()
  x = np.random.default_rng(2).normal(0, 40, (4, 32, 32, 3)).astype(
      np.float32)
  age = np.asarray(setup.predict(state, x))
  logits = _numpy_dex(sd, np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
  want = np.asarray(frozen_lib.expected_age(jnp.asarray(logits)))
  np.testing.assert_allclose(age, want, rtol=1e-4, atol=1e-3)
