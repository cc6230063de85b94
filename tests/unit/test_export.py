"""jax.export round trip: a model's inference function written with a
symbolic batch size, reloaded with jax.export.deserialize, gives the same
outputs as the function in this process at two batch sizes."""

import numpy as np
import pytest
import jax

from facejax import config_lib
from facejax import export
from facejax import tasks


def _setup(name: str):
  config = config_lib.load_config(f"configs/{name}.py:smoke")
  with config.unlocked():
    config.mesh = (("data", -1), ("fsdp", 1), ("model", 1))
    if name == "age_transformer":
      config.age_loss.random_init = "tiny"  # Editing needs no estimator.
  setup = tasks.setup(config)
  return setup, setup.init_state()


@pytest.mark.parametrize("name", ["age_regressor", "stargan",
                                  "age_transformer"])
def test_exported_inference_reloads_and_matches(name, tmp_path,
                                                fast_compiles):
  setup, state = _setup(name)
  inference = export.inference_of(setup, state)
  exported = export.save(inference, str(tmp_path))
  assert exported.platforms == ("cpu",)
  run, spec = export.load(str(tmp_path))
  assert spec["inputs"][0]["shape"][0] == "b"
  assert spec["preprocessing"]["align"] == setup.config.data.align
  rng = np.random.default_rng(0)
  for batch in (3, 5):  # One export, any batch size.
    inputs = []
    for _, shape, dtype in inference.inputs:
      shape = [batch if s == "b" else s for s in shape]
      inputs.append(rng.uniform(-1, 1, shape).astype(dtype))
    if name == "age_transformer":
      inputs[1] = rng.uniform(10, 70, batch).astype(np.float32)
    got = run(*inputs)
    want = jax.jit(inference.fn)(inference.weights, *inputs)
    assert np.shape(got)[0] == batch
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5,
                               atol=1e-5)
  if name == "age_regressor":
    with pytest.raises(FileNotFoundError, match="model.stablehlo"):
      export.load(str(tmp_path / "elsewhere"))
