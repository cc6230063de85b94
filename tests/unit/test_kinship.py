"""Kinship verification: data, sampler, losses, GRL, metrics, sharding,
learning (facejax.data.kinship, facejax.models.kinship, facejax.tasks.kinship)."""

import collections
import os
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from facejax.tasks import kinship as L
from facejax import mesh as mesh_lib
from facejax.evaluators import verification
from facejax.data import kinship as kd
from facejax.data.sources import DataError
from facejax.models import kinship as km
from facejax.tasks import kinship as kt
from facejax import tasks
from helpers import setup_on
from helpers import assert_trees_close
from kinship_helpers import ONE, _config


def test_readers_and_errors(fiw, tmp_path):
  src = kd.load_split(fiw, "train.txt")
  assert len(src) > 100 and set(np.unique(src.labels)) == {0, 1}
  rec = src[0]
  assert os.path.exists(rec["image_a_path"]) and rec["group_a"] >= 0
  assert kd.family_and_member("x/F0012/MID3/P1.jpg") == (12, 3)
  assert len(kd.read_triplets(os.path.join(fiw, "txt",
                                           "train_triplets.txt"))) > 50
  bad = tmp_path / "bad.txt"
  for line, msg in (("0 a.jpg b.jpg fd", "expected 5"),
                    ("0 a.jpg b.jpg uncle 1", "unknown relation"),
                    ("0 a.jpg b.jpg fd yes", "is_kin")):
    bad.write_text("0 F1/MID1/a.jpg F1/MID2/b.jpg fd 1\n" + line + "\n")
    with pytest.raises(DataError, match=f"bad.txt:2: .*{msg}"):
      kd.read_pairs(str(bad))
  bad.write_text("0 F0001/MID1/nope.jpg F0001/MID2/nope.jpg fd 1\n")
  with pytest.raises(DataError, match="bad.txt:1: image"):
    kd.KinPairSource(kd.read_pairs(str(bad)), fiw)


def test_sampler_distinct_families_and_all_relations(fiw):
  pos = kd.load_split(fiw, "train.txt").positives()
  batch = 16
  order = kd.KinshipOrder(pos.families, pos.relations, seed=3,
                          global_batch=batch)
  seen = collections.Counter()
  for step in range(order.per_epoch):
    idx = order.global_batch(step)
    fams = pos.families[idx]
    assert len(idx) == batch and len(set(fams.tolist())) == batch, step
    seen.update(pos.relations[idx].tolist())
  assert set(seen) == set(np.unique(pos.relations)), seen
  assert len(set(seen)) == 11  # every FIW relation type occurs
  assert order.global_batch(5) == kd.KinshipOrder(
      pos.families, pos.relations, 3, batch).global_batch(5)
  with pytest.raises(ValueError, match="data.batch_size"):
    kd.KinshipOrder(pos.families, pos.relations, 0, 64)
  # Two processes: each reads its half of the same global batch.
  pre = kd.KinPairPreprocess(kt.transforms.Preprocess(16, "unit",
                                                   label_keys=()))
  ds = iter(kd.kinship_train_dataset(pos, pre, batch, seed=3))
  first = next(ds)
  np.testing.assert_array_equal(first["family"],
                                pos.families[order.global_batch(0)])
  half = kd._LoadKinshipBatch(pos, order, pre, kd.pipeline.ProcessSlice(
      batch, 1, 2))(0)
  np.testing.assert_array_equal(half["family"], first["family"][8:])
  np.testing.assert_allclose(half["image_a"], first["image_a"][8:])


def test_contrastive_hand_case():
  e = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  # x = [e1, e2, e1, e2]: each anchor's partner has cos 1, the two others
  # cos 0 -> loss = log(1 + 2 exp(-1 / tau)) for every anchor.
  tau = 0.5
  got = L.contrastive(e, 3.0 * e, tau)
  np.testing.assert_allclose(got, np.log(1 + 2 * np.exp(-1 / tau)),
                             rtol=1e-6)
  # Margins lower the positive logit by m / tau.
  got = L.contrastive(e, e, tau, margins=jnp.array([0.1, 0.1]))
  want = -np.log(np.exp(0.9 / tau) / (np.exp(0.9 / tau) + 2))
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_hcl_hand_case_excludes_both_directions():
  e_a = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  e_b = jnp.array([[0.6, 0.8], [-1.0, 0.0]])
  kin = jnp.array([1.0, 0.0])  # pair 0 kin, pair 1 not: anchors a1, b1
  # cos: a1.b1=.6 a1.a2=0 a1.b2=-1 b1.a2=.8 b1.b2=-.6
  e = np.exp
  l_a1 = -np.log(e(.6) / (e(.6) + e(0.0) + e(-1.0)))     # negs a2, b2
  l_b1 = -np.log(e(.6) / (e(.6) + e(.8) + e(-.6)))       # negs a2, b2
  got = L.hcl(e_a, e_b, kin, tau=1.0)
  np.testing.assert_allclose(got, (l_a1 + l_b1) / 2, rtol=1e-6)
  # Had b1's negatives included a1 (the reverse direction), the loss
  # would be larger:
  wrong = (l_a1 - np.log(e(.6) / (2 * e(.6) + e(.8) + e(-.6)))) / 2
  assert abs(float(got) - wrong) > 0.05
  # Hard mining (alpha_neg 0.5): a1 keeps a2 (0 >= -0.5), b1 keeps a2.
  hard = L.hcl(e_a, e_b, kin, tau=1.0, alpha_neg=0.5, hard=True)
  want = (-np.log(e(.6) / (e(.6) + e(0.0))) -
          np.log(e(.6) / (e(.6) + e(.8)))) / 2
  np.testing.assert_allclose(hard, want, rtol=1e-6)
  off = L.hcl(e_a, e_b, kin, tau=1.0, alpha_neg=0.5, hard=False)
  np.testing.assert_allclose(off, got, rtol=1e-6)


def test_triplet_and_ce_hand_cases():
  a = jnp.zeros((2, 2))
  p = jnp.array([[3.0, 4.0], [3.0, 4.0]])
  n = jnp.array([[6.0, 8.0], [0.0, 1.0]])
  # d(a,p) = 5; d(a,n) = 10 and 1: max(0, 5-10+1) = 0, max(0, 5-1+1) = 5.
  np.testing.assert_allclose(L.triplet(a, p, n, margin=1.0), 2.5,
                             rtol=1e-5)
  logits = jnp.array([[0.0, np.log(3.0)], [5.0, 0.0]])
  np.testing.assert_allclose(
      L.cross_entropy(logits, jnp.array([1, -1])), -np.log(0.75),
      rtol=1e-6)


def test_batch_hard_picks_hardest():
  rng = np.random.default_rng(0)
  e_a = rng.normal(size=(4, 8)).astype(np.float32)
  e_b = rng.normal(size=(4, 8)).astype(np.float32)
  e_b[2] = e_a[2] + 0.01  # the partner is the nearest: must be skipped
  e_a[3] = e_a[0] + 0.05  # a1's hardest negative is a4 (index 3)
  loss, hardest = L.batch_hard_triplet(jnp.array(e_a), jnp.array(e_b), 0.5)
  x = np.concatenate([e_a, e_b])
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  d = np.linalg.norm(x[:, None] - x[None], axis=-1)
  want, per = [], []
  for i in range(8):
    cand = [j for j in range(8) if j not in (i, (i + 4) % 8)]
    j = cand[int(np.argmin(d[i, cand]))]
    want.append(j)
    per.append(max(0.0, d[i, (i + 4) % 8] - d[i, j] + 0.5))
  np.testing.assert_array_equal(hardest, want)
  assert hardest[0] == 3 and hardest[6] != 2
  np.testing.assert_allclose(loss, np.mean(per), rtol=1e-4)


def test_gradient_reversal(fiw, fast_compiles):
  w = jnp.array([1.0, -2.0, 3.0])
  g = jax.grad(lambda x: (km.grad_reverse(x, 0.5) * w).sum())(jnp.ones(3))
  np.testing.assert_allclose(g, -0.5 * w)
  # In the task: the group head's gradient into the backbone flips sign
  # with the reversal (alpha 1) vs without it (alpha -1).
  tasks = {name: kt.Task(_config(fiw, **{"debias.enabled": True, **over}))
           for name, over in (("rev", {"debias.alpha": 1.0}),
                              ("plain", {"debias.alpha": -1.0}),
                              ("none", {"debias.weight": 0.0}))}
  task = tasks["rev"]  # the same parameters and batch for all three
  state = jax.jit(task.init_state)(jax.random.key(0))
  batch = jax.tree.map(jnp.asarray, next(iter(task.train_dataset(0))))

  @jax.jit  # one program for the three gradients (eager took 48 s in CI)
  def backbone_grads(params, batch_stats, frozen, batch):
    def grad(t):
      loss = lambda p: t._loss(p, batch_stats, frozen, batch,
                               jax.random.key(1), state.step)[0]
      return jax.grad(loss)(params)["backbone"]
    return {name: grad(t) for name, t in tasks.items()}

  grads = backbone_grads(state.params, state.batch_stats, task.load_frozen(),
                         batch)
  rev = jax.tree.map(jnp.subtract, grads["rev"], grads["none"])
  plain = jax.tree.map(jnp.subtract, grads["plain"], grads["none"])
  rev = np.concatenate([np.ravel(x) for x in jax.tree.leaves(rev)])
  plain = np.concatenate([np.ravel(x) for x in jax.tree.leaves(plain)])
  scale = np.abs(rev).max()
  assert scale > 1e-4  # the group head does reach the backbone
  # Opposite signs: rev == -plain up to float round-off of the differences.
  assert np.abs(rev + plain).max() < 1e-2 * scale
  assert np.dot(rev, plain) < -0.99 * np.dot(rev, rev)


def test_youden_threshold_hand_case():
  scores = [0.1, 0.3, 0.5, 0.7, 0.9]
  labels = [0, 0, 1, 0, 1]
  # t=.5: TPR 1, FPR 1/3 (J .67); t=.9: J .5; t=.7: .17; t=.3: .33.
  assert verification.youden_threshold(scores, labels) == 0.5
  # Pairs (pos, neg) ranked correctly: (.5>.1,.3), (.9>all) = 5 of 6.
  np.testing.assert_allclose(verification.roc_auc(scores, labels), 5 / 6)
  assert verification.tar_at_far(scores, labels, 0.0) == 0.5
  assert verification.tar_at_far(scores, labels, 0.34) == 1.0
  pos = np.array([0, 0, 1, 0, 1.0])
  neg = np.array([1, 1, 0, 1, 0.0])
  np.testing.assert_allclose(verification.hist_auc(pos, neg), 5 / 6)


def _steps(config, mesh, batches, init=None):
  """(initial state on the host, state after `batches`, their losses)."""
  setup, state, init = setup_on(config, mesh, init)
  losses = []
  for b in batches:
    state, m = setup.train_step(state, mesh_lib.shard_batch(b, setup.mesh),
                                setup.frozen)
    losses.append(float(m["loss"]))
  return init, state, losses


def test_sharded_equals_single_device(fiw, fast_compiles):
  # The tolerances below hold at lr 2e-3: Adam turns round-off in the
  # near-zero gradients of the projection's biases (before BatchNorm) into
  # steps proportional to lr, and the smoke's 4e-3 doubles them.
  config = _config(fiw, **{"debias.enabled": True,
                           "model.relation_head": True, "optim.lr": 2e-3})
  it = iter(kt.Task(config).train_dataset(0))
  batches = [next(it) for _ in range(3)]
  init, s1, l1 = _steps(config, ONE, batches)
  # (One init compile: the 8-device run starts from the same values.)
  _, s8, l8 = _steps(config, (("data", 8), ("fsdp", 1), ("model", 1)),
                     batches, init)
  np.testing.assert_allclose(l1, l8, rtol=1e-4)
  assert_trees_close(s1.params, s8.params, rtol=1e-3, atol=1e-5)


def test_rbkin_runs_with_random_tiny_transformer(fiw, fast_compiles):
  # An untrained, randomly initialised tiny age transformer (tests only):
  # checks shapes and the pipeline, not the age normalisation.
  config = _config(fiw, **{"model.head": "rbkin", "loss.name": "ce",
                           "rbkin.random_init": True,
                           "data.batch_size": 8})
  setup = tasks.setup(config)
  state = setup.init_state()
  it = iter(setup.task.train_dataset(0))
  rendered = jax.jit(setup.task.render_ages)(
      setup.frozen, jnp.asarray(next(it)["image_a"][:2]))
  assert rendered.shape == (5, 2, 32, 32, 3)
  assert float(jnp.abs(rendered[0] - rendered[4]).mean()) > 0
  before = jax.device_get(state.params["fusion"])
  for _ in range(2):
    state, m = setup.train_step(
        state, mesh_lib.shard_batch(next(it), setup.mesh), setup.frozen)
    assert np.isfinite(float(m["loss"])) and float(m["grad_norm"]) > 0
  after = jax.device_get(state.params["fusion"])
  assert not np.allclose(before["out"]["kernel"], after["out"]["kernel"])


def test_swin_backbone_trains(fiw, fast_compiles):
  config = _config(fiw, **{"model.backbone": "swin",
                           "data.batch_size": 8})
  setup = tasks.setup(config)
  state = setup.init_state()
  assert set(state.params["backbone"]) == {"swin", "recognition"}
  before = jax.device_get(state)
  it = iter(setup.task.train_dataset(0))
  losses = []
  for _ in range(2):  # step 0 has lr 0 (warm-up): two steps
    state, m = setup.train_step(
        state, mesh_lib.shard_batch(next(it), setup.mesh), setup.frozen)
    losses.append(float(m["loss"]))
  after = jax.device_get(state)
  print(f"swin backbone losses {losses}")
  assert np.all(np.isfinite(losses))
  for path in (("swin", "patch_embed_proj", "kernel"),
               ("swin", "layers_0_blocks_1", "attn", "qkv", "kernel"),
               ("recognition", "feature_2", "kernel")):
    a, b = before.params["backbone"], after.params["backbone"]
    for k in path:
      a, b = a[k], b[k]
    assert not np.allclose(a, b), path
  assert not np.allclose(
      before.batch_stats["backbone"]["recognition"]["feature_1"]["mean"],
      after.batch_stats["backbone"]["recognition"]["feature_1"]["mean"])
  with pytest.raises(ValueError, match="data.image_size=64 .*model.swin"):
    kt.Task(_config(fiw, **{"model.backbone": "swin",
                            "data.image_size": 64}))
