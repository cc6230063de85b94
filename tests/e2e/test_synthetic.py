"""Tests for facejax.data.synthetic: determinism, file layouts, and that the
labels are really drawn into the pixels."""

import os
import subprocess
import sys
from facejax.data import synthetic
from helpers import ROOT


_REPO = ROOT


def test_cli(tmp_path):
  out = tmp_path / 'cli'
  command = [sys.executable, '-m', 'launch.make_synthetic', '--layout=rafd',
             f'--out={out}', '--num=7', '--size=32']
  result = subprocess.run(command, cwd=_REPO, capture_output=True, text=True,
                          timeout=120, check=False)
  assert result.returncode == 0, result.stderr
  assert (out / synthetic.MARKER).is_file()
  assert len(os.listdir(out / 'train' / 'happy')) == 1
