"""Photo <-> caricature translation: building blocks, data, sharding and a
short learning run (facejax.tasks.caricature, facejax.tasks.sphereface)."""

import logging
import os
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from facejax import config_lib
from facejax.evaluators import caricature as caricature_eval
from facejax.evaluators import fid as fid_lib
from facejax.evaluators import verification
from facejax import mesh as mesh_lib
from facejax.data import caricature as data_lib
from facejax.data.synthetic import caricature as synthetic_cari
from facejax.data.sources import DataError
from facejax.models import caricature as model_lib
from facejax.models import spectral_norm
from facejax.models import sphereface as sphere_lib
from facejax.convert import sphereface as sphereface_convert
from facejax.tasks import caricature as task_lib
from helpers import setup_on
from helpers import ROOT, assert_trees_close, fast_compiles, flat
from caricature_helpers import ONE


def test_spectral_norm_power_iteration_converges_to_top_singular_value():
  conv = spectral_norm.Conv(6, 3, spectral=True)
  x = jnp.zeros((1, 5, 5, 4))
  v = conv.init(jax.random.key(0), x)
  kernel = np.asarray(v["params"]["kernel"])  # [3, 3, 4, 6]
  want = np.linalg.svd(kernel.reshape(-1, 6).T, compute_uv=False)[0]
  stats = v[spectral_norm.SPECTRAL]
  sigmas = []
  for _ in range(40):  # one power iteration per training forward
    _, new = conv.apply({"params": v["params"], "spectral": stats}, x,
                        update_stats=True, mutable=["spectral"])
    stats = new["spectral"]
    u, vv = stats["u"], stats["v"]
    w = kernel.reshape(-1, 6).T
    sigmas.append(float(u @ w @ vv))
  print(f"sigma after 1/5/40 iterations {sigmas[0]:.4f} {sigmas[4]:.4f} "
        f"{sigmas[-1]:.5f}; SVD {want:.5f}")
  np.testing.assert_allclose(sigmas[-1], want, rtol=1e-4)
  # The stored u, v give W / sigma a top singular value of 1.
  w_sn = w / sigmas[-1]
  np.testing.assert_allclose(np.linalg.svd(w_sn, compute_uv=False)[0], 1.0,
                             rtol=1e-4)


def test_self_attention_shape_and_identity_at_init():
  x = jax.random.normal(jax.random.key(1), (2, 4, 4, 16))
  block = model_lib.SelfAttention(spectral=True, gamma_init=0.0)
  v = block.init(jax.random.key(0), x)
  assert float(v["params"]["gamma"]) == 0.0
  assert v["params"]["query"]["kernel"].shape == (1, 1, 16, 2)  # C/8
  assert v["params"]["value"]["kernel"].shape == (1, 1, 16, 16)  # C
  y = block.apply(v, x)
  assert y.shape == x.shape
  np.testing.assert_array_equal(np.asarray(y), np.asarray(x))
  params = dict(v["params"], gamma=jnp.float32(0.5))
  y2 = block.apply({**v, "params": params}, x)
  assert float(jnp.abs(y2 - x).max()) > 1e-3
  satnet = model_lib.SelfAttention(gamma_init=1e-8).init(jax.random.key(0), x)
  assert float(satnet["params"]["gamma"]) == pytest.approx(1e-8)


def test_hinge_losses_hand_cases():
  real = [jnp.array([2.0, 0.5]), jnp.array([[1.0]])]
  fake = [jnp.array([-2.0, 0.0]), jnp.array([[-0.5]])]
  # scale 0: mean(relu(1 - [2, .5])) = .25, mean(relu(1 + [-2, 0])) = .5
  # scale 1: relu(1 - 1) = 0, relu(1 - .5) = .5
  assert float(task_lib.hinge_d(real, fake)) == pytest.approx(1.25)
  # G: -mean(fake) per scale: 1.0 + 0.5
  assert float(task_lib.hinge_g(fake)) == pytest.approx(1.5)
  # A confident D (margins past 1) has zero loss.
  assert float(task_lib.hinge_d([jnp.array([3.0])],
                                [jnp.array([-4.0])])) == 0.0


def test_identity_loss_zero_when_embeddings_match():
  e = jax.random.normal(jax.random.key(0), (4, 16))
  np.testing.assert_allclose(task_lib.identity_loss(e, 3.0 * e, 0.2875),
                             0.0, atol=1e-6)
  ortho = jnp.array([[1.0, 0.0]]), jnp.array([[0.0, 2.0]])
  assert float(task_lib.identity_loss(*ortho, 0.2875)[0]) == pytest.approx(
      0.2875)
  assert float(task_lib.identity_loss(ortho[0], -ortho[0], 0.2875)[0]
               ) == pytest.approx(1.2875)


def test_a_softmax_phi_hand_cases():
  # theta = pi/3: k = floor(4/3) = 1, cos(4 theta) = -0.5 -> phi = 0.5 - 2;
  # theta = pi/8: k = 0, cos(pi/2) = 0; theta = pi: k = 3 (or 4), phi -7.
  cos = jnp.array([0.5, 1.0, -1.0, np.cos(np.pi / 8)])
  phi = np.asarray(sphere_lib.phi_theta(cos))
  np.testing.assert_allclose(phi, [-1.5, 1.0, -7.0, 0.0], atol=1e-5)
  # phi is monotonically decreasing in theta (the margin's purpose).
  grid = np.asarray(sphere_lib.phi_theta(jnp.cos(jnp.linspace(0, np.pi,
                                                               200))))
  assert np.all(np.diff(grid) <= 1e-5)
  # The target logit is cos - cos/(1+l) + phi/(1+l): with lambda -> inf
  # the loss is the plain softmax CE of the cos logits.
  x = jax.random.normal(jax.random.key(0), (3, 8))
  w = jax.random.normal(jax.random.key(1), (8, 5))
  cos_x, phi_x = sphere_lib.angle_logits(x, w)
  labels = jnp.array([0, 3, 4])
  ce = -jnp.take_along_axis(jax.nn.log_softmax(cos_x), labels[:, None],
                            1)[:, 0]
  np.testing.assert_allclose(
      sphere_lib.angle_loss(cos_x, phi_x, labels, 1e9), ce, rtol=1e-5)
  # lambda = 0: the target logit is phi * |x| (the full margin), larger loss.
  assert np.all(np.asarray(sphere_lib.angle_loss(cos_x, phi_x, labels, 0.0))
                >= np.asarray(ce) - 1e-6)
  assert float(sphere_lib.lambda_at(0.0)) == 1500.0
  assert float(sphere_lib.lambda_at(1e6)) == 5.0


def test_sphereface_importer_maps_documented_names_and_shapes(tmp_path,
                                                              caplog):
  model = sphere_lib.create("tiny", num_classes=7)
  size = (32, 24)
  params = jax.device_get(model.init(jax.random.key(0), jnp.zeros(
      (1,) + size + (3,)))["params"])
  rng = np.random.default_rng(0)
  sd = {}
  widths, units, dim = sphere_lib.VARIANTS["tiny"]
  cin = 3
  for s, (w, n) in enumerate(zip(widths, units), 1):
    for i in range(1, 2 + 2 * n):
      sd[f"conv{s}_{i}.weight"] = rng.normal(size=(w, cin if i == 1 else w,
                                                   3, 3)).astype(np.float32)
      sd[f"conv{s}_{i}.bias"] = rng.normal(size=(w,)).astype(np.float32)
      sd[f"relu{s}_{i}.weight"] = rng.normal(size=(w,)).astype(np.float32)
    cin = w
  h, w_ = sphereface_convert.last_map(size)
  assert (h, w_) == (2, 2)
  sd["fc5.weight"] = rng.normal(size=(dim, widths[-1] * h * w_)).astype(
      np.float32)
  sd["fc5.bias"] = rng.normal(size=(dim,)).astype(np.float32)
  sd["fc6.weight"] = rng.normal(size=(dim, 7)).astype(np.float32)  # (in,out)
  new, skipped = sphereface_convert.convert(sd, params, size)
  assert skipped == []
  t = new["trunk"]
  np.testing.assert_array_equal(t["conv2_3"]["kernel"],
                                sd["conv2_3.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(t["relu3_1"]["alpha"], sd["relu3_1.weight"])
  # fc6 is stored (in, out) already: copied without a transpose.
  np.testing.assert_array_equal(new["fc6"]["kernel"], sd["fc6.weight"])
  # fc5: torch column c*H*W + y*W + x == facejax row (y*W + x)*C + c.
  c_last = widths[-1]
  for (c, y, x, o) in ((0, 0, 0, 0), (5, 1, 0, 3), (c_last - 1, 1, 1, 9)):
    assert (t["fc5"]["kernel"][(y * w_ + x) * c_last + c, o]
            == sd["fc5.weight"][o, c * h * w_ + y * w_ + x])
  # The imported network runs; a wrong shape names the key.
  f = model.apply({"params": new}, jnp.zeros((1,) + size + (3,)),
                  method=model.features)
  assert f.shape == (1, dim) and np.all(np.isfinite(f))
  bad = dict(sd, **{"conv1_1.weight": np.zeros((4, 3, 3, 3), np.float32)})
  with pytest.raises(ValueError, match="conv1_1.weight"):
    sphereface_convert.convert(bad, params, size)
  # Entries that are no SphereFace weights are said, not silently dropped.
  import safetensors.numpy  # pylint: disable=g-import-not-at-top
  path = os.path.join(tmp_path, "sphere.safetensors")
  safetensors.numpy.save_file({**sd, "optimizer.step": np.zeros(1)}, path)
  with caplog.at_level(logging.WARNING):
    sphereface_convert.load(path, params, size)
  assert "1 entries not used" in caplog.text
  assert "optimizer.step" in caplog.text


def test_verification_and_fid_metrics():
  pos, neg = np.array([0.9, 0.8, 0.3]), np.linspace(-0.5, 0.5, 1000)
  # Threshold at FAR 1%: at most 10 of 1000 negatives accepted, the 991st
  # of the sorted negatives (~0.49).
  assert verification.tar_at_far(*verification.from_pos_neg(pos, neg),
                                 0.01) == pytest.approx(2 / 3)
  assert verification.roc_auc(*verification.from_pos_neg(
      np.array([1.0, 2.0]), np.array([0.0, 1.5]))) == pytest.approx(0.75)
  emb = np.eye(3)
  out = caricature_eval.verification(emb, np.array([0, 1, 2]), emb + 0.01,
                                     np.array([0, 1, 2]))
  assert out["auc"] == 1.0 and out["tar@far1%"] == 1.0
  rng = np.random.default_rng(0)
  a = rng.normal(size=(400, 4))
  assert fid_lib.fid(a, a) == pytest.approx(0.0, abs=1e-6)
  # Means 2 apart in every one of 4 dims: FID ~ 4 * 2^2 = 16.
  assert fid_lib.fid(a, a + 2.0) == pytest.approx(16.0, rel=1e-6)
  feats = fid_lib.random_features_fn()(jnp.zeros((2, 32, 32, 3)))
  assert feats.shape == (2, 2 * sum(fid_lib.RandomFeatures.widths))


def _data_cfg(root, **kw):
  cfg = {"root": root, "layout": "webcaricature",
         "image_dir": "OriginalImages", "landmark_dir": "FacialPoints",
         "train_list": "train_subjects.txt", "test_list":
         "test_subjects.txt", "valid_list": "valid_subjects.txt",
         "test_fraction": 0.25, "valid_fraction": 0.15,
         "split_by": "subjects", "test_per_identity": 1}
  cfg.update(kw)
  return ml_collections.ConfigDict(cfg)


def test_synthetic_two_domain_data_alignment_and_errors(tmp_path):
  root = str(tmp_path / "cari")
  synthetic_cari.write_caricature(root, num_identities=6, photos=2,
                                  caricatures=2, size=48)
  photo, cari = data_lib.open_domains(_data_cfg(root), "train")
  v_photo, v_cari = data_lib.open_domains(_data_cfg(root), "valid")
  t_photo, t_cari = data_lib.open_domains(_data_cfg(root), "test")
  # Disjoint train / valid / test subjects (6 = 3 + 1 + 2); both domains
  # share identity labels.
  ids = [set(s.identities.tolist()) for s in (photo, v_photo, t_photo)]
  assert [len(i) for i in ids] == [3, 1, 2]
  assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
  assert set(photo.identities) == set(cari.identities)
  assert set(v_photo.identities) == set(v_cari.identities)
  assert len(photo) == len(cari) == 2 * 3 and len(t_cari) == 2 * 2
  # Without list files the split is by name hash, still disjoint, and the
  # valid subjects come out of training.
  no_lists = _data_cfg(root, train_list="", valid_list="", test_list="",
                       test_fraction=0.3, valid_fraction=0.3)
  hashed = [set(data_lib.open_domains(no_lists, split)[0].identities.tolist())
            for split in ("train", "valid", "test")]
  assert all(hashed) and sum(len(h) for h in hashed) == 6
  assert not (hashed[0] & hashed[1] or hashed[0] & hashed[2]
              or hashed[1] & hashed[2])
  overlap = tmp_path / "overlap.txt"
  overlap.write_text("S0005 2 2\n")  # a test subject
  with pytest.raises(DataError, match="both the valid and the test split"):
    data_lib.open_domains(_data_cfg(root, valid_list=str(overlap)), "valid")
  # Caricatures look different (the stylised domain) from the photos.
  pre = data_lib.DomainFacePreprocess(32)
  p = np.stack([pre((i, photo[i]))["image"] for i in range(len(photo))])
  c = np.stack([pre((i, cari[i]))["image"] for i in range(len(cari))])
  assert p.shape == (6, 32, 32, 3) and p.min() >= -1 and p.max() <= 1
  assert abs(float(p.std() - c.std())) + float(
      np.abs(p.mean((0, 1, 2)) - c.mean((0, 1, 2))).sum()) > 0.05
  # Landmarks: the similarity takes the 5 points onto the template.
  pts = cari[0]["points"]
  m = data_lib.similarity(pts, data_lib.template(112))
  mapped = pts @ m[:, :2].T + m[:, 2]
  assert np.abs(mapped - data_lib.template(112)).max() < 0.06 * 112
  # A known similarity is recovered exactly.
  src = np.random.default_rng(0).uniform(0, 50, (5, 2))
  rot = np.array([[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]])
  dst = 1.7 * src @ rot.T + np.array([3.0, -4.0])
  np.testing.assert_allclose(data_lib.similarity(src, dst)[:, :2], 1.7 * rot,
                             atol=1e-9)
  # Paired training records and batches.
  pair = data_lib.DomainPairSource(photo, cari)
  ex = data_lib.DomainPairPreprocess(pre)((0, pair[0]))
  assert ex["photo"].shape == ex["cari"].shape == (32, 32, 3)
  # Errors name the file and line.
  lm = os.path.join(root, "FacialPoints", "S0001", "C00001.txt")
  with open(lm, "w") as f:
    f.write("1 2\n3 x\n")
  with pytest.raises(DataError, match=r"C00001.txt:2"):
    data_lib.open_domains(_data_cfg(root), "train")
  bad_list = tmp_path / "list.txt"
  bad_list.write_text("\nsketch b.jpg S2\n")
  with pytest.raises(DataError, match=r"list.txt:2: expected"):
    data_lib.open_domains(_data_cfg(
        root, layout="folders", photo_dir="p", cari_dir="c",
        list_file=str(bad_list)), "train")
  with pytest.raises(DataError, match="subject list not found"):
    data_lib.open_domains(_data_cfg(root, landmark_dir="",
                                    test_list="nope.txt"), "test")


def _tiny_config(data_dir: str, **overrides):
  """The smoke config shrunk further (tests compile it twice)."""
  base = {"data.synthetic_dir": data_dir, "identity.source": "random",
          "data.synthetic_identities": 12, "data.synthetic_size": 32,
          "data.image_size": 16, "model.dim": 4, "model.mlp_dim": 16,
          "model.d_dim": 4, "model.d_layers": 2, "data.batch_size": 8,
          "identity.input_size": (16, 16), "data.num_workers": 0}
  base.update(overrides)
  return config_lib.load_config(
      os.path.join(ROOT, "configs", "caricature.py:smoke"), base)


def _steps(config, mesh, init=None, n=2):
  """(initial state on the host, state after n steps, their metrics)."""
  setup, state, init = setup_on(config, mesh, init)
  it = iter(setup.task.train_dataset(0))
  out = []
  for _ in range(n):
    batch = mesh_lib.shard_batch(next(it), setup.mesh)
    state, metrics = setup.train_step(state, batch, setup.frozen)
    out.append({k: float(v) for k, v in jax.device_get(metrics).items()})
  return init, state, out


def test_sharded_step_equals_single_device(tmp_path):
  # The identity hinge relu(thd - cos) above any cosine, so every pair is
  # on its linear side. At a threshold some pair's cosine sits near (the
  # reference's 0.2875, against cosines of 0.22 +- a few hundredths here),
  # the two meshes' rounding puts that pair on either side of the kink in
  # step 2: its gradient is there on one mesh and absent on the other, and
  # 8 kernel entries of G ended up to 1.3e-3 apart on a 2-core Intel Xeon
  # with AMX (the smoke recipe's 0.6 had left 3 entries 2.2e-4 apart on a
  # 2-core AMD EPYC; cause not measured). At 1.5: none beyond this test's
  # tolerance.
  config = _tiny_config(str(tmp_path / "data"), **{"loss.identity_thd":
                                                   1.5})
  # Two compiles of the whole G + D step: XLA's fast-compile mode halves
  # them (the numbers are the same up to float rounding). One of the init
  # program: the 8-device run starts from the same values, placed.
  with fast_compiles():
    init, s1, m1 = _steps(config, ONE)
    _, s8, m8 = _steps(config, (("data", 8), ("fsdp", 1), ("model", 1)),
                       init)
  for a, b in zip(m1, m8):  # step 2's losses see step 1's updates
    for k in ("d_loss", "g_loss", "g_id", "g_recon_x", "g_adv"):
      # atol: g_adv = -mean D(fake) is near 0 (|value| ~ 4e-3).
      np.testing.assert_allclose(a[k], b[k], rtol=2e-4, atol=1e-5,
                                 err_msg=k)
  assert m1[0]["g_id"] > 0.0  # the identity loss is active
  assert_trees_close(s1.gen_stats, s8.gen_stats, rtol=1e-3, atol=1e-5)
  # Weights after 2 Adam steps (b1 = 0: the first update is lr * sign(g),
  # so a parameter whose gradient is at rounding level, e.g. a bias that
  # feeds an instance norm, moves by up to +-lr on either mesh). Biases are
  # left out (at 1.5 one of D's had a rounding-level step-1 gradient, all
  # of Adam's second moment after step 2 being step 2's, and moved 3.8e-4
  # apart on the Intel Xeon); elsewhere the tolerance is a quarter of G's
  # lr step (5e-4) and an eighth of D's (2e-3), far below a diverging
  # update.
  for net, atol, at_least in (("gen", 1.25e-4, 20), ("disc", 2.5e-4, 10)):
    w1, w8 = flat(getattr(s1, net)), flat(getattr(s8, net))
    keys = [k for k in w1 if not k.endswith("['bias']")]
    assert len(keys) > at_least, net
    for k in keys:
      np.testing.assert_allclose(w1[k], w8[k], rtol=1e-3, atol=atol,
                                 err_msg=f"{net} {k}")


def _swinface_workdir(path: str, checkpoint: bool = True):
  """A configs/swinface.py:smoke workdir at no training cost: its state
  with random values (batch statistics included) saved as checkpoint 1.

  Returns:
    (workdir, the saved state, its config).
  """
  # pylint: disable=g-import-not-at-top
  from facejax import checkpoint as ckpt_lib
  from facejax import tasks
  from facejax.models import swinface
  # pylint: enable=g-import-not-at-top
  cfg = config_lib.load_config(
      os.path.join(ROOT, "configs", "swinface.py:smoke,stage=1"),
      {"model.num_identities": 8, "mesh": ONE})
  task = tasks.get("swinface")(cfg)
  abstract = jax.eval_shape(task.init_state, jax.random.key(cfg.seed))
  rng = np.random.default_rng(0)

  # Random values instead of a jitted init (no compile): any variables
  # serve to check that the loader and the embedding use them all.
  def fill(path, a):
    if not jnp.issubdtype(a.dtype, jnp.floating):
      return np.zeros(a.shape, a.dtype)
    if jax.tree_util.keystr(path).endswith("['var']"):  # BN variances > 0
      return rng.uniform(0.5, 1.5, a.shape).astype(a.dtype)
    return rng.normal(0.0, 0.1, a.shape).astype(a.dtype)
  state = jax.tree_util.tree_map_with_path(fill, abstract)
  # Initialised embedding weights (random ones make every embedding point
  # the same way), the batch statistics above.
  net = swinface.create_recognition(cfg.model)
  size = cfg.data.image_size
  emb = jax.jit(net.init)(jax.random.key(1), jnp.zeros((1, size, size, 3)))
  model = dict(state.params["model"], **jax.device_get(emb["params"]))
  state = state.replace(params=dict(state.params, model=model))
  os.makedirs(path)
  with open(os.path.join(path, "config.json"), "w") as f:
    f.write(cfg.to_json_best_effort())
  if checkpoint:
    ckpt_lib.check_workdir_model(path, task.meta())
    checkpointer = ckpt_lib.Checkpointer(path, async_save=False)
    checkpointer.save(1, state, None)
    checkpointer.close()
  return path, state, cfg


def test_swinface_identity_network(tmp_path, fast_compiles):
  from facejax.models import swinface  # pylint: disable=g-import-not-at-top
  workdir, sf_state, sf_cfg = _swinface_workdir(str(tmp_path / "swin"))
  # 16 px translator images, a 32 px SwinFace: the task resizes.
  config = _tiny_config(str(tmp_path / "data"), **{
      "identity.source": "swinface", "identity.workdir": workdir})
  task = task_lib.Task(config)
  frozen = task.load_frozen()
  assert task.swin_input_size == 32
  images = jax.random.uniform(jax.random.key(3), (4, 16, 16, 3),
                              minval=-1.0, maxval=1.0)
  got = jax.jit(task.embed)(frozen, images)
  # SwinFace's recognition network with the saved variables, by hand.
  net = swinface.create_recognition(sf_cfg.model)
  model, stats = sf_state.params["model"], sf_state.batch_stats
  variables = {"params": {k: model[k] for k in ("swin", "recognition")},
               "batch_stats": {k: stats[k] for k in ("swin", "recognition")
                               if k in stats}}
  assert "recognition" in variables["batch_stats"]
  big = jax.image.resize(images, (4, 32, 32, 3), "linear")
  want = jax.jit(lambda v, x: net.apply(v, x, train=False))(variables, big)
  print(f"SwinFace identity embedding: max |diff| "
        f"{float(jnp.abs(got - want).max()):.2e}, scale "
        f"{float(jnp.abs(want).max()):.3f}")
  assert got.shape == (4, 32)
  # Distinct images get distinct embedding directions.
  unit = want / jnp.linalg.norm(want, axis=1, keepdims=True)
  assert float((unit @ unit.T)[np.triu_indices(4, 1)].max()) < 0.99
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # Errors name the config key.
  bad = lambda wd: task_lib.Task(_tiny_config(
      str(tmp_path / "data"), **{"identity.source": "swinface",
                                 "identity.workdir": wd})).load_frozen()
  with pytest.raises(ValueError, match="identity.workdir=.*no such dir"):
    bad(str(tmp_path / "missing"))
  with pytest.raises(ValueError, match="identity.workdir is empty"):
    bad("")
  other = tmp_path / "other"
  other.mkdir()
  (other / "config.json").write_text('{"task": "sphereface"}')
  with pytest.raises(ValueError, match="identity.workdir.*'sphereface' run"
                                       ".*expected swinface"):
    bad(str(other))
  empty, _, _ = _swinface_workdir(str(tmp_path / "no_ckpt"),
                                  checkpoint=False)
  with pytest.raises(ValueError, match="identity.workdir: no checkpoint"):
    bad(empty)
