"""Toy-world shape sizes come from three bands that keep clear of the caption's size thresholds."""

from __future__ import annotations

from collections import Counter

import numpy as np

from datamodules.toy_world import LARGE_ABOVE, SIZE_BANDS, SMALL_BELOW, random_scene, size_word


def test_sizes_fill_three_bands_away_from_the_thresholds():
    rng = np.random.default_rng(0)
    sizes = [random_scene(rng, moving=False).size for _ in range(3000)]
    words = Counter(size_word(size) for size in sizes)
    assert set(words) == {"small", "medium", "large"} and min(words.values()) > 800  # about a third each
    for size in sizes:
        assert any(low <= size <= high for low, high in SIZE_BANDS), size
        # At least 0.02 of the frame (0.6 px at 32 px) from either threshold.
        assert abs(size - SMALL_BELOW) >= 0.02 and abs(size - LARGE_ABOVE) >= 0.02, size
