"""Frozen age estimators (DEX / regressor) used inside other models' losses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from facejax.tasks import frozen as ae
from facejax.data import transforms
import dex_helpers as dex_tests
from frozen_helpers import _cfg


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
