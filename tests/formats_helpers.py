"""Helpers and fixtures shared by tests/unit/test_formats.py and
tests/e2e/test_formats.py."""

import pytest
import release_fixtures as rf


FORMATS = ("appa_real", "afad", "utkface", "cacd2000", "imdb_wiki", "morph2",
           "ffhq_aging", "hrfae_ffhq")


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
  """{format: (root, truth)} for every format."""
  out = {}
  for name in FORMATS:
    root = str(tmp_path_factory.mktemp(name))
    out[name] = (root, getattr(rf, name)(root))
  return out
