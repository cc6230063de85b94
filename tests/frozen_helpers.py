"""Helpers and fixtures shared by tests/unit/test_frozen.py and
tests/e2e/test_frozen.py."""

import ml_collections
from facejax.tasks import frozen as ae


def _cfg(**kw) -> ml_collections.ConfigDict:
  cfg = ae.default_age_loss_config()
  cfg.update(kw)
  return cfg
