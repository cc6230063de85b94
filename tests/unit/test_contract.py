"""Every task implements the Task contract; the loop checks it at start-up."""

import inspect
import os

import pytest

from facejax import config_lib
from facejax import tasks
from facejax.tasks import base
from facejax.train import loop
from helpers import ROOT

# Tasks whose constructor reads no data (SwinFace and SphereFace count
# their identities in the data set): built on their smoke configs.
CHEAP = ("age_regression", "dex", "age_transformer", "stargan",
         "attribute_classifier", "kinship", "caricature")
CONFIG_FILE = {"age_regression": "age_regressor"}


@pytest.mark.parametrize("name", sorted(tasks.TASKS))
def test_every_task_subclasses_task_and_implements_it(name):
  cls = tasks.get(name)
  assert issubclass(cls, base.Task)
  assert not inspect.isabstract(cls), sorted(cls.__abstractmethods__)
  for member in loop.TASK_METHODS:
    assert callable(getattr(cls, member, None)), member
  # best_metric may depend on the config (caricature): set in __init__.
  if hasattr(cls, "best_metric"):
    best, mode = cls.best_metric
    assert isinstance(best, str) and mode in ("min", "max")
  assert cls.step_kinds and cls.progress_keys and cls.finite_keys


def test_the_loop_checks_what_the_base_class_declares():
  # Each abstract member is one the loop checks; each hook has a default.
  declared = set(base.Task.__abstractmethods__)
  assert declared <= set(loop.TASK_METHODS)
  for member in set(loop.TASK_METHODS) - declared:
    assert callable(getattr(base.Task, member)), member
  for attribute in loop.TASK_ATTRIBUTES:
    assert attribute in base.Task.__annotations__ or hasattr(base.Task,
                                                            attribute)


@pytest.mark.parametrize("name", CHEAP)
def test_smoke_config_builds_a_task_the_loop_accepts(name):
  config = config_lib.load_config(os.path.join(
      ROOT, "configs", f"{CONFIG_FILE.get(name, name)}.py:smoke"))
  task = tasks.build(config)
  assert isinstance(task, tasks.get(name))
  loop.check_task(task)


def _complete_duck_task():
  """A task written without the base class that has every member."""
  ns = {m: (lambda self, *a, **k: None) for m in loop.TASK_METHODS}
  ns.update(best_metric=("loss", "min"), progress_keys=("loss",),
            finite_keys=("loss",), step_kinds=({},))
  return ns


def test_check_task_names_the_missing_member():
  members = _complete_duck_task()
  loop.check_task(type("Complete", (), members)())
  del members["eval_step"]
  task = type("NoEval", (), members)()
  with pytest.raises(TypeError, match=r"NoEval.*missing eval_step"):
    loop.check_task(task)
  with pytest.raises(TypeError, match=r"missing eval_step"):
    loop.Setup(task, config_lib.load_config(
        os.path.join(ROOT, "configs", "age_regressor.py:smoke")))


def test_check_task_rejects_a_bad_best_metric():
  members = _complete_duck_task()
  members["best_metric"] = ("mae", "lowest")
  with pytest.raises(TypeError, match="best_metric"):
    loop.check_task(type("BadBest", (), members)())


def test_a_subclass_missing_a_required_method_cannot_be_built():
  class Half(base.Task):
    best_metric = ("loss", "min")

    def meta(self):
      return {}

  with pytest.raises(TypeError, match="abstract"):
    Half(None)
