"""The command-line tools as a user runs them (subprocesses)."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from facejax import runtime
from helpers import ROOT

pytestmark = pytest.mark.slow


def _run(args, check=True, cwd=ROOT):
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  env["PYTHONPATH"] = ROOT
  proc = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=600)
  if check and proc.returncode != 0:
    raise AssertionError(f"{args} failed ({proc.returncode}):\n"
                         f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
  return proc


@pytest.fixture(scope="module")
def trained(regressor_workdir, tmp_path_factory):
  """A copy of the session's trained smoke regressor (evaluate writes to it).

  The stdout of a full launch.train run is checked in test_resume.
  """
  workdir = str(tmp_path_factory.mktemp("launch") / "run")
  shutil.copytree(regressor_workdir, workdir)
  return workdir


def test_predict_on_a_real_photo_with_face_detection(trained, tmp_path):
  from skimage import data  # pylint: disable=g-import-not-at-top
  photo = str(tmp_path / "astronaut.jpg")
  Image.fromarray(data.astronaut()).save(photo)
  not_image = str(tmp_path / "notes.jpg")
  with open(not_image, "w") as f:
    f.write("this is not a picture")
  out = _run(["launch.predict", f"--workdir={trained}", photo, not_image],
             check=False)
  lines = dict(l.split("\t", 1) for l in out.stdout.strip().splitlines())
  age = float(lines[photo].split("\t")[0])
  assert 0.0 <= age <= 120.0
  assert "no face" not in lines[photo]  # the Haar cascade found her face
  assert "cannot decode image" in lines[not_image]
  assert out.returncode == 1 and "1 of 2 file(s)" in out.stderr


def test_evaluate_prints_decade_table_and_plot(trained):
  out = _run(["launch.evaluate", f"--workdir={trained}", "--split=test"])
  assert "| ages | count | MAE | bias |" in out.stdout
  result = json.load(open(os.path.join(trained, "eval_test.json")))
  assert result["count"] == 150 and np.isfinite(result["mae"])
  assert sum(r["count"] for r in result["decades"]) == 150
  assert Image.open(os.path.join(trained, "eval_test.png")).size[0] > 100


def test_benchmark_writes_table_and_json(age_data, tmp_path):
  out = _run(["launch.benchmark", "--config=configs/age_regressor.py:smoke",
              f"--config.data.root={age_data}", "--loader_batches=3",
              "--steps=3", "--warmup=1", f"--workdir={tmp_path}",
              "--measure_peak=false"])
  assert "| model | batch |" in out.stdout
  # 3 timed steps: too few for a settled median where the heap is kept.
  assert (("a median of fewer than 8 timed steps" in out.stdout)
          == runtime.keep_host_heap_applies()), out.stdout[:2000]
  row = json.loads(open(tmp_path / "benchmark.jsonl").readline())
  assert row["gflop_per_step"] > 0 and row["step_s_median"] > 0
  assert row["loss_finite"]
  # The input pipeline alone, on the smoke data, is timed beside the step.
  assert row["loader_images_per_s"] > 0, row


def test_every_benchmark_suite_row_builds_and_traces(tmp_path):
  """Each suite row's config, overrides, frozen nets and step at full size.

  A row that cannot build (once: the age transformer's row without an age
  estimator) otherwise shows only in an hour-long suite run. Run from a
  scratch directory so nothing is written into the checkout.
  """
  out = _run(["launch.benchmark", "--suite", "--check",
              f"--workdir={tmp_path}", "--measure_peak=false"], cwd=tmp_path)
  started = re.findall(r"^== (\w+): batch", out.stdout, re.M)
  traced = re.findall(r"^- (\w+): traced", out.stdout, re.M)
  assert len(started) >= 8 and traced == started, out.stdout[-3000:]
  assert "FAILED" not in out.stdout


def test_benchmark_suite_times_the_pytorch_twin(tmp_path):
  """The suite's side-by-side rows: same-process eager, and eager in a
  fresh process with default malloc (tiny sizes: the path, not the speed).
  """
  pytest.importorskip("torch")  # the optional parity extra; CI installs it
  _run(["launch.benchmark", "--suite", "--only=age_regressor",
        "--batch_size=2", "--image_size=32", "--steps=2", "--warmup=1",
        "--loader_batches=0", "--torch_compile=false",
        "--measure_peak=false", f"--workdir={tmp_path}"], cwd=tmp_path)
  (row,) = json.load(open(tmp_path / "suite.json"))
  twins = {t["mode"]: t for t in row["torch"]}
  # The fresh-process twin only where facejax changed the heap.
  modes = {"eager"} | ({"eager, default malloc"}
                       if runtime.keep_host_heap_applies() else set())
  assert set(twins) == modes, row["torch"]
  for t in twins.values():
    assert t["step_s_median"] > 0 and t["facejax_speedup"] > 0
  text = open(tmp_path / "suite.md").read()
  assert "**" in text  # the ratio lines
  # Which convolution forms the row ran (the suite runs with the fixed
  # rules: FACEJAX_AUTOTUNE=0).
  assert "age_regressor: convolution forms: the fixed rules" in text, text


def test_unknown_config_key_on_the_command_line(tmp_path):
  out = _run(["launch.train", "--config=configs/age_regressor.py:smoke",
              f"--workdir={tmp_path}", "--config.data.imagesize=64"],
             check=False)
  assert out.returncode != 0
  assert "imagesize" in out.stderr


def test_make_synthetic_cli(tmp_path):
  _run(["launch.make_synthetic", "--layout=age_csv", f"--out={tmp_path}",
        "--num=40", "--size=32"])
  header = open(tmp_path / "train.csv").readline().strip()
  assert header.startswith("path,age")
