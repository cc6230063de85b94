"""Procedurally drawn faces whose pixels carry their labels.

The faces stand in for the real face data sets (age CSVs such as CACD or
UTKFace, CelebA, RaFD, FIW) in tests and smoke runs: every label is drawn
into the image strongly enough that a small CNN can learn it at 32-64 px
after a few hundred steps.

* identity: face shape (width/height ratio, jaw), eye spacing and size, nose
  length and width, mouth, skin tone (skin_group 0..3 sets the colour),
  natural hair colour, eye colour.
* age 0..100: children have a smaller head on narrower shoulders, with big,
  low-set eyes and a short nose (all linear in age up to 18); from ~18
  nasolabial folds, from ~28 forehead lines (count and darkness grow to
  ~95), crow's feet, eye bags, sagging jowls, cheek creases and age spots
  later; hair greys from ~33 (Gray_Hair from ~55) and is white by ~90;
  receding hairline or baldness from ~40 for those prone to it.
* gender: hair length, jaw, brow thickness, beards for men.
* smile, eyeglasses, bangs, seven expressions (eyebrows, eyes, mouth) and
  most of the 40 CelebA attributes.
* nuisance per image: background, clothes, a shift/scale/rotation of the
  head, brightness, contrast, noise, occasional blur.

Only numpy, PIL and absl.logging are used so that the module stays cheap to
import and picklable for data-loader worker processes. Everything is
deterministic given the seed: each image draws from its own numpy Generator
seeded by (seed, layout, index), so the files do not depend on generation
order.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
from typing import Any, Callable

from absl import logging

from facejax.data.synthetic.identities import BEARD_STYLES
from facejax.data.synthetic.identities import CELEBA_ATTRIBUTES
from facejax.data.synthetic.identities import EXPRESSIONS
from facejax.data.synthetic.identities import HAIR_COLOURS
from facejax.data.synthetic.identities import celeba_attributes
from facejax.data.synthetic.identities import inherit_identity
from facejax.data.synthetic.identities import sample_face
from facejax.data.synthetic.identities import sample_identity
from facejax.data.synthetic.drawing import render_face
from facejax.data.synthetic.age_csv import write_age_csv
from facejax.data.synthetic.celeba import write_celeba
from facejax.data.synthetic.fiw import RELATION_LABELS
from facejax.data.synthetic.fiw import write_fiw
from facejax.data.synthetic.rafd import write_rafd

__all__ = [
    'BEARD_STYLES', 'CELEBA_ATTRIBUTES', 'EXPRESSIONS', 'HAIR_COLOURS',
    'LAYOUTS', 'MARKER', 'RELATION_LABELS', 'celeba_attributes', 'ensure',
    'inherit_identity', 'render_face', 'sample_face', 'sample_identity',
    'write', 'write_age_csv', 'write_celeba', 'write_fiw', 'write_rafd',
]

LAYOUTS = ('age_csv', 'celeba', 'rafd', 'fiw')
MARKER = 'SYNTHETIC_DONE.json'

# Bump when the drawing or file layout changes so that ensure() regenerates.
_VERSION = 1


_WRITERS: dict[str, Callable[..., dict]] = {
    'age_csv': write_age_csv,
    'celeba': write_celeba,
    'rafd': write_rafd,
    'fiw': write_fiw,
}
# What each layout writes, so that a rewrite removes stale files.
_OUTPUTS = {
    'age_csv': ('images', 'train.csv', 'valid.csv', 'test.csv'),
    'celeba': ('img_align_celeba', 'list_attr_celeba.txt',
               'list_eval_partition.txt', 'identity_CelebA.txt'),
    'rafd': ('train', 'test'),
    'fiw': ('images', 'txt', 'families.csv'),
}


def write(layout: str, out: str, **kwargs) -> dict:
  """Writes a synthetic data set.

  Args:
    layout: one of LAYOUTS: 'age_csv', 'celeba', 'rafd' or 'fiw'.
    out: output folder.
    **kwargs: arguments of the layout's write_* function.

  Returns:
    The writer's summary dict.

  Raises:
    ValueError: unknown layout.
  """
  if layout not in _WRITERS:
    raise ValueError(
        f'Unknown layout {layout!r}; expected one of {", ".join(LAYOUTS)}.')
  return _WRITERS[layout](out, **kwargs)


def _jsonable(value: Any) -> Any:
  if isinstance(value, (tuple, list)):
    return [_jsonable(v) for v in value]
  if isinstance(value, dict):
    return {k: _jsonable(v) for k, v in value.items()}
  return value


def ensure(layout: str, out: str, **kwargs) -> str:
  """Writes the data set unless out already holds it.

  out/SYNTHETIC_DONE.json records the layout, the full argument set (defaults
  filled in) and the generator version; it is written last, so an
  interrupted generation is redone. A rewrite first removes what the layout
  writes, so no stale images stay behind.

  Args:
    layout: one of LAYOUTS.
    out: output folder.
    **kwargs: arguments of the layout's write_* function.

  Returns:
    out.
  """
  if layout not in _WRITERS:
    raise ValueError(
        f'Unknown layout {layout!r}; expected one of {", ".join(LAYOUTS)}.')
  bound = inspect.signature(_WRITERS[layout]).bind(out, **kwargs)
  bound.apply_defaults()
  args = _jsonable({k: v for k, v in bound.arguments.items() if k != 'out'})
  record = {'layout': layout, 'kwargs': args, 'version': _VERSION}
  marker = os.path.join(out, MARKER)
  if os.path.isfile(marker):
    try:
      with open(marker) as f:
        done = json.load(f)
    except (OSError, ValueError):
      done = {}
    if {k: done.get(k) for k in record} == record:
      logging.info('Synthetic %s data in %s is up to date (%s).', layout, out,
                   args)
      return out
    logging.info('Synthetic data in %s was made with %s; regenerating.', out,
                 {k: done.get(k) for k in record})
    os.remove(marker)
  for name in _OUTPUTS[layout]:
    path = os.path.join(out, name)
    if os.path.isdir(path):
      shutil.rmtree(path)
    elif os.path.exists(path):
      os.remove(path)
  logging.info('Writing synthetic %s data to %s (%s).', layout, out, args)
  os.makedirs(out, exist_ok=True)
  summary = write(layout, out, **kwargs)
  record['summary'] = summary
  with open(marker + '.tmp', 'w') as f:
    json.dump(record, f, indent=1, sort_keys=True)
  os.replace(marker + '.tmp', marker)
  logging.info('Wrote synthetic %s data to %s: %s', layout, out, summary)
  return out
