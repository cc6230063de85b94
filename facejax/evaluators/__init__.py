"""Evaluation: metrics, reports and plots; tasks call in, never the reverse.

verification (ROC, AUC, TAR@FAR, best threshold: defined once), fid,
probe (a fresh probe discriminator), reports (Markdown/JSON reports and
matplotlib plots), image_grid and face_figure (pictures), and one module
per model's evaluation report or pictures (age, age_transformer,
caricature, kinship, stargan, swinface), and scaling (a config's
per-device memory and communication under a mesh, launch.scaling_plan).
"""

import importlib
import types

# The modules whose `report(run, state, split, out_dir) -> str` is a task's
# own evaluation report (launch.evaluate); other tasks get the generic
# table of their validation metrics. Keyed by config.task.
_REPORTS = {
    "age_transformer": "facejax.evaluators.age_transformer",
    "caricature": "facejax.evaluators.caricature",
    "kinship": "facejax.evaluators.kinship",
    "stargan": "facejax.evaluators.stargan",
    "swinface": "facejax.evaluators.swinface",
}


def report_module(task: str) -> types.ModuleType | None:
  """The evaluator module with `task`'s own report, or None."""
  name = _REPORTS.get(task)
  return importlib.import_module(name) if name else None
