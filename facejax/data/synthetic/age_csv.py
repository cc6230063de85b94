"""The synthetic age-regression set: `path,age,gender` CSVs (CACD, UTKFace)."""

from __future__ import annotations

import csv
import os
from typing import Sequence

from facejax.data.synthetic import identities
from facejax.data.synthetic import writing


def write_age_csv(
    out: str,
    num: int = 4000,
    size: int = 128,
    seed: int = 0,
    age_range: Sequence[float] = (0, 100),
) -> dict:
  """Writes an age-regression set (one new person per image).

  Layout: out/images/000000.png ...; out/{train,valid,test}.csv (80/10/10)
  with header `path,age,gender`, paths relative to out, integer ages drawn
  uniformly from age_range (both ends included).

  Args:
    out: output folder.
    num: number of images.
    size: image size in pixels.
    seed: random seed.
    age_range: (lowest, highest) age.

  Returns:
    Summary dict with the counts per split.
  """
  lo, hi = int(age_range[0]), int(age_range[1])
  if not 0 <= lo <= hi:
    raise ValueError(f'Bad age_range {age_range}.')
  os.makedirs(os.path.join(out, 'images'), exist_ok=True)
  rows = []
  with writing.Renderer(num) as renderer:
    for i in range(num):
      rng = writing.stream_rng(seed, 'age_csv', i)
      age = int(rng.integers(lo, hi, endpoint=True))
      face = identities.sample_face(rng, age=float(age))
      rel = f'images/{i:06d}.png'
      renderer.add(face, size, rng, os.path.join(out, rel))
      rows.append((rel, age, face['gender']))
  order = writing.stream_rng(seed, 'age_csv', writing.AUX, 0).permutation(num)
  counts = writing.split_counts(num, (0.8, 0.1, 0.1))
  summary = {'layout': 'age_csv', 'num': num}
  start = 0
  for split, count in zip(('train', 'valid', 'test'), counts):
    chosen = sorted(order[start:start + count].tolist())
    start += count
    with open(os.path.join(out, f'{split}.csv'), 'w', newline='') as f:
      writer = csv.writer(f, lineterminator='\n')
      writer.writerow(('path', 'age', 'gender'))
      writer.writerows(rows[i] for i in chosen)
    summary[split] = count
  return summary
