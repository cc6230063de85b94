"""HRFAE age transformer: model, losses, sharding, learning, importer, CLI.

Every training test shares one small configuration (smoke widths, 32 px,
batch 8, the smoke DEX as the age loss) so that the train step compiles
once per mesh; the persistent compilation cache (conftest) shares it with
the CLI subprocess.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from facejax.models import age_transformer as model_lib
from facejax.convert import age_transformer as convert_lib
from facejax.models import spectral_norm
from facejax.tasks import age_transformer
from facejax import tasks
from helpers import flat
from age_transformer_helpers import _config, _torch_state_dicts


def test_reference_shapes_and_parameter_counts():
  gen, disc = model_lib.Generator(), model_lib.Discriminator()
  x = jnp.zeros((1, 512, 512, 3))
  gv = jax.eval_shape(gen.init, jax.random.key(0), x, jnp.zeros((1,)))
  dv = jax.eval_shape(disc.init, jax.random.key(0), x)
  count = lambda t: sum(int(np.prod(l.shape)) for l in jax.tree.leaves(t))
  # Counts from the reference (model_lib.md sections 3 and 4).
  assert count(gv["params"]["enc"]) == 1_283_328
  assert count(gv["params"]["dec"]) == 192_387
  assert count(gv["params"]["mod"]) == 12_928
  assert count(dv["params"]) == 2_797_921
  code = jax.eval_shape(lambda v: gen.apply(v, x, method=gen.encode), gv)
  assert [c.shape for c in code] == [(1, 128, 128, 128), (1, 128, 128, 128),
                                     (1, 256, 256, 64)]
  out = jax.eval_shape(lambda v: gen.apply(v, x, jnp.zeros((1,))), gv)
  assert out.shape == (1, 512, 512, 3)
  for size, patch in ((512, 35), (1024, 67), (64, 7)):
    y = jax.eval_shape(lambda v, s=size: disc.apply(
        v, jnp.zeros((1, s, s, 3)), mutable=["spectral", "batch_stats"]
    )[0], dv)
    assert y.shape == (1, patch, patch, 1)
    assert model_lib.patch_size(size) == patch


def test_target_age_rule():
  ages = np.repeat(np.arange(20, 70), 40).astype(np.float32)
  t = np.asarray(age_transformer.sample_target_ages(jax.random.key(0),
                                                    jnp.asarray(ages)))
  t_np = age_transformer.sample_target_ages_np(np.random.default_rng(0),
                                               ages)
  for targets in (t, t_np):
    young, old = ages < 45, ages > 45
    assert np.all(targets[young] >= ages[young] + 25)
    assert np.all(targets[old] <= ages[old] - 26)
    assert np.all(targets[ages == 45] == 20)
    assert targets.min() == 20 and targets.max() == 69
    assert np.all(targets == np.round(targets))
  # Both ends of a range are drawn: age 20 -> U{45..69}.
  assert set(t[ages == 20]) >= {45.0, 69.0} or len(set(t[ages == 20])) > 10


def test_spectral_norm_follows_pytorch_semantics():
  rng = np.random.default_rng(0)
  conv = spectral_norm.Conv(5, 3)
  x = jnp.asarray(rng.normal(size=(2, 6, 6, 4)), jnp.float32)
  v0 = conv.init(jax.random.key(0), x)
  kernel = np.asarray(v0["params"]["kernel"])          # [3, 3, 4, 5]
  w = kernel.reshape(-1, 5).T                         # PyTorch's [O, kkI]
  u, v = np.asarray(v0["spectral"]["u"]), np.asarray(v0["spectral"]["v"])
  # Inference: the stored u, v without iteration.
  y = conv.apply(v0, x)
  sigma = u @ w @ v
  ref = spectral_norm.Conv(5, 3, spectral=False).apply(
      {"params": {"kernel": kernel / sigma,
                               "bias": v0["params"]["bias"]}}, x)
  np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
  # Training: one power iteration, stored.
  _, new = conv.apply(v0, x, update_stats=True, mutable=["spectral"])
  v1 = w.T @ u
  v1 /= np.linalg.norm(v1)
  u1 = w @ v1
  u1 /= np.linalg.norm(u1)
  np.testing.assert_allclose(new["spectral"]["u"], u1, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(new["spectral"]["v"], v1, rtol=1e-5, atol=1e-6)
  # Many iterations converge to the largest singular value.
  state = v0
  for _ in range(50):
    _, upd = conv.apply(state, x, update_stats=True, mutable=["spectral"])
    state = {"params": v0["params"], **upd}
  s = np.asarray(state["spectral"]["u"]) @ w @ np.asarray(
      state["spectral"]["v"])
  np.testing.assert_allclose(s, np.linalg.svd(w, compute_uv=False)[0],
                             rtol=1e-4)


def test_histogram_transfer_matches_input_histogram():
  rng = np.random.default_rng(0)
  out = jnp.asarray(rng.normal(size=(2, 8, 8, 3)), jnp.float32)
  ref = jnp.asarray(rng.uniform(size=(2, 8, 8, 3)), jnp.float32)
  y = np.asarray(age_transformer.histogram_transfer(out, ref))
  o, r = np.asarray(out), np.asarray(ref)
  for b in range(2):
    for c in range(3):
      np.testing.assert_array_equal(np.sort(y[b, ..., c].ravel()),
                                    np.sort(r[b, ..., c].ravel()))
      # Ranks are the output's own.
      np.testing.assert_array_equal(np.argsort(y[b, ..., c].ravel()),
                                    np.argsort(o[b, ..., c].ravel()))


def test_bad_config_values_are_named(age_data, tmp_path):
  with pytest.raises(ValueError, match="config key stages"):
    tasks.setup(_config(age_data, "", total_steps=100))
  with pytest.raises(ValueError,
                     match=r"(?s)age_loss.workdir.*configs/dex.py"):
    tasks.setup(_config(age_data, ""))


def _template():
  gen, disc = model_lib.Generator(), model_lib.Discriminator()
  x = jnp.zeros((1, 64, 64, 3))
  gv = jax.eval_shape(gen.init, jax.random.key(0), x, jnp.zeros((1,)))
  dv = jax.eval_shape(disc.init, jax.random.key(0), x)
  return {"gen": dict(gv), "disc": dict(dv)}


def test_importer_maps_official_names_and_shapes(tmp_path):
  rng = np.random.default_rng(0)
  parts = _torch_state_dicts(rng)
  # The training checkpoint's flat names (<part>_state_dict.<key>).
  flat_sd = {f"{p}_state_dict.{k}": v for p, sd in parts.items()
             for k, v in sd.items()}
  flat_sd["gen_opt_state_dict.state.0.exp_avg"] = np.zeros(3, np.float32)
  out = convert_lib.convert(convert_lib.split_checkpoint(flat_sd),
                             _template())
  tpl = flat(jax.tree.map(lambda s: np.zeros(s.shape), _template()))
  got = flat(out)
  assert got.keys() == tpl.keys()
  for k in tpl:
    assert got[k].shape == tpl[k].shape, k
  gen, dis = out["gen"], out["disc"]
  np.testing.assert_array_equal(
      gen["params"]["enc"]["conv_1"]["conv"]["kernel"],
      parts["enc"]["conv_1.conv.weight_orig"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(
      gen["params"]["enc"]["res_block_3"]["block_1"]["norm"]["scale"],
      parts["enc"]["res_block.3.block.1.norm.weight"])
  np.testing.assert_array_equal(gen["params"]["mod"]["kernel"],
                                parts["mlp_style"]["fc_mix.weight"].T)
  np.testing.assert_array_equal(
      gen["params"]["dec"]["conv_3"]["kernel"],
      parts["dec"]["conv_3.1.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(
      dis["batch_stats"]["conv_2"]["norm"]["var"],
      parts["dis"]["conv.2.norm.running_var"])
  # v is permuted from (I, kh, kw) to (kh, kw, I): sigma is unchanged.
  w = parts["dec"]["conv_1.1.conv.weight_orig"]
  u = parts["dec"]["conv_1.1.conv.weight_u"]
  v = parts["dec"]["conv_1.1.conv.weight_v"]
  sigma_torch = u @ w.reshape(64, -1) @ v
  conv = gen["params"]["dec"]["conv_1"]["conv"]
  spec = gen["spectral"]["dec"]["conv_1"]["conv"]
  w_fx = conv["kernel"].reshape(-1, 64).T
  np.testing.assert_allclose(spec["u"] @ w_fx @ spec["v"], sigma_torch,
                             rtol=1e-4)
  # A missing key and a wrong width are named.
  bad = dict(parts, enc={k: v for k, v in parts["enc"].items()
                         if k != "conv_2.norm.bias"})
  with pytest.raises(ValueError, match="conv_2.norm.bias"):
    convert_lib.convert(bad, _template())
  with pytest.raises(ValueError, match="not an HRFAE checkpoint"):
    convert_lib.split_checkpoint({"model.x": np.zeros(1)})
  # Without weight_v: v from the half power step (same sigma as torch's
  # eval after that step).
  out2 = convert_lib.convert(_torch_state_dicts(
      np.random.default_rng(0), with_v=False), _template())
  v2 = out2["gen"]["spectral"]["dec"]["conv_1"]["conv"]["v"]
  np.testing.assert_allclose(np.linalg.norm(v2), 1.0, rtol=1e-5)


def test_imported_spectral_conv_matches_pytorch():
  torch = pytest.importorskip("torch")
  rng = np.random.default_rng(1)
  tconv = torch.nn.utils.spectral_norm(torch.nn.Conv2d(4, 6, 3))
  with torch.no_grad():
    tconv(torch.zeros(1, 4, 5, 5))  # one training-mode power iteration
  tconv.eval()
  x = rng.normal(size=(2, 7, 7, 4)).astype(np.float32)
  with torch.no_grad():
    want = tconv(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
  sd = {f"c.{k}": v.detach().numpy()
        for k, v in tconv.state_dict().items()}
  mapper = convert_lib._Mapper(sd, "test", "<torch>")  # pylint: disable=protected-access
  conv = spectral_norm.Conv(6, 3)
  tpl = jax.eval_shape(conv.init, jax.random.key(0), jnp.asarray(x))
  mapper.conv("c", (), {("params", "kernel"): tpl["params"]["kernel"],
                       ("params", "bias"): tpl["params"]["bias"],
                       ("spectral", "u"): tpl["spectral"]["u"],
                       ("spectral", "v"): tpl["spectral"]["v"]})
  variables = {"params": {"kernel": mapper.out[("params", "kernel")],
                          "bias": mapper.out[("params", "bias")]},
               "spectral": {"u": mapper.out[("spectral", "u")],
                            "v": mapper.out[("spectral", "v")]}}
  got = np.asarray(conv.apply(variables, jnp.asarray(x)))
  np.testing.assert_allclose(got.transpose(0, 3, 1, 2), want, rtol=1e-4,
                             atol=1e-5)
