"""The synthetic CelebA set, in the official file layout (40 attributes)."""

from __future__ import annotations

import os

import numpy as np

from facejax.data.synthetic import identities
from facejax.data.synthetic import writing


def _celeba_age(rng: np.random.Generator) -> float:
  # Celebrities: mostly young adults, some older, very few children.
  if rng.random() < 0.75:
    return round(float(rng.uniform(16.0, 45.0)), 1)
  return round(float(rng.uniform(45.0, 85.0)), 1)


def write_celeba(
    out: str, num: int = 2000, size: int = 128, seed: int = 0
) -> dict:
  """Writes a CelebA-like set in the official file layout.

  Files: out/img_align_celeba/000001.jpg ...; out/list_attr_celeba.txt (count
  line, names line, then `000001.jpg  1 -1 ...`); out/list_eval_partition.txt
  (`000001.jpg 0`; 0 train, 1 val, 2 test, 80/10/10 in file order, as in the
  official split); out/identity_CelebA.txt (`000001.jpg 1`). About five
  images per identity, in consecutive files.

  Args:
    out: output folder.
    num: number of images.
    size: image size in pixels.
    seed: random seed.

  Returns:
    Summary dict with the counts per partition.
  """
  image_dir = os.path.join(out, 'img_align_celeba')
  os.makedirs(image_dir, exist_ok=True)
  num_ids = max(1, num // 5)
  attr_lines, ident_lines, identity, current = [], [], None, -1
  with writing.Renderer(num) as renderer:
    for i in range(num):
      person = i * num_ids // num
      if person != current:
        identity = identities.sample_identity(
            writing.stream_rng(seed, 'celeba', 1, person))
        current = person
      rng = writing.stream_rng(seed, 'celeba', 0, i)
      face = identities.sample_face(rng, identity, age=_celeba_age(rng))
      name = f'{i + 1:06d}.jpg'
      renderer.add(face, size, rng, os.path.join(image_dir, name))
      values = ' '.join(f'{v:2d}' for v in identities.celeba_attributes(face))
      attr_lines.append(f'{name} {values}\n')
      ident_lines.append(f'{name} {person + 1}\n')
  with open(os.path.join(out, 'list_attr_celeba.txt'), 'w') as f:
    f.write(f'{num}\n')
    f.write(' '.join(identities.CELEBA_ATTRIBUTES) + '\n')
    f.writelines(attr_lines)
  counts = writing.split_counts(num, (0.8, 0.1, 0.1))
  with open(os.path.join(out, 'list_eval_partition.txt'), 'w') as f:
    i = 0
    for part, count in enumerate(counts):
      for _ in range(count):
        f.write(f'{i + 1:06d}.jpg {part}\n')
        i += 1
  with open(os.path.join(out, 'identity_CelebA.txt'), 'w') as f:
    f.writelines(ident_lines)
  return {'layout': 'celeba', 'num': num, 'identities': num_ids,
          'train': counts[0], 'val': counts[1], 'test': counts[2]}
