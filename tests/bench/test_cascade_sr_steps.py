"""bench_cascade_sr_steps on tiny SR_l^t and SR_h checkpoints made here, fed clips written as ``generate`` writes
↑F's output: one judged row per steps cell, the first the PSNR reference."""

from __future__ import annotations

import json

from bench.bench_cascade_sr_steps import main
from datamodules.heldout import heldout_clips
from mav_train.evaluation.toy_judge import to_uint8
from mav_train.media import write_mp4
from tests.cli.chain_fixtures import tiny_checkpoint


def test_steps_cells_are_judged_against_the_first(tmp_path, capsys):
    low = tiny_checkpoint("temporal_sr_low", tmp_path / "temporal_sr_low.ckpt")  # 4 frames, 8 -> 16 px
    high = tiny_checkpoint("sr_high", tmp_path / "sr_high.ckpt")  # 16 -> 32 px, frame by frame
    clips, captions = heldout_clips(2, seed=1, resolution=8, frames=4)
    folder = tmp_path / "interpolation"
    for i, (clip, caption) in enumerate(zip(to_uint8(clips), captions, strict=True)):
        write_mp4(list(clip), folder / f"{i:03d}.mp4", fps=30)
        (folder / f"{i:03d}.txt").write_text(caption + "\n")
    out = tmp_path / "rows.json"
    main(["--clips", str(folder), "--temporal-sr-low", str(low), "--sr-high", str(high), "--steps", "2/2,1/1",
          "--num", "2", "--out", str(out)])
    rows = json.loads(out.read_text())
    assert [r["steps"] for r in rows] == ["2/2", "1/1"]
    assert rows[0]["psnr_db"] is None and rows[1]["psnr_db"] > 0
    assert all(0.0 <= r["background"] <= 1.0 and r["seconds_sr_high"] > 0 for r in rows)
    printed = capsys.readouterr().out
    assert "PSNR vs first" in printed and " ref" in printed
