"""Frozen age estimators (DEX / regressor) used inside other models' losses."""

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from facejax.tasks import frozen as ae
from facejax.data import sources
from facejax.data import transforms
import test_dex as dex_tests  # module import: its tests are not re-collected


def _cfg(**kw) -> ml_collections.ConfigDict:
  cfg = ae.default_age_loss_config()
  cfg.update(kw)
  return cfg


def _valid_images(age_data, n=32):
  """First n validation faces as RGB in [0, 1] (64 px) and their ages."""
  src = sources.AgeCsvSource(os.path.join(age_data, "valid.csv"))
  images = np.stack([np.asarray(transforms.load_image(src[i]["image_path"]))
                     for i in range(n)]).astype(np.float32) / 255.0
  ages = np.array([src[i]["age"] for i in range(n)], np.float32)
  return images, ages


# --- distributions over the age bins ----------------------------------------


@pytest.mark.parametrize("sigma", [0.3, 1.0, 3.0, 10.0])
def test_soft_labels_sum_to_one_and_peak_at_nearest_bin(sigma):
  age = jnp.array([0.0, 0.4, 0.6, 37.51, 37.49, 63.0, 99.7, 100.0, -3.0,
                   130.0])
  p = np.asarray(ae.soft_age_labels(age, sigma))
  assert p.shape == (10, 101)
  np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(
      p.argmax(-1), [0, 0, 1, 38, 37, 63, 100, 100, 0, 100])
  ref = np.exp(-(np.arange(101) - 63.0)**2 / (2 * sigma**2))
  np.testing.assert_allclose(p[5], ref / ref.sum(), atol=1e-6)
  np.testing.assert_allclose(np.exp(ae.soft_age_log_probs(age, sigma)), p,
                             atol=1e-6)


def test_expected_age_of_one_hot_and_uniform():
  logits = jax.nn.one_hot(jnp.array([0, 17, 100]), 101) * 1e4
  np.testing.assert_allclose(np.asarray(ae.expected_age(logits)),
                             [0, 17, 100], atol=1e-4)
  np.testing.assert_allclose(float(ae.expected_age(jnp.zeros((1, 101)))[0]),
                             50.0, rtol=1e-6)


@pytest.mark.parametrize("size,crop", [(32, 1.0), (24, 0.8)])
def test_input_transform_matches_the_data_pipeline(size, crop):
  """JAX crop/resize/normalise == the grain Preprocess (PIL), to 1 level."""
  rng = np.random.default_rng(0)
  small = (rng.random((12, 16, 3)) * 255).astype(np.uint8)
  from PIL import Image  # pylint: disable=g-import-not-at-top
  image = np.asarray(Image.fromarray(small).resize((64, 48)))  # smooth
  for mode in ("imagenet", "unit", "caffe_bgr"):
    pre = transforms.Preprocess(image_size=size, normalize=mode,
                                crop_fraction=crop)
    want = pre((0, {"image": image, "age": np.float32(0)}))["image"]
    x = jnp.asarray(image[None] / 255.0, jnp.float32)
    got = np.asarray(ae.normalize(ae.crop_and_resize(x, size, crop),
                                  mode))[0]
    # Compare in 0..255 pixel units: PIL rounds to uint8.
    pixels = transforms.denormalize(got, mode).astype(int)
    assert np.abs(pixels - transforms.denormalize(want, mode)).max() <= 1


# --- configuration ------------------------------------------------------------


@pytest.mark.parametrize("kw,match", [
    ({"estimator": "mivolo", "workdir": "w"}, "age_loss.estimator"),
    ({"estimator": "regressor", "weights": "dex.pth"}, "age_loss.weights"),
    ({"estimator": "dex", "workdir": "w", "weights": "dex.pth"},
     "age_loss.weights"),
    ({"estimator": "dex"}, "age_loss.workdir"),
    ({"estimator": "regressor", "workdir": "w", "sigma": 0.0},
     "age_loss.sigma"),
    ({"estimator": "regressor", "workdir": "/nonexistent"},
     "age_loss.workdir.*config.json"),
    ({"estimator": "dex", "weights": "/nonexistent/dex.pth"},
     "age_loss.weights"),
])
def test_bad_values_name_the_key(kw, match):
  with pytest.raises(ValueError, match=match):
    ae.load_estimator(_cfg(**kw))


def test_workdir_of_the_wrong_task_is_refused(regressor_workdir):
  with pytest.raises(ValueError, match="age_loss.workdir.*'age_regression'"):
    ae.load_estimator(_cfg(estimator="dex", workdir=regressor_workdir))


# --- estimators from trained workdirs -----------------------------------------


@pytest.fixture(scope="module")
def estimators(dex_workdir, regressor_workdir):
  return {kind: ae.load_estimator(_cfg(estimator=kind, workdir=workdir))
          for kind, workdir in (("dex", dex_workdir),
                                ("regressor", regressor_workdir))}


def _own_predictions(workdir, age_data, n):
  """The trained model's own predict on the pipeline's preprocessing."""
  from facejax import runs  # pylint: disable=g-import-not-at-top
  setup, state, _ = runs.restore(workdir)
  src = sources.AgeCsvSource(os.path.join(age_data, "valid.csv"))
  pre = setup.task.preprocess(train=False)
  x = np.stack([pre((0, src[i]))["image"] for i in range(n)])
  return np.asarray(setup.predict(state, x))


@pytest.mark.parametrize("kind", ["dex", "regressor"])
def test_estimator_from_workdir_matches_the_model(kind, estimators,
                                                  dex_workdir,
                                                  regressor_workdir,
                                                  age_data):
  """Ages from [0, 1] RGB images equal the model's own predictions.

  Measured: mean difference 0.08-0.14 y, max 0.5-2.0 y (DEX) / mean 0.05,
  max 0.2 y (regressor) over 32 faces; it comes from PIL's uint8 rounding
  in the data pipeline, to which the tiny DEX's softmax is sensitive on a
  few faces.
  """
  workdir = dex_workdir if kind == "dex" else regressor_workdir
  est = estimators[kind]
  assert est.kind == kind and est.image_size == 32
  images, ages = _valid_images(age_data)
  age, logp = map(np.asarray, jax.jit(
      lambda v, x: (est.age(v, x), est.log_probs(v, x)))(est.variables,
                                                          images))
  own = _own_predictions(workdir, age_data, len(ages))
  diff = np.abs(age - own)
  print(f"{kind}: |estimator - own predict| max {diff.max():.3f} mean "
        f"{diff.mean():.3f}; estimator MAE {np.abs(age - ages).mean():.2f}"
        f" vs mean-age MAE {np.abs(ages - ages.mean()).mean():.2f}")
  assert diff.max() < 3.0 and diff.mean() < 0.5
  assert np.abs(age - ages).mean() < 0.6 * np.abs(ages - ages.mean()).mean()
  assert logp.shape == (32, 101)
  np.testing.assert_allclose(np.exp(logp).sum(-1), 1.0, rtol=1e-4)
  if kind == "regressor":  # the Gaussian sits on the prediction
    np.testing.assert_array_equal(logp.argmax(-1),
                                  np.clip(np.round(age), 0, 100))
  else:  # DEX's age is the expectation of its distribution
    np.testing.assert_allclose(np.exp(logp) @ np.arange(101), age,
                               rtol=1e-4)


@pytest.mark.parametrize("kind", ["dex", "regressor"])
def test_gradients_reach_images_but_not_variables(kind, estimators,
                                                  age_data):
  est = estimators[kind]
  images, _ = _valid_images(age_data, n=8)
  images = jnp.asarray(images[:, ::2, ::2])  # any input size: 32 px here
  target = jnp.full((8,), 70.0)

  def loss(e, x):  # the age transformer's use: CE to a target age
    logp = e.log_probs(e.variables, x)
    return -(ae.soft_age_labels(target, 1.0) * logp).sum(-1).mean()

  # The estimator is a pytree whose leaves are its variables: it can be
  # a jit argument itself.
  g_est, g_img = jax.jit(jax.grad(loss, argnums=(0, 1)))(est, images)
  g_img = np.asarray(g_img)
  assert np.all(np.isfinite(g_img)) and np.abs(g_img).max() > 0
  # Frozen: no gradient reaches the estimator's own variables.
  assert isinstance(g_est, ae.FrozenEstimator)
  leaves = jax.tree.leaves(g_est)
  assert len(leaves) == len(jax.tree.leaves(est.variables)) > 0
  for leaf in leaves:
    assert not np.any(np.asarray(leaf))


def test_official_dex_weights_file(tmp_path):
  """age_loss.weights: a DEX-format .pth (tiny shapes) -> Caffe input path."""
  geo = dex_tests.GEO  # 64 px input implied by fc6's width
  # pylint: disable=protected-access
  sd = dex_tests._dex_state_dict(geo, seed=5)
  path = dex_tests._save_state_dict(sd, str(tmp_path / "dex.pth"))
  est = ae.load_estimator(_cfg(estimator="dex", weights=path))
  assert est.image_size == 64 and est.normalization == "caffe_bgr"
  rng = np.random.default_rng(0)
  images = rng.random((2, 128, 128, 3)).astype(np.float32)
  age = np.asarray(jax.jit(est.age)(est.variables, images))
  # Reference: resize to 64, RGB->BGR, x255, minus the Caffe mean, NCHW.
  x = np.asarray(ae.crop_and_resize(images, 64))[..., ::-1] * 255.0
  x = x - np.array([103.939, 116.779, 123.68], np.float32)
  logits = dex_tests._numpy_dex(sd, np.ascontiguousarray(
      x.transpose(0, 3, 1, 2)))
  want = np.asarray(ae.expected_age(jnp.asarray(logits, jnp.float32)))
  np.testing.assert_allclose(age, want, rtol=1e-4, atol=1e-3)
