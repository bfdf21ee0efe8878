"""`evaluate fvd|fid|is|clipsim`: analytic checks of the scores, and the metrics end to end on toy-world samples
with tiny TorchScript feature networks made here (nothing is downloaded)."""

from __future__ import annotations

import io
import json
import math
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.heldout import write_heldout
from datamodules.mp4 import encode_mp4
from mav_train.cli.main import main
from mav_train.evaluation.media_source import MediaSource
from mav_train.evaluation.scores import frechet_distance, inception_score
from tests.conftest import run_cli
from tests.evaluation.tiny_networks import save_tiny


def _gaussian_with_exact_stats(n: int, mean: torch.Tensor, std: torch.Tensor, seed: int) -> torch.Tensor:
    """n samples whose sample mean is exactly ``mean`` and sample covariance exactly ``diag(std^2)``."""
    z = torch.randn(n, mean.shape[0], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    z = z - z.mean(dim=0)
    chol = torch.linalg.cholesky(z.T @ z / (n - 1))
    white = torch.linalg.solve_triangular(chol, z.T, upper=False).T  # sample covariance = I
    return white * std + mean


def test_frechet_distance_of_gaussians_is_the_closed_form():
    """Diagonal covariances: d = |mu1 - mu2|^2 + sum_i (s1_i - s2_i)^2 exactly."""
    mu1, mu2 = torch.tensor([0.0, 1.0, -2.0, 0.5], dtype=torch.float64), torch.tensor([1.0, 1.0, 0.0, 0.0],
                                                                                        dtype=torch.float64)
    s1, s2 = torch.tensor([1.0, 2.0, 0.5, 1.5], dtype=torch.float64), torch.tensor([0.5, 2.0, 1.0, 3.0],
                                                                                    dtype=torch.float64)
    a, b = _gaussian_with_exact_stats(300, mu1, s1, 0), _gaussian_with_exact_stats(500, mu2, s2, 1)
    expected = float(((mu1 - mu2) ** 2).sum() + ((s1 - s2) ** 2).sum())
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="same d"):
        frechet_distance(a, b[:, :3])


@pytest.mark.filterwarnings("ignore:std\\(\\)")  # one split has no standard deviation
def test_inception_score_bounds():
    """Identical predictions give 1; confident predictions spread evenly over k classes give k."""
    assert inception_score(torch.full((100, 5), 0.2), splits=10)[0] == pytest.approx(1.0)
    one_hot = torch.eye(5).repeat(40, 1)
    mean, _ = inception_score(one_hot * 0.999999 + 2e-7, splits=1)
    assert mean == pytest.approx(5.0, rel=1e-3)
    logits = torch.randn(200, 5) * 4
    from_probs = inception_score(torch.softmax(logits, 1), 10)  # probabilities or logits: the same score
    assert inception_score(logits, 10) == pytest.approx(from_probs, rel=1e-6)


@pytest.fixture(scope="module")
def toy_sets(tmp_path_factory):
    """Toy clips (16 frames, 32 px): ``a`` (held-out seed 1), ``b`` (seed 2) and ``noise`` (random pixels), and
    the three tiny networks."""
    root = tmp_path_factory.mktemp("toy_sets")
    write_heldout(root / "a", num=12, seed=1, kind="video", frames=16)
    write_heldout(root / "b", num=12, seed=2, kind="video", frames=16)
    rng = np.random.default_rng(0)
    (root / "noise").mkdir()
    for i in range(12):
        (root / "noise" / f"{i:03d}.mp4").write_bytes(
            encode_mp4(list(rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)), 30))
    nets = {kind: save_tiny(kind, root) for kind in ("i3d", "inception", "c3d")}
    return root, nets


def _evaluate(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["evaluate", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_fvd_identical_similar_different_and_the_protocol(toy_sets, tmp_path, capsys):
    root, nets = toy_sets
    values = {}
    for other in ("a", "b", "noise"):
        code, out, err = _evaluate(capsys, "fvd", f"samples={root / other}", f"real={root / 'a'}",
                                   f"network={nets['i3d']}", f"out={tmp_path / other}.json")
        assert code == 0, err
        values[other] = json.loads((tmp_path / f"{other}.json").read_text())
    assert abs(values["a"]["value"]) < 1e-6  # identical sets
    assert 1e-4 < values["b"]["value"] < values["noise"]["value"] / 3  # same world < noise (measured 0.10, 0.64)
    record = values["b"]
    assert record["protocol"]["name"] == "stylegan_v" and record["counts"] == {"fake": 12, "real": 12}
    assert record["protocol"]["settings"]["num_real"] == 2048 and record["protocol"]["changed"] == []
    assert record["short"]["real"] == {"used": 12, "asked": 2048} and "WARNING: 12 real items" in out
    assert "fvd2048_16f" in out and "resize" in out and "224" in out  # the protocol is printed with the number


def test_fvd_counts_bad_items_and_marks_overrides(toy_sets, tmp_path, capsys):
    root, nets = toy_sets
    samples = tmp_path / "s"
    write_heldout(samples, num=5, seed=3, kind="video", frames=16)
    (samples / "00000.mp4").write_bytes(b"<html>404</html>")  # unreadable
    write_heldout(tmp_path / "short", num=1, seed=3, kind="video", frames=8)
    (tmp_path / "short" / "00000.mp4").rename(samples / "short.mp4")  # too short for 16 frames
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(samples / "still.png")  # not a video
    code, out, err = _evaluate(capsys, "fvd", f"samples={samples}", f"real={root / 'a'}", f"network={nets['i3d']}",
                               "num_real=6", f"out={tmp_path / 'r.json'}")
    assert code == 0, err
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["counts"] == {"fake": 4, "real": 6}
    assert record["skipped"]["fake"] == {"unreadable_file": 1, "too_short": 1, "not_a_video": 1}
    assert record["protocol"]["changed"] == ["num_real"] and "num_real=6*" in out


@pytest.mark.parametrize("args, message", [
    (["network=/nowhere/i3d.pt"], "does not exist"),
    (["network={bad}"], "not a TorchScript file"),
    ([], "network=PATH is required"),
    (["protocol=fvd9000"], "unknown protocol 'fvd9000'"),
    (["num_fake=lots"], "num_fake must be an integer or all"),
])
def test_fvd_bad_inputs_are_one_line(toy_sets, tmp_path, capsys, args, message):
    root, _ = toy_sets
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not torchscript")
    args = [a.replace("{bad}", str(bad)) for a in args]
    code, _, err = _evaluate(capsys, "fvd", f"samples={root / 'a'}", f"real={root / 'b'}", *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_fid_on_frames_and_is_of_clips(toy_sets, tmp_path, capsys):
    root, nets = toy_sets
    images = tmp_path / "images"
    write_heldout(images, num=20, seed=4)
    code, out, err = _evaluate(capsys, "fid", f"samples={root / 'a'}", f"real={root / 'a'}",
                               f"network={nets['inception']}", "frames_per_video=4", f"out={tmp_path / 'fid.json'}")
    assert code == 0, err
    same = json.loads((tmp_path / "fid.json").read_text())
    assert abs(same["value"]) < 1e-6 and same["counts"] == {"fake": 48, "real": 48}  # 12 clips x 4 frames
    code, out, err = _evaluate(capsys, "fid", f"samples={images}", f"real={root / 'a'}",
                               f"network={nets['inception']}", "num_real=40", f"out={tmp_path / 'fid2.json'}")
    assert code == 0, err
    assert json.loads((tmp_path / "fid2.json").read_text())["value"] > 1e-4 and "msrvtt" in out
    code, out, err = _evaluate(capsys, "is", f"samples={root / 'a'}", f"network={nets['c3d']}", "splits=2",
                               f"out={tmp_path / 'is.json'}")
    assert code == 0, err
    record = json.loads((tmp_path / "is.json").read_text())
    assert 1.0 <= record["value"] <= 5.0 and record["extra"]["std"] >= 0 and "C3D" in out
    assert record["protocol"]["changed"] == ["splits"]


def test_real_data_from_shards(toy_sets, tmp_path, capsys):
    """video2dataset-style shards as the real source; a garbage sample and a truncated shard are counted."""
    root, nets = toy_sets
    shards = tmp_path / "shards"
    shards.mkdir()
    with tarfile.open(shards / "00000.tar", "w") as tar:
        for i, path in enumerate(sorted((root / "b").glob("*.mp4"))):
            for name, data in ((f"{i:09d}.mp4", path.read_bytes()), (f"{i:09d}.txt", b"a caption")):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("999999999.mp4")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"oops"))
    whole = (shards / "00000.tar").read_bytes()
    (shards / "00001.tar").write_bytes(whole[: len(whole) // 2])  # truncated
    source = MediaSource(str(shards))
    items = list(source)
    assert len(items) >= 12 and items[0].caption == "a caption" and items[0].pixels.shape == (16, 32, 32, 3)
    assert source.skipped["unreadable_file"] == 1 and source.skipped["corrupt_shard"] == 1
    code, out, err = _evaluate(capsys, "fvd", f"samples={root / 'b'}", f"real={shards}/{{00000..00000}}.tar",
                               f"network={nets['i3d']}", f"out={tmp_path / 'r.json'}")
    assert code == 0, err
    assert abs(json.loads((tmp_path / "r.json").read_text())["value"]) < 1e-6  # the same clips


def test_cli_end_to_end_with_wandb(toy_sets, tmp_path):
    """The real command in a subprocess: table, JSON, and the number logged into an offline W&B run."""
    root, nets = toy_sets
    out = run_cli(["evaluate", "fvd", f"samples={root / 'b'}", f"real={root / 'a'}", f"network={nets['i3d']}",
                   "num_fake=10", f"wandb={tmp_path / 'run'}"], tmp_path, tmp_path)
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0].split()
    assert first == ["metric", "value", "generated", "real", "protocol"]
    assert out.stdout.splitlines()[1].split()[0] == "fvd" and "logged to W&B run" in out.stdout
    run_id = (tmp_path / "run" / "wandb_run_id.txt").read_text().strip()
    assert list((tmp_path / "run" / "wandb").glob(f"offline-run-*-{run_id}"))


def test_clipsim_prefers_the_own_caption(tmp_path, capsys):
    """Under a toy CLIP trained here (30 steps: it reads backgrounds by then, measured mean cosine 0.49 with the
    own caption against 0.16 with the caption on another background), images score higher with their own
    captions than with those captions moved to another background."""
    from datamodules.toy_world import one_attribute_variants, parse_caption
    from mav_train.components.clip import EXPORT_NAME
    from tests.components.test_clip import train_clip

    torch.manual_seed(0)
    train_clip(tmp_path, steps=30, batch=64)
    weights = tmp_path / EXPORT_NAME
    own, wrong = tmp_path / "own", tmp_path / "wrong"
    write_heldout(own, num=24, seed=5)
    write_heldout(wrong, num=24, seed=5)
    for caption in wrong.glob("*.txt"):
        other = one_attribute_variants(parse_caption(caption.read_text().strip()))["background"][0]
        caption.write_text(other.text() + "\n")
    (own / "00000.txt").unlink()  # a sample without caption: skipped and counted
    scores = {}
    for name, directory in (("own", own), ("wrong", wrong)):
        code, out, err = _evaluate(capsys, "clipsim", f"samples={directory}", "clip.model=toy",
                                   f"clip.pretrained={weights}", "protocol=toy", f"out={tmp_path / name}.json")
        assert code == 0, err
        scores[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert scores["own"]["value"] > scores["wrong"]["value"] + 0.1, (scores["own"]["value"], scores["wrong"]["value"])
    assert scores["own"]["counts"] == {"fake": 23} and scores["own"]["skipped"]["fake"] == {"missing_caption": 1}
    assert not math.isnan(scores["wrong"]["value"])
    code, _, err = _evaluate(capsys, "clipsim", f"samples={own}")  # ViT-B/32 without local weights
    assert code == 2 and "clip.pretrained=PATH is required" in err and len(err.strip().splitlines()) == 1


def test_clipsim_toy_protocol_uses_the_demo_clip(tmp_path, capsys):
    """``protocol=toy`` resolves ``clip.pretrained=demo`` (here the session cache's stand-in toy CLIP)."""
    write_heldout(tmp_path / "v", num=3, seed=6, kind="video", frames=4)
    code, out, err = _evaluate(capsys, "clipsim", f"samples={tmp_path / 'v'}", "protocol=toy", "frames_per_video=2",
                               f"out={tmp_path / 'r.json'}")
    assert code == 0, err
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["counts"] == {"fake": 3} and -1.0 <= record["value"] <= 1.0
    assert record["protocol"]["settings"]["clip.pretrained"] == "demo" and "toy CLIP" in out
