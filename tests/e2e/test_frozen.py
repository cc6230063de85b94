"""Frozen age estimators (DEX / regressor) used inside other models' losses."""

import os
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from facejax.tasks import frozen as ae
from facejax.data import sources
from facejax.data import images as images_lib
from facejax import tasks
from frozen_helpers import _cfg


def _valid_images(age_data, n=32):
  """First n validation faces as RGB in [0, 1] (64 px) and their ages."""
  src = sources.AgeCsvSource(os.path.join(age_data, "valid.csv"))
  images = np.stack([np.asarray(images_lib.load_image(src[i]["image_path"]))
                     for i in range(n)]).astype(np.float32) / 255.0
  ages = np.array([src[i]["age"] for i in range(n)], np.float32)
  return images, ages


def test_workdir_of_the_wrong_task_is_refused(regressor_workdir):
  with pytest.raises(ValueError, match="age_loss.workdir.*'age_regression'"):
    ae.load_estimator(_cfg(estimator="dex", workdir=regressor_workdir))


@pytest.fixture(scope="module")
def estimators(dex_workdir, regressor_workdir):
  return {kind: ae.load_estimator(_cfg(estimator=kind, workdir=workdir))
          for kind, workdir in (("dex", dex_workdir),
                                ("regressor", regressor_workdir))}


def _own_predictions(workdir, age_data, n):
  """The trained model's own predict on the pipeline's preprocessing."""
  from facejax import runs  # pylint: disable=g-import-not-at-top
  setup, state, _ = runs.restore(workdir, task_class=tasks.get)
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
