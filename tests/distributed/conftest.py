"""One toy-world demo cache for every scale-out test (written once, ~5 s)."""

from __future__ import annotations

from pathlib import Path

import pytest

from datamodules.demo import ensure_demo_data


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("mav_train_cache")
    ensure_demo_data(cache / "demo", num_samples=256)
    return cache
