r"""Measures every learning test's metrics over seeds and XLA:CPU code paths.

Runs the learning tests themselves (their own fixtures and assertions) once
per (seed offset, code path) under pytest, with FACEJAX_LEARNING_SEED set
(tests/helpers.learning_seed) and FACEJAX_LEARNING_LOG collecting what each
test measured, then prints one Markdown row per (test, value): its range on
each code path. A failing assertion does not stop the sweep: the values are
recorded before the test asserts.

  python tests/measure_learning.py --seeds=0,1,2 --isa=native,AVX2 \
      --log=runs/learning.jsonl

'native' lets XLA:CPU use every instruction set of the processor; 'AVX2'
adds --xla_cpu_max_isa=AVX2 to XLA_FLAGS (what an AVX2-only machine runs).
With --table_only the rows already in --log are tabulated, nothing is run.
"""

import argparse
import collections
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LEARNING_TESTS = {
    "regressor": "tests/test_train.py::"
                 "test_smoke_training_beats_the_mean_baseline",
    "dex": "tests/test_dex.py::test_smoke_training_beats_the_mean_baseline",
    "age_transformer": "tests/test_age_transformer.py::"
                       "test_edited_age_moves_toward_target",
    "stargan": "tests/test_stargan.py::"
               "test_translations_show_the_requested_attribute",
    "swinface": "tests/test_swinface.py::"
                "test_smoke_training_learns_recognition_and_analysis",
    "kinship": "tests/test_kinship.py::test_learning_on_held_out_families",
    "caricature": "tests/test_caricature.py::"
                  "test_learning_closes_domain_gap_and_keeps_identity",
}
ISA_FLAGS = {"native": "", "AVX2": "--xla_cpu_max_isa=AVX2"}


def run_once(tests, seed: int, isa: str, log: str) -> int:
  env = dict(os.environ, FACEJAX_LEARNING_SEED=str(seed),
             FACEJAX_LEARNING_LOG=os.path.abspath(log),
             XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " +
                        ISA_FLAGS[isa]).strip())
  cmd = [sys.executable, "-m", "pytest", "-q", "-s",
         *[LEARNING_TESTS[t] for t in tests]]
  t0 = time.time()
  out_path = os.path.splitext(log)[0] + f".seed{seed}.{isa}.out"
  with open(out_path, "w") as out:
    code = subprocess.call(cmd, cwd=ROOT, env=env, stdout=out,
                           stderr=subprocess.STDOUT)
  print(f"seed offset {seed}, {isa}: pytest exit {code} in "
        f"{time.time() - t0:.0f} s (output: {out_path})", flush=True)
  return code


def table(log: str) -> str:
  """Markdown: test, value, then min..max (n) per code path."""
  rows = [json.loads(line) for line in open(log)]
  by = collections.defaultdict(lambda: collections.defaultdict(list))
  paths = []
  for r in rows:
    isa = "AVX2" if "xla_cpu_max_isa=AVX2" in r["xla_flags"] else "native"
    if isa not in paths:
      paths.append(isa)
    for k, v in r.items():
      if k not in ("test", "seed_offset", "xla_flags"):
        by[(r["test"], k)][isa].append((r["seed_offset"], v))
  lines = ["| test | value | " + " | ".join(
      f"{p}: min..max (seeds)" for p in paths) + " |",
           "|---|---|" + "---|" * len(paths)]
  for (test, key), per in by.items():
    cells = []
    for p in paths:
      vals = sorted(per.get(p, []))
      if not vals:
        cells.append("-")
        continue
      v = [x for _, x in vals]
      cells.append(f"{min(v):.3f}..{max(v):.3f} ("
                   + ", ".join(f"{s}: {x:.3f}" for s, x in vals) + ")")
    lines.append(f"| {test} | {key} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--isa", default="native,AVX2")
  parser.add_argument("--tests", default=",".join(LEARNING_TESTS))
  parser.add_argument("--log", default="runs/learning.jsonl")
  parser.add_argument("--table_only", action="store_true")
  args = parser.parse_args()
  os.makedirs(os.path.dirname(os.path.abspath(args.log)), exist_ok=True)
  if not args.table_only:
    tests = args.tests.split(",")
    unknown = set(tests) - set(LEARNING_TESTS)
    if unknown:
      parser.error(f"unknown tests {sorted(unknown)}; known: "
                   f"{sorted(LEARNING_TESTS)}")
    for isa in args.isa.split(","):
      for seed in (int(s) for s in args.seeds.split(",")):
        run_once(tests, seed, isa, args.log)
  print(table(args.log))


if __name__ == "__main__":
  main()
