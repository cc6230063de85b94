"""StarGAN: masked multi-data-set labels, losses, sharding, importer, learning."""

import os
from flax import traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image
from facejax import mesh as mesh_lib
from facejax.data import stargan as sets_lib
from facejax.data.sources import DataError
from facejax.models import stargan as model_lib
from facejax.convert import stargan as stargan_convert
from facejax.tasks import stargan as task_lib
from facejax.train import steps as steps_lib
from facejax import tasks
from helpers import flat
from stargan_helpers import ONE_DEVICE, _config, _release_generator


def _write_celeba(root, rows, names=("Black_Hair", "Blond_Hair", "Male")):
  os.makedirs(os.path.join(root, "img"), exist_ok=True)
  lines = [f"{len(rows)}", " ".join(names)]
  for i, values in enumerate(rows):
    Image.new("RGB", (6, 8), (i * 40, 0, 0)).save(
        os.path.join(root, "img", f"{i}.png"))
    lines.append(f"{i}.png  " + " ".join(f"{v:2d}" for v in values))
  with open(os.path.join(root, "attrs.txt"), "w") as f:
    f.write("\n".join(lines) + "\n")


def _write_rafd(root, classes=("happy", "angry", "sad")):
  for c in classes:
    os.makedirs(os.path.join(root, "train", c), exist_ok=True)
    Image.new("RGB", (8, 8)).save(os.path.join(root, "train", c, "a.png"))


def _celeba_spec(name, root, attributes):
  return {"name": name, "format": "celeba", "root": root, "image_dir": "img",
          "attr_file": "attrs.txt", "attributes": attributes,
          "test_count": 0, "split_seed": None}


def _data_cfg(sets):
  d = ml_collections.ConfigDict()
  d.root, d.synthetic_dir = "", "unused"
  d.sets = sets
  d.one_hot_group = sets_lib.DEFAULT_ONE_HOT_GROUP
  return d


def _labels(data_cfg):
  layout = sets_lib.make_layout(data_cfg)
  out = []
  for k in range(layout.num_sets):
    src = sets_lib.open_source(data_cfg, layout, k, "train")
    out.append(np.stack([src[i]["label"] for i in range(len(src))]))
  return layout, out


def test_label_vectors_for_one_two_three_sets(tmp_path):
  _write_celeba(str(tmp_path / "c1"), [(1, -1, 1), (-1, 1, -1)])
  _write_celeba(str(tmp_path / "c2"), [(-1, -1, 1)])
  _write_rafd(str(tmp_path / "r"))
  c1 = _celeba_spec("c1", str(tmp_path / "c1"), ("Male", "Black_Hair"))
  c2 = _celeba_spec("c2", str(tmp_path / "c2"), ("Male",))
  r = {"name": "r", "format": "rafd", "root": str(tmp_path / "r")}

  # One data set: no data-set mask, as in the official StarGAN.
  layout, (l1,) = _labels(_data_cfg([c1]))
  assert layout.label_dim == 2 and layout.mask_dim == 0
  np.testing.assert_array_equal(l1, [[1, 1], [0, 0]])

  # RaFD classes are the sorted folders: angry, happy, sad.
  layout, (lr, l1) = _labels(_data_cfg([r, c1]))
  assert layout.blocks[0].names == ("angry", "happy", "sad")
  np.testing.assert_array_equal(lr, [[1, 0, 0, 0, 0, 1, 0],
                                     [0, 1, 0, 0, 0, 1, 0],
                                     [0, 0, 1, 0, 0, 1, 0]])
  np.testing.assert_array_equal(l1, [[0, 0, 0, 1, 1, 0, 1],
                                     [0, 0, 0, 0, 0, 0, 1]])

  layout, (l1, lr, l2) = _labels(_data_cfg([c1, r, c2]))
  assert layout.cls_dim == 6 and layout.label_dim == 9
  np.testing.assert_array_equal(l1, [[1, 1, 0, 0, 0, 0, 1, 0, 0],
                                     [0, 0, 0, 0, 0, 0, 1, 0, 0]])
  np.testing.assert_array_equal(lr[1], [0, 0, 0, 1, 0, 0, 0, 1, 0])
  np.testing.assert_array_equal(l2, [[0, 0, 0, 0, 0, 1, 0, 0, 1]])


def test_bad_attribute_and_missing_files_are_named(tmp_path):
  _write_celeba(str(tmp_path / "c"), [(1, -1, 1)])
  cfg = _data_cfg([_celeba_spec("c", str(tmp_path / "c"), ("Bald",))])
  layout = sets_lib.make_layout(cfg)
  with pytest.raises(DataError, match=r"attrs.txt:2: .*'Bald'.*"
                     r"data.sets\[0\].attributes"):
    sets_lib.open_source(cfg, layout, 0, "train")
  cfg.sets[0]["attr_file"] = "nope.txt"
  with pytest.raises(DataError, match=r"nope.txt: attribute file not found"):
    sets_lib.open_source(cfg, layout, 0, "train")
  with open(tmp_path / "c" / "attrs.txt", "a") as f:
    f.write("9.png 1 0 1\n")
  cfg.sets[0]["attr_file"] = "attrs.txt"
  cfg.sets[0]["attributes"] = ("Male",)
  with pytest.raises(DataError, match=r"attrs.txt:4: values must be 1 or -1"):
    sets_lib.open_source(cfg, layout, 0, "train")
  with pytest.raises(ValueError, match=r"data.sets\[0\].format"):
    sets_lib.make_layout(_data_cfg([{"name": "x", "format": "lfw"}]))


def _two_set_layout():
  return sets_lib.LabelLayout((
      sets_lib.make_block("c", "celeba", ("Black_Hair", "Blond_Hair",
                                          "Brown_Hair", "Eyeglasses"), 0),
      sets_lib.make_block("r", "rafd", ("a", "b", "c"), 4)))


def test_masked_loss_ignores_inactive_blocks():
  layout = _two_set_layout()
  labels = np.stack([layout.encode(0, [0, 1, 0, 1]), layout.encode(1, 2)])
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, layout.cls_dim)).astype(np.float32)
  base = sets_lib.masked_cls_loss(logits, labels, layout)
  changed = logits.copy()
  changed[0, 4:] = [50.0, -9.0, np.inf]    # RaFD logits of a CelebA example
  changed[1, :4] = [np.nan, 3.0, -7.0, 1.0]  # CelebA logits of a RaFD one
  np.testing.assert_array_equal(
      sets_lib.masked_cls_loss(changed, labels, layout), base)
  # The active blocks do count: BCE sum / softmax CE by hand.
  sig = lambda z, y: np.log1p(np.exp(-z)) if y else np.log1p(np.exp(z))
  want0 = sum(sig(z, y) for z, y in zip(logits[0, :4], [0, 1, 0, 1]))
  lse = np.log(np.exp(logits[1, 4:]).sum())
  np.testing.assert_allclose(base, [want0, lse - logits[1, 6]], rtol=1e-5)


def test_target_sampling_stays_in_the_active_block():
  layout = _two_set_layout()
  labels = np.stack([layout.encode(0, [1, 0, 0, 0])] * 64 +
                    [layout.encode(1, 0)] * 64)
  for mode in sets_lib.TARGET_MODES:
    trg = np.asarray(sets_lib.sample_targets(jax.random.key(0), labels,
                                             layout, mode))
    np.testing.assert_array_equal(trg[:, 7:], labels[:, 7:])  # same mask
    np.testing.assert_array_equal(trg[:64, 4:7], 0)
    np.testing.assert_array_equal(trg[64:, :4], 0)
    np.testing.assert_array_equal(trg[:64, :3].sum(1), 1)  # one hair colour
    np.testing.assert_array_equal(trg[64:, 4:7].sum(1), 1)
  trg = np.asarray(sets_lib.sample_targets(jax.random.key(1), labels, layout))
  assert 0.3 < trg[:64, 3].mean() < 0.7  # eyeglasses: a coin flip
  assert len(np.unique(trg[64:, 4:7].argmax(1))) == 3


def test_gradient_penalty_matches_finite_differences():
  disc = model_lib.Discriminator(image_size=8, conv_dim=4, c_dim=2,
                                 repeat_num=2, impl="xla")
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  params = disc.init(jax.random.key(1), x)
  src_fn = lambda xs: disc.apply(params, xs)[0]
  gp = np.asarray(steps_lib.gradient_penalty(src_fn, x))
  eps = 1e-2
  src_sum = jax.jit(lambda xs: src_fn(xs).sum((1, 2, 3)))
  for b in range(2):
    flat = np.asarray(x[b]).reshape(-1)
    steps = eps * np.eye(flat.size, dtype=np.float32)
    up = np.asarray(src_sum((flat + steps).reshape(-1, 8, 8, 3)))
    down = np.asarray(src_sum((flat - steps).reshape(-1, 8, 8, 3)))
    grad = (up - down) / (2 * eps)
    want = (np.linalg.norm(grad) - 1.0) ** 2
    np.testing.assert_allclose(gp[b], want, rtol=2e-2, atol=1e-4)
  assert gp.min() > 1e-3  # a non-trivial check: gradients are not unit norm


def test_conv_transpose_matches_pytorch_semantics():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 3, 3, 2)).astype(np.float32)
  w = rng.normal(size=(2, 5, 4, 4)).astype(np.float32)  # torch (in, out)
  # PyTorch ConvTranspose2d(k=4, s=2, p=1): scatter-add, then crop p.
  full = np.zeros((1, 8, 8, 5), np.float32)
  for i in range(3):
    for j in range(3):
      full[0, 2 * i:2 * i + 4, 2 * j:2 * j + 4] += np.einsum(
          "c,cokl->klo", x[0, i, j], w)
  want = full[:, 1:7, 1:7]
  layer = model_lib.ConvTranspose(5)
  params = {"params": {"conv": {
      "kernel": stargan_convert._conv_transpose(w)}}}
  np.testing.assert_allclose(layer.apply(params, x), want, rtol=1e-5,
                             atol=1e-5)


def test_celeba_only_release_loads_into_a_single_set_generator(tmp_path):
  """The downloadable StarGAN checkpoints are CelebA-only (c_dim 5): G's
  first conv takes 3 + 5 channels. A one-set config has no mask, so the
  file's (64, 8, 7, 7) main.0.weight fits (it used to want 9 channels)."""
  names = ("Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young")
  _write_celeba(str(tmp_path / "c"), [(1, -1, -1, 1, 1)], names)
  layout = sets_lib.make_layout(_data_cfg(
      [_celeba_spec("celeba", str(tmp_path / "c"), names)]))
  assert layout.label_dim == 5
  g_abs, sd = _release_generator(layout.label_dim)
  assert sd["main.0.weight"].shape == (64, 8, 7, 7)
  g = stargan_convert.generator_from_torch(sd, g_abs, 6)
  assert g["conv0"]["kernel"].shape == (7, 7, 8, 64)


def test_importer_maps_official_names_and_shapes():
  # The documented shapes of the 128 px, c_dim 5 release map onto G and D.
  gen = model_lib.Generator(impl="xla")  # shapes only: fast to trace
  disc = model_lib.Discriminator(c_dim=5, impl="xla")
  x, c = jnp.zeros((1, 128, 128, 3)), jnp.zeros((1, 5))
  g_abs = jax.eval_shape(gen.init, jax.random.key(0), x, c)["params"]
  d_abs = jax.eval_shape(disc.init, jax.random.key(0), x)["params"]
  documented = {"main.0.weight": (64, 8, 7, 7), "main.3.weight":
                (128, 64, 4, 4), "main.9.main.0.weight": (256, 256, 3, 3),
                "main.15.weight": (256, 128, 4, 4),
                "main.18.weight": (128, 64, 4, 4),
                "main.21.weight": (3, 64, 7, 7)}
  names = stargan_convert.generator_names(6)
  by_key = {k: (p, kind) for p, (k, kind) in names.items()}
  flat = traverse_util.flatten_dict(g_abs, sep="/")
  for key, shape in documented.items():
    path, kind = by_key[key]
    got = stargan_convert._CONVERT[kind](np.zeros(shape)).shape
    assert got == flat[path].shape, (key, got, flat[path].shape)
  assert by_key["main.16.weight"][0] == "up0_norm/scale"
  d_documented = {"main.0.weight": (64, 3, 4, 4),
                  "main.10.weight": (2048, 1024, 4, 4),
                  "conv1.weight": (1, 2048, 3, 3),
                  "conv2.weight": (5, 2048, 2, 2)}
  d_flat = traverse_util.flatten_dict(d_abs, sep="/")
  d_by_key = {k: (p, kind) for p, (k, kind) in
              stargan_convert.discriminator_names(6).items()}
  assert set(d_flat) == {p for p, _ in d_by_key.values()}
  for key, shape in d_documented.items():
    path, kind = d_by_key[key]
    got = stargan_convert._CONVERT[kind](np.zeros(shape)).shape
    assert got == d_flat[path].shape, (key, got, d_flat[path].shape)

  # A tiny state dict in the official names: values land where expected.
  rng = np.random.default_rng(0)
  tiny_g, tiny_d = model_lib.Generator(4, 1), model_lib.Discriminator(
      8, 4, 3, 2)
  x8, c3 = jnp.zeros((1, 8, 8, 3)), jnp.zeros((1, 3))
  # Shapes are all the importer needs (eager init would take ~25 s).
  g_params = jax.eval_shape(tiny_g.init, jax.random.key(0), x8, c3)["params"]
  d_params = jax.eval_shape(tiny_d.init, jax.random.key(0), x8)["params"]
  sd = {}
  shapes = {"main.0.weight": (4, 6, 7, 7), "main.3.weight": (8, 4, 4, 4),
            "main.6.weight": (16, 8, 4, 4),
            "main.9.main.0.weight": (16, 16, 3, 3),
            "main.9.main.3.weight": (16, 16, 3, 3),
            "main.10.weight": (16, 8, 4, 4), "main.13.weight": (8, 4, 4, 4),
            "main.16.weight": (3, 4, 7, 7)}
  for idx, n in (("main.1", 4), ("main.4", 8), ("main.7", 16),
                 ("main.9.main.1", 16), ("main.9.main.4", 16),
                 ("main.11", 8), ("main.14", 4)):
    for suffix in ("weight", "bias", "running_mean", "running_var"):
      shapes[f"{idx}.{suffix}"] = (n,)
    sd[f"{idx}.num_batches_tracked"] = np.array(7)
  for k, s in shapes.items():
    sd[k] = rng.normal(size=s).astype(np.float32)
  g = stargan_convert.generator_from_torch(sd, g_params, 1)
  np.testing.assert_array_equal(g["conv0"]["kernel"][2, 3, 5, 1],
                                sd["main.0.weight"][1, 5, 2, 3])
  np.testing.assert_array_equal(g["up0"]["conv"]["kernel"][0, 1, 15, 7],
                                sd["main.10.weight"][15, 7, 3, 2])
  np.testing.assert_array_equal(g["res0"]["norm2"]["bias"],
                                sd["main.9.main.4.bias"])
  dsd = {"main.0.weight": rng.normal(size=(4, 3, 4, 4)),
         "main.0.bias": rng.normal(size=(4,)),
         "main.2.weight": rng.normal(size=(8, 4, 4, 4)),
         "main.2.bias": rng.normal(size=(8,)),
         "conv1.weight": rng.normal(size=(1, 8, 3, 3)),
         "conv2.weight": rng.normal(size=(3, 8, 2, 2))}
  d = stargan_convert.discriminator_from_torch(dsd, d_params, 2)
  np.testing.assert_allclose(d["cls"]["kernel"][1, 0, 7, 2],
                             dsd["conv2.weight"][2, 7, 1, 0], rtol=1e-6)
  with pytest.raises(ValueError, match="missing conv2.weight"):
    stargan_convert.discriminator_from_torch(
        {k: v for k, v in dsd.items() if k != "conv2.weight"}, d_params, 2)
  with pytest.raises(ValueError, match="unexpected main.4.weight"):
    stargan_convert.discriminator_from_torch(
        {**dsd, "main.4.weight": np.zeros((1,))}, d_params, 2)


def test_learning_rate_schedules():
  cfg = ml_collections.ConfigDict({"schedule": "linear", "decay_steps": -1,
                                   "lr_update_step": 1000})
  lr = lambda s: float(task_lib.learning_rate(cfg, 1e-4, 200_000, s))
  assert lr(0) == lr(100_000) == pytest.approx(1e-4)
  assert lr(150_000) == pytest.approx(5e-5)
  assert lr(200_000) == 0.0
  cfg.schedule = "official"  # the quirk: 1e-4 -> 9.99e-5 only
  assert lr(100_999) == pytest.approx(1e-4)
  assert lr(101_000) == pytest.approx(1e-4 - 1e-9)
  assert lr(199_999) == pytest.approx(1e-4 - 99 * 1e-9)


def _run(config, mesh_cfg, steps):
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.mesh = mesh_cfg
  setup = tasks.setup(config)
  state = setup.init_state()
  it = iter(setup.task.train_dataset(0))
  metrics = []
  for step in range(steps):
    batch = mesh_lib.shard_batch(next(it), setup.mesh)
    state, m = setup.train_step_at(step)(state, batch, setup.frozen)
    metrics.append(jax.device_get(m))
  return state, metrics


def test_sharded_step_equals_single_device(synthetic_dir):
  # The smoke model itself: its 1-device step program is the one the
  # learning run below compiles (a persistent-cache hit there).
  config = _config(synthetic_dir, **{
      "data.round_robin_group": 1, "sharding.fsdp_min_size_mb": 0.0})
  s1, m1 = _run(config, ONE_DEVICE, 2)
  s8, m8 = _run(config, (("data", 4), ("fsdp", 2), ("model", 1)), 2)
  assert m1[0]["g_step"] == 0 and m1[1]["g_step"] == 1  # both kinds ran
  for a, b in zip(m1, m8):
    for k in a:
      np.testing.assert_allclose(a[k], b[k], rtol=2e-4, atol=1e-5,
                                 err_msg=k)
  # Adam's first steps move each weight by ~lr * sign(grad): where a
  # gradient is ~0 (float noise), the sign can differ between reduction
  # orders. Most weights agree tightly; none differs by more than 2 lr.
  lr = config.optim.g_lr
  for a, b in ((s1.gen, s8.gen), (s1.disc, s8.disc)):
    fa, fb = flat(a), flat(b)
    close = [np.isclose(fa[k], fb[k], rtol=1e-3, atol=1e-6) for k in fa]
    frac = np.mean(np.concatenate([c.ravel() for c in close]))
    assert frac > 0.98, frac
    for k in fa:
      np.testing.assert_allclose(fa[k], fb[k], atol=2 * lr + 1e-6, err_msg=k)
  assert int(s8.step) == 2
