"""Shapes of every backbone/regressor output and gradient flow."""

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from facejax.models import age_regressor, resnet, vgg

BACKBONES = ["tiny", "resnet18", "resnet34", "vgg_tiny", "vgg16",
             "mobilenet_tiny", "mobilenet_v2"]
FEATURES = {"tiny": 64, "resnet18": 512, "resnet34": 512, "vgg_tiny": 32,
            "vgg16": 512, "mobilenet_tiny": 1280, "mobilenet_v2": 1280}


@pytest.mark.parametrize("backbone", BACKBONES)
def test_regressor_shapes(backbone):
  model = age_regressor.create(ml_collections.ConfigDict(
      {"backbone": backbone}))
  x = jnp.zeros((2, 32, 32, 3))
  shapes = jax.eval_shape(
      lambda: model.init({"params": jax.random.key(0)}, x))
  out, feats = jax.eval_shape(lambda v: model.apply(v, x), shapes)
  assert out.shape == (2,) and out.dtype == jnp.float32
  assert feats.shape == (2, FEATURES[backbone])


def test_resnet34_parameter_count_matches_torchvision():
  # torchvision resnet34 has 21,797,672 params with a 1000-way fc
  # (513,000 of them); the backbone alone is 21,284,672.
  model = resnet.create("resnet34")
  v = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                        jnp.zeros((1, 64, 64, 3)),
                                        train=False))
  n = sum(np.prod(x.shape) for x in jax.tree.leaves(v["params"]))
  assert n == 21_284_672


def test_vgg16_dex_fc_shapes():
  model = vgg.create("vgg16", include_fc=True)
  v = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                        jnp.zeros((1, 224, 224, 3)),
                                        train=False))
  assert v["params"]["fc6"]["kernel"].shape == (25088, 4096)
  out = jax.eval_shape(lambda p: model.apply(p, jnp.zeros((1, 224, 224, 3)),
                                             train=False), v)
  assert out.shape == (1, 4096)


@pytest.mark.parametrize("backbone", ["tiny", "vgg_tiny", "mobilenet_tiny"])
def test_gradients_finite_and_nonzero_everywhere(backbone, fast_compiles):
  model = age_regressor.create(ml_collections.ConfigDict(
      {"backbone": backbone, "dropout": 0.1}))
  x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
  ages = jnp.array([5., 20., 35., 90.])
  v = jax.jit(model.init)({"params": jax.random.key(0)}, x)

  def loss(params):
    variables = {**v, "params": params}
    (pred, _), _ = model.apply(variables, x, train=True,
                               rngs={"dropout": jax.random.key(2)},
                               mutable=["batch_stats"])
    return jnp.mean((pred - ages) ** 2)  # MSE: L1 signs can cancel

  grads = jax.jit(jax.grad(loss))(v["params"])
  for path, g in flax.traverse_util.flatten_dict(grads, sep="/").items():
    g = np.asarray(g)
    assert np.all(np.isfinite(g)), path
    assert np.any(g != 0), f"zero gradient for {path}"


@pytest.mark.parametrize("kernel,strides,padding,size", [
    (3, 1, 1, 8), (3, 2, 1, 9), (7, 2, 3, 16), (1, 2, 0, 8), (1, 1, 0, 5)])
def test_im2col_conv_matches_xla_conv_and_its_gradients(kernel, strides,
                                                        padding, size):
  from facejax.models.layers import Conv  # pylint: disable=g-import-not-at-top
  x = jax.random.normal(jax.random.key(0), (2, size, size, 5))
  pads = ((padding, padding), (padding, padding))
  make = lambda impl: Conv(7, (kernel, kernel), (strides, strides), pads,
                           impl=impl)
  v = make("xla").init(jax.random.key(1), x)
  outs, grads = {}, {}
  for impl in ("xla", "im2col"):
    f = lambda v, x, impl=impl: jnp.sum(make(impl).apply(v, x) ** 2)
    outs[impl] = make(impl).apply(v, x)
    grads[impl] = jax.grad(f, argnums=(0, 1))(v, x)
  np.testing.assert_allclose(outs["im2col"], outs["xla"], rtol=1e-5,
                             atol=1e-5)
  for a, b in zip(jax.tree.leaves(grads["im2col"]),
                  jax.tree.leaves(grads["xla"])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kernel_size,strides,padding", [
    ((3, 3), (1, 1), ((1, 1), (1, 1))), ((1, 7), (2, 1), ((0, 0), (3, 3))),
    ((1, 1), (2, 2), ((0, 0), (0, 0))), ((4, 4), (2, 2), ((1, 2), (2, 1)))])
def test_im2col_bf16_conv_is_the_f32_conv_of_bf16_rounded_operands(
    kernel_size, strides, padding):
  """bf16 operands, f32 sums: the output is XLA's f32 convolution of the
  bf16-rounded input and kernel (products of bf16 pairs are exact in f32),
  and each gradient that of the bf16-rounded incoming gradient; all f32."""
  from facejax.models import layers  # pylint: disable=g-import-not-at-top
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (2, 11, 10, 6))
  k = jax.random.normal(keys[1], (*kernel_size, 6, 5))
  bf16 = lambda a: a.astype(jnp.bfloat16).astype(jnp.float32)
  y, vjp = jax.vjp(lambda x, k: layers.im2col_bf16_conv(
      x, k, strides, padding), x, k)
  y_ref, vjp_ref = jax.vjp(lambda x, k: layers._xla_conv(  # pylint: disable=protected-access
      x, k, strides, padding), bf16(x), bf16(k))
  g = jax.random.normal(keys[2], y.shape)
  assert y.dtype == jnp.float32
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  for got, want in zip(vjp(g), vjp_ref(bf16(g))):
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # ... and the rounding is real: the f32 convolution differs.
  y_f32 = layers._xla_conv(x, k, strides, padding)  # pylint: disable=protected-access
  assert np.max(np.abs(y - y_f32)) > 1e-3


def test_conv_layer_takes_the_bf16_form_by_name():
  from facejax.models import layers  # pylint: disable=g-import-not-at-top
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4))
  make = lambda impl: layers.Conv(6, (3, 3), padding=((1, 1), (1, 1)),
                                  impl=impl)
  v = make("xla").init(jax.random.key(1), x)
  y = make("im2col_bf16").apply(v, x)
  y_ref = make("xla").apply(jax.tree.map(
      lambda a: a.astype(jnp.bfloat16).astype(jnp.float32), v),
      x.astype(jnp.bfloat16).astype(jnp.float32))
  assert y.dtype == jnp.float32
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel,padding,features", [
    (7, ((3, 3), (3, 3)), 3),     # StarGAN's image output
    (9, ((0, 0), (0, 0)), 3),     # HRFAE's (the caller pads)
    (7, ((2, 4), (1, 0)), 1)])    # uneven padding
def test_tap_sum_conv_matches_xla_conv_and_is_auto_for_large_few_output_convs(
    kernel, padding, features):
  from facejax import runtime  # pylint: disable=g-import-not-at-top
  from facejax.models import layers  # pylint: disable=g-import-not-at-top
  # The suite's size takes it; the smoke configs' keep XLA's convolution.
  assert runtime.cpu_conv_impl((16, 134, 134, 64), (kernel, kernel), (1, 1),
                               padding, features) == "tap_sum"
  assert runtime.cpu_conv_impl((16, 38, 38, 8), (kernel, kernel), (1, 1),
                               padding, features) == "xla"
  x = jax.random.normal(jax.random.key(0), (2, 17, 15, 6))
  w = 0.1 * jax.random.normal(jax.random.key(1), (kernel, kernel, 6, features))
  forms = {
      "xla": lambda x, w: jax.lax.conv_general_dilated(
          x, w, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")),
      "tap_sum": lambda x, w: layers.tap_sum_conv(x, w, padding),
      # ... and on the 2x2 space-to-depth map (odd sizes: its edge blocks)
      "tap_sum_s2d": lambda x, w: layers.conv_in_form(
          "tap_sum_s2d", x, w, (1, 1), padding)}
  outs = {k: f(x, w) for k, f in forms.items()}
  grads = {k: jax.grad(lambda x, w, f=f: jnp.sum(jnp.sin(f(x, w))),
                       argnums=(0, 1))(x, w) for k, f in forms.items()}
  for form in ("tap_sum", "tap_sum_s2d"):
    assert outs[form].shape == outs["xla"].shape
    np.testing.assert_allclose(outs[form], outs["xla"], rtol=1e-5,
                               atol=1e-5)
    for a, b in zip(grads[form], grads["xla"]):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 5, 7, 6), (1, 1, 1, 3)])
def test_subpixel_upsample_conv_equals_conv_of_the_upsampled_map(shape):
  from facejax.models import layers  # pylint: disable=g-import-not-at-top
  from facejax.models import spectral_norm  # pylint: disable=g-import-not-at-top
  x = jax.random.normal(jax.random.key(0), shape)
  w = 0.1 * jax.random.normal(jax.random.key(1), (3, 3, shape[-1], 4))
  conv = lambda x, w: jax.lax.conv_general_dilated(
      x, w, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))

  def upsampled(x, w):  # torch: Upsample(scale_factor=2), ReflectionPad2d(1)
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return conv(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)),
                        mode="reflect"), w)

  subpixel = lambda x, w: layers.subpixel_upsample_conv(x, w, conv)
  y = subpixel(x, w)
  assert y.shape == (shape[0], 2 * shape[1], 2 * shape[2], 4)
  np.testing.assert_allclose(y, upsampled(x, w), rtol=1e-5, atol=1e-6)
  loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)))
  for a, b in zip(jax.grad(loss(subpixel), argnums=(0, 1))(x, w),
                  jax.grad(loss(upsampled), argnums=(0, 1))(x, w)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="3x3 stride-1"):
    spectral_norm.Conv(4, 4, upsample=True).init(jax.random.key(0), x)


@pytest.mark.parametrize("size,kernel,strides,padding,expected", [
    (8, 3, 1, 1, "xla"),       # 8x8 out: Eigen's convolution
    (2, 3, 1, 1, "im2col"),    # ResNet34's last stage at 64 px
    (4, 3, 2, 1, "im2col"),    # ... and its stride-2 entry
    (3, 3, 1, 1, "im2col"),
    (8, 1, 2, 0, "im2col"),    # strided 1x1 projection
    (8, 1, 1, 0, "xla")])
def test_auto_conv_picks_the_faster_cpu_form_per_layer_shape(
    size, kernel, strides, padding, expected):
  from facejax.models.layers import Conv  # pylint: disable=g-import-not-at-top
  x = jnp.ones((2, size, size, 4))
  pads = ((padding, padding), (padding, padding))
  conv = Conv(4, (kernel, kernel), (strides, strides), pads, impl="auto")
  v = conv.init(jax.random.key(0), x)
  hlo = jax.jit(conv.apply).lower(v, x).as_text()
  assert ("convolution" in hlo) == (expected == "xla"), hlo


def test_penalty_form_matches_native_second_order_and_is_picked_by_size():
  """The gradient penalty's D in im2col form (runtime.penalty_conv_impl)
  gives the native form's penalty and parameter gradient; the smoke
  configs' size keeps the native form unless D normalises between its
  convolutions, the suite's takes im2col."""
  from facejax import runtime  # pylint: disable=g-import-not-at-top
  from facejax.models import stargan  # pylint: disable=g-import-not-at-top
  from facejax.train import steps  # pylint: disable=g-import-not-at-top
  x = jax.random.uniform(jax.random.key(1), (3, 16, 16, 3), minval=-1.)
  base = stargan.Discriminator(image_size=16, conv_dim=4, c_dim=2,
                               repeat_num=2, impl="xla")
  params = base.init(jax.random.key(0), x)["params"]
  def penalty_grad(impl):
    disc = base.clone(impl=impl)
    gp = lambda p: steps.gradient_penalty(
        lambda xh: disc.apply({"params": p}, xh)[0], x).mean()
    return jax.jit(jax.value_and_grad(gp))(params)
  (v_xla, g_xla), (v_col, g_col) = penalty_grad("xla"), penalty_grad("im2col")
  np.testing.assert_allclose(v_col, v_xla, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(g_col), jax.tree.leaves(g_xla)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  assert float(optax.global_norm(g_xla)) > 0
  assert runtime.penalty_conv_impl("auto", (16, 32, 32, 3), 8) == "auto"
  assert runtime.penalty_conv_impl("auto", (16, 128, 128, 3), 64) == "im2col"
  assert runtime.penalty_conv_impl("xla", (16, 128, 128, 3), 64) == "xla"
  # A D that normalises between its convolutions (HRFAE's) takes im2col
  # at every size.
  assert runtime.penalty_conv_impl("auto", (16, 32, 32, 3), 8,
                                   normalised=True) == "im2col"
  assert runtime.penalty_conv_impl("xla", (16, 32, 32, 3), 8,
                                   normalised=True) == "xla"


@pytest.mark.parametrize("window,strides,padding,size", [
    (3, 2, 1, 9), (3, 2, 1, 8), (2, 2, 0, 6), (3, 1, 1, 5)])
def test_max_pool_matches_flax_values_and_gradients(window, strides, padding,
                                                    size):
  from facejax.models.layers import max_pool  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  x = jax.random.normal(jax.random.key(0), (2, size, size, 3))
  pads = ((padding, padding), (padding, padding))
  ref = lambda x: nn.max_pool(x, (window,) * 2, (strides,) * 2, pads)
  new = lambda x: max_pool(x, (window,) * 2, (strides,) * 2, pads)
  np.testing.assert_array_equal(new(x), ref(x))
  w = jax.random.normal(jax.random.key(1), ref(x).shape)
  grad = lambda f: jax.grad(lambda x: jnp.sum(f(x) * w))(x)
  np.testing.assert_allclose(grad(new), grad(ref), rtol=1e-6, atol=1e-6)


def test_vgg_pooling_gradient_equals_flax_on_relu_ties():
  """VGG's pools (layers.max_pool) after a ReLU, where most windows tie
  at 0: the same gradient as nn.max_pool's, to the bit, so DEX and the
  age losses through a frozen VGG train as before."""
  from facejax.models.layers import max_pool  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  x = jax.nn.relu(jax.random.normal(jax.random.key(0), (2, 8, 8, 4)) - 0.7)
  w = jax.random.normal(jax.random.key(1), (2, 4, 4, 4))
  grad = lambda pool: jax.grad(lambda x: jnp.sum(pool(x) * w))(x)
  assert float(jnp.mean(x == 0)) > 0.5
  np.testing.assert_array_equal(
      grad(lambda x: max_pool(x, (2, 2), (2, 2), ((0, 0), (0, 0)))),
      grad(lambda x: nn.max_pool(x, (2, 2), (2, 2))))


def test_max_pool_gradient_goes_to_the_first_maximum_of_a_tie():
  from facejax.models.layers import max_pool  # pylint: disable=g-import-not-at-top
  x = jnp.zeros((1, 2, 2, 1))
  g = jax.grad(lambda x: jnp.sum(max_pool(x, (2, 2), (2, 2),
                                          ((0, 0), (0, 0)))))(x)
  np.testing.assert_array_equal(g[0, :, :, 0], [[1, 0], [0, 0]])


def test_cpu_xla_flags_route_convolutions_to_eigen():
  # conftest calls configure_runtime before the backend starts.
  from facejax import runtime  # pylint: disable=g-import-not-at-top
  assert runtime.cpu_native_conv_is_fast()
  # Shapes YNNPACK would take by default (small convs stay on Eigen anyway).
  x, k = jnp.ones((32, 28, 28, 64)), jnp.ones((3, 3, 64, 64))
  hlo = jax.jit(lambda x, k: jax.lax.conv_general_dilated(
      x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
                ).lower(x, k).compile().as_text()
  assert "convolution(" in hlo and "__ynn_fusion" not in hlo, hlo
