"""Two-process DDP on CPU (gloo): every rank and worker reads different samples, every rank the same number of
batches, also when the shards do not divide evenly (3 shards over 2 ranks x 2 workers)."""

from __future__ import annotations

import sys

import pytest

from datamodules.demo import ensure_demo_data
from tests.distributed.helpers import ROOT, TINY, run

SCRIPT = str(ROOT / "tests" / "distributed" / "fit_script.py")


@pytest.mark.slow
def test_two_rank_ddp_fit_reads_disjoint_samples_from_three_shards(tmp_path, demo_cache):
    run_dir = tmp_path / "run"
    videos = ensure_demo_data(demo_cache / "demo", num_samples=256, kinds=("videos",)).videos  # 4 shards of 64
    shards = videos.replace("{00000..00003}", "{00000..00002}")
    assert shards != videos
    steps = 4
    run([sys.executable, SCRIPT, "--record-keys", "recipe=demo/temporal_decoder", *TINY, "data.num_workers=2",
         f"data.shards={shards}", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp",
         f"trainer.max_steps={steps}", "logger=none", f"run_dir={run_dir}"],
        tmp_path, demo_cache, timeout=300)

    per_rank = {}
    for rank in (0, 1):
        lines = (run_dir / "keys" / f"rank{rank}.txt").read_text().split("\n")
        rows = [line.split() for line in lines if line]
        assert [int(row[0]) for row in rows] == list(range(steps)), rows  # one batch per step, none missing
        assert {row[1] for row in rows} == {"0", "1"}, rows  # both dataloader workers contributed
        per_rank[rank] = [key for row in rows for key in row[2:]]
        assert len(per_rank[rank]) == len(set(per_rank[rank])) == 2 * steps
    assert not set(per_rank[0]) & set(per_rank[1]), per_rank
    # Samples of all three shards were read (the fourth demo shard was not given).
    shards_read = {key[:5] for keys in per_rank.values() for key in keys}
    assert shards_read == {"00000", "00001", "00002"}, shards_read
