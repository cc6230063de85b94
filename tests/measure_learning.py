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
    "regressor": "tests/e2e/test_train.py::"
                 "test_smoke_training_beats_the_mean_baseline",
    "dex": "tests/e2e/test_dex.py::test_smoke_training_beats_the_mean_baseline",
    "age_transformer": "tests/e2e/test_age_transformer.py::"
                       "test_edited_age_moves_toward_target",
    "stargan": "tests/e2e/test_stargan.py::"
               "test_translations_show_the_requested_attribute",
    "swinface": "tests/e2e/test_swinface.py::"
                "test_smoke_training_learns_recognition_and_analysis",
    "kinship": "tests/e2e/test_kinship.py::test_learning_on_held_out_families",
    "caricature": "tests/e2e/test_caricature.py::"
                  "test_learning_closes_domain_gap_and_keeps_identity",
}
ISA_FLAGS = {"native": "", "AVX2": "--xla_cpu_max_isa=AVX2"}

# Each test's learning assertions over its recorded values, written as the
# test writes them (keep the two in step): name -> (value, "<" or ">", bar,
# baseline). The baseline is what the bar
# is measured from (the mean predictor, chance, the untranslated input...);
# margins() reports how far the worst run clears the bar, against the
# spread of the runs (max - min: clearance / spread >= 1 means a run would
# have to land a whole observed spread below the worst one to fail) and
# against the bar's distance from the baseline (>= 1: the bar lies at most
# halfway between the baseline and the worst run).
_DIRS = ("photo2cari", "cari2photo")
CHECKS = {
    "regressor": lambda r: {
        "val MAE < 0.5 x mean predictor": (
            r["mae"], "<", r["bar"], 2 * r["bar"])},
    "dex": lambda r: {
        "val MAE < 0.5 x mean predictor": (
            r["mae"], "<", r["bar"], 2 * r["bar"])},
    "age_transformer": lambda r: {
        "DEX error < 0.85 x unedited": (
            r["err"], "<", 0.85 * r["unedited"], r["unedited"]),
        "DEX error < 0.85 x untrained G": (
            r["err"], "<", 0.85 * r["untrained"], r["untrained"]),
        "DEX age spread 20->60 > untrained + 8": (
            r["spread"], ">", max(8.0, r["spread_untrained"] + 8.0),
            r["spread_untrained"]),
        "corr(target, DEX age) > 0.15": (r["corr"], ">", 0.15, 0.0)},
    "stargan": lambda r: {
        "target found in translations > input + 0.25": (
            r["translated"], ">", r["untranslated"] + 0.25,
            r["untranslated"]),
        "attribute classifier > majority + 0.1": (
            r["clf_acc"], ">", r["clf_majority"] + 0.1, r["clf_majority"])},
    "swinface": lambda r: {
        "verification accuracy > 0.62": (
            r["verification_acc"], ">", 0.62, 0.5),
        "gender accuracy > majority + 0.2": (
            r["gender_acc"], ">", r["majority_gender_acc"] + 0.2,
            r["majority_gender_acc"]),
        "age MAE < 0.8 x mean predictor": (
            r["age_mae"], "<", 0.8 * r["mean_age_mae"], r["mean_age_mae"])},
    "kinship": lambda r: {
        "test accuracy > 0.58": (r["accuracy"], ">", 0.58, 0.5),
        "test AUC > max(0.7, pixels + 0.05)": (
            r["auc"], ">", max(0.7, r["pixel_auc"] + 0.05), r["pixel_auc"])},
    "caricature": lambda r: {
        "SphereFace accuracy > 5 x chance": (
            r["sphereface_acc"], ">", 5 * r["sphereface_chance"],
            r["sphereface_chance"]),
        **{f"{d} probe discriminability < step 0 - 0.15": (
            r[f"{d}_discriminability_1"], "<",
            r[f"{d}_discriminability_0"] - 0.15,
            r[f"{d}_discriminability_0"]) for d in _DIRS},
        **{f"{d} probe CE > 2 x step 0": (
            r[f"{d}_probe_ce_1"], ">", 2 * r[f"{d}_probe_ce_0"],
            r[f"{d}_probe_ce_0"]) for d in _DIRS},
        "photo2cari FID-small < 0.5 x step 0": (
            r["photo2cari_fid_small_1"], "<",
            0.5 * r["photo2cari_fid_small_0"], r["photo2cari_fid_small_0"]),
        "photo2cari FID-small < untranslated photos": (
            r["photo2cari_fid_small_1"], "<",
            r["photo2cari_fid_small_untranslated_1"],
            r["photo2cari_fid_small_0"]),
        **{f"{d} identity cos > 0.3": (
            r[f"{d}_id_cos_1"], ">", 0.3, r["real_mean_neg"])
           for d in _DIRS},
        **{f"{d} identity cos > real negatives + 0.1": (
            r[f"{d}_id_cos_1"], ">", r["real_mean_neg"] + 0.1,
            r["real_mean_neg"]) for d in _DIRS}},
}


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


def _grouped(log: str, entries):
  """({(test, name): {code path: [entry, ...]}}, code paths in log order)
  of the log's rows; `entries(row)` yields (name, entry) pairs."""
  by = collections.defaultdict(lambda: collections.defaultdict(list))
  paths = []
  for line in open(log):
    r = json.loads(line)
    isa = "AVX2" if "xla_cpu_max_isa=AVX2" in r["xla_flags"] else "native"
    if isa not in paths:
      paths.append(isa)
    for name, entry in entries(r):
      by[(r["test"], name)][isa].append(entry)
  return by, paths


def table(log: str) -> str:
  """Markdown: test, value, then min..max (n) per code path."""
  by, paths = _grouped(log, lambda r: (
      (k, (r["seed_offset"], v)) for k, v in r.items()
      if k not in ("test", "seed_offset", "xla_flags")))
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


def margins(log: str) -> str:
  """Markdown: each assertion's bar, range per code path and margins."""
  def entries(r):
    for name, (value, op, bar, base) in CHECKS[r["test"]](r).items():
      clear = (bar - value) if op == "<" else (value - bar)
      yield name, (value, bar, clear, abs(bar - base))
  by, paths = _grouped(log, entries)
  lines = ["| test | asserts | bar | " + " | ".join(
      f"{p} (runs)" for p in paths) + " | worst clears bar by | / spread |"
           " / (bar - baseline) |",
           "|---|---|---|" + "---|" * len(paths) + "---|---|---|"]
  for (test, name), per in by.items():
    every = [x for p in paths for x in per.get(p, [])]
    bars = [b for _, b, _, _ in every]
    bar = (f"{bars[0]:.3g}" if max(bars) - min(bars) < 1e-9 else
           f"{min(bars):.3g}..{max(bars):.3g}")
    cells = []
    for p in paths:
      v = [x for x, _, _, _ in per.get(p, [])]
      cells.append(f"{min(v):.3g}..{max(v):.3g} ({len(v)})" if v else "-")
    values = [x for x, _, _, _ in every]
    spread = max(values) - min(values)
    worst = min(every, key=lambda x: x[2])
    per_spread = worst[2] / spread if spread else float("inf")
    per_base = worst[2] / worst[3] if worst[3] else float("nan")
    lines.append(f"| {test} | {name} | {bar} | " + " | ".join(cells) +
                 f" | {worst[2]:.3g} | {per_spread:.1f} | {per_base:.2f} |")
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
  print()
  print(margins(args.log))


if __name__ == "__main__":
  main()
