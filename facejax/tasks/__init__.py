"""Task table: `config.task` -> module holding a `Task` class (lazy import)."""

import importlib

import ml_collections

from facejax import config_lib

TASKS = {
    "age_regression": "facejax.tasks.age_regressor",
    "dex": "facejax.tasks.dex",
    "age_transformer": "facejax.tasks.age_transformer",
    "stargan": "facejax.tasks.stargan",
    "attribute_classifier": "facejax.tasks.attribute_classifier",
    "swinface": "facejax.tasks.swinface",
    "kinship": "facejax.tasks.kinship",
    "caricature": "facejax.tasks.caricature",
    "sphereface": "facejax.tasks.sphereface",
}


def get(name: str):
  """The `Task` class (a facejax.tasks.base.Task) of task `name`."""
  if name not in TASKS:
    raise ValueError(f"config key task: unknown task {name!r}; "
                     f"choose one of {sorted(TASKS)}")
  return importlib.import_module(TASKS[name]).Task


def build(config: ml_collections.ConfigDict):
  """The task `config.task` names, built on `config` (validated first)."""
  config_lib.validate(config)
  return get(config.get("task"))(config)


def setup(config: ml_collections.ConfigDict, mesh=None):
  """`facejax.train.loop.Setup` of the task `config` names."""
  from facejax.train import loop  # pylint: disable=g-import-not-at-top
  return loop.Setup(build(config), config, mesh)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       allow_config_change: bool = False):
  """Trains the task `config` names in `workdir` (facejax.train.loop)."""
  from facejax.train import loop  # pylint: disable=g-import-not-at-top
  return loop.train_and_evaluate(build(config), config, workdir,
                                 allow_config_change)
