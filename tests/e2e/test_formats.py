"""Released age data sets read as unpacked (facejax/data/formats/).

Each fixture is written in the release's own layout by release_fixtures.py
from the data set's documentation, quirks included; the labels read must
equal the fixture's truth exactly, the split must be the release's own (or
identity-disjoint), a broken layout must give one error naming the file
and the format, and the models that use a format must take steps on it.
"""

import contextlib
import os
import numpy as np
import pytest
import release_fixtures as rf
from helpers import ROOT
from helpers import fast_compiles as xla_fast_compiles
from formats_helpers import FORMATS


@pytest.mark.slow
@pytest.mark.parametrize("name", FORMATS)
def test_regressor_trains_on_the_release_folder(releases, name, tmp_path,
                                                capsys):
  """Two steps and an eval of the smoke regressor on each release."""
  from facejax import config_lib  # pylint: disable=g-import-not-at-top
  from facejax import tasks  # pylint: disable=g-import-not-at-top
  root, _ = releases[name]
  config = config_lib.load_config(
      os.path.join(ROOT, "configs", "age_regressor.py:smoke"),
      {"data.format": name, "data.root": root, "data.max_age": 120.0,
       "total_steps": 2, "eval_every_steps": 2, "ckpt.every_steps": 2,
       "data.batch_size": 4, "data.eval_batch_size": 4,
       "data.split_fractions": (0.5, 0.25, 0.25),
       "mesh": (("data", 1), ("fsdp", 1), ("model", 1))})
  result = tasks.train_and_evaluate(config, str(tmp_path / "run"))
  assert np.isfinite(result["mae"]), result
  out = capsys.readouterr().out
  assert f"{name} at {root}:" in out  # the start-up line


@pytest.mark.slow
@pytest.mark.parametrize("model", ["dex", "age_transformer"])
def test_age_models_train_on_every_release_folder(releases, model, tmp_path,
                                                  capsys):
  """Two steps and an eval of the smoke DEX and the smoke age transformer
  (its balanced sampler over the release's ages; a random tiny estimator as
  its age loss) on each age release, one after the other.

  The age transformer's steps compile in fast-compile mode (wiring, not
  speed); DEX's are its session fixture's, from the persistent cache."""
  from facejax import config_lib  # pylint: disable=g-import-not-at-top
  from facejax.data.formats import base  # pylint: disable=g-import-not-at-top
  from facejax import tasks  # pylint: disable=g-import-not-at-top
  for name in FORMATS:
    root, _ = releases[name]
    base._announced.clear()  # Each run says what it read (once a process).
    overrides = {
        "data.format": name, "data.root": root, "data.max_age": 120.0,
        "total_steps": 2, "eval_every_steps": 2, "ckpt.every_steps": 2,
        "data.batch_size": 4, "data.eval_batch_size": 4,
        "data.split_fractions": (0.5, 0.25, 0.25),
        "mesh": (("data", 1), ("fsdp", 1), ("model", 1))}
    if model == "age_transformer":
      overrides.update({"stages": ((2, 32, 3.0),),
                        "age_loss.random_init": "tiny",
                        "data.balance.age_range": (0, 120)})
    config = config_lib.load_config(
        os.path.join(ROOT, "configs", f"{model}.py:smoke"), overrides)
    with (xla_fast_compiles() if model == "age_transformer"
          else contextlib.nullcontext()):
      result = tasks.train_and_evaluate(config, str(tmp_path / name))
    assert result and all(np.isfinite(v) for v in result.values()
                          if isinstance(v, float)), (name, result)
    out = capsys.readouterr().out
    assert f"{name} at {root}:" in out, (name, out[-2000:])


def _stargan_two_steps(tmp_path):
  """The StarGAN smoke config for a 2-step run on one device."""
  from facejax import config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.load_config(
      os.path.join(ROOT, "configs", "stargan.py:smoke"),
      {"total_steps": 2, "eval_every_steps": 2, "ckpt.every_steps": 2,
       "data.synthetic_dir": str(tmp_path / "synthetic"),
       "data.batch_size": 4, "eval.samples_per_set": 0,
       "mesh": (("data", 1), ("fsdp", 1), ("model", 1))})


@pytest.mark.slow
def test_stargan_trains_on_the_rafd_release(tmp_path, fast_compiles):
  from facejax import tasks  # pylint: disable=g-import-not-at-top
  rafd_root = tmp_path / "RaFD"
  rf.rafd(str(rafd_root))
  config = _stargan_two_steps(tmp_path)
  with config.unlocked():
    config.data.sets[0]["synthetic_num"] = 120
    config.data.sets[1]["root"] = str(rafd_root)
    config.data.sets[1]["classes"] = ()
  result = tasks.train_and_evaluate(config, str(tmp_path / "run"))
  assert all(np.isfinite(v) for v in result.values()
             if isinstance(v, float)), result


@pytest.mark.slow
def test_swinface_trains_on_four_releases(tmp_path, fast_compiles):
  """Stage 2 takes steps with MS1MV2-style RecordIO identities, UTKFace as
  the age set, CelebA's Drive layout (official partition) and RAF-DB."""
  from facejax import config_lib  # pylint: disable=g-import-not-at-top
  from facejax import tasks  # pylint: disable=g-import-not-at-top
  os.makedirs(tmp_path / "faces_emore")
  rf.insightface_rec(str(tmp_path / "faces_emore"), identities=12)
  rf.utkface(str(tmp_path / "utk"))
  rf.celeba_drive(str(tmp_path / "celeba"), n=40)
  rf.raf_db(str(tmp_path / "raf"))
  config = config_lib.load_config(
      os.path.join(ROOT, "configs", "swinface.py:smoke"),
      {"total_steps": 2, "eval_every_steps": 2, "ckpt.every_steps": 2,
       "data.identity.root": str(tmp_path / "faces_emore"),
       "data.identity.num_pairs": 8, "data.identity.valid_fraction": 0.3,
       "data.age.format": "utkface", "data.age.root": str(tmp_path / "utk"),
       "data.age.split_fractions": (0.5, 0.25, 0.25),
       "data.celeba.root": str(tmp_path / "celeba"),
       "data.celeba.partition": "official",
       "data.expression.root": str(tmp_path / "raf"),
       "mesh": (("data", 1), ("fsdp", 1), ("model", 1))})
  result = tasks.train_and_evaluate(config, str(tmp_path / "run"))
  for key in ("verification_acc", "age_mae", "expression_acc"):
    assert np.isfinite(result[key]), result


@pytest.mark.slow
def test_kinship_trains_on_fiw_with_rfiw_lists(tmp_path, fast_compiles):
  from facejax import config_lib  # pylint: disable=g-import-not-at-top
  from facejax import tasks  # pylint: disable=g-import-not-at-top
  members = rf.fiw(str(tmp_path / "fiw"), families=6)
  rf.rfiw_lists(str(tmp_path / "fiw"), members)
  config = config_lib.load_config(
      os.path.join(ROOT, "configs", "kinship.py:smoke"),
      {"total_steps": 2, "eval_every_steps": 2, "ckpt.every_steps": 2,
       "data.root": str(tmp_path / "fiw"), "data.batch_size": 4,
       "data.train_file": "train-pairs.csv", "data.val_file":
       "val-pairs.csv", "data.test_file": "test-pairs.csv",
       "mesh": (("data", 1), ("fsdp", 1), ("model", 1))})
  result = tasks.train_and_evaluate(config, str(tmp_path / "run"))
  assert np.isfinite(result["auc"]), result


@pytest.mark.slow
def test_stargan_trains_on_a_single_data_set(tmp_path, fast_compiles):
  """One CelebA set: no data-set mask (3 + c_dim generator input)."""
  from facejax import tasks  # pylint: disable=g-import-not-at-top
  config = _stargan_two_steps(tmp_path)
  with config.unlocked():
    config.data.sets = config.data.sets[:1]
    config.data.sets[0]["synthetic_num"] = 120
  result = tasks.train_and_evaluate(config, str(tmp_path / "run"))
  assert all(np.isfinite(v) for v in result.values()
             if isinstance(v, float)), result
  from facejax import runs  # pylint: disable=g-import-not-at-top
  setup, state, _ = runs.restore(str(tmp_path / "run"), which="latest",
                                 task_class=tasks.get)
  kernel = state.gen["conv0"]["kernel"]
  assert kernel.shape[2] == 3 + len(config.data.sets[0]["attributes"])
