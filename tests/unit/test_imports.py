"""Import directions (ARCHITECTURE.md), read statically from the source.

launch -> tasks -> (train, models, data, evaluators, convert) -> core
(config_lib, mesh, runtime, checkpoint, runs, optim, metrics, export):
nothing points back up. Every import counts, function-local ones too.
"""

import ast
import os

import pytest

from helpers import ROOT

PACKAGE = os.path.join(ROOT, "facejax")
CORE = ("config_lib", "mesh", "runtime", "checkpoint", "runs", "optim",
        "metrics", "export")


def _modules() -> list[str]:
  """Paths of facejax's modules, relative to the package ('train/loop.py')."""
  out = []
  for folder, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith(".py"):
        out.append(os.path.relpath(os.path.join(folder, name), PACKAGE))
  return sorted(out)


def _package_of(rel: str) -> str:
  """'train/loop.py' -> 'facejax.train'; '__init__.py' -> 'facejax'."""
  parts = ["facejax"] + rel[:-len(".py")].split(os.sep)
  return ".".join(parts[:-1])


def imported(rel: str) -> set[str]:
  """Every module `rel` imports (absolute names; `from a import b` gives
  both 'a' and 'a.b', since b may be a module)."""
  with open(os.path.join(PACKAGE, rel)) as f:
    tree = ast.parse(f.read(), filename=rel)
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        pkg = _package_of(rel).split(".")
        pkg = pkg[:len(pkg) - node.level + 1]
        base = ".".join(pkg + ([node.module] if node.module else []))
      names.add(base)
      names.update(f"{base}.{alias.name}" for alias in node.names)
  return names


def _hits(rel: str, prefixes: tuple[str, ...]) -> list[str]:
  return sorted(n for n in imported(rel)
                if any(n == p or n.startswith(p + ".") for p in prefixes))


MODULES = _modules()


def test_the_scan_sees_the_package():
  assert "train/loop.py" in MODULES and "runs.py" in MODULES
  assert "facejax.train.state" in imported("train/loop.py")
  assert "facejax.tasks" in imported("tasks/frozen.py")  # a local import


@pytest.mark.parametrize("rel", [m for m in MODULES if m.startswith("train")
                                 or m[:-len(".py")] in CORE])
def test_train_and_core_import_no_task(rel):
  assert not _hits(rel, ("facejax.tasks",)), rel


@pytest.mark.parametrize("rel", [m for m in MODULES
                                 if m.startswith("models" + os.sep)])
def test_models_know_no_files_training_or_tasks(rel):
  assert not _hits(rel, ("facejax.data", "facejax.train", "facejax.tasks",
                         "facejax.runs", "facejax.evaluators")), rel


@pytest.mark.parametrize("rel", MODULES)
def test_the_library_imports_no_launch_and_no_torch(rel):
  assert not _hits(rel, ("launch", "torch", "torchvision")), rel


# The bottom of the directions: what every other module may use.
BOTTOM = ("config_lib", "mesh", "runtime", "autotune", "checkpoint", "optim",
          "metrics")


@pytest.mark.parametrize("rel", [f"{m}.py" for m in BOTTOM])
def test_the_bottom_layer_imports_no_other_facejax_module(rel):
  allowed = tuple(f"facejax.{m}" for m in BOTTOM)
  others = [n for n in _hits(rel, ("facejax",))
            if n != "facejax" and not n.startswith(allowed)]
  assert not others, (rel, others)


@pytest.mark.parametrize("rel", [m for m in MODULES
                                 if m.startswith("evaluators" + os.sep)])
def test_evaluators_import_no_task(rel):
  assert not _hits(rel, ("facejax.tasks", "launch")), rel


@pytest.mark.parametrize("rel", MODULES)
def test_only_checkpoint_talks_to_orbax(rel):
  if rel != "checkpoint.py":
    assert not _hits(rel, ("orbax",)), rel


@pytest.mark.parametrize("rel", MODULES)
def test_only_serve_needs_the_serving_extras(rel):
  """fastapi and uvicorn are optional (requirements-serve.txt): training
  and the commands import neither, nor the server package."""
  if not rel.startswith("serve" + os.sep):
    assert not _hits(rel, ("fastapi", "starlette", "uvicorn",
                           "facejax.serve")), rel
