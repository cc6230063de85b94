"""Tests for facejax.data.synthetic: determinism, file layouts, and that the
labels are really drawn into the pixels."""

import csv
import json
import os
import numpy as np
from PIL import Image
import pytest
from facejax.data import synthetic
from facejax.data.synthetic import identities
from facejax.data.synthetic import writing


def _face(seed, identity=None, **overrides):
  rng = np.random.default_rng(seed)
  return synthetic.sample_face(rng, identity, **overrides)


def _files(root):
  out = {}
  for folder, _, names in os.walk(root):
    for name in names:
      path = os.path.join(folder, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, root)] = f.read()
  return out


def _small(image: np.ndarray, size: int = 32) -> np.ndarray:
  return np.asarray(
      Image.fromarray(image).resize((size, size), Image.BOX), np.float32)


def test_render_shape_dtype_and_determinism():
  face = _face(0)
  for size in (32, 64, 128):
    a = synthetic.render_face(face, size)
    assert a.shape == (size, size, 3) and a.dtype == np.uint8
  a = synthetic.render_face(face, 64, np.random.default_rng(5))
  b = synthetic.render_face(_face(0), 64, np.random.default_rng(5))
  np.testing.assert_array_equal(a, b)
  # Without an rng the image is a function of the face alone.
  np.testing.assert_array_equal(synthetic.render_face(face, 64),
                                synthetic.render_face(dict(face), 64))
  c = synthetic.render_face(_face(1), 64, np.random.default_rng(5))
  assert np.abs(a.astype(int) - c).mean() > 5


def test_face_labels_are_valid_and_json_friendly():
  for seed in range(40):
    face = _face(seed)
    json.dumps(face)
    assert 0 <= face['age'] <= 100
    assert face['gender'] in (0, 1)
    assert face['skin_group'] in (0, 1, 2, 3)
    assert face['hair_colour'] in synthetic.HAIR_COLOURS
    assert face['expression'] in synthetic.EXPRESSIONS
    assert face['smile'] == (face['expression'] == 'happy')
    attrs = synthetic.celeba_attributes(face)
    assert attrs.shape == (40,) and attrs.dtype == np.int8
    assert set(attrs.tolist()) <= {-1, 1}
    named = dict(zip(synthetic.CELEBA_ATTRIBUTES, attrs.tolist()))
    hair = [named[h] for h in synthetic.HAIR_COLOURS]
    assert hair.count(1) == 1
    assert named[face['hair_colour']] == 1
    assert named['Male'] == (1 if face['gender'] else -1)
    assert named['Young'] == (1 if face['age'] < 40 else -1)
    assert named['Smiling'] == (1 if face['smile'] else -1)


def test_constants():
  assert len(synthetic.CELEBA_ATTRIBUTES) == 40
  assert synthetic.CELEBA_ATTRIBUTES[0] == '5_o_Clock_Shadow'
  assert synthetic.CELEBA_ATTRIBUTES[-1] == 'Young'
  assert len(synthetic.EXPRESSIONS) == 7
  assert synthetic.RELATION_LABELS['non-kin'] == 0
  assert sorted(synthetic.RELATION_LABELS.values()) == list(range(12))


def test_overrides():
  face = _face(3, age=80.0, smile=True, eyeglasses=True)
  assert face['age'] == 80.0 and face['smile'] and face['eyeglasses']
  assert face['expression'] == 'happy' and face['hair_colour'] == 'Gray_Hair'
  assert not _face(3, smile=False)['smile']
  assert _face(3, expression='sad')['smile'] is False
  assert _face(3, hair_colour='Blond_Hair', age=20.0)['hair_colour'] == (
      'Blond_Hair')
  male = _face(4, synthetic.sample_identity(np.random.default_rng(0),
                                            gender=0), gender=1)
  assert male['gender'] == 1
  with pytest.raises(ValueError):
    _face(3, smile=True, expression='sad')
  with pytest.raises(ValueError):
    _face(3, no_such_field=1)
  # Overrides do not change the random stream: same photo, different age.
  young, old = _face(5, age=20.0), _face(5, age=70.0)
  assert young['bg_rgb'] == old['bg_rgb']
  assert young['expression'] == old['expression']


def test_inherit_identity():
  rng = np.random.default_rng(0)
  dad = synthetic.sample_identity(rng, gender=1, skin_group=3)
  mum = synthetic.sample_identity(rng, gender=0, skin_group=3)
  kids = [synthetic.inherit_identity(rng, [dad, mum]) for _ in range(20)]
  assert all(k['skin_group'] == 3 for k in kids)
  assert {k['gender'] for k in kids} == {0, 1}
  assert synthetic.inherit_identity(rng, [dad], gender=0)['gender'] == 0
  # Children sit near their parents' mean (relative to each gender's trait
  # range); strangers do not.
  keys = ('eye_spacing', 'eye_size', 'nose_length', 'jaw', 'face_width')

  def distance_to_parents(child):
    return sum(abs(identities.relative(child, k) -
                   0.5 * (identities.relative(dad, k) +
                          identities.relative(mum, k))) for k in keys)

  strangers = [synthetic.sample_identity(rng) for _ in range(20)]
  kid_d = np.mean([distance_to_parents(k) for k in kids])
  stranger_d = np.mean([distance_to_parents(s) for s in strangers])
  assert kid_d < 0.6 * stranger_d, (kid_d, stranger_d)


_STILL = dict(shift=[0.0, 0.0], rotation=0.0, scale=1.0, recede=0.0,
              bangs=False, eyeglasses=False, blur=0.0)


def test_hair_greys_with_age():
  # Top of the head (inside the hair cap of children and adults alike).
  for k in range(8):
    identity = synthetic.sample_identity(np.random.default_rng([11, k]))
    stats = []
    for age in (10.0, 80.0):
      image = synthetic.render_face(_face([12, k], identity, age=age,
                                          **_STILL), 128)
      hair = image[20:30, 56:72].astype(float)
      stats.append(hair.min(-1).mean())  # Whiteness: grey/white is high.
    assert stats[1] - stats[0] > 60, (identity['hair_natural'], stats)


def test_age_changes_face_of_same_person():
  for k in range(4):
    identity = synthetic.sample_identity(np.random.default_rng([13, k]))
    young, old = (synthetic.render_face(_face([14, k], identity, age=age,
                                              **_STILL), 64)
                  for age in (10.0, 80.0))
    assert np.abs(young.astype(float) - old).mean() > 15


def test_smile_is_in_the_mouth_region():
  for k in range(6):
    identity = synthetic.sample_identity(np.random.default_rng([15, k]))
    images = [synthetic.render_face(
        _face([16, k], identity, age=35.0, smile=smile, mouth_open=False,
              **_STILL), 128).astype(float) for smile in (True, False)]
    diff = np.abs(images[0] - images[1]).mean(-1)
    # The mouth sits around rows 75-90 of a 128 px face; the top rows hold
    # only hair and background.
    mouth, top = diff[72:96, 40:88].mean(), diff[:40].mean()
    assert mouth > 3.0 and top < 0.5, (mouth, top)


def test_expressions_differ():
  identity = synthetic.sample_identity(np.random.default_rng(17))
  images = [synthetic.render_face(
      _face(18, identity, age=30.0, expression=e, **_STILL), 64
  ).astype(float) for e in synthetic.EXPRESSIONS]
  for i in range(7):
    for j in range(i):
      face_region = np.abs(images[i] - images[j])[16:52, 16:48]
      assert face_region.mean() > 1.0, (synthetic.EXPRESSIONS[i],
                                        synthetic.EXPRESSIONS[j])


def test_nearest_centroid_separates_old_from_young():
  # Raw pixels mix age with identity (skin, hair colour, gender) and the
  # background; per-image, per-channel standardisation removes the overall
  # brightness and colour so that the centroid sees the age cues.
  def features(seed, count, low, high):
    rows = []
    for i in range(count):
      rng = np.random.default_rng([seed, i])
      face = synthetic.sample_face(rng, age=float(rng.uniform(low, high)))
      x = _small(synthetic.render_face(face, 64, rng))
      x = (x - x.mean((0, 1))) / (x.std((0, 1)) + 1e-3)
      rows.append(x.ravel())
    return np.stack(rows)

  young, old = features(20, 150, 0, 25), features(21, 150, 60, 100)
  test_young, test_old = features(22, 100, 0, 25), features(23, 100, 60, 100)
  c_young, c_old = young.mean(0), old.mean(0)

  def is_old(x):
    return (((x - c_old) ** 2).sum(1) < ((x - c_young) ** 2).sum(1))

  accuracy = (np.sum(~is_old(test_young)) + np.sum(is_old(test_old))) / 200
  assert accuracy >= 0.88, f'nearest-centroid accuracy {accuracy:.3f}'
  print(f'nearest-centroid old/young accuracy: {accuracy:.3f}')


def test_write_age_csv(tmp_path):
  out = tmp_path / 'age'
  summary = synthetic.write_age_csv(str(out), num=30, size=32, seed=1,
                                    age_range=(10, 70))
  assert (summary['train'], summary['valid'], summary['test']) == (24, 3, 3)
  seen = set()
  for split, count in (('train', 24), ('valid', 3), ('test', 3)):
    with open(out / f'{split}.csv') as f:
      header = f.readline().strip()
      f.seek(0)
      rows = list(csv.DictReader(f))
    assert header == 'path,age,gender'
    assert len(rows) == count
    for row in rows:
      assert row['path'].startswith('images/')
      assert (out / row['path']).is_file()
      assert 10 <= int(row['age']) <= 70
      assert row['gender'] in ('0', '1')
      seen.add(row['path'])
  assert len(seen) == 30
  image = Image.open(out / 'images' / '000000.png')
  assert image.size == (32, 32) and image.mode == 'RGB'


def test_writers_are_deterministic(tmp_path):
  for name in ('a', 'b'):
    synthetic.write_age_csv(str(tmp_path / name), num=6, size=32, seed=3)
  a, b = _files(tmp_path / 'a'), _files(tmp_path / 'b')
  assert a == b and len(a) == 9
  synthetic.write_age_csv(str(tmp_path / 'c'), num=6, size=32, seed=4)
  assert _files(tmp_path / 'c') != a


def test_worker_processes_write_the_same_files(tmp_path, monkeypatch):
  synthetic.write_fiw(str(tmp_path / 'serial'), num_families=6, size=32)
  monkeypatch.setattr(writing, '_pool_workers', lambda num_images: 2)
  synthetic.write_fiw(str(tmp_path / 'pool'), num_families=6, size=32)
  serial, pool = _files(tmp_path / 'serial'), _files(tmp_path / 'pool')
  assert serial == pool and len(serial) > 20


def test_write_celeba(tmp_path):
  out = tmp_path / 'celeba'
  summary = synthetic.write_celeba(str(out), num=20, size=40)
  assert summary['train'] + summary['val'] + summary['test'] == 20
  lines = (out / 'list_attr_celeba.txt').read_text().splitlines()
  assert int(lines[0]) == 20
  names = lines[1].split()
  assert names == list(synthetic.CELEBA_ATTRIBUTES)
  assert len(lines) == 22
  hair = [names.index(h) for h in synthetic.HAIR_COLOURS]
  for i, line in enumerate(lines[2:]):
    parts = line.split()
    assert parts[0] == f'{i + 1:06d}.jpg'
    values = [int(v) for v in parts[1:]]
    assert len(values) == 40 and set(values) <= {-1, 1}
    assert [values[h] for h in hair].count(1) == 1
    assert (out / 'img_align_celeba' / parts[0]).is_file()
  parts = [line.split() for line in
           (out / 'list_eval_partition.txt').read_text().splitlines()]
  assert [p[0] for p in parts] == [f'{i + 1:06d}.jpg' for i in range(20)]
  assert [p[1] for p in parts] == ['0'] * 16 + ['1'] * 2 + ['2'] * 2
  image = Image.open(out / 'img_align_celeba' / '000001.jpg')
  assert image.size == (40, 40) and image.format == 'JPEG'


def test_write_rafd(tmp_path):
  out = tmp_path / 'rafd'
  summary = synthetic.write_rafd(str(out), num=21, size=32)
  assert summary['num'] == 21 and summary['test'] == 7
  assert sorted(os.listdir(out)) == ['test', 'train']
  people = {}
  for split in ('train', 'test'):
    assert sorted(os.listdir(out / split)) == sorted(synthetic.EXPRESSIONS)
    for expression in synthetic.EXPRESSIONS:
      names = os.listdir(out / split / expression)
      assert len(names) == (2 if split == 'train' else 1)
      for name in names:
        people.setdefault(name.split('_')[0], set()).add(split)
  assert all(len(splits) == 1 for splits in people.values())


def test_write_fiw(tmp_path):
  out = tmp_path / 'fiw'
  summary = synthetic.write_fiw(str(out), num_families=8, size=32, seed=2)
  images = out / 'images'
  with open(out / 'families.csv') as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == ['family', 'mid', 'gender', 'skin_group', 'role']
  assert {r['family'] for r in rows} == {f'F{i:04d}' for i in range(1, 9)}
  for row in rows:
    folder = images / row['family'] / row['mid']
    assert 2 <= len(os.listdir(folder)) <= 4
    assert row['role'] in ('grandfather', 'grandmother', 'father', 'mother',
                           'son', 'daughter')
    male = row['role'] in ('grandfather', 'father', 'son')
    assert row['gender'] == ('1' if male else '0')
  roles = {(r['family'], r['mid']): r['role'] for r in rows}
  positive_names = set(synthetic.RELATION_LABELS) - {'non-kin'}
  families = {}
  for split in ('train', 'val', 'test'):
    lines = (out / 'txt' / f'{split}.txt').read_text().splitlines()
    assert lines
    kin = 0
    for k, line in enumerate(lines):
      index, p1, p2, relation, is_kin = line.split()
      assert int(index) == k
      assert (images / p1).is_file() and (images / p2).is_file()
      assert relation in positive_names
      f1, f2 = p1.split('/')[0], p2.split('/')[0]
      for fam in (f1, f2):
        assert families.setdefault(fam, split) == split
      if is_kin == '1':
        kin += 1
        assert f1 == f2
        elder = roles[(f1, p1.split('/')[1])]
        young = roles[(f2, p2.split('/')[1])]
        if relation in ('fd', 'fs', 'gfgd', 'gfgs'):
          assert elder in ('father', 'grandfather')
        if relation in ('fd', 'md', 'gfgd', 'gmgd', 'ss'):
          assert young in ('daughter', 'mother')
      else:
        assert is_kin == '0' and f1 != f2
    assert 2 * kin == len(lines)
    assert summary[f'{split}_pairs'] == len(lines)
  assert len(families) == 8
  triplets = (out / 'txt' / 'train_triplets.txt').read_text().splitlines()
  assert triplets
  for line in triplets:
    _, anchor, pos, neg, relation, label = line.split()
    assert label == '1' and relation in positive_names
    assert anchor.split('/')[0] == pos.split('/')[0] != neg.split('/')[0]
    assert families[neg.split('/')[0]] == 'train'
    assert all((images / p).is_file() for p in (anchor, pos, neg))


def test_write_dispatch_and_errors(tmp_path):
  with pytest.raises(ValueError, match='age_csv'):
    synthetic.write('nope', str(tmp_path))
  with pytest.raises(ValueError):
    synthetic.write_fiw(str(tmp_path), num_families=3)
  summary = synthetic.write('rafd', str(tmp_path / 'r'), num=7, size=32)
  assert summary['train'] == 7


def test_ensure(tmp_path, monkeypatch):
  out = str(tmp_path / 'ages')
  assert synthetic.ensure('age_csv', out, num=5, size=32) == out
  marker = os.path.join(out, synthetic.MARKER)
  with open(marker) as f:
    record = json.load(f)
  assert record['kwargs']['num'] == 5 and record['kwargs']['seed'] == 0

  calls = []
  real_write = synthetic.write

  def counting_write(*args, **kwargs):
    calls.append(kwargs)
    return real_write(*args, **kwargs)

  monkeypatch.setattr(synthetic, 'write', counting_write)
  # Same arguments, spelled with the defaults filled in: no regeneration.
  synthetic.ensure('age_csv', out, num=5, size=32, seed=0)
  assert not calls
  synthetic.ensure('age_csv', out, num=4, size=32)
  assert len(calls) == 1
  assert len(os.listdir(os.path.join(out, 'images'))) == 4  # No stale files.
  with open(marker) as f:
    assert json.load(f)['kwargs']['num'] == 4

  # A generation that dies leaves no marker, so the next call redoes it.
  def failing_write(*args, **kwargs):
    raise RuntimeError('killed')

  monkeypatch.setattr(synthetic, 'write', failing_write)
  with pytest.raises(RuntimeError):
    synthetic.ensure('age_csv', out, num=3, size=32)
  assert not os.path.exists(marker)
  monkeypatch.setattr(synthetic, 'write', counting_write)
  synthetic.ensure('age_csv', out, num=3, size=32)
  assert len(calls) == 2 and os.path.exists(marker)
