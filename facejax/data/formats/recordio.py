"""insightface's MXNet RecordIO face sets (MS1MV2 faces_emore/, Glint360K),
read without mxnet.

  train.rec   records: uint32 magic 0xced7230a, uint32 (cflag << 29 |
              length), payload, zero padding to 4 bytes. A payload the
              writer split at an inner magic number comes as cflag 1
              (first), 2 (middle), 3 (last) parts, joined by the magic.
  train.idx   `key<TAB>byte offset` per record.
  payload     IRHeader (uint32 flag, float32 label, uint64 id, uint64 id2),
              then `flag` float32 labels when flag > 0, then the image
              (JPEG / PNG bytes).

insightface writes record 0 as a header whose labels are (first identity
record, end): records 1 .. first-1 are images, and each identity record
holds the (start, end) range of its images. Files without it are read by
scanning every record's label.

Images are named `recordio:<train.rec>@<byte offset>` so that every source built
on image paths (identity folders, verification pairs) reads them through
images.load_image unchanged.
"""

import os
import struct

import numpy as np

from facejax.data.formats import base
from facejax.data.sources import DataError

MAGIC = 0xCED7230A
SCHEME = "recordio:"
_HEADER = struct.Struct("<IfQQ")
_open_files: dict = {}  # per process: grain workers open their own


def read_idx(path: str) -> dict[int, int]:
  if not os.path.isfile(path):
    raise DataError(f"{path}: RecordIO index not found (train.idx beside "
                    "train.rec)")
  out = {}
  with open(path) as f:
    for n, line in enumerate(f, start=1):
      parts = line.split()
      if not parts:
        continue
      if len(parts) != 2 or not (parts[0].isdigit() and parts[1].isdigit()):
        raise DataError(f"{path}:{n}: expected '<key>\\t<offset>', got "
                        f"{line.strip()[:60]!r}")
      out[int(parts[0])] = int(parts[1])
  if not out:
    raise DataError(f"{path}: empty RecordIO index")
  return out


def _fd(rec: str) -> int:
  fd = _open_files.get((os.getpid(), rec))
  if fd is None:
    fd = _open_files[(os.getpid(), rec)] = os.open(rec, os.O_RDONLY)
  return fd


def read_record(rec: str, offset: int) -> bytes:
  """The payload of the record at `offset` (multi-part records joined).

  Positional reads (pread): the loader's threads share one descriptor.
  """
  fd = _fd(rec)
  parts = []
  while True:
    head = os.pread(fd, 8, offset)
    if len(head) < 8:
      raise DataError(f"{rec}: truncated record at byte {offset}")
    magic, lrec = struct.unpack("<II", head)
    if magic != MAGIC:
      raise DataError(f"{rec}: no RecordIO magic at byte {offset} "
                      "(a wrong offset in train.idx, or not a .rec file)")
    cflag, length = lrec >> 29, lrec & ((1 << 29) - 1)
    data = os.pread(fd, length, offset + 8)
    if len(data) < length:
      raise DataError(f"{rec}: truncated record at byte {offset}")
    offset += 8 + length + (4 - length % 4) % 4
    parts.append(data)
    if cflag in (0, 3):
      return struct.pack("<I", MAGIC).join(parts)


def unpack(payload: bytes) -> tuple[np.ndarray, bytes]:
  """(labels float32 [max(flag, 1)], image bytes) of a record payload."""
  flag, label, _, _ = _HEADER.unpack_from(payload)
  rest = payload[_HEADER.size:]
  if flag > 0:
    labels = np.frombuffer(rest[:4 * flag], np.float32).copy()
    return labels, rest[4 * flag:]
  return np.array([label], np.float32), rest


def image_name(rec: str, offset: int) -> str:
  """`recordio:<rec>@<byte offset>`: workers read it with no index."""
  return f"{SCHEME}{rec}@{offset}"


def read_image_bytes(name: str) -> bytes:
  """Image bytes of a `recordio:<rec>@<offset>` name."""
  rec, offset = name[len(SCHEME):].rsplit("@", 1)
  return unpack(read_record(rec, int(offset)))[1]


def _label(rec: str, offset: int) -> np.ndarray:
  """A record's labels, reading only its IRHeader (not the image)."""
  fd = _fd(rec)
  head = os.pread(fd, 8 + _HEADER.size, offset)
  if len(head) < 8 + _HEADER.size or struct.unpack_from("<I", head)[0] != MAGIC:
    raise DataError(f"{rec}: no RecordIO record at byte {offset}")
  if struct.unpack_from("<I", head, 4)[0] >> 29:  # a multi-part record
    return unpack(read_record(rec, offset))[0]
  flag, label, _, _ = _HEADER.unpack_from(head, 8)
  if flag > 0:
    return np.frombuffer(os.pread(fd, 4 * flag, offset + 8 + _HEADER.size),
                         np.float32)
  return np.array([label], np.float32)


def identities(root: str, key: str = "data.identity"
               ) -> list[tuple[str, list[str]]]:
  """(identity, image names) of root/train.rec, as identity_folders."""
  rec = os.path.join(root, "train.rec")
  idx = read_idx(os.path.join(root, "train.idx"))
  if not os.path.isfile(rec):
    raise DataError(f"{rec}: not found (config key {key}.root)")
  first = min(idx)
  labels = _label(rec, idx[first])
  groups: dict[int, list[str]] = {}
  if first == 0 and len(labels) >= 2 and labels[0] > 0:
    # insightface's header: identity records (start, end) after the images.
    # (Record numbers are float32 labels: exact up to 2**24 records.)
    start, end = int(labels[0]), int(labels[1])
    for ident, k in enumerate(range(start, end)):
      if k not in idx:
        raise DataError(f"{rec}: identity record {k} missing from train.idx")
      rng = _label(rec, idx[k])
      names = []
      for j in range(int(rng[0]), int(rng[1])):
        if j not in idx:
          raise DataError(f"{rec}: image record {j} of identity {ident} "
                          "missing from train.idx")
        names.append(image_name(rec, idx[j]))
      groups[ident] = names
  else:
    for k in sorted(idx):
      groups.setdefault(int(_label(rec, idx[k])[0]), []).append(
          image_name(rec, idx[k]))
  out = [(f"id{ident:07d}", names) for ident, names in sorted(groups.items())
         if names]
  if not out:
    raise DataError(f"{rec}: no identities")
  base.announce(f"recordio at {rec}: {sum(len(n) for _, n in out)} images "
                f"of {len(out)} identities")
  return out


def is_recordio(root: str) -> bool:
  return os.path.isfile(os.path.join(root, "train.rec"))
