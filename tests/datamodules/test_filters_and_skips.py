"""json field filters and skip tallies."""

from __future__ import annotations

import pytest
import torch

from datamodules.filters import first_rejection, parse_filter, parse_filters
from datamodules.skips import SkipTally


@pytest.mark.parametrize("text", ["pwatermark", "pwatermark<<0.5", "<0.5", "punsafe<abc", "width>=", "1x<2"])
def test_bad_filter_names_itself(text: str) -> None:
    with pytest.raises(ValueError, match="data.filters entry"):
        parse_filter(text)


def test_filters_compare_numbers_strings_and_nested_fields() -> None:
    filters = parse_filters(
        [
            "pwatermark<0.5",
            "punsafe <= 0.1",
            "width>=64",
            "status==success",
            "video_metadata.format.duration>=2",
        ]
    )
    good = {
        "pwatermark": 0.2,
        "punsafe": 0.1,
        "width": "64",
        "status": "success",
        "video_metadata": {"format": {"duration": "2.5"}},
    }
    assert first_rejection(filters, good) is None
    assert "pwatermark" in first_rejection(filters, {**good, "pwatermark": 0.5})
    assert "punsafe" in first_rejection(filters, {**good, "punsafe": 0.11})
    assert "width" in first_rejection(filters, {**good, "width": 63})
    assert "status" in first_rejection(filters, {**good, "status": "failed_to_download"})
    assert "duration" in first_rejection(filters, {**good, "video_metadata": {"format": {"duration": "1.9"}}})


@pytest.mark.parametrize(
    "meta", [{}, {"pwatermark": None}, {"pwatermark": float("nan")}, {"pwatermark": "n/a"}]
)
def test_missing_or_unusable_field_is_rejected(meta: dict) -> None:
    assert first_rejection(parse_filters(["pwatermark<0.5"]), meta) is not None


def batch(worker: int, **counts: int) -> dict:
    return {"worker_id": worker, "skips": {k: torch.tensor(v) for k, v in counts.items()}}


def test_tally_sums_latest_cumulative_counts_per_worker() -> None:
    tally = SkipTally()
    assert tally.update(batch(0, decode_error=1, too_small=0)) == {"decode_error": 1, "too_small": 0}
    assert tally.update(batch(1, decode_error=2, too_small=1)) == {"decode_error": 3, "too_small": 1}
    assert tally.update(batch(0, decode_error=4, too_small=0)) == {"decode_error": 6, "too_small": 1}
    # worker 1 restarted (non-persistent workers): its earlier count is kept
    assert tally.update(batch(1, decode_error=1, too_small=0)) == {"decode_error": 7, "too_small": 1}
