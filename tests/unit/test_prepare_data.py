"""Tests for face detection, launch.prepare_data and tfds_prepared."""

import csv
import os
import pickle

from absl import flags
from absl.testing import flagsaver
import numpy as np
from PIL import Image
import pytest
import skimage.data

from facejax.data.faces import haar
from facejax.data import tfds_prepared
from facejax.data import prepare
from facejax.data import prepare_scan
from launch import prepare_data


@pytest.fixture(scope='module')
def astronaut() -> np.ndarray:
  return skimage.data.astronaut()


def _read_csv(path: str) -> list[dict[str, str]]:
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def _save(path: str, array: np.ndarray) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path)


def _blob(value: int, shape=(40, 50, 3)) -> np.ndarray:
  """A flat image whose colour identifies it after a lossy round trip."""
  return np.full(shape, value, np.uint8)


# Face detection and cropping.


def test_detects_the_astronauts_face(astronaut):
  boxes = haar.FaceDetector().detect(astronaut)
  assert len(boxes) == 1
  x0, y0, x1, y1 = boxes[0]
  # Her face is around x 150-290, y 50-200 of the 512x512 photo.
  assert 150 <= x0 < x1 <= 290
  assert 40 <= y0 < y1 <= 256  # Upper half.
  assert 60 <= x1 - x0 <= 160


def test_multiple_faces_policy(astronaut):
  two = np.concatenate([astronaut, astronaut], axis=1)
  crop, n = haar.FaceDetector().detect_and_crop(two, size=32)
  assert (crop, n) == (None, 2)
  detector = haar.FaceDetector(multiple_faces='largest')
  crop, n = detector.detect_and_crop(two, size=32)
  assert n == 2 and crop.shape == (32, 32, 3)
  # The cascade is dropped when pickled and reloaded on use.
  clone = pickle.loads(pickle.dumps(detector))
  assert len(clone.detect(astronaut)) == 1


def test_crop_face_pads_at_the_border():
  image = np.arange(10 * 10 * 3, dtype=np.uint8).reshape(10, 10, 3)
  # Box 4x4 at the top-left corner, 25% margin per side: an 6x6 window
  # centred on (2, 2), i.e. rows/cols -1..4, one pixel outside the image.
  box = (0, 0, 4, 4)
  assert haar.square_box(box, 0.25) == (-1, -1, 5, 5)
  crop = haar.crop_face(image, box, margin=0.25, pad_mode='edge')
  assert crop.shape == (6, 6, 3)
  np.testing.assert_array_equal(crop[1:, 1:], image[:5, :5])
  np.testing.assert_array_equal(crop[0, 1:], image[0, :5])  # Edge repeated.
  np.testing.assert_array_equal(crop[1:, 0], image[:5, 0])
  black = haar.crop_face(image, box, margin=0.25, pad_mode='constant')
  assert not black[0].any() and not black[:, 0].any()
  np.testing.assert_array_equal(black[1:, 1:], image[:5, :5])
  # Bottom-right corner, bigger margin, resized.
  crop = haar.crop_face(image, (7, 6, 10, 9), margin=0.5, size=4)
  assert crop.shape == (4, 4, 3) and crop.dtype == np.uint8
  # A window inside the image is a plain slice.
  inside = haar.crop_face(image, (3, 3, 7, 7), margin=0.0)
  np.testing.assert_array_equal(inside, image[3:7, 3:7])


# launch.prepare_data + tfds_prepared.


@pytest.fixture
def cacd_src(tmp_path, astronaut) -> str:
  src = tmp_path / 'cacd'
  src.mkdir()
  Image.fromarray(astronaut).save(src / '35_Eileen_Collins_0001.jpg')
  blank = _blob(128, (300, 300, 3))
  Image.fromarray(blank).save(src / '40_Grey_Blank_0001.jpg')
  (src / '50_Broken_File_0001.jpg').write_bytes(b'\xff\xd8\xff\xe0broken' * 9)
  return str(src)


def test_cacd_cli_crops_reports_and_writes_tfds(cacd_src, tmp_path, capsys):
  out = str(tmp_path / 'out')
  if not flags.FLAGS.is_parsed():
    # Never let absl parse pytest's argv.
    flags.FLAGS.mark_as_parsed()
  with flagsaver.flagsaver(
      layout='cacd', src=cacd_src, out=out, size=128, margin=0.4
  ):
    prepare_data.main(['prepare_data'])
  summary = capsys.readouterr().out
  assert 'kept 1, no_face 1, multiple_faces 0, unreadable 1' in summary
  assert 'tfds_prepared.load(' in summary

  report = {r['path']: r['reason'] for r in _read_csv(
      os.path.join(out, 'prepare_report.csv'))}
  assert report == {
      '40_Grey_Blank_0001.jpg': 'no_face',
      '50_Broken_File_0001.jpg': 'unreadable',
  }
  rows = {}
  for split in ('train', 'valid', 'test'):
    for row in _read_csv(os.path.join(out, f'{split}.csv')):
      rows[row['path']] = (split, row['age'])
  assert list(rows) == ['images/35_Eileen_Collins_0001.jpg']
  split, age = rows['images/35_Eileen_Collins_0001.jpg']
  # Split by person by default: all of Eileen Collins on one side.
  assert split == prepare_scan.hash_split('Eileen_Collins')
  assert float(age) == 35

  crop = np.asarray(
      Image.open(os.path.join(out, 'images/35_Eileen_Collins_0001.jpg')))
  assert crop.shape == (128, 128, 3)
  # The crop is centred on her face: found again, in the middle, and
  # filling about 1 / (1 + 2 * 0.4) of the side.
  (x0, y0, x1, y1), = haar.FaceDetector().detect(crop)
  assert abs((x0 + x1) / 2 - 64) < 16 and abs((y0 + y1) / 2 - 64) < 16
  assert 45 <= x1 - x0 <= 100

  source = tfds_prepared.load(os.path.join(out, 'tfds'), split)
  source = pickle.loads(pickle.dumps(source))  # As grain workers do.
  assert len(source) == 1
  example = source[0]
  assert example['image'].shape == (128, 128, 3)
  assert example['image'].dtype == np.uint8
  assert example['age'].dtype == np.float32 and example['age'] == 35.0
  assert example['path'] == 'images/35_Eileen_Collins_0001.jpg'
  # Stored byte for byte: same pixels as the written JPEG.
  np.testing.assert_array_equal(example['image'], crop)


def test_bad_csv_errors_name_file_and_line(tmp_path):
  src = tmp_path / 'src'
  src.mkdir()
  _save(str(src / 'a.jpg'), _blob(10))
  bad_header = src / 'header.csv'
  bad_header.write_text('file,age\na.jpg,3\n')
  with pytest.raises(prepare_scan.InputError, match=r'header.csv:1: .*path'):
    prepare_scan.scan('cacd', str(src), str(bad_header), 'file')
  bad_age = src / 'ages.csv'
  bad_age.write_text('path,age\na.jpg,3\nb.jpg,old\n')
  with pytest.raises(prepare_scan.InputError, match=r"ages.csv:3: age 'old'"):
    prepare_scan.scan('cacd', str(src), str(bad_age), 'file')
  with pytest.raises(FileNotFoundError, match='not a prepared'):
    tfds_prepared.load(str(src), 'train')


def test_celeba_round_trip(tmp_path):
  src = tmp_path / 'celeba'
  names = ['Smiling', 'Young', 'Male']
  attrs = {
      '000001.jpg': [1, -1, 1],
      '000002.jpg': [-1, 1, -1],
      '000003.jpg': [1, 1, -1],
      '000004.jpg': [-1, -1, 1],
  }
  partition = {'000001.jpg': 0, '000002.jpg': 0, '000003.jpg': 1,
               '000004.jpg': 2, '000009.jpg': 0}
  for i, name in enumerate(attrs):
    _save(str(src / 'img_align_celeba' / name), _blob(40 * (i + 1)))
  lines = [str(len(attrs) + 1), ' '.join(names)]
  lines += [f'{n} ' + ' '.join(f'{v:2d}' for v in a) for n, a in attrs.items()]
  lines.append('000009.jpg  1  1  1')  # Listed, but the file is missing.
  (src / 'list_attr_celeba.txt').write_text('\n'.join(lines) + '\n')
  (src / 'list_eval_partition.txt').write_text(
      ''.join(f'{n} {p}\n' for n, p in partition.items()))
  out = str(tmp_path / 'out')

  result = prepare.run(
      'celeba', str(src), out, prepare.Options(detect=False, size=32))
  assert result['counts']['kept'] == 4 and result['counts']['missing'] == 1

  with open(os.path.join(out, 'list_attr_celeba.txt')) as f:
    out_lines = f.read().splitlines()
  assert out_lines[0] == '4' and out_lines[1].split() == names
  assert {l.split()[0]: [int(v) for v in l.split()[1:]]
          for l in out_lines[2:]} == attrs
  with open(os.path.join(out, 'list_eval_partition.txt')) as f:
    assert dict(l.split() for l in f) == {
        n: str(p) for n, p in partition.items() if n in attrs}
  image = Image.open(os.path.join(out, 'img_align_celeba', '000003.jpg'))
  assert image.size == (32, 32)

  expected = {'train': ['000001.jpg', '000002.jpg'], 'val': ['000003.jpg'],
              'test': ['000004.jpg']}
  for split, files in expected.items():
    source = tfds_prepared.load(out, split)
    assert source.attribute_names == names
    assert len(source) == len(files)
    for i, name in enumerate(files):
      example = source[i]
      assert example['path'] == f'img_align_celeba/{name}'
      assert example['image'].shape == (32, 32, 3)
      assert example['attributes'].dtype == np.int8
      np.testing.assert_array_equal(
          example['attributes'], (np.array(attrs[name]) > 0).astype(np.int8))


def test_rafd_round_trip(tmp_path):
  src = tmp_path / 'rafd'
  files = {
      'train/happy/a.jpg': 50, 'train/sad/b.png': 100,
      'train/angry/c.jpg': 150, 'test/happy/d.jpg': 200,
  }
  for rel, value in files.items():
    _save(str(src / rel), _blob(value))
  (src / 'train' / 'sad' / 'broken.jpg').write_bytes(b'nope')
  out = str(tmp_path / 'out')

  result = prepare.run(
      'rafd', str(src), out, prepare.Options(detect=False, size=24))
  assert result['counts'] == {
      'kept': 4, 'unreadable': 1, 'no_face': 0, 'multiple_faces': 0}
  for rel in files:  # The folder tree is copied with the resized images.
    assert Image.open(os.path.join(out, rel)).size == (24, 24)

  train = tfds_prepared.load(out, 'train')
  assert train.class_names == ['angry', 'happy', 'sad']
  got = {}
  for i in range(len(train)):
    example = train[i]
    got[example['path']] = train.class_names[example['label']]
    value = files[example['path']]
    assert abs(int(example['image'].mean()) - value) <= 2
  assert got == {'train/happy/a.jpg': 'happy', 'train/sad/b.png': 'sad',
                 'train/angry/c.jpg': 'angry'}
  test = tfds_prepared.load(out, 'test')
  assert len(test) == 1 and test.class_names[test[0]['label']] == 'happy'


def test_fiw_round_trip(tmp_path):
  src = tmp_path / 'fiw'
  _save(str(src / 'F0001' / 'MID1' / 'P1.jpg'), _blob(60))
  _save(str(src / 'F0001' / 'MID2' / 'P2.jpg'), _blob(90))
  _save(str(src / 'F0023' / 'MID3' / 'P5.jpg'), _blob(120))
  out = str(tmp_path / 'out')
  prepare.run(
      'fiw', str(src), out, prepare.Options(detect=False, size=16))
  source = tfds_prepared.load(out, 'train')
  got = {source[i]['path']: (int(source[i]['family']), int(source[i]['mid']))
         for i in range(len(source))}
  assert got == {'F0001/MID1/P1.jpg': (1, 1), 'F0001/MID2/P2.jpg': (1, 2),
                 'F0023/MID3/P5.jpg': (23, 3)}


def test_cacd_names_default_to_a_person_disjoint_split(tmp_path):
  src = tmp_path / 'src'
  for person in ('Aaron_Johnson', 'Mary_Kate_Olsen', 'Bill_Pullman',
                 'Jean-Claude_Van_Damme', 'Adele', 'Chris_Pine',
                 'Ed_Harris', 'Renee_Olstead'):
    for k in range(4):
      _save(str(src / f'{20 + k}_{person}_{k + 1:04d}.jpg'), _blob(k * 20))
  out = str(tmp_path / 'out')
  result = prepare.run('cacd', str(src), out,
                       prepare.Options(detect=False, size=16),
                       write_tfds=False)
  assert result['counts']['kept'] == 32
  where = {}
  for split in ('train', 'valid', 'test'):
    for row in _read_csv(os.path.join(out, f'{split}.csv')):
      person = os.path.basename(row['path']).split('_', 1)[1].rsplit('_', 1)[0]
      where.setdefault(person, set()).add(split)
  assert len(where) == 8
  assert all(len(s) == 1 for s in where.values()), where


def test_utkface_names_are_not_read_as_cacd(tmp_path):
  src = tmp_path / 'src'
  for i in range(4):
    _save(str(src / f'{25 + i}_{i % 2}_{i}_2017011617452512{i}.jpg.chip.jpg'),
          _blob(i * 40))
  with pytest.raises(prepare_scan.InputError, match=r'named like UTKFace.*'
                     r'--layout=utkface'):
    prepare.run('cacd', str(src), str(tmp_path / 'out'),
                prepare.Options(detect=False, size=16),
                write_tfds=False)
  out = str(tmp_path / 'out2')
  result = prepare.run('utkface', str(src), out,
                       prepare.Options(detect=False, size=16),
                       write_tfds=False)
  assert result['counts']['kept'] == 4
  ages = sorted(float(r['age']) for split in ('train', 'valid', 'test')
                for r in _read_csv(os.path.join(out, f'{split}.csv')))
  assert ages == [25.0, 26.0, 27.0, 28.0]


def test_cacd_aligned_to_a_model_template(cacd_src, tmp_path, astronaut):
  """--align=arcface_112: the kept face is the similarity warp of its five
  MTCNN landmarks onto the ArcFace template. Detected again on the crop
  (padded into a larger canvas), the landmarks are where the warp put them
  (measured 0.3-0.8 px; bar 3) and within 8 px of the template (the
  least-squares residual of her face against the mean face: 6.7 px)."""
  from facejax.data.faces import align  # pylint: disable=g-import-not-at-top
  from facejax.data.faces import mtcnn  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / 'out')
  result = prepare.run(
      'cacd', cacd_src, out,
      prepare.Options(align='arcface_112', size=112))
  counts = result['counts']
  assert (counts['kept'], counts['no_face'], counts['unreadable']) == (
      1, 1, 1), counts
  crop = np.asarray(Image.open(
      os.path.join(out, 'images/35_Eileen_Collins_0001.jpg')))
  assert crop.shape == (112, 112, 3)
  detector = mtcnn.default_detector()
  original = detector.detect([astronaut])[0][0]
  matrix = align.align_matrix('arcface_112', original.landmarks, 112)
  warped = np.c_[original.landmarks, np.ones(5)] @ matrix.T
  canvas = np.full((336, 336, 3), 128, np.uint8)
  canvas[112:224, 112:224] = crop
  again = detector.detect([canvas])[0][0].landmarks - 112
  moved = np.linalg.norm(again - warped, axis=1)
  residual = np.linalg.norm(again - align.ARCFACE_112, axis=1)
  print('re-detected vs warped (px):', moved.round(2),
        'vs template:', residual.round(2))
  assert moved.max() < 3.0 and residual.max() < 8.0, (moved, residual)


def test_fiw_release_gets_rfiw_pair_lists(tmp_path):
  """--layout=fiw on FIW as released (FIDs/ with each family's mid.csv):
  the faces keep their FIDs/ tree, the mid.csv files are copied, and pair
  lists are written from the relationship matrices (father -> son is fs,
  mother -> son ms; spouses are no pair), families disjoint across lists,
  val/test balanced with non-kin pairs of the right gender; the kinship
  loader reads them."""
  import release_fixtures  # pylint: disable=g-import-not-at-top
  from facejax.data import kinship as kin_data  # pylint: disable=g-import-not-at-top
  src, out = str(tmp_path / 'fiw'), str(tmp_path / 'out')
  release_fixtures.fiw(src, families=30)
  result = prepare.run('fiw', src, out,
                       prepare.Options(detect=False, size=16),
                       write_tfds=False)
  assert result['counts']['kept'] == 30 * 3 * 2
  assert os.path.isfile(os.path.join(out, 'FIDs', 'F0001', 'MID1',
                                     'P00100_face1.jpg'))
  assert os.path.isfile(os.path.join(out, 'FIDs', 'F0001', 'mid.csv'))
  lists = result['pair_lists']
  assert set(lists) == {'train', 'valid', 'test'}, lists
  families = {}
  for split, path in lists.items():
    rows = _read_csv(path)
    kin = [r for r in rows if r['label'] == '1']
    assert {r['ptype'] for r in kin} == {'fs', 'ms'}
    for r in kin:  # father / mother (MID1 / MID2) -> son (MID3)
      assert r['p1'].split('/')[0] == r['p2'].split('/')[0]
      assert (r['p1'][-4:], r['p2'][-4:], r['ptype']) in (
          ('MID1', 'MID3', 'fs'), ('MID2', 'MID3', 'ms'))
    non_kin = [r for r in rows if r['label'] == '0']
    if split == 'train':
      assert not non_kin
    else:
      assert len(non_kin) == len(kin)
      for r in non_kin:
        assert r['p1'].split('/')[0] != r['p2'].split('/')[0]
        assert r['p2'].endswith('MID3')  # a son, as in the kin pair
    families[split] = {r['p1'].split('/')[0] for r in rows}
  assert not (families['train'] & families['valid']
              or families['train'] & families['test']
              or families['valid'] & families['test'])
  source = kin_data.load_split(out, os.path.basename(lists['valid']))
  # Member level: each member's 2 faces paired in turn.
  assert len(source) == 2 * len(_read_csv(lists['valid']))
  assert set(source.labels) == {0, 1}
  summary = prepare.summary(result, out)
  assert '--config.data.val_file=val-pairs.csv' in summary
