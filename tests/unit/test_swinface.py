"""SwinFace: Swin geometry, heads, task masks, sharding, smoke learning."""

import re
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P
from facejax import mesh as mesh_lib
from facejax.models import swin
from facejax.models import swinface
from helpers import assert_trees_close, setup_on
from swinface_helpers import ONE, _config, _official_state_dict


def test_relative_position_index_hand_computed():
  # 2x2 window, tokens (0,0),(0,1),(1,0),(1,1); index = (dy+1)*3 + (dx+1).
  want = np.array([[4, 3, 1, 0],
                   [5, 4, 2, 1],
                   [7, 6, 4, 3],
                   [8, 7, 5, 4]])
  np.testing.assert_array_equal(swin.relative_position_index(2), want)
  assert swin.relative_position_index(7).shape == (49, 49)
  assert swin.relative_position_index(7).max() == 168  # (2*7-1)^2 - 1


def test_shift_mask_hand_computed():
  # 4x4 map, window 2, shift 1: row/col regions [0, 0, 1, 2].
  mask = swin.shift_attention_mask(4, 4, 2, 1)
  assert mask.shape == (4, 4, 4)
  n = -100.0
  np.testing.assert_array_equal(mask[0], np.zeros((4, 4)))
  # Window 1 (rows 0-1, cols 2-3): columns alternate regions 1, 2.
  np.testing.assert_array_equal(mask[1], [[0, n, 0, n], [n, 0, n, 0],
                                          [0, n, 0, n], [n, 0, n, 0]])
  # Window 3 (rows 2-3, cols 2-3): four regions, only the diagonal.
  np.testing.assert_array_equal(mask[3], np.where(np.eye(4), 0.0, n))
  # Reference geometry: 64 windows of 49 tokens at 56x56, window 7.
  assert swin.shift_attention_mask(56, 56, 7, 3).shape == (64, 49, 49)
  assert swin.stage_geometry(7, 7) == (7, 0)     # S4: no shift
  assert swin.stage_geometry(14, 7) == (7, 3)


def _count(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def test_reference_geometry_shapes_and_params():
  """FM1-FM4, every head and the parameter counts of the reference."""
  cfg = _config("base").model
  model = swinface.create(cfg)
  x = jax.ShapeDtypeStruct((2, 112, 112, 3), jnp.float32)
  v = jax.eval_shape(lambda x: model.init(
      {"params": jax.random.key(0), "dropout": jax.random.key(1)}, x), x)
  out = jax.eval_shape(lambda v, x: model.apply(v, x), v, x)
  fms, _ = jax.eval_shape(
      lambda v, x: swin.SwinBackbone(**model.backbone).apply(v, x),
      {"params": v["params"]["swin"]}, x)
  assert [f.shape for f in fms] == [(2, 7, 7, 192), (2, 7, 7, 384),
                                    (2, 7, 7, 768), (2, 7, 7, 768)]
  assert out["embedding"].shape == (2, 512)
  assert out["Age"].shape == (2,)
  assert out["Expression"].shape == (2, 7)
  heads = [k for k in out if k not in ("embedding", "attention")]
  assert len(heads) == 42 and set(heads) == set(swinface.TASK_NAMES)
  assert all(out[k].shape == (2, 2) for k in swinface.BINARY_TASKS)
  assert out["attention"].shape == (2, 11, 4)
  p = v["params"]
  # The reference: 28,895,226 with the unused 768->512 head (393,728).
  assert _count(p["swin"]) + _count(p["recognition"]) == 28_501_498
  br = p["branches"]
  fam = _count([br[k] for k in br if k.startswith(("conv", "channel",
                                                   "norm"))])
  tss = _count([br[k] for k in br if k.startswith("tss")])
  assert fam == 33_090_464 and tss == 5_778_432   # 33.09 M and 5.78 M


def _fake_outputs(rng, b):
  out = {n: jnp.asarray(rng.normal(size=(b, k)), jnp.float32)
         for n, k in swinface.HEADS}
  out["Age"] = out["Age"][:, 0] + 30.0
  out["embedding"] = jnp.asarray(rng.normal(size=(b, 8)), jnp.float32)
  return out


def test_task_masks_zero_gradient_for_unlabelled_samples():
  from facejax.tasks import swinface as task_lib  # pylint: disable=g-import-not-at-top
  config = _config(**{"model.num_identities": 8, "model.embedding_dim": 8})
  task = task_lib.Task(config)
  rng = np.random.default_rng(0)
  b = 6
  batch = {k: jnp.asarray(v) for k, v in task.dummy_batch(b).items()}
  # Rows 0-1 identity, 2-3 age+gender, 4 CelebA, 5 expression.
  batch["identity"] = jnp.array([1, 2, 0, 0, 0, 0])
  batch["identity_mask"] = jnp.array([1., 1, 0, 0, 0, 0])
  batch["age"] = jnp.array([0., 0, 20, 60, 0, 0])
  batch["age_mask"] = jnp.array([0., 0, 1, 1, 0, 0])
  g = task_lib._ATTR_COL["Gender"]
  attrs_mask = np.zeros((b, task_lib.NUM_ATTRS), np.float32)
  attrs_mask[2:4, g] = 1.0
  attrs_mask[4] = 1.0
  batch["attrs_mask"] = jnp.asarray(attrs_mask)
  batch["attrs"] = jnp.asarray(rng.integers(0, 2, attrs_mask.shape),
                               jnp.float32)
  batch["expression"] = jnp.array([0, 0, 0, 0, 0, 3])
  batch["expression_mask"] = jnp.array([0., 0, 0, 0, 0, 1])
  params = {"id_classifier": {"kernel": jnp.asarray(
      rng.normal(size=(8, 8)), jnp.float32)}}
  out = _fake_outputs(rng, b)
  grads = jax.grad(lambda o: task.losses(o, params, batch, 0.5)["loss"])(out)
  nz = lambda x: np.abs(np.asarray(x)).reshape(b, -1).sum(-1) > 0
  np.testing.assert_array_equal(nz(grads["embedding"]), [1, 1, 0, 0, 0, 0])
  np.testing.assert_array_equal(nz(grads["Age"]), [0, 0, 1, 1, 0, 0])
  np.testing.assert_array_equal(nz(grads["Gender"]), [0, 0, 1, 1, 1, 0])
  np.testing.assert_array_equal(nz(grads["Bald"]), [0, 0, 0, 0, 1, 0])
  np.testing.assert_array_equal(nz(grads["Expression"]), [0, 0, 0, 0, 0, 1])
  # A padded (mask 0) row drops out of every loss.
  batch["mask"] = jnp.array([1., 1, 1, 1, 0, 1])
  grads = jax.grad(lambda o: task.losses(o, params, batch, 0.5)["loss"])(out)
  np.testing.assert_array_equal(nz(grads["Gender"]), [0, 0, 1, 1, 0, 0])


def _random_batch(task, b, seed):
  rng = np.random.default_rng(seed)
  batch = task.dummy_batch(b)
  batch["image"] = rng.normal(size=batch["image"].shape).astype(np.float32)
  batch["identity"] = rng.integers(0, 16, b).astype(np.int32)
  batch["age"] = rng.uniform(0, 80, b).astype(np.float32)
  batch["expression"] = rng.integers(0, 7, b).astype(np.int32)
  batch["attrs"] = rng.integers(0, 2, batch["attrs"].shape).astype(
      np.float32)
  for k in ("identity_mask", "age_mask", "expression_mask"):
    batch[k] = rng.integers(0, 2, b).astype(np.float32)
  batch["attrs_mask"] = rng.integers(0, 2, batch["attrs"].shape).astype(
      np.float32)
  return batch


def test_sharded_data_x_model_equals_single_device(fast_compiles):
  # Partial FC on: the sampled centres are gathered from the split kernel.
  config = _config(**{"model.num_identities": 16, "data.batch_size": 8,
                      "model.swin.depths": (2, 1, 1, 1),
                      "model.dropout": 0.0, "model.sample_rate": 0.5})
  results, init = [], None
  for mesh in (ONE, (("data", 4), ("fsdp", 1), ("model", 2))):
    # The init program compiles once: the second mesh's run starts from the
    # first one's values, placed on its shardings.
    setup, state, init = setup_on(config, mesh, init)
    losses = []
    for step in range(2):
      batch = mesh_lib.shard_batch(_random_batch(setup.task, 8, step),
                                   setup.mesh)
      state, metrics = setup.train_step(state, batch, setup.frozen)
      losses.append(float(metrics["loss"]))
    results.append((setup, state, losses))
  (_, s1, l1), (setup8, s8, l8) = results
  print("losses 1 device", l1, "4x2 data x model", l8)
  np.testing.assert_allclose(l1, l8, rtol=1e-5)
  # AdamW's normalised update turns reassociation noise in near-zero
  # gradients (BN biases) into steps of up to lr (~3e-4 here) either way.
  assert_trees_close(s1.params, s8.params, rtol=1e-3, atol=6e-4)
  kernel = s8.params["id_classifier"]["kernel"]
  assert kernel.sharding.spec == P(None, "model")
  # Each device holds half of the 16 class centres.
  assert {s.data.shape for s in kernel.addressable_shards} == {(32, 8)}


def test_importer_documented_names_and_shapes(fast_compiles):
  from facejax.convert import swinface as swinface_convert  # pylint: disable=g-import-not-at-top
  assert swinface.split_channels([192, 384, 768, 768], 512) == [47, 93, 186,
                                                                186]
  cfg = _config(**{"model.fam_dim": 64, "model.tss_dim": 32}).model
  model = swinface.create(cfg)
  split = swinface.split_channels([32, 64, 128, 128], 64)
  sd = _official_state_dict(16, (2, 2, 1, 1), (1, 2, 2, 4), 4, 16, split,
                            64, 32, 32, np.random.default_rng(0))
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 32, 32, 3)),
                  jnp.float32)
  v = jax.eval_shape(lambda: model.init(
      {"params": jax.random.key(0), "dropout": jax.random.key(0)}, x))
  v = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), v)
  new = swinface_convert.convert(sd, v)
  p, bs = new["params"], new["batch_stats"]
  np.testing.assert_array_equal(
      p["swin"]["layers_1_blocks_1"]["attn"]["qkv"]["kernel"],
      sd["state_dict_backbone.layers.1.blocks.1.attn.qkv.weight"].T)
  np.testing.assert_array_equal(
      p["swin"]["patch_embed_proj"]["kernel"][1, 0, 2, 5],
      sd["state_dict_backbone.patch_embed.proj.weight"][5, 2, 1, 0])
  np.testing.assert_array_equal(
      p["branches"]["conv_2"]["kernel"][7],
      sd["state_dict_fam.nets.7.conv.convs.2.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(
      bs["branches"]["norm"]["var"][4],
      sd["state_dict_fam.nets.4.norm.running_var"])
  np.testing.assert_array_equal(
      bs["recognition"]["feature_3"]["mean"],
      sd["state_dict_backbone.feature.3.running_mean"])
  # Output heads: Expression (idx 3) is branch 2's columns 0..6, Age
  # (idx 1) branch 1's column 0, Young (idx 2) its columns 1..2.
  om = p["branches"]["om"]
  np.testing.assert_array_equal(om["kernel"][2, :, 0:7],
                                sd["state_dict_om.output_fcs.3.weight"].T)
  np.testing.assert_array_equal(om["bias"][1, 0:1],
                                sd["state_dict_om.output_fcs.1.bias"])
  np.testing.assert_array_equal(om["kernel"][1, :, 1:3],
                                sd["state_dict_om.output_fcs.2.weight"].T)
  out = jax.jit(model.apply)(new, x)  # one compile, not one per op
  assert np.isfinite(np.asarray(out["Expression"])).all()
  bad = dict(sd)
  bad["state_dict_tss.nets.0.feature.0.weight"] = np.zeros((5, 5))
  with pytest.raises(ValueError, match="shape mismatches"):
    swinface_convert.convert(bad, v)


def test_backbone_matches_timm_swin():
  """Random timm Swin weights through the importer: same features."""
  torch = pytest.importorskip("torch")
  from launch import torchvision_stub  # pylint: disable=g-import-not-at-top
  torchvision_stub.install()
  swin_timm = pytest.importorskip("timm.models.swin_transformer")
  from facejax.convert import swinface as swinface_convert  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  ref = swin_timm.SwinTransformer(
      img_size=32, patch_size=2, embed_dim=16, depths=(2, 2, 2, 2),
      num_heads=(1, 2, 2, 4), window_size=4, num_classes=0).eval()
  with torch.no_grad():  # random (non-zero) relative position biases
    for name, t in ref.named_parameters():
      if "relative_position_bias_table" in name:
        t.normal_(0, 1.0)
  sd = {}
  for k, t in ref.state_dict().items():
    m = re.match(r"layers\.(\d+)\.downsample\.(.*)", k)
    if m:  # timm merges at the start of the next stage
      k = f"layers.{int(m[1]) - 1}.downsample.{m[2]}"
    sd[k] = t.numpy()
  rng = np.random.default_rng(0)
  for i, n in (("0", (128, 128)), ("1", (128,)), ("2", (32, 128)),
               ("3", (32,))):
    sd[f"feature.{i}.weight"] = rng.normal(size=n).astype(np.float32)
  for i, n in (("1", 128), ("3", 32)):
    sd[f"feature.{i}.bias"] = np.zeros(n, np.float32)
    sd[f"feature.{i}.running_mean"] = np.zeros(n, np.float32)
    sd[f"feature.{i}.running_var"] = np.ones(n, np.float32)
  cfg = _config(**{"model.swin.depths": (2, 2, 2, 2)}).model
  model = swinface.create(cfg)
  x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype(
      np.float32)
  v = jax.eval_shape(lambda: model.init(
      {"params": jax.random.key(0), "dropout": jax.random.key(0)}, x))
  v = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), v)
  new = swinface_convert.convert(sd, v)
  backbone = swin.SwinBackbone(**model.backbone)
  fms, tokens = backbone.apply({"params": new["params"]["swin"]}, x)
  with torch.no_grad():
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)
    feats = ref.layers(ref.patch_embed(xt))          # NHWC, before norm
    pooled = ref.norm(feats).mean((1, 2))
  diff4 = np.abs(np.asarray(fms[3]) - feats.numpy()).max()
  diff_t = np.abs(np.asarray(tokens) - pooled.numpy()).max()
  print(f"timm parity: FM4 max abs diff {diff4:.2e}, pooled {diff_t:.2e}")
  assert diff4 < 1e-4 and diff_t < 1e-4


def test_partial_fc_keeps_batch_classes_and_trains_only_sampled_centres():
  labels = jnp.array([3, 17, 3, 40])
  mask = jnp.array([1.0, 1.0, 1.0, 0.0])       # the last has no identity
  index, local = swinface.partial_fc_sample(jax.random.key(0), labels, mask,
                                            64, 0.25)
  index = np.asarray(index)
  assert index.shape == (16,) and len(set(index.tolist())) == 16
  assert {3, 17} <= set(index.tolist())
  np.testing.assert_array_equal(index[np.asarray(local)[:3]], [3, 17, 3])

  clf = swinface.CosFaceClassifier(64)
  emb = jax.random.normal(jax.random.key(1), (4, 8))
  params = clf.init(jax.random.key(2), emb)

  def loss(p, idx, lab):
    rec = swinface.cosface_loss(clf.apply(p, emb, idx), lab, 0.2, 16.0)
    return jnp.sum(rec * mask) / mask.sum()

  g = np.asarray(jax.grad(loss)(params, jnp.asarray(index), local)[
      "params"]["kernel"])
  unsampled = np.setdiff1d(np.arange(64), index)
  assert np.all(g[:, unsampled] == 0)          # untouched this step
  assert np.abs(g[:, [3, 17]]).min(axis=0).max() > 0
  # Rate 1 keeps every centre (in another order): the full softmax loss.
  full_index, full_local = swinface.partial_fc_sample(
      jax.random.key(0), labels, mask, 64, 1.0)
  np.testing.assert_allclose(loss(params, full_index, full_local),
                             loss(params, None, labels), rtol=1e-5)
