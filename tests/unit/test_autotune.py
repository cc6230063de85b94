"""facejax.autotune: convolution forms timed on the machine at hand, kept in
a per-machine decisions file, and used by the step that asked for them."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from facejax import autotune
from facejax import mesh as mesh_lib
from facejax import runtime
from facejax import tasks
from facejax.models import layers
from facejax.models import spectral_norm
from helpers import fast_compiles, smoke_config

SHAPE = autotune.conv_shape((2, 12, 12, 4), (3, 3), (1, 1),
                            ((1, 1), (1, 1)), 8, jnp.float32)


XLA_CONV = layers.conv_forms((1, 1), 8)["xla"]


def _slow_conv(x, kernel, strides, padding):
  """The XLA convolution computed 40 times: a form that must lose."""
  ys = [XLA_CONV(x * (1 + i * 1e-3), kernel, strides, padding)
        for i in range(40)]
  return sum(ys) / len(ys)


FORMS = {"xla": XLA_CONV, "slow": _slow_conv}
KEY = autotune.decision_key(SHAPE, FORMS)


@pytest.fixture
def tuning(tmp_path, monkeypatch):
  """Autotuning on (the suite runs with FACEJAX_AUTOTUNE=0), with its
  decisions file under tmp_path; off and forgotten afterwards."""
  monkeypatch.setenv("FACEJAX_AUTOTUNE", "1")
  monkeypatch.setattr(autotune, "cache_dir", lambda: str(tmp_path))
  autotune.forget()
  yield tmp_path
  autotune.enable(False)
  autotune.forget()


def _ask(shape=SHAPE, rule="slow", forms=FORMS):
  with autotune.recording() as rec:
    used = autotune.conv_form(shape, rule, forms)
  return used, rec


def test_fast_compile_mode_times_into_a_file_of_its_own(tuning):
  """Forms timed as unoptimised code (jax_disable_most_optimizations, as
  some tests run) never decide an optimised run's forms."""
  optimised = autotune.decisions_path()
  assert "disable_most_optimizations" not in autotune.machine()
  with fast_compiles():
    fast = autotune.decisions_path()
    assert autotune.machine()["disable_most_optimizations"] is True
  assert fast != optimised and os.path.dirname(fast) == str(tuning)
  assert autotune.decisions_path() == optimised


def test_the_fastest_form_is_chosen_timed_once_and_cached(tuning,
                                                          monkeypatch):
  assert autotune.enable(True)
  used, rec = _ask()
  assert used == "slow"  # not timed yet: the rule's form
  retrace, report = autotune.settle(rec)
  assert retrace and report.timed == 1
  assert report.forms == {KEY: "xla"}
  assert "1 xla" in report.summary() and "1 timed now" in report.summary()

  path = autotune.decisions_path()
  assert os.path.dirname(path) == str(tuning)
  with open(path) as f:
    saved = json.load(f)
  entry = saved["entries"][KEY]
  assert entry["form"] == "xla"
  assert entry["ms"]["slow"] > entry["ms"]["xla"] > 0
  assert saved["machine"]["cpu"] == autotune.machine()["cpu"]
  assert "xla_flags" in saved["machine"]

  # A new process (here: a forgotten table) reads the file and times
  # nothing: the decision comes back for the next trace.
  autotune.forget()
  monkeypatch.setattr(autotune, "_time_form",
                      lambda *a: pytest.fail("timed again"))
  assert autotune.enable(True)
  used, rec = _ask()
  assert used == "xla"
  retrace, report = autotune.settle(rec)
  assert not retrace and report.timed == 0
  assert "all from the cache" in report.summary()


def test_noise_does_not_flip_the_rule(tuning, monkeypatch):
  """Another form has to be more than 5 % faster to replace the rule's."""
  times = {"xla": 1.00, "slow": 0.97}
  monkeypatch.setattr(autotune, "_time_form",
                      lambda fn, shape, *_: times["xla" if fn is FORMS["xla"]
                                              else "slow"])
  assert autotune.enable(True)
  _, rec = _ask(rule="xla")
  retrace, report = autotune.settle(rec)
  assert not retrace and report.forms[KEY] == "xla"
  times["slow"] = 0.80
  shape = SHAPE._replace(features=16)
  _, rec = _ask(shape, rule="xla")
  assert autotune.settle(rec)[1].forms[
      autotune.decision_key(shape, FORMS)] == "slow"


def test_bf16_form_needs_the_cpus_instructions_and_a_real_lead(
    tuning, monkeypatch):
  """The bf16-operand form is offered only where the CPU multiplies bf16
  in hardware and the config allows it, and replaces the best f32 form
  only when it is more than 20 % and 0.5 ms faster."""
  cpu = runtime.cpu_description()
  for flags, has in ((["avx2", "avx512f"], False),
                     (["avx2", "avx512_bf16"], True), (["amx_bf16"], True)):
    monkeypatch.setattr(runtime, "cpu_description",
                        lambda flags=flags: {**cpu, "flags": flags})
    assert autotune.cpu_has_bf16_dots() == has
    assert autotune.enable(True) and autotune.bf16_offered() == has
    assert ("im2col_bf16" in layers.conv_forms((1, 1), 8)) == has
  assert autotune.enable(True, bf16=False) and not autotune.bf16_offered()
  assert "im2col_bf16" not in layers.conv_forms((1, 1), 8)
  autotune.enable(False, bf16=True)
  assert not autotune.bf16_offered()

  bf16_conv = layers._im2col_bf16_form  # pylint: disable=protected-access
  forms = {"xla": XLA_CONV, "im2col_bf16": bf16_conv}
  times = {"xla": 1.00, "im2col_bf16": 0.85}
  monkeypatch.setattr(autotune, "_time_form", lambda fn, shape, *_: times[
      "xla" if fn is XLA_CONV else "im2col_bf16"])
  assert autotune.enable(True)
  _, rec = _ask(rule="xla", forms=forms)
  retrace, report = autotune.settle(rec)
  assert not retrace
  assert report.forms[autotune.decision_key(SHAPE, forms)] == "xla"
  times["im2col_bf16"] = 0.75
  shape = SHAPE._replace(features=16)
  _, rec = _ask(shape, rule="xla", forms=forms)
  retrace, report = autotune.settle(rec)
  assert retrace
  assert report.forms[autotune.decision_key(shape, forms)] == "im2col_bf16"
  assert "bf16 operands, f32 sums" in report.summary()
  # 40 % faster but only 0.4 ms saved: not worth bf16's rounding.
  times.update(xla=1.0e-3, im2col_bf16=0.6e-3)
  shape = SHAPE._replace(features=32)
  _, rec = _ask(shape, rule="xla", forms=forms)
  assert autotune.settle(rec)[1].forms[
      autotune.decision_key(shape, forms)] == "xla"


def test_off_switches_use_the_fixed_rule(tuning, monkeypatch):
  assert not autotune.enable(False)
  assert autotune.conv_form(SHAPE, "slow", FORMS) == "slow"
  monkeypatch.setenv("FACEJAX_AUTOTUNE", "0")
  assert not autotune.enable(True)
  _, rec = _ask()
  assert autotune.settle(rec) == (False, None)
  assert not os.listdir(tuning)


def test_unreadable_decisions_file_is_named_and_timed_again(tuning, caplog):
  path = autotune.decisions_path()
  with open(path, "w") as f:
    f.write('{"version": 1, "entries": {"x": ')  # a killed writer's file
  with caplog.at_level("WARNING"):
    assert autotune.enable(True)
  assert any(path in r.getMessage() for r in caplog.records)
  _, rec = _ask()
  assert autotune.settle(rec)[1].timed == 1
  with open(path) as f:
    assert json.load(f)["entries"][KEY]["form"] == "xla"


def test_processes_take_process_zero_decisions(tuning, monkeypatch):
  """In a multi-process run the other processes time nothing and compile
  process 0's forms, read from JAX's distributed key-value store."""
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  store = {}

  class Client:
    def key_value_set(self, key, value):
      store[key] = value

    def blocking_key_value_get(self, key, timeout_ms):
      del timeout_ms
      return store[key]

  monkeypatch.setattr(distributed.global_state, "client", Client())
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(
      autotune, "_time_form",
      lambda fn, shape, *_: 1.0 if fn is FORMS["xla"] else 2.0)
  assert autotune.enable(True)
  monkeypatch.setattr(jax, "process_index", lambda: 0)
  _, rec = _ask()
  assert autotune.settle(rec)[1].forms == {KEY: "xla"}

  autotune.forget()  # process 1: its own (empty) table
  monkeypatch.setattr(autotune, "_agreements", 0)
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  monkeypatch.setattr(autotune, "_time_form",
                      lambda *a: pytest.fail("process 1 timed"))
  used, rec = _ask()
  assert used == "slow"
  retrace, report = autotune.settle(rec)
  assert retrace and report.forms == {KEY: "xla"}
  assert autotune.conv_form(SHAPE, "slow", FORMS) == "xla"


def test_setup_compiles_the_measured_forms(age_data, tuning, monkeypatch,
                                           fast_compiles):
  """Setup.compiled traces the step again with the forms the timing chose
  (here every convolution as im2col), and computes the same step."""
  del fast_compiles
  config = smoke_config(age_data)
  with config.unlocked():
    config.mesh = (("data", 1), ("fsdp", 1), ("model", 1))

  def step_of(setup):
    state = setup.init_state()
    batch = mesh_lib.shard_batch(setup.task.dummy_batch(setup.local_batch),
                                 setup.mesh)
    compiled = setup.compiled(setup.train_step, state, batch)
    _, metrics = compiled(state, batch, setup.frozen)
    return compiled.as_text(), jax.device_get(metrics)

  with config.unlocked():
    config.runtime.autotune = False
  fixed = tasks.setup(config)
  assert not fixed.autotune
  hlo_fixed, metrics_fixed = step_of(fixed)
  assert fixed.autotune_summary() == ""
  assert "convolution(" in hlo_fixed  # the rule keeps XLA's convs here

  monkeypatch.setattr(autotune, "_measure",
                      lambda shape, forms, rule: {"form": "im2col", "ms": {}})
  with config.unlocked():
    config.runtime.autotune = True
  tuned = tasks.setup(config)
  assert tuned.autotune
  hlo_tuned, metrics_tuned = step_of(tuned)
  assert "convolution(" not in hlo_tuned
  summary = tuned.autotune_summary()
  assert "im2col" in summary and "xla" not in summary, summary
  np.testing.assert_allclose(metrics_tuned["loss"], metrics_fixed["loss"],
                             rtol=1e-4)


def test_a_penalised_discriminator_times_its_convolutions_twice_differentiated(
    tuning):
  """With autotuning on, runtime.penalty_conv_impl marks D's convolutions
  (layers.Conv and spectral_norm's) to be timed through the penalty's
  second derivative; the fixed rule's choice stays their fallback."""
  del tuning
  assert autotune.enable(True)
  assert runtime.penalty_conv_impl("auto", (16, 128, 128, 3), 64) == (
      "penalty:im2col")
  assert runtime.penalty_conv_impl("auto", (16, 32, 32, 3), 8) == (
      "penalty:auto")
  assert runtime.penalty_conv_impl("xla", (16, 128, 128, 3), 64) == "xla"

  x = jax.random.normal(jax.random.key(1), (2, 10, 10, 3))
  plain = layers.Conv(4, (3, 3), padding=((1, 1), (1, 1)), impl="xla")
  marked = plain.clone(impl="penalty:im2col")
  params = plain.init(jax.random.key(0), x)
  sn_plain = spectral_norm.Conv(4, 4, 2, impl="xla")
  sn_marked = sn_plain.clone(impl="penalty:auto")
  sn_vars = sn_plain.init(jax.random.key(2), x)
  with autotune.recording() as rec:
    y = marked.apply(params, x)
    y_sn = sn_marked.apply(sn_vars, x)
  assert len(rec.asked) == 2
  assert all(" d2 [im2col,xla]" in k for k in rec.asked)
  assert sorted(a.used for a in rec.asked.values()) == ["im2col", "xla"]
  np.testing.assert_allclose(y, plain.apply(params, x), rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_allclose(y_sn, sn_plain.apply(sn_vars, x), rtol=1e-5,
                             atol=1e-5)
  _, report = autotune.settle(rec)
  assert report.timed == 2
  for key in rec.asked:
    assert set(autotune.decisions()[key]["ms"]) == {"xla", "im2col"}


def test_decisions_live_beside_a_local_compilation_cache_only(monkeypatch,
                                                              tmp_path):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  local = str(tmp_path / "jax")
  assert autotune.cache_dir(local) == os.path.join(local, "facejax_autotune")
  # A bucket is no local folder (and is shared across machine kinds).
  home = str(tmp_path / "xdg" / "facejax" / "autotune")
  assert autotune.cache_dir("gs://bucket/jax_cache") == home
  assert autotune.cache_dir("") == home
