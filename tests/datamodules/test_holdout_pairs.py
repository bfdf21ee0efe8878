"""data.holdout_pairs: captions with a held-out colour x shape pair are skipped; the held-out prompts use them."""

from __future__ import annotations

import numpy as np
import pytest

from datamodules.heldout import heldout_pair_scenes
from datamodules.image_text import ImageSampleDecoder
from datamodules.skips import SkipCounter, SkipSample
from datamodules.toy_world import COLORS, caption_of, parse_caption
from tests.datamodules.helpers import image_record, solid_jpg


def _sample(caption: str) -> dict:
    record = image_record("000000001", solid_jpg(), caption=caption)
    return {"__key__": record.key, **record.files}


def test_held_out_pairs_are_skipped():
    decoder = ImageSampleDecoder(16, 16, 8, (), holdout_pairs=("red circle", "blue square"))
    counter, rng = SkipCounter(decoder.reasons), np.random.default_rng(0)
    with pytest.raises(SkipSample, match="held-out pair 'red circle'"):
        decoder.decode(_sample("a small red circle at the top on a blue background"), rng, counter)
    # The colour of the background or another shape's pair does not count.
    kept = decoder.decode(_sample("a red square in the middle on a blue background"), rng, counter)
    assert kept["caption"].startswith("a red square")


def test_heldout_pair_scenes_only_have_those_pairs():
    scenes = heldout_pair_scenes(20, ["red circle", "cyan cross"])
    pairs = {(parse_caption(caption_of(s)).color, s.shape) for s in scenes}
    assert pairs <= {("red", "circle"), ("cyan", "cross")} and len(scenes) == 20
    assert COLORS[scenes[0].color][0] in ("red", "cyan")
    with pytest.raises(ValueError, match="not toy-world"):
        heldout_pair_scenes(1, ["mauve blob"])
