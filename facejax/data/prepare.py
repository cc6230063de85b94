r"""Detects and crops faces in a raw data set, writing it in the same layout.

The library behind the command line

  python -m launch.prepare_data --layout=cacd --src=DIR --out=DIR \
      [--csv=FILE] [--size=128] [--margin=0.4] [--detect=True] \
      [--detector=mtcnn|haar] [--align=box|arcface_112|ffhq|...] \
      [--multiple_faces=skip|largest] [--tfds=True] [--workers=1]

Input layouts (the output under --out has the same layout, so the facejax
loaders can read it directly):
  cacd:   CSV (--csv, columns path,age[,split]; paths relative to the CSV's
          folder) or CACD2000 names <age>_<Name>_<NNNN>.jpg directly in --src.
          Output: out/images/... and out/{train,valid,test}.csv (path,age).
          Without a split column the split is 80/10/10 by a hash of the
          person's name (--split_by=file hashes the file name instead, which
          puts one person in several splits).
  appa_real, afad, cacd2000, utkface, imdb_wiki, morph2, ffhq_aging,
  hrfae_ffhq: the released folder as unpacked, read by the same code as
          --config.data.format (facejax/data/formats/), split the same way
          (official, else seeded by person, else by file); written like
          cacd.
  celeba: list_attr_celeba.txt [+ list_eval_partition.txt] with the images in
          img_align_celeba/ or next to the txt files; both txt files are
          rewritten for the kept images.
  rafd:   src/<split>/<category>/*.jpg or src/<category>/*.jpg.
  fiw:    src/[<split>/]F0001/MID1/*.jpg, or FIW as released (src/FIDs/
          F0001/MID1/*.jpg with each family's mid.csv): the mid.csv files
          are copied and RFIW-style pair lists (train-pairs.csv,
          val-pairs.csv, test-pairs.csv; families split 80/10/10 by a
          seeded hash) are written from the relationship matrices, for
          configs/kinship.py's data.train_file / val_file / test_file.

Faces are found with MTCNN (--detector=haar: OpenCV's cascade) and cropped
as --align names (facejax.data.faces.align): 'box' is the face box grown by
--margin on each side (DEX's crop), 'arcface_112' / 'sphereface_96x112' /
'caricature' / 'ffhq' warp the five landmarks onto a model's template, as
the model's config's data.align says. Faces smaller than --min_face of the
shorter side are ignored. Images that cannot be read, have no face or
several faces (under --multiple_faces=skip) are left out and listed in
out/prepare_report.csv.
With --detect=False images are only centre-cropped to a square and resized
(for pre-aligned data sets). With --tfds=True the kept images are also
written as a TFDS ArrayRecord data set to out/tfds/ (see
facejax.data.tfds_prepared).
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import glob
import multiprocessing
import os
import shutil
from typing import Any, Iterable, Optional

from absl import logging
import numpy as np
from PIL import Image
import tqdm

from facejax.data import faces
from facejax.data import images
from facejax.data import prepare_scan
from facejax.data.faces import align as face_align
from facejax.data.faces import haar as haar_lib


REPORT_FILE = 'prepare_report.csv'
# Reasons counted in the summary line even when zero.
MAIN_REASONS = ('no_face', 'multiple_faces', 'unreadable')


@dataclasses.dataclass(frozen=True)
class Options:
  """How each image is processed."""

  detect: bool = True
  detector: str = 'mtcnn'
  align: str = 'box'
  size: int = 128
  margin: float = 0.4
  pad: str = 'edge'
  multiple_faces: str = 'skip'
  jpeg_quality: int = 95
  min_face: float = 0.1
  min_neighbors: int = 5


def process_image(
    src: str,
    dst: str,
    options: Options,
    detector,
) -> tuple[Optional[str], str]:
  """Crops (or only resizes) one image and writes it.

  Args:
    src: input file.
    dst: output file.
    options: processing options.
    detector: face detector, required when options.detect.

  Returns:
    (reason, detail): reason is None if the image was written, else why it
    was left out ('unreadable', 'no_face', 'multiple_faces').
  """
  try:
    image = np.asarray(images.decode(src))
  except Exception as e:  # pylint: disable=broad-except
    # PIL raises many types (OSError, SyntaxError, DecompressionBombError...)
    # and one bad file must not stop a run over 100k images.
    return 'unreadable', f'{type(e).__name__}: {e}'
  size = options.size or None
  if options.detect:
    short = min(image.shape[:2])
    found = [f for f in detector.detect([image])[0]
             if min(f.box[2:] - f.box[:2]) >= options.min_face * short]
    num_faces = len(found)
    if not found or (num_faces > 1 and options.multiple_faces == 'skip'):
      reason = 'no_face' if num_faces == 0 else 'multiple_faces'
      return reason, f'{num_faces} faces'
    face = max(found, key=lambda f: np.prod(f.box[2:] - f.box[:2]))
    if options.align == 'box':
      box = tuple(int(round(v)) for v in face.box)
      crop = haar_lib.crop_face(image, box, options.margin, size,
                                   options.pad)
    else:
      crop = face_align.crop(image, options.align, size or 112, face.box,
                             face.landmarks, options.margin)
    detail = f'{num_faces} faces'
  else:
    crop = images.center_square(image)
    if size:
      crop = images.resize(crop, size)
    detail = 'resized'
  os.makedirs(os.path.dirname(dst) or '.', exist_ok=True)
  pil = Image.fromarray(crop)
  if dst.lower().endswith('.png'):
    pil.save(dst, format='PNG')
  else:
    pil.save(dst, format='JPEG', quality=options.jpeg_quality)
  return None, detail


def _make_detector(options: Options):
  if not options.detect:
    return None
  if options.detector == 'haar':
    return faces.HaarDetector(min_neighbors=options.min_neighbors,
                              min_size=options.min_face)
  return faces.make_detector('mtcnn', min_face_size=20.0)


# Per-process state of the worker pool.
_worker_state: dict[str, Any] = {}


def _init_worker(options: Options) -> None:
  # MTCNN in every worker on the CPU: on a GPU host each would otherwise
  # reserve most of the GPU's memory for itself.
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  _worker_state['options'] = options
  _worker_state['detector'] = _make_detector(options)


def _work(task: tuple[str, str]) -> tuple[Optional[str], str]:
  return process_image(
      task[0], task[1], _worker_state['options'], _worker_state['detector']
  )


def _process_all(
    tasks: list[tuple[str, str]], options: Options, workers: int
) -> Iterable[tuple[Optional[str], str]]:
  """Yields process_image results in task order, in-process or in a pool."""
  desc = 'Cropping faces' if options.detect else 'Resizing'
  progress = dict(total=len(tasks), desc=desc, unit='img', smoothing=0.05)
  if workers <= 1:
    detector = _make_detector(options)
    for src, dst in tqdm.tqdm(tasks, **progress):
      yield process_image(src, dst, options, detector)
    return
  # 'spawn' avoids forking a process that may hold threads (tfds, OpenCV).
  context = multiprocessing.get_context('spawn')
  with context.Pool(workers, _init_worker, (options,)) as pool:
    yield from tqdm.tqdm(pool.imap(_work, tasks, chunksize=16), **progress)


def _write_label_files(
    layout: str, out: str, scan_result: prepare_scan.Scan,
    kept: list[prepare_scan.Item]
) -> None:
  """Writes the layout's label files for the kept images."""
  if layout == 'cacd':
    for split in prepare_scan.CACD_SPLITS:
      with open(os.path.join(out, f'{split}.csv'), 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['path', 'age'])
        for item in kept:
          if item.split == split:
            writer.writerow(
                [item.out_rel.replace(os.sep, '/'), f'{item.labels["age"]:g}']
            )
  elif layout == 'celeba':
    def name_of(item: prepare_scan.Item) -> str:
      return os.path.relpath(item.out_rel, scan_result.image_dir or '.')

    with open(os.path.join(out, 'list_attr_celeba.txt'), 'w') as f:
      f.write(f'{len(kept)}\n')
      f.write(' '.join(scan_result.attribute_names) + '\n')
      for item in kept:
        values = ' '.join(f'{v:2d}' for v in item.labels['attributes'])
        f.write(f'{name_of(item)} {values}\n')
    if scan_result.has_partition:
      with open(os.path.join(out, 'list_eval_partition.txt'), 'w') as f:
        for item in kept:
          split = prepare_scan.CELEBA_SPLITS.index(item.split)
          f.write(f'{name_of(item)} {split}\n')


def _write_report(out: str, problems: list[tuple[str, str, str]]) -> str:
  """Writes out/prepare_report.csv (path,reason,detail); returns its path."""
  path = os.path.join(out, REPORT_FILE)
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['path', 'reason', 'detail'])
    for rel, reason, detail in problems:
      writer.writerow([rel.replace(os.sep, '/'), reason, detail])
  return path


def _check_dirs(src: str, out: str) -> None:
  src_real, out_real = os.path.realpath(src), os.path.realpath(out)
  if out_real == src_real or out_real.startswith(src_real + os.sep):
    raise prepare_scan.InputError(
        f'--out {out} must not be --src or inside it (it would be scanned '
        'or overwrite the input).'
    )


def run(
    layout: str,
    src: str,
    out: str,
    options: Options = Options(),
    csv_file: Optional[str] = None,
    write_tfds: bool = True,
    split_by: str = 'identity',
    workers: int = 1,
) -> dict[str, Any]:
  """Prepares a data set; see the module docstring.

  Args:
    layout: 'cacd', 'celeba', 'rafd', 'fiw' or an age format name.
    src: input folder.
    out: output folder.
    options: per-image processing options.
    csv_file: cacd CSV (path,age[,split]).
    write_tfds: also write out/tfds/.
    split_by: cacd hash split key, 'file' or 'identity'.
    workers: processes for the per-image work.

  Returns:
    Summary dict: 'counts' (reason -> count, with 'kept'), 'report' (path),
    'tfds_dir' (None unless written), 'splits' (split -> kept count).
  """
  _check_dirs(src, out)
  scan_result = prepare_scan.scan(layout, src, csv_file, split_by)
  logging.info(
      'Found %d images (%d left out while listing).',
      len(scan_result.items), len(scan_result.problems),
  )
  os.makedirs(out, exist_ok=True)
  tasks = [(it.src, os.path.join(out, it.out_rel)) for it in scan_result.items]
  kept, problems = [], list(scan_result.problems)
  # Iterate the results (not zip with the items) so the progress bar sees
  # the generator finish and closes at 100%.
  results = _process_all(tasks, options, workers)
  for index, (reason, detail) in enumerate(results):
    item = scan_result.items[index]
    if reason is None:
      kept.append(item)
    else:
      problems.append((item.rel, reason, detail))
  _write_label_files(prepare_scan.label_layout(layout), out, scan_result, kept)
  report = _write_report(out, problems)
  pair_lists = _write_fiw_lists(src, out) if layout == 'fiw' else {}

  counts = collections.Counter({'kept': len(kept)})
  counts.update({r: 0 for r in MAIN_REASONS})
  counts.update(reason for _, reason, _ in problems)
  splits = collections.Counter(item.split for item in kept)
  tfds_dir = None
  if write_tfds and kept:
    # Imported here: tfds is slow to import and not needed otherwise.
    # pylint: disable-next=g-import-not-at-top
    from facejax.data import tfds_prepared

    records = {
        split: [{'path': it.out_rel, **it.labels}
                for it in kept if it.split == split]
        for split in scan_result.splits
    }
    tfds_dir = tfds_prepared.prepare(
        prepare_scan.label_layout(layout),
        records,
        os.path.join(out, 'tfds'),
        image_size=options.size or None,
        image_root=out,
        attribute_names=scan_result.attribute_names or None,
        class_names=scan_result.class_names or None,
    )
  elif write_tfds:
    logging.warning('No image was kept; the TFDS data set is not written.')
  return {
      'counts': dict(counts),
      'report': report,
      'tfds_dir': tfds_dir,
      'splits': dict(splits),
      'pair_lists': pair_lists,
  }


def _write_fiw_lists(src: str, out: str) -> dict[str, str]:
  """FIW's mid.csv files copied beside the kept faces, and pair lists
  written from them ({} when the source has no mid.csv)."""
  # pylint: disable-next=g-import-not-at-top
  from facejax.data.formats import rfiw

  src_images = rfiw.image_root(src)
  tables = sorted(glob.glob(os.path.join(src_images, 'F*', 'mid.csv')))
  if not tables:
    return {}
  out_images = os.path.join(out, os.path.relpath(src_images, src))
  for table in tables:
    family = os.path.basename(os.path.dirname(table))
    if os.path.isdir(os.path.join(out_images, family)):
      shutil.copyfile(table, os.path.join(out_images, family, 'mid.csv'))
  try:
    return rfiw.write_pair_lists(out_images, out)
  except ValueError as e:  # DataError: a malformed mid.csv, or no pairs.
    raise prepare_scan.InputError(str(e)) from None


def summary(result: dict[str, Any], out: str) -> str:
  """The lines launch.prepare_data prints: counts, report, how to load."""
  counts = dict(result['counts'])
  parts = [f'kept {counts.pop("kept")}']
  parts += [f'{r} {counts.pop(r)}' for r in MAIN_REASONS]
  parts += [f'{r} {n}' for r, n in sorted(counts.items())]
  splits = ', '.join(f'{s} {n}' for s, n in sorted(result['splits'].items()))
  lines = [
      f'prepare_data: {", ".join(parts)} (splits: {splits or "none"}); '
      f'report: {result["report"]}'
  ]
  if result['tfds_dir']:
    config = os.path.basename(os.path.dirname(result['tfds_dir']))
    tfds_root = os.path.join(out, 'tfds')
    split = max(result['splits'], key=result['splits'].get)
    lines += [
        f'TFDS ArrayRecord data set: {result["tfds_dir"]}',
        '  from facejax.data import tfds_prepared',
        f'  source = tfds_prepared.load({tfds_root!r}, split={split!r})',
        '  # or raw (image = encoded bytes): tfds.data_source('
        f"'facejax_faces/{config}', data_dir={tfds_root!r}, split={split!r})",
    ]
  lists = result.get('pair_lists') or {}
  if lists:
    keys = {'train': 'train_file', 'valid': 'val_file', 'test': 'test_file'}
    lines.append('kinship pair lists: ' + ', '.join(
        f'{s} {os.path.basename(p)}' for s, p in lists.items()))
    lines.append('  python -m launch.train --config=configs/kinship.py '
                 f'--config.data.root={out} ' + ' '.join(
                     f'--config.data.{keys[s]}={os.path.basename(p)}'
                     for s, p in lists.items()))
  return '\n'.join(lines)
