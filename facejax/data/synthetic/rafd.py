"""The synthetic RaFD set: every person in all seven expressions."""

from __future__ import annotations

import os

from facejax.data.synthetic import identities
from facejax.data.synthetic import writing


def write_rafd(
    out: str, num: int = 700, size: int = 128, seed: int = 0
) -> dict:
  """Writes a RaFD-like expression set.

  Every person is photographed with all 7 EXPRESSIONS, so the classes are
  balanced; people are split 90/10 into out/train/<expression>/<id>.png and
  out/test/<expression>/<id>.png (no person in both), with <id> =
  <person>_<shot>.

  Args:
    out: output folder.
    num: number of images (rounded down to a multiple of 7, at least 7).
    size: image size in pixels.
    seed: random seed.

  Returns:
    Summary dict with the image counts per split.
  """
  people = max(1, num // len(identities.EXPRESSIONS))
  test_people = 0 if people < 2 else max(1, int(round(0.1 * people)))
  order = writing.stream_rng(seed, 'rafd', writing.AUX, 0).permutation(people)
  test = set(order[:test_people].tolist())
  for split in ('train', 'test'):
    for expression in identities.EXPRESSIONS:
      os.makedirs(os.path.join(out, split, expression), exist_ok=True)
  counts = {'train': 0, 'test': 0}
  with writing.Renderer(people * len(identities.EXPRESSIONS)) as renderer:
    for person in range(people):
      rng = writing.stream_rng(seed, 'rafd', person)
      identity = identities.sample_identity(rng)
      age = round(float(rng.uniform(8.0, 70.0)), 1)
      split = 'test' if person in test else 'train'
      for shot, expression in enumerate(identities.EXPRESSIONS):
        shot_rng = writing.stream_rng(seed, 'rafd', person, shot)
        # RaFD is posed and mostly without glasses: keep the face readable.
        face = identities.sample_face(
            shot_rng, identity, age=age, expression=expression,
            eyeglasses=bool(person % 10 == 9), blur=0.0)
        path = os.path.join(out, split, expression,
                            f'{person:04d}_{shot}.png')
        renderer.add(face, size, shot_rng, path)
        counts[split] += 1
  return {'layout': 'rafd', 'num': people * len(identities.EXPRESSIONS),
          'people': people, **counts}
