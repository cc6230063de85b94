r"""Writes a synthetic face data set in the layout of a real one.

  python -m launch.make_synthetic --layout=age_csv|celeba|rafd|fiw --out=DIR \
      [--num=N] [--size=S] [--seed=K] [--force]

Layouts (see facejax/data/synthetic/):
  age_csv: DIR/images/*.png + DIR/{train,valid,test}.csv (path,age,gender).
  celeba:  DIR/img_align_celeba/*.jpg + list_attr_celeba.txt,
           list_eval_partition.txt, identity_CelebA.txt.
  rafd:    DIR/{train,test}/<expression>/*.png.
  fiw:     DIR/images/F0001/MID1/*.jpg + families.csv + txt/ pair lists
           (--num is the number of families).

Nothing is written if DIR/SYNTHETIC_DONE.json shows the same arguments were
already used (--force regenerates).
"""

import json
import os

from absl import app
from absl import flags

from facejax.data import synthetic

_LAYOUT = flags.DEFINE_enum(
    'layout', None, list(synthetic.LAYOUTS), 'Data set layout to write.'
)
_OUT = flags.DEFINE_string('out', None, 'Output folder.')
_NUM = flags.DEFINE_integer(
    'num', None,
    'Number of images (fiw: number of families); the layout default if unset.',
)
_SIZE = flags.DEFINE_integer(
    'size', None, 'Image size in pixels; the layout default if unset.'
)
_SEED = flags.DEFINE_integer('seed', 0, 'Random seed.')
_FORCE = flags.DEFINE_bool(
    'force', False, 'Regenerate even if the folder is up to date.'
)
flags.mark_flags_as_required(['layout', 'out'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  kwargs = {'seed': _SEED.value}
  if _NUM.value is not None:
    kwargs['num_families' if _LAYOUT.value == 'fiw' else 'num'] = _NUM.value
  if _SIZE.value is not None:
    kwargs['size'] = _SIZE.value
  marker = os.path.join(_OUT.value, synthetic.MARKER)
  if _FORCE.value and os.path.exists(marker):
    os.remove(marker)
  out = synthetic.ensure(_LAYOUT.value, _OUT.value, **kwargs)
  with open(marker) as f:
    summary = json.load(f).get('summary')
  print(f'{out}: {summary}')


if __name__ == '__main__':
  app.run(main)
