"""Prepared face data sets stored as TFDS ArrayRecord files.

A data set is written once (`prepare`) so large runs can read it with random
access (`load`, or `tfds.data_source`) instead of decoding loose files and
label text files each time.

This works WITHOUT TensorFlow, with these constraints (checked on tfds 4.9.10):
  * writing must use `file_format='array_record'`; reading goes through
    `as_data_source` / `tfds.data_source` (`as_dataset` and `tfds.as_numpy`
    need TensorFlow);
  * `tfds.features.Image` needs TensorFlow to encode, so the image is stored
    as its encoded JPEG/PNG bytes in a scalar object Tensor feature and
    decoded here with PIL.

On-disk layout: `<data_dir>/facejax_faces/<config>/1.0.0/`, config being one
of `CONFIGS`. Stored features per config (plus `image` bytes and `path`):
  age_csv (also for 'cacd'): age float32
  celeba: attributes int8 [num_attributes], values {0, 1} (1 = the raw +1);
    the names are in `info.metadata['attribute_names']`
  rafd: label ClassLabel over the sorted category names
  fiw: family int32, mid int32
Examples keep the order of the records given to `prepare`.
"""

from __future__ import annotations

import inspect
import io
import os
import tempfile
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

from absl import logging
from etils import epath
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from facejax.data import images

DATASET_NAME = 'facejax_faces'
VERSION = '1.0.0'
CONFIGS = ('age_csv', 'celeba', 'rafd', 'fiw')
# Layout names accepted by `prepare`, mapped to the builder config they use.
LAYOUT_TO_CONFIG = {
    'age_csv': 'age_csv',
    'cacd': 'age_csv',
    'celeba': 'celeba',
    'rafd': 'rafd',
    'fiw': 'fiw',
}
LABEL_KEYS = {
    'age_csv': ('age',),
    'celeba': ('attributes',),
    'rafd': ('label',),
    'fiw': ('family', 'mid'),
}


class FacejaxFaces(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Face images with labels, built from in-memory records.

  Not registered with tfds (so re-imports never clash); prepared data is read
  back with `tfds.builder_from_directory` or `tfds.data_source(name,
  data_dir=...)`, which both work from the files alone.
  """

  VERSION = tfds.core.Version(VERSION)
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=name) for name in CONFIGS]

  def __init__(
      self,
      *,
      records_by_split: Optional[Mapping[str, Sequence[Mapping[str, Any]]]],
      image_root: Optional[str] = None,
      image_size: Optional[int] = None,
      attribute_names: Optional[Sequence[str]] = None,
      class_names: Optional[Sequence[str]] = None,
      **kwargs: Any,
  ):
    """Creates the builder.

    Args:
      records_by_split: split name -> records (see `prepare`).
      image_root: folder that relative record paths are read from.
      image_size: images are made image_size x image_size (None: kept).
      attribute_names: celeba attribute names.
      class_names: rafd category names (ClassLabel order).
      **kwargs: for `GeneratorBasedBuilder` (config, data_dir, ...).
    """
    self._records_by_split = dict(records_by_split or {})
    self._image_root = image_root
    self._image_size = image_size
    self._attribute_names = list(attribute_names or [])
    self._class_names = list(class_names or [])
    super().__init__(**kwargs)

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # tfds' default resolves package resources through `importlib_resources`,
    # which is not installed with tfds when TensorFlow is absent; it is only
    # used to look for a checksums file next to the code.
    return epath.Path(inspect.getfile(cls))

  def _info(self) -> tfds.core.DatasetInfo:
    layout = self.builder_config.name
    features = {
        # Encoded JPEG/PNG bytes: tfds.features.Image needs TensorFlow.
        'image': tfds.features.Tensor(shape=(), dtype=np.object_),
        'path': tfds.features.Text(),
    }
    metadata = {'layout': layout, 'image_size': self._image_size}
    description = f'facejax face crops, layout {layout}.'
    if layout == 'age_csv':
      features['age'] = tfds.features.Tensor(shape=(), dtype=np.float32)
    elif layout == 'celeba':
      features['attributes'] = tfds.features.Tensor(
          shape=(len(self._attribute_names),), dtype=np.int8
      )
      metadata['attribute_names'] = self._attribute_names
      metadata['attribute_values'] = '0/1 (raw -1 -> 0, +1 -> 1)'
      description += (
          ' attributes are int8 in {0, 1} (raw -1/+1 mapped to 0/1), in the'
          ' order: ' + ' '.join(self._attribute_names)
      )
    elif layout == 'rafd':
      features['label'] = tfds.features.ClassLabel(names=self._class_names)
      metadata['class_names'] = self._class_names
    elif layout == 'fiw':
      features['family'] = tfds.features.Tensor(shape=(), dtype=np.int32)
      features['mid'] = tfds.features.Tensor(shape=(), dtype=np.int32)
    return tfds.core.DatasetInfo(
        builder=self,
        description=description,
        features=tfds.features.FeaturesDict(features),
        metadata=tfds.core.MetadataDict(metadata),
        # Keep the records' order so example i is the i-th record.
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager: Any) -> dict[str, Iterator[Any]]:
    del dl_manager  # Everything is local.
    return {
        split: self._generate_examples(records)
        for split, records in self._records_by_split.items()
    }

  def _generate_examples(
      self, records: Sequence[Mapping[str, Any]]
  ) -> Iterator[tuple[str, dict[str, Any]]]:
    layout = self.builder_config.name
    for record in records:
      rel_path = str(record['path'])
      file = (
          os.path.join(self._image_root, rel_path)
          if self._image_root
          else rel_path
      )
      example = {
          'image': encode_image_file(file, self._image_size),
          'path': rel_path,
      }
      example.update(_labels(layout, record))
      yield rel_path, example


def _labels(layout: str, record: Mapping[str, Any]) -> dict[str, Any]:
  """Returns the label features of a record, checked."""
  missing = [k for k in LABEL_KEYS[layout] if k not in record]
  if missing:
    raise ValueError(
        f'Record {record.get("path")!r} lacks {missing} for layout {layout}.'
    )
  if layout == 'age_csv':
    return {'age': np.float32(record['age'])}
  if layout == 'celeba':
    attrs = np.asarray(record['attributes'], np.int64)
    if not np.isin(attrs, (-1, 0, 1)).all():
      raise ValueError(
          f'Record {record["path"]!r}: attributes must be -1/+1 or 0/1.'
      )
    return {'attributes': (attrs > 0).astype(np.int8)}
  if layout == 'rafd':
    return {'label': record['label']}  # ClassLabel takes a name or index.
  return {
      'family': np.int32(record['family']),
      'mid': np.int32(record['mid']),
  }


def encode_image_file(file: str, image_size: Optional[int] = None) -> bytes:
  """Returns JPEG/PNG bytes of an image file, re-encoded only if needed.

  Files that already are RGB JPEG/PNG of the right size without an EXIF
  rotation are stored byte for byte (no second JPEG compression).

  Args:
    file: image file.
    image_size: if given, the image must be image_size x image_size; other
      images are centre-cropped to a square and resized.

  Returns:
    Encoded image bytes.
  """
  try:
    with open(file, 'rb') as f:
      data = f.read()
    img = Image.open(io.BytesIO(data))
    rotated = images.is_rotated(img)
    right_size = image_size is None or img.size == (image_size, image_size)
    if (
        img.format in ('JPEG', 'PNG')
        and img.mode == 'RGB'
        and right_size
        and not rotated
    ):
      return data
    array = np.asarray(images.decode(io.BytesIO(data)))
  except (OSError, ValueError, SyntaxError) as e:  # PIL's error types.
    raise ValueError(f'Cannot read image {file}: {e}') from e
  if image_size is not None:
    array = images.resize(images.center_square(array), image_size)
  out = io.BytesIO()
  Image.fromarray(array).save(out, format='JPEG', quality=95)
  return out.getvalue()


def decode_image(data: bytes) -> np.ndarray:
  """Decodes stored image bytes to uint8 RGB [H, W, 3]."""
  with Image.open(io.BytesIO(data)) as img:
    return np.asarray(images.to_rgb(img))


def prepare(
    layout: str,
    records_by_split: Mapping[str, Sequence[Mapping[str, Any]]],
    out_dir: str,
    image_size: Optional[int] = None,
    image_root: Optional[str] = None,
    attribute_names: Optional[Sequence[str]] = None,
    class_names: Optional[Sequence[str]] = None,
) -> str:
  """Writes records as a TFDS ArrayRecord data set, replacing an old one.

  Args:
    layout: 'age_csv', 'cacd', 'celeba', 'rafd' or 'fiw'.
    records_by_split: split name -> list of dicts with 'path' (image file,
      relative to image_root if given) and the layout's labels: 'age';
      'attributes' (-1/+1 or 0/1 per attribute); 'label' (category name or
      index); 'family' and 'mid' (ints).
    out_dir: TFDS data_dir to write into (e.g. <prepared>/tfds).
    image_size: make images image_size x image_size (None: keep them).
    image_root: folder of relative record paths.
    attribute_names: celeba attribute names (default attr_0, attr_1, ...).
    class_names: rafd categories (default: the sorted label names).

  Returns:
    The data set's directory (<out_dir>/facejax_faces/<config>/1.0.0).
  """
  if layout not in LAYOUT_TO_CONFIG:
    raise ValueError(
        f'Unknown layout {layout!r}; expected one of '
        f'{sorted(LAYOUT_TO_CONFIG)}.'
    )
  config = LAYOUT_TO_CONFIG[layout]
  splits = {}
  for split, records in records_by_split.items():
    if records:
      splits[split] = list(records)
    else:
      logging.warning('Split %r is empty; it is left out.', split)
  if not splits:
    raise ValueError('No records to write: every split is empty.')
  all_records = [r for records in splits.values() for r in records]
  if config == 'celeba' and attribute_names is None:
    n = len(all_records[0]['attributes'])
    attribute_names = [f'attr_{i}' for i in range(n)]
  if config == 'rafd' and class_names is None:
    class_names = sorted({
        str(r['label']) for r in all_records if not _is_int(r['label'])
    })
    if not class_names:
      raise ValueError('rafd records with integer labels need class_names.')

  builder = FacejaxFaces(
      records_by_split=splits,
      image_root=image_root,
      image_size=image_size,
      attribute_names=attribute_names,
      class_names=class_names,
      config=config,
      data_dir=out_dir,
      file_format='array_record',
  )
  with tempfile.TemporaryDirectory() as download_dir:
    builder.download_and_prepare(
        download_dir=download_dir,
        download_config=tfds.download.DownloadConfig(
            # Never look for a hosted copy: it would be a network call.
            try_download_gcs=False,
            download_mode=tfds.download.GenerateMode.FORCE_REDOWNLOAD,
        ),
    )
  logging.info(
      'Wrote %s examples to %s.',
      {s: len(r) for s, r in splits.items()},
      builder.data_dir,
  )
  return os.fspath(builder.data_dir)


def _is_int(value: Any) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def find_dataset_dir(path: str, max_depth: int = 5) -> str:
  """Finds the prepared data set directory in or under `path`.

  Args:
    path: the version directory itself, the TFDS data_dir, or the prepare_data
      output folder holding tfds/.
    max_depth: how deep to look.

  Returns:
    The directory holding dataset_info.json.
  """
  if not os.path.isdir(path):
    raise FileNotFoundError(
        f'{path} is not a prepared facejax data set: no such directory.'
    )
  found = []
  root_depth = path.rstrip(os.sep).count(os.sep)
  for dirpath, dirnames, filenames in os.walk(path):
    # Skip tfds' half-written 'incomplete.*' folders and hidden ones.
    dirnames[:] = sorted(
        d for d in dirnames
        if not d.startswith(('.', 'incomplete', 'downloads'))
    )
    if dirpath.count(os.sep) - root_depth >= max_depth:
      dirnames[:] = []
    if 'dataset_info.json' in filenames:
      found.append(dirpath)
      dirnames[:] = []
  if not found:
    raise FileNotFoundError(
        f'{path} is not a prepared facejax data set: no dataset_info.json in '
        'it or below. Write one with `python -m launch.prepare_data` or '
        'facejax.data.tfds_prepared.prepare.'
    )
  if len(found) > 1:
    raise ValueError(
        f'{path} holds several prepared data sets; pass one of: '
        + ', '.join(found)
    )
  return found[0]


class PreparedFaces:
  """Random-access source over one split of a prepared data set.

  Items are dicts of numpy values: 'image' uint8 [H, W, 3] RGB, 'path' str,
  and the layout's labels ('age' float32; 'attributes' int8 [N]; 'label'
  int64; 'family', 'mid' int32). Picklable: only the location is pickled
  and each process opens the ArrayRecord files on first access, so it can be
  handed to grain worker processes.
  """

  def __init__(self, data_dir: str, split: str):
    self.data_dir = find_dataset_dir(data_dir)
    self.split = split
    builder = tfds.builder_from_directory(self.data_dir)
    info = builder.info
    if 'image' not in info.features or 'path' not in info.features:
      raise ValueError(
          f'{self.data_dir} is a TFDS data set but not a facejax prepared one '
          '(it lacks the image/path features).'
      )
    if split not in info.splits:
      raise ValueError(
          f'{self.data_dir} has no split {split!r}; it has '
          f'{sorted(info.splits.keys())}.'
      )
    self.num_examples = int(info.splits[split].num_examples)
    metadata = dict(info.metadata or {})
    self.layout = metadata.get('layout', builder.builder_config.name)
    self.image_size = metadata.get('image_size')
    self.attribute_names = list(metadata.get('attribute_names') or [])
    self.class_names = (
        list(info.features['label'].names)
        if 'label' in info.features
        else []
    )
    self._source = None  # Opened lazily, per process.

  def __getstate__(self) -> dict[str, Any]:
    state = self.__dict__.copy()
    state['_source'] = None
    return state

  def _get_source(self) -> Any:
    if self._source is None:
      builder = tfds.builder_from_directory(self.data_dir)
      self._source = builder.as_data_source(split=self.split)
    return self._source

  def __len__(self) -> int:
    return self.num_examples

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = self._check_index(index)
    return self._decode(self._get_source()[index])

  def __getitems__(self, indices: Iterable[int]) -> list[dict[str, Any]]:
    indices = [self._check_index(i) for i in indices]
    return [self._decode(e) for e in self._get_source().__getitems__(indices)]

  def __repr__(self) -> str:
    return (
        f'PreparedFaces(data_dir={self.data_dir!r}, split={self.split!r}, '
        f'layout={self.layout!r}, len={self.num_examples})'
    )

  def _check_index(self, index: int) -> int:
    if not _is_int(index):
      raise TypeError(f'Index must be an int, got {type(index).__name__}.')
    n = self.num_examples
    if not -n <= index < n:
      raise IndexError(f'Index {index} out of range for {n} examples.')
    return int(index) % n

  def _decode(self, example: Mapping[str, Any]) -> dict[str, Any]:
    path = example['path']
    out = {
        'image': decode_image(example['image']),
        'path': path.decode('utf-8') if isinstance(path, bytes) else str(path),
    }
    if 'age' in example:
      out['age'] = np.float32(example['age'])
    if 'attributes' in example:
      out['attributes'] = np.asarray(example['attributes'], np.int8)
    if 'label' in example:
      out['label'] = np.int64(example['label'])
    for key in ('family', 'mid'):
      if key in example:
        out[key] = np.int32(example[key])
    return out


def load(out_dir: str, split: str) -> PreparedFaces:
  """Opens one split of a prepared data set for random access.

  Args:
    out_dir: the prepare_data output folder, its tfds/ folder, or the data
      set's version directory.
    split: e.g. 'train', 'valid'/'val', 'test'.

  Returns:
    A picklable random-access source (len, [i]) of example dicts.
  """
  return PreparedFaces(out_dir, split)
