"""MTCNN in JAX against an independent implementation, alignment templates,
and photo folders with bad files and non-faces.

The independent MTCNN is facenet-pytorch's (its own weight copies, its own
pyramid, crops and resampling), installed with the parity extras. Its one
torchvision need, batched NMS, is given here by a plain torch loop, since
PyPI's torchvision does not import beside torch 2.13.
"""

import os
import sys
from PIL import Image
from skimage import data as skdata

from helpers import ROOT


def test_detect_faces_cli_writes_rows_and_the_figure(tmp_path):
  """launch.detect_faces on a folder: a JSONL row per face and per problem,
  the picture, and exit status 1 for the unreadable file."""
  import json  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  Image.fromarray(skdata.astronaut()).save(tmp_path / "astronaut.png")
  (tmp_path / "empty.jpg").write_bytes(b"")
  out = subprocess.run(
      [sys.executable, "-m", "launch.detect_faces", str(tmp_path),
       f"--out={tmp_path / 'faces.jsonl'}", "--max_faces=1",
       f"--figure={tmp_path / 'faces.png'}"],
      cwd=ROOT,
      env=dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=""),
      capture_output=True, text=True, timeout=300)
  assert out.returncode == 1, out.stderr[-2000:]
  assert "1 of 2 file(s) could not be read" in out.stderr
  rows = [json.loads(l) for l in open(tmp_path / "faces.jsonl")]
  assert [(os.path.basename(r["file"]), r["face"]) for r in rows] == [
      ("astronaut.png", 0), ("empty.jpg", -1)]
  assert len(rows[0]["landmarks"]) == 5 and rows[0]["score"] > 0.99
  assert Image.open(tmp_path / "faces.png").size[0] > 500
