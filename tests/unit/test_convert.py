"""Tests for facejax.convert.torch_pickle.

Most tests need only numpy: state dicts are built in torch naming and layout
with numpy, torch zip checkpoints are written by a tiny hand-rolled writer,
and numerics are checked against numpy reference forwards in NCHW.

The parity test against timm's resnet34 runs when torch and timm are
installed (`requirements-parity.txt`); timm is imported beside the
`torchvision` stand-in of launch/torchvision_stub.py.
"""

import collections
import json
import pickle
import logging
import struct
import sys
import zipfile

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from facejax.models import age_regressor
from facejax.models import resnet
from facejax.convert import imagenet
from facejax.convert import torch_pickle
from facejax.models import vgg

from launch import torchvision_stub

BN_EPS = 1e-5


# ---------------------------------------------------------------------------
# Synthetic state dicts in torch naming and layout (numpy only).
# ---------------------------------------------------------------------------


def _bn(sd, name, c, rng):
  sd[f"{name}.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
  sd[f"{name}.bias"] = rng.normal(0, 0.1, c).astype(np.float32)
  sd[f"{name}.running_mean"] = rng.normal(0, 0.1, c).astype(np.float32)
  sd[f"{name}.running_var"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
  sd[f"{name}.num_batches_tracked"] = np.array(7, np.int64)


def _conv(sd, name, cout, cin, k, rng):
  sd[f"{name}.weight"] = (rng.normal(0, 1, (cout, cin, k, k))
                          * np.sqrt(2 / (cin * k * k))).astype(np.float32)


def torch_resnet_state_dict(variant, num_classes, seed=0):
  """torchvision-style ResNet (BasicBlock) state dict for a facejax variant."""
  stage_sizes, width = resnet.VARIANTS[variant]
  rng = np.random.default_rng(seed)
  sd = collections.OrderedDict()
  _conv(sd, "conv1", width, 3, 7, rng)
  _bn(sd, "bn1", width, rng)
  cin = width
  for i, n in enumerate(stage_sizes):
    cout = width * 2**i
    for j in range(n):
      name = f"layer{i + 1}.{j}"
      _conv(sd, f"{name}.conv1", cout, cin, 3, rng)
      _bn(sd, f"{name}.bn1", cout, rng)
      _conv(sd, f"{name}.conv2", cout, cout, 3, rng)
      _bn(sd, f"{name}.bn2", cout, rng)
      if j == 0 and (i > 0 or cin != cout):
        _conv(sd, f"{name}.downsample.0", cout, cin, 1, rng)
        _bn(sd, f"{name}.downsample.1", cout, rng)
      cin = cout
  sd["fc.weight"] = rng.normal(0, 0.05, (num_classes, cin)).astype(np.float32)
  sd["fc.bias"] = rng.normal(0, 0.1, num_classes).astype(np.float32)
  return sd


def expected_facejax_path(torch_key, prefix="backbone"):
  """Independent (forward) spelling of the torch -> facejax name mapping."""
  module, param = torch_key.rsplit(".", 1)
  if module == "fc":
    return ("params", "head", {"weight": "kernel", "bias": "bias"}[param])
  parts = module.split(".")
  if parts[0].startswith("layer"):
    parts = [f"{parts[0]}_{parts[1]}"] + parts[2:]
  if parts[1:2] == ["downsample"]:
    parts = [parts[0], ("downsample_conv", "downsample_bn")[int(parts[2])]]
  is_conv = parts[-1].startswith(("conv", "downsample_conv"))
  collection, leaf = {
      "weight": ("params", "kernel" if is_conv else "scale"),
      "bias": ("params", "bias"),
      "running_mean": ("batch_stats", "mean"),
      "running_var": ("batch_stats", "var"),
  }[param]
  return (collection, prefix, *parts, leaf)


def _flat(tree):
  from flax import traverse_util
  return traverse_util.flatten_dict(tree)


def _regressor(backbone, **kw):
  cfg = ml_collections.ConfigDict(dict(backbone=backbone, **kw))
  return age_regressor.create(cfg)


def _abstract_variables(model, size):
  return jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3))))


# ---------------------------------------------------------------------------
# numpy NCHW reference forwards.
# ---------------------------------------------------------------------------


def np_conv(x, w, b=None, stride=1, pad=0):
  """x [N, C, H, W], w [O, C, kh, kw] (torch layout), float64."""
  x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
  win = np.lib.stride_tricks.sliding_window_view(x, w.shape[2:], axis=(2, 3))
  win = win[:, :, ::stride, ::stride]  # [N, C, Ho, Wo, kh, kw]
  y = np.tensordot(win, w.astype(np.float64), axes=([1, 4, 5], [1, 2, 3]))
  y = y.transpose(0, 3, 1, 2)  # [N, O, Ho, Wo]
  return y if b is None else y + b[None, :, None, None]


def np_max_pool(x, k, s, pad=0):
  x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)),
             constant_values=-np.inf)
  win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))
  return win[:, :, ::s, ::s].max(axis=(-2, -1))


def np_bn(x, sd, name):
  p = lambda k: sd[f"{name}.{k}"].astype(np.float64)[None, :, None, None]
  return (x - p("running_mean")) / np.sqrt(p("running_var") + BN_EPS) * p(
      "weight") + p("bias")


def np_resnet(sd, x, stage_sizes):
  """torchvision ResNet forward; returns (fc output, pooled features)."""
  relu = lambda v: np.maximum(v, 0)
  x = relu(np_bn(np_conv(x, sd["conv1.weight"], stride=2, pad=3), sd, "bn1"))
  x = np_max_pool(x, 3, 2, 1)
  for i, n in enumerate(stage_sizes):
    for j in range(n):
      name = f"layer{i + 1}.{j}"
      s = 2 if i > 0 and j == 0 else 1
      y = relu(np_bn(np_conv(x, sd[f"{name}.conv1.weight"], stride=s, pad=1),
                     sd, f"{name}.bn1"))
      y = np_bn(np_conv(y, sd[f"{name}.conv2.weight"], pad=1), sd,
                f"{name}.bn2")
      if f"{name}.downsample.0.weight" in sd:
        x = np_bn(np_conv(x, sd[f"{name}.downsample.0.weight"], stride=s), sd,
                  f"{name}.downsample.1")
      x = relu(y + x)
  feats = x.mean(axis=(2, 3))
  return feats @ sd["fc.weight"].T.astype(np.float64) + sd["fc.bias"], feats


# ---------------------------------------------------------------------------
# ResNet key mapping (no torch).
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["tiny", "resnet34"])
def test_resnet_mapping_replaces_every_leaf(variant):
  model = _regressor(variant)
  abstract = _abstract_variables(model, 64)
  sd = torch_resnet_state_dict(variant, num_classes=1)
  out = imagenet.resnet_from_torch(sd, abstract, head="head")

  flat_in, flat_out = _flat(abstract), _flat(out)
  assert flat_out.keys() == flat_in.keys()
  for path, leaf in flat_out.items():
    assert isinstance(leaf, np.ndarray), f"{path} was not imported"
    assert leaf.shape == flat_in[path].shape, path
    assert leaf.dtype == flat_in[path].dtype, path
  # Every torch tensor landed where the forward mapping says, in flax layout.
  n_mapped = 0
  for key, value in sd.items():
    if key.endswith("num_batches_tracked"):
      continue
    got = flat_out[expected_facejax_path(key)]
    want = {4: lambda v: v.transpose(2, 3, 1, 0), 2: lambda v: v.T}.get(
        value.ndim, lambda v: v)(value)
    np.testing.assert_array_equal(got, want, err_msg=key)
    n_mapped += 1
  assert n_mapped == len(flat_in)


def test_resnet_tiny_matches_numpy_reference():
  model = _regressor("tiny", age_shift=0.0, age_scale=1.0)
  sd = torch_resnet_state_dict("tiny", num_classes=1, seed=3)
  variables = imagenet.resnet_from_torch(
      sd, _abstract_variables(model, 48), head="head")
  x = np.random.default_rng(1).normal(size=(2, 3, 48, 48)).astype(np.float32)
  age, feats = model.apply(variables, jnp.asarray(x.transpose(0, 2, 3, 1)))
  ref_out, ref_feats = np_resnet(sd, x.astype(np.float64),
                                 resnet.VARIANTS["tiny"][0])
  np.testing.assert_allclose(feats, ref_feats, atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(age, ref_out[:, 0], atol=1e-4, rtol=1e-4)


def test_trained_pytorch_regressor_head_predicts_the_age_itself():
  """A 1-unit PyTorch regressor's fc gives the age; facejax's regressor
  computes head * age_scale + age_shift, so the import divides through
  (it used to give 30 y + 50)."""
  model = _regressor("tiny", age_shift=50.0, age_scale=30.0)
  sd = torch_resnet_state_dict("tiny", num_classes=1, seed=3)
  variables = imagenet.resnet_from_torch(
      sd, _abstract_variables(model, 48), head="head",
      head_affine=(30.0, 50.0))
  x = np.random.default_rng(1).normal(size=(2, 3, 48, 48)).astype(np.float32)
  age, _ = model.apply(variables, jnp.asarray(x.transpose(0, 2, 3, 1)))
  ref_out, _ = np_resnet(sd, x.astype(np.float64), resnet.VARIANTS["tiny"][0])
  np.testing.assert_allclose(age, ref_out[:, 0], atol=1e-3, rtol=1e-4)


def test_bare_resnet_without_prefix():
  model = resnet.create("tiny")
  abstract = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)),
                         train=False))
  sd = torch_resnet_state_dict("tiny", num_classes=1000)
  out = imagenet.resnet_from_torch(sd, abstract, prefix=None, head=None)
  assert all(isinstance(v, np.ndarray) for v in _flat(out).values())
  np.testing.assert_array_equal(out["params"]["conv1"]["kernel"],
                                sd["conv1.weight"].transpose(2, 3, 1, 0))


def test_resnet_imagenet_fc_is_skipped_for_age_head(caplog):
  abstract = _abstract_variables(_regressor("tiny"), 32)
  sd = torch_resnet_state_dict("tiny", num_classes=1000)
  with caplog.at_level(logging.WARNING):  # said at warning level
    out = imagenet.resnet_from_torch(sd, abstract, head="head")
  # Untouched: still the abstract leaf of the initial variables.
  assert out["params"]["head"]["kernel"] is abstract["params"]["head"]["kernel"]
  assert "fc.weight" in caplog.text and "does not fit" in caplog.text
  # The backbone was imported all the same.
  np.testing.assert_array_equal(
      out["batch_stats"]["backbone"]["bn1"]["var"], sd["bn1.running_var"])


def test_resnet_missing_key_raises_naming_it():
  abstract = _abstract_variables(_regressor("resnet34"), 32)
  sd = torch_resnet_state_dict("resnet34", num_classes=1)
  del sd["layer3.4.bn2.running_var"]
  with pytest.raises(ValueError, match=r"missing.*layer3\.4\.bn2\.running_var"):
    imagenet.resnet_from_torch(sd, abstract)


def test_resnet_wrong_shape_raises_naming_it():
  abstract = _abstract_variables(_regressor("resnet34"), 32)
  sd = torch_resnet_state_dict("resnet34", num_classes=1)
  sd["layer2.0.downsample.0.weight"] = np.zeros((128, 64, 3, 3), np.float32)
  with pytest.raises(ValueError,
                     match=r"shape mismatch.*layer2\.0\.downsample\.0\.weight"):
    imagenet.resnet_from_torch(sd, abstract)


def test_resnet_unexpected_key_and_non_strict(caplog):
  abstract = _abstract_variables(_regressor("tiny"), 32)
  sd = torch_resnet_state_dict("tiny", num_classes=1)
  sd["layer1.1.conv1.weight"] = np.zeros((8, 8, 3, 3), np.float32)
  sd["bn1.running_mean"] = np.zeros(64, np.float32)
  with pytest.raises(ValueError) as err:
    imagenet.resnet_from_torch(sd, abstract)
  msg = str(err.value)
  assert "1 unexpected in the state dict: layer1.1.conv1.weight" in msg
  assert ("1 shape mismatch: bn1.running_mean (64,) -> "
          "batch_stats/backbone/bn1/mean (8,)") in msg
  with caplog.at_level(logging.WARNING):
    out = imagenet.resnet_from_torch(sd, abstract, strict=False)
  assert "strict=False" in caplog.text
  # The mismatched leaf keeps its initial value; the others are imported.
  flat_out, flat_in = _flat(out), _flat(abstract)
  kept = [p for p in flat_out if flat_out[p] is flat_in[p]]
  assert kept == [("batch_stats", "backbone", "bn1", "mean")]


def test_resnet_unknown_prefix_raises():
  abstract = _abstract_variables(_regressor("tiny"), 32)
  sd = torch_resnet_state_dict("tiny", num_classes=1)
  with pytest.raises(ValueError, match="no variables under prefix 'encoder'"):
    imagenet.resnet_from_torch(sd, abstract, prefix="encoder")


# ---------------------------------------------------------------------------
# Reading files without torch.
# ---------------------------------------------------------------------------


def _block_torch(monkeypatch):
  """Makes `import torch` fail inside facejax, as on a core install."""
  monkeypatch.setitem(sys.modules, "torch", None)


def test_safetensors_round_trip_and_load_pretrained(tmp_path, monkeypatch):
  import safetensors.numpy
  _block_torch(monkeypatch)
  sd = torch_resnet_state_dict("tiny", num_classes=1, seed=5)
  sd["bn1.weight"] = sd["bn1.weight"].astype(np.float16)
  path = tmp_path / "resnet_tiny.safetensors"
  safetensors.numpy.save_file(dict(sd), str(path))
  loaded = torch_pickle.read_state_dict(path)
  assert loaded.source == str(path)
  assert loaded.keys() == sd.keys()
  assert loaded["bn1.weight"].dtype == np.float32
  assert loaded["layer1.0.bn1.num_batches_tracked"].dtype == np.int64
  for k in sd:
    np.testing.assert_array_equal(loaded[k], sd[k].astype(loaded[k].dtype))

  abstract = _abstract_variables(_regressor("tiny"), 32)
  # 'tiny' is config.model.backbone for the tiny ResNet.
  out = imagenet.load_pretrained(path, abstract, "tiny")
  np.testing.assert_array_equal(out["params"]["head"]["bias"], sd["fc.bias"])
  del sd["layer4.0.conv2.weight"]
  broken = tmp_path / "broken.safetensors"
  safetensors.numpy.save_file(dict(sd), str(broken))
  with pytest.raises(ValueError,
                     match=r"broken\.safetensors.*layer4\.0\.conv2"):
    imagenet.load_pretrained(broken, abstract, "resnet")


def test_safetensors_bfloat16_without_torch(tmp_path, monkeypatch):
  _block_torch(monkeypatch)
  values = np.array([[1.0, -2.5], [3.140625, 0.0078125]], np.float32)
  bits = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
  header = json.dumps({"w": {"dtype": "BF16", "shape": [2, 2],
                             "data_offsets": [0, len(bits)]},
                       "__metadata__": {"format": "pt"}}).encode()
  path = tmp_path / "bf16.safetensors"
  path.write_bytes(struct.pack("<Q", len(header)) + header + bits)
  loaded = torch_pickle.read_state_dict(path)
  np.testing.assert_array_equal(loaded["w"], values)


# A hand-written torch>=1.6 zip checkpoint, so the restricted reader is
# tested without torch; when torch is installed, torch.load reads it too.

_STORAGE_NAMES = {np.dtype(np.float32): "FloatStorage",
                  np.dtype(np.float16): "HalfStorage",
                  np.dtype(np.int64): "LongStorage",
                  "bfloat16": "BFloat16Storage"}


def _p_str(s):
  b = s.encode()
  return b"X" + struct.pack("<I", len(b)) + b


def _p_int(i):
  return b"J" + struct.pack("<i", i)


def _p_ints(xs):
  return b"(" + b"".join(_p_int(x) for x in xs) + b"t"


def _tensor_pickles(entries, view_slot: bool):
  """({storage id: array}, pickle opcodes of `key, tensor` items).

  Each tensor is torch._utils._rebuild_tensor_v2 of a persistent-id
  storage ('storage', torch.<X>Storage, id, 'cpu', numel[, None]): the
  legacy format has a sixth, view slot.
  """
  storages, body = {}, b""
  for key, (storage, offset, size, stride, dtype) in entries.items():
    sid = str(len(storages))
    storages[sid] = storage
    body += (_p_str(key) + b"ctorch._utils\n_rebuild_tensor_v2\n" + b"(" +
             b"(" + _p_str("storage") + b"ctorch\n%s\n" %
             _STORAGE_NAMES[dtype].encode() + _p_str(sid) + _p_str("cpu") +
             _p_int(storage.size) + (b"N" if view_slot else b"") + b"t" +
             b"Q" + _p_int(offset) + _p_ints(size) + _p_ints(stride) +
             b"\x89" + b"ccollections\nOrderedDict\n)R" + b"t" + b"R")
  return storages, body


def write_torch_zip(path, entries, wrap=None):
  """Writes {key: (storage, offset, size, stride, dtype_name)} like torch.save.

  `storage` is a 1-D numpy array (for bfloat16: its uint16 bit patterns).
  `wrap` nests the state dict under that key, next to an argparse.Namespace
  (which the restricted reader must skip without importing).
  """
  storages, body = _tensor_pickles(entries, view_slot=False)
  storages = {sid: storage.astype(storage.dtype.newbyteorder("<")).tobytes()
              for sid, storage in storages.items()}
  state_dict = b"ccollections\nOrderedDict\n)R(" + body + b"u"
  if wrap:
    pkl = (b"\x80\x02}(" + _p_str(wrap) + state_dict + _p_str("args") +
           b"cargparse\nNamespace\n)R}(" + _p_str("lr") + _p_int(1) + b"ub" +
           _p_str("epoch") + _p_int(3) + b"u.")
  else:
    pkl = b"\x80\x02" + state_dict + b"."
  with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
    z.writestr("archive/data.pkl", pkl)
    z.writestr("archive/byteorder", "little")
    z.writestr("archive/version", "3\n")
    for sid, raw in storages.items():
      z.writestr(f"archive/data/{sid}", raw)


def write_torch_legacy(path, entries):
  """The same state dict in torch < 1.6's format (HRFAE's `checkpoint`):
  pickled magic number, protocol 1001 and system info, the main pickle
  (storages as persistent ids with a view slot), the storage keys, then
  per storage an int64 element count and its bytes."""
  storages, body = _tensor_pickles(entries, view_slot=True)
  main = b"\x80\x02ccollections\nOrderedDict\n)R(" + body + b"u."
  with open(path, "wb") as f:
    f.write(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2))
    f.write(pickle.dumps(1001, protocol=2))
    f.write(pickle.dumps({"protocol_version": 1001, "little_endian": True,
                          "type_sizes": {"short": 2, "int": 4, "long": 4}},
                         protocol=2))
    f.write(main)
    f.write(pickle.dumps(list(storages), protocol=2))
    for storage in storages.values():
      f.write(struct.pack("<q", storage.size))
      f.write(storage.astype(storage.dtype.newbyteorder("<")).tobytes())


def _zip_entries():
  rng = np.random.default_rng(0)
  base = rng.normal(size=24).astype(np.float32)
  half = rng.normal(size=10).astype(np.float16)
  f32 = np.array([1.5, -0.25, 7.0, 3.140625], np.float32)
  bf_bits = (f32.view(np.uint32) >> 16).astype(np.uint16)
  entries = {
      # A transposed (non-contiguous) view with a storage offset.
      "module.a": (base, 4, (3, 5), (1, 3), np.dtype(np.float32)),
      "module.h": (half, 2, (2, 4), (4, 1), np.dtype(np.float16)),
      "module.bf": (bf_bits, 0, (2, 2), (2, 1), "bfloat16"),
      "module.n": (np.array([0, 9, -4], np.int64), 1, (), (), np.dtype(
          np.int64)),
  }
  expected = {
      "a": np.lib.stride_tricks.as_strided(base[4:], (3, 5), (4, 12)),
      "h": half[2:10].reshape(2, 4).astype(np.float32),
      "bf": f32.reshape(2, 2),
      "n": np.array(9, np.int64),
  }
  return entries, expected


@pytest.mark.parametrize("wrap", [None, "state_dict"])
def test_zip_reader_without_torch(tmp_path, monkeypatch, wrap):
  _block_torch(monkeypatch)
  path = tmp_path / "weights.pth.tar"
  entries, expected = _zip_entries()
  write_torch_zip(path, entries, wrap=wrap)
  loaded = torch_pickle.read_state_dict(path)
  assert loaded.keys() == expected.keys()  # 'module.' stripped
  for k, v in expected.items():
    assert loaded[k].dtype == v.dtype and loaded[k].shape == v.shape, k
    np.testing.assert_array_equal(loaded[k], v, err_msg=k)


def test_legacy_reader_without_torch_by_content(tmp_path, monkeypatch):
  """A torch < 1.6 file with no extension (HRFAE's logs/001/checkpoint)
  is recognised by its content and read without torch."""
  _block_torch(monkeypatch)
  path = tmp_path / "checkpoint"
  entries, expected = _zip_entries()
  write_torch_legacy(path, entries)
  loaded = torch_pickle.read_state_dict(path)
  assert loaded.keys() == expected.keys()
  for k, v in expected.items():
    assert loaded[k].dtype == v.dtype and loaded[k].shape == v.shape, k
    np.testing.assert_array_equal(loaded[k], v, err_msg=k)
  raw = path.read_bytes()
  path.write_bytes(raw[:-6])
  with pytest.raises(ValueError, match=r"checkpoint: storage 3 is truncated"):
    torch_pickle.read_state_dict(path)


def _assert_torch_tensors_equal(got, expected):
  """torch.load's `module.<k>` tensors equal the expected arrays."""
  for k, v in expected.items():
    t = got[f"module.{k}"]
    np.testing.assert_array_equal(t.float().numpy() if t.is_floating_point()
                                  else t.numpy(), v)


def test_handwritten_legacy_is_a_real_torch_checkpoint(tmp_path):
  torch = pytest.importorskip("torch", reason="torch not installed")
  path = tmp_path / "checkpoint"
  entries, expected = _zip_entries()
  write_torch_legacy(path, entries)
  got = torch.load(path, map_location="cpu", weights_only=False)
  _assert_torch_tensors_equal(got, expected)
  # And a file torch itself writes in the legacy format reads the same.
  sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in
        expected.items() if k != "bf"}
  torch.save(sd, path, _use_new_zipfile_serialization=False)
  loaded = torch_pickle._load_torch_legacy(str(path))
  for k in sd:
    np.testing.assert_array_equal(loaded[k], expected[k])


def test_handwritten_zip_is_a_real_torch_checkpoint(tmp_path):
  torch = pytest.importorskip("torch", reason="torch not installed")
  path = tmp_path / "weights.pth"
  entries, expected = _zip_entries()
  write_torch_zip(path, entries)
  got = torch.load(path, map_location="cpu", weights_only=True)
  _assert_torch_tensors_equal(got, expected)
  # A checkpoint holding non-tensor objects (refused by torch's
  # weights_only) is read by the restricted reader, which skips them.
  write_torch_zip(path, entries, wrap="model")
  loaded = torch_pickle.read_state_dict(path)
  np.testing.assert_array_equal(loaded["a"], expected["a"])


def test_unreadable_files_name_the_file(tmp_path, monkeypatch):
  _block_torch(monkeypatch)
  bad = tmp_path / "weights.npz"
  bad.write_bytes(b"not weights")
  with pytest.raises(ValueError, match=r"weights\.npz"):
    torch_pickle.read_state_dict(bad)
  legacy = tmp_path / "legacy.pth"
  legacy.write_bytes(b"\x80\x02" + b"\x00" * 32)
  with pytest.raises(ValueError, match=r"legacy\.pth.*zip"):
    torch_pickle.read_state_dict(legacy)
  with pytest.raises(FileNotFoundError, match="nowhere"):
    torch_pickle.read_state_dict(tmp_path / "nowhere.pth")


# ---------------------------------------------------------------------------
# VGG (DEX naming).
# ---------------------------------------------------------------------------


class _Dex(nn.Module):
  """DEX layout: VGG with fc6/fc7 and a 101-way `head` (fc8_101)."""
  variant: str = "tiny"

  @nn.compact
  def __call__(self, x):
    x = vgg.create(self.variant, include_fc=True, name="backbone")(
        x, train=False)
    return nn.Dense(101, name="head")(x)


def dex_state_dict(variant, image_size, seed=0):
  block_sizes, channels, fc_width = vgg.VARIANTS[variant]
  rng = np.random.default_rng(seed)
  sd, cin = collections.OrderedDict(), 3
  for b, (n, c) in enumerate(zip(block_sizes, channels)):
    for i in range(n):
      _conv(sd, f"conv{b + 1}_{i + 1}", c, cin, 3, rng)
      sd[f"conv{b + 1}_{i + 1}.bias"] = rng.normal(0, 0.1, c).astype(
          np.float32)
      cin = c
  side = image_size // 2**len(block_sizes)
  fan_in = cin * side * side
  for name, (o, i) in {"fc6": (fc_width, fan_in), "fc7": (fc_width, fc_width),
                       "fc8_101": (101, fc_width)}.items():
    sd[f"{name}.weight"] = (rng.normal(0, 1, (o, i)) *
                            np.sqrt(2 / i)).astype(np.float32)
    sd[f"{name}.bias"] = rng.normal(0, 0.1, o).astype(np.float32)
  return sd


def np_dex(sd, x, block_sizes, flatten="chw"):
  """DEX forward in NCHW; `flatten='hwc'` is the wrong order, for contrast."""
  relu = lambda v: np.maximum(v, 0)
  for b, n in enumerate(block_sizes):
    for i in range(n):
      name = f"conv{b + 1}_{i + 1}"
      x = relu(np_conv(x, sd[f"{name}.weight"], sd[f"{name}.bias"], pad=1))
    x = np_max_pool(x, 2, 2)
  if flatten == "hwc":
    x = x.transpose(0, 2, 3, 1)
  x = x.reshape(x.shape[0], -1)
  for name in ("fc6", "fc7", "fc8_101"):
    x = x @ sd[f"{name}.weight"].T.astype(np.float64) + sd[f"{name}.bias"]
    x = relu(x) if name != "fc8_101" else x
  return x


def test_vgg_dex_mapping_keeps_channel_major_fc6():
  size = 64  # 5 pools -> 2x2x32, so fc6 sees 128 inputs in (C, H, W) order
  model = _Dex()
  abstract = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3))))
  sd = dex_state_dict("tiny", size)
  assert sd["fc6.weight"].shape == (64, 128)
  variables = imagenet.vgg_from_torch(sd, abstract, head="head")
  assert all(isinstance(v, np.ndarray) for v in _flat(variables).values())
  x = np.random.default_rng(2).normal(size=(2, 3, size, size)).astype(
      np.float32)
  got = np.asarray(model.apply(variables,
                               jnp.asarray(x.transpose(0, 2, 3, 1))))
  block_sizes = vgg.VARIANTS["tiny"][0]
  want = np_dex(sd, x.astype(np.float64), block_sizes)
  wrong = np_dex(sd, x.astype(np.float64), block_sizes, flatten="hwc")
  # The test has power: the wrong flatten order changes the output a lot.
  assert np.abs(wrong - want).max() > 100 * 1e-4
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_vgg_torchvision_naming_is_translated():
  size = 32
  model = _Dex()
  abstract = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3))))
  sd = dex_state_dict("tiny", size)
  dex = imagenet.vgg_from_torch(sd, abstract, head=None)
  # torchvision: features.{conv index} (conv, relu, pool per tiny block) and
  # classifier.{0, 3, 6}.
  rename = {f"conv{b + 1}_1": f"features.{3 * b}" for b in range(5)}
  rename.update({"fc6": "classifier.0", "fc7": "classifier.3"})
  tv = {f"{rename[k.split('.')[0]]}.{k.split('.')[1]}": v
        for k, v in sd.items() if not k.startswith("fc8")}
  out = imagenet.vgg_from_torch(tv, abstract, head=None)
  for path, leaf in _flat(dex).items():
    if path[1] == "backbone":
      np.testing.assert_array_equal(_flat(out)[path], leaf, err_msg=str(path))


def test_vgg_conv_only_backbone_ignores_fc_layers(caplog):
  model = _regressor("vgg_tiny")
  abstract = _abstract_variables(model, 32)
  sd = dex_state_dict("tiny", 224)  # full DEX-sized fc6 does not matter
  with caplog.at_level(logging.INFO):
    out = imagenet.vgg_from_torch(sd, abstract, head="head")
  flat = _flat(out)
  assert not isinstance(flat[("params", "head", "kernel")], np.ndarray)
  assert "fc8_101.weight" in caplog.text
  np.testing.assert_array_equal(
      out["params"]["backbone"]["conv3_1"]["kernel"],
      sd["conv3_1.weight"].transpose(2, 3, 1, 0))
  del sd["conv5_1.bias"]
  with pytest.raises(ValueError, match=r"conv5_1\.bias"):
    imagenet.vgg_from_torch(sd, abstract)


# ---------------------------------------------------------------------------
# Parity with timm's resnet34 (needs torch and timm).
# ---------------------------------------------------------------------------


def _timm():
  torch = pytest.importorskip(
      "torch", reason="torch not installed (pip install -r "
      "requirements-parity.txt for the PyTorch parity tests)")
  torchvision_stub.install()
  timm = pytest.importorskip(
      "timm", reason="timm not installed (see requirements-parity.txt)")
  return torch, timm


def _randomize_bn(torch, model, seed):
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        c = m.num_features
        m.weight.copy_(torch.rand(c, generator=g) + 0.5)
        m.bias.copy_(torch.randn(c, generator=g) * 0.1)
        m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
        m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
        m.num_batches_tracked.fill_(11)


def test_timm_resnet34_parity(tmp_path, monkeypatch):
  torch, timm = _timm()
  torch.manual_seed(0)
  tmodel = timm.create_model("resnet34", pretrained=False, num_classes=1)
  _randomize_bn(torch, tmodel, seed=1)
  tmodel.eval()
  path = tmp_path / "timm_resnet34.pth"
  torch.save(tmodel.state_dict(), path)

  x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(2))
  with torch.no_grad():
    t_feats = tmodel.forward_head(tmodel.forward_features(x),
                                  pre_logits=True).numpy()
    t_out = tmodel(x)[:, 0].numpy()

  sd = torch_pickle.read_state_dict(path)  # torch importable
  with monkeypatch.context() as m:
    _block_torch(m)
    sd_no_torch = torch_pickle.read_state_dict(path)  # torch blocked
  assert sd_no_torch.keys() == sd.keys()
  for k in sd:
    assert sd_no_torch[k].dtype == sd[k].dtype, k
    np.testing.assert_array_equal(sd_no_torch[k], sd[k], err_msg=k)
  assert sd["layer1.0.bn1.num_batches_tracked"] == 11

  model = _regressor("resnet34", age_shift=0.0, age_scale=1.0)
  # Every leaf (backbone and the 1-unit head) comes from the checkpoint, so
  # abstract variables are enough.
  variables = imagenet.resnet_from_torch(
      sd_no_torch, _abstract_variables(model, 112), head="head")
  assert all(isinstance(v, np.ndarray) for v in _flat(variables).values())
  age, feats = jax.jit(model.apply)(
      variables, jnp.asarray(x.numpy().transpose(0, 2, 3, 1)))  # NCHW->NHWC
  feats, age = np.asarray(feats), np.asarray(age)
  feat_scale = float(np.abs(t_feats).max())
  feat_diff = float(np.abs(feats - t_feats).max())
  out_diff = float(np.abs(age - t_out).max())
  print(f"timm resnet34 parity: max |diff| output {out_diff:.3g} (|output| "
        f"<= {np.abs(t_out).max():.3g}), features {feat_diff:.3g} (|features| "
        f"<= {feat_scale:.3g})")
  assert out_diff < 1e-4
  # The pooled features reach a few hundred with random BN statistics, where
  # one float32 ulp is ~3e-5; torch and facejax each differ from a float64
  # forward by ~3e-4 there, so compare features relative to their scale.
  assert feat_diff < 5e-6 * feat_scale
