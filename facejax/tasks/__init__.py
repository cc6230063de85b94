"""Task table: `config.task` -> module holding a `Task` class (lazy import)."""

import importlib

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
  if name not in TASKS:
    raise ValueError(f"config key task: unknown task {name!r}; "
                     f"choose one of {sorted(TASKS)}")
  return importlib.import_module(TASKS[name]).Task
