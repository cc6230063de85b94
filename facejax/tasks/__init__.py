"""Task table: `config.task` -> module holding a `Task` class (lazy import)."""

import importlib

TASKS = {
    "age_regression": "facejax.tasks.age_regression",
}


def get(name: str):
  if name not in TASKS:
    raise ValueError(f"config key task: unknown task {name!r}; "
                     f"choose one of {sorted(TASKS)}")
  return importlib.import_module(TASKS[name]).Task
