"""The scale-out tests use the session's demo cache of ``tests/conftest.py``."""
