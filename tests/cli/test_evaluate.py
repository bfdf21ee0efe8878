"""`prepare heldout` and `evaluate toy` end to end: good items score, bad items are skipped and counted."""

from __future__ import annotations

import json
import shutil

import numpy as np
from PIL import Image

from datamodules.heldout import write_heldout
from tests.conftest import run_cli


def test_prepare_heldout_is_deterministic_and_not_training_seed(tmp_path):
    out = run_cli(["prepare", "heldout", "--out", str(tmp_path / "a"), "--num", "4"], tmp_path, tmp_path)
    assert out.returncode == 0, out.stderr
    write_heldout(tmp_path / "b", num=4)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == [f"{i:05d}.{ext}" for i in range(4) for ext in ("png", "txt")]
    assert all((tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes() for n in names)
    bad = run_cli(["prepare", "heldout", "--out", str(tmp_path / "c"), "--seed", "0"], tmp_path, tmp_path)
    assert bad.returncode == 2 and "training" in bad.stderr


def test_evaluate_toy_images_with_bad_items(tmp_path):
    samples = tmp_path / "s"
    write_heldout(samples, num=8)
    (samples / "00000.txt").unlink()  # missing caption
    (samples / "00001.png").write_bytes(b"not a png")  # unreadable file
    (samples / "00002.txt").write_text("a photo of a cat\n")  # not a toy caption
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(samples / "00003.png")  # flat: scored, wrong
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(samples / "samples.png")  # sample's grid: not an item
    out = run_cli(["evaluate", "toy", f"samples={samples}", f"out={tmp_path / 'r.json'}"], tmp_path, tmp_path)
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert last == "scored 5 of 8; skipped: missing_caption 1, not_a_toy_caption 1, unreadable_file 1"
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["scores"]["n"] == 5 and record["scores"]["readable"] == 0.8 and record["scores"]["color"] == 0.8
    assert "background" in out.stdout and "shape" in out.stdout


def test_evaluate_toy_videos_and_errors(tmp_path):
    videos = tmp_path / "v"
    write_heldout(videos, num=3, kind="video", frames=8)
    out = run_cli(["evaluate", "toy", f"samples={videos}", f"out={tmp_path / 'v.json'}"], tmp_path, tmp_path)
    assert out.returncode == 0, out.stderr
    scores = json.loads((tmp_path / "v.json").read_text())["scores"]
    # ground truth reads exactly (written yuv444p: with yuv420p 32 px clips read shape 93%, identity 95%)
    assert scores["kind"] == "video" and scores["identity"] == 1.0 and scores["shape"] == 1.0
    assert out.stdout.strip().endswith("scored 3 of 3")
    empty = tmp_path / "empty"
    empty.mkdir()
    err = run_cli(["evaluate", "toy", f"samples={empty}"], tmp_path, tmp_path)
    assert err.returncode == 2 and len(err.stderr.strip().splitlines()) == 1 and "no .png or .mp4" in err.stderr
    shutil.copy(videos / "00000.mp4", empty / "x.mp4")
    assert run_cli(["evaluate", "fvd", f"samples={empty}"], tmp_path, tmp_path).returncode == 2
