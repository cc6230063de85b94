"""Helpers and fixtures shared by tests/unit/test_caricature.py and
tests/e2e/test_caricature.py."""



ONE = (("data", 1), ("fsdp", 1), ("model", 1))
