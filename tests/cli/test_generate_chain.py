"""``generate`` as the whole chain P → D^t → ↑F → SR_l^t → SR_h → mp4 (and P → D → SR_l → SR_h → png) on tiny
checkpoints trained in the test (every stage the real component, ↑F included), and one clear line for every kind of
bad input, before anything samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mav_train.cli.main import main
from mav_train.evaluation.sample_files import decode_mp4
from tests.cli.chain_fixtures import tiny_checkpoint

PROMPT = "a red circle at the top left on a blue background"
STAGES = ("prior", "decoder", "temporal_decoder", "interpolation", "sr_low", "temporal_sr_low", "sr_high")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("chain")
    return {name: tiny_checkpoint(name, root / f"{name}.ckpt") for name in STAGES}


def video_args(ckpts, *names: str) -> list[str]:
    names = names or ("prior", "temporal_decoder", "interpolation", "temporal_sr_low", "sr_high")
    return [f"{n}={ckpts[n]}" for n in names] + ["interpolation.skip=2", "progress=false"]


def test_text_to_video_through_every_stage(ckpts, tmp_path, capsys):
    out = tmp_path / "gen"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"{PROMPT}\n\na small green square in the middle on a white background\n")
    assert main(["generate", f"prompt={prompts}", *video_args(ckpts), "num=1", f"out={out}", "seed=3",
                 "temporal_decoder.fps=4", "temporal_sr_low.shared_noise=true", "interpolation.strength=0.5"]) == 0
    # The final clips: SR_h's size, ↑F's frame count ((4 - 1) * 2 + 1 = 7).
    for i in range(2):
        clip = decode_mp4(out / f"{i:03d}.mp4")
        assert clip.shape == (7, 32, 32, 3), clip.shape
    assert (out / "001.txt").read_text().startswith("a small green square")
    # A frame strip per video (7 frames, all shown), beside but not among the judged files.
    for i in range(2):
        strip = np.asarray(Image.open(out / "strips" / f"{i:03d}.png"))
        assert strip.shape == (32, 7 * 32, 3)
        assert strip.std() > 0  # the frames themselves (which, in order) are tests/evaluation/test_frame_strip.py's
    # Every stage's output, each folder with its captions.
    shapes = {"temporal_decoder": (4, 8), "interpolation": (7, 8), "temporal_sr_low": (7, 16), "sr_high": (7, 32)}
    for stage, (frames, size) in shapes.items():
        clip = decode_mp4(out / "stages" / stage / "000.mp4")
        assert clip.shape == (frames, size, size, 3), (stage, clip.shape)
        assert (out / "stages" / stage / "000.txt").is_file()
    assert np.load(out / "stages" / "prior" / "000.npy").shape == (32,)
    record = json.loads((out / "generate.json").read_text())
    assert [s["stage"] for s in record["stages"]] == ["prior", "temporal_decoder", "interpolation",
                                                      "temporal_sr_low", "sr_high"]
    prior_fp = record["stages"][0]["clip_fingerprint"]
    assert prior_fp and record["clip_fingerprint"] == prior_fp
    assert record["stages"][1]["clip_fingerprint"] == prior_fp  # D^t: the same CLIP
    assert record["output"]["fps"] == 8.0  # 4 fps, frame skip 2
    assert record["stages"][2]["settings"]["skip"] == 2 and record["stages"][1]["settings"]["fps"] == 4.0
    # What each stage actually sampled with: the given settings, the rest from its recipe.
    assert record["stages"][4]["effective_settings"] == {"steps": 2, "guidance": 1.0, "sampler": "ddim", "eta": 0.0,
                                                         "noise_level": 0.05}
    assert record["stages"][3]["effective_settings"]["shared_noise"] is True
    assert record["stages"][2]["effective_settings"]["strength"] == 0.5
    assert "wrote 2 sample(s)" in capsys.readouterr().out


def test_same_seed_same_video_and_chain_stops_at_last_stage(ckpts, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        args = [a for a in video_args(ckpts, "prior", "temporal_decoder") if a != "progress=false"]
        assert main(["generate", f"prompt={PROMPT}", *args, "num=2", f"out={out}", "temporal_decoder.fps=7.5"]) == 0
    # One progress bar per stage, counting its sampling steps (2 each).
    err = capsys.readouterr().err
    assert "prior" in err and "temporal_decoder" in err and "2/2" in err, err
    # D^t's own clips: 4 frames at 8 px; the same seed gives the same files.
    assert decode_mp4(a / "001.mp4").shape == (4, 8, 8, 3)
    from mav_train.media import read_video

    assert read_video(a / "001.mp4")[1] == 7.5  # the clip's frame rate, exactly
    assert (a / "000.mp4").read_bytes() == (b / "000.mp4").read_bytes()
    assert sorted(p.name for p in (a / "stages").iterdir()) == ["prior", "temporal_decoder"]


def test_frame_noise_share_at_sampling(ckpts, tmp_path):
    # The stage samples with the given share of every frame's noise drawn once per clip (the checkpoint's
    # diffusion.frame_noise_share otherwise), and generate.json records what it used.
    import torch
    from omegaconf import OmegaConf

    from mav_train.config.pipeline_file import StageSettings
    from mav_train.pipeline.stages import build, read_stage

    def frame_correlation(share):
        settings = OmegaConf.structured(StageSettings(checkpoint=str(ckpts["temporal_decoder"]),
                                                      frame_noise_share=share))
        module = build(read_stage("temporal_decoder", str(ckpts["temporal_decoder"]), settings))
        z = module.diffusion.noise((64, 3, 4, 8, 8), generator=torch.Generator().manual_seed(0))
        frames = z.permute(2, 0, 1, 3, 4).reshape(4, -1)
        return torch.corrcoef(frames)[0, 1:].mean().item()

    assert abs(frame_correlation(None) - 0.8) < 0.05  # the checkpoint's own (demo/temporal_decoder: 0.8)
    assert abs(frame_correlation(0.3) - 0.3) < 0.05 and abs(frame_correlation(0.0)) < 0.05
    out = tmp_path / "share"
    assert main(["generate", f"prompt={PROMPT}", *video_args(ckpts, "prior", "temporal_decoder"), "num=1",
                 f"out={out}", "temporal_decoder.frame_noise_share=0.9"]) == 0
    record = json.loads((out / "generate.json").read_text())
    assert record["stages"][1]["effective_settings"]["frame_noise_share"] == 0.9


def test_text_to_image_chain_with_a_pipeline_file(ckpts, tmp_path):
    pipeline = tmp_path / "images.yaml"
    pipeline.write_text("description: tiny text to image\n" + "".join(
        f"{n}: {{checkpoint: {ckpts[n]}, steps: 2}}\n" for n in ("prior", "decoder", "sr_low", "sr_high")))
    out = tmp_path / "img"
    assert main(["generate", f"prompt={PROMPT}", f"pipeline={pipeline}", "num=2", f"out={out}",
                 "progress=false", "sr_low.noise_level=0.1", "decoder.sampler=dpmpp"]) == 0
    from PIL import Image

    assert Image.open(out / "000.png").size == (32, 32)
    assert Image.open(out / "stages" / "decoder" / "001.png").size == (8, 8)
    assert (out / "grid.png").is_file()
    record = json.loads((out / "generate.json").read_text())
    assert record["stages"][2]["settings"]["noise_level"] == 0.1
    assert record["stages"][1]["effective_settings"]["sampler"] == "dpmpp"
    # demo/decoder samples with DDIM eta 1; DPM-Solver++ is deterministic, so the override runs (and says) eta 0.
    assert record["stages"][1]["effective_settings"]["eta"] == 0.0


def test_image_animation_and_video_frame_rate(ckpts, tmp_path, capsys):
    import re

    from PIL import Image

    image = tmp_path / "in.png"
    Image.fromarray(np.full((20, 30, 3), 200, dtype=np.uint8)).save(image)
    out = tmp_path / "anim"
    # The chain minus P: the image is ↑F's first frame (animation), then SR_l^t and SR_h.
    args = [a for a in video_args(ckpts) if a != "progress=false"]
    assert main(["generate", f"image={image}", *args, "num=1", f"out={out}", "interpolation.strength=0.5"]) == 0
    # ↑F's bar counts the steps that run from the noised first frame (strength 0.5 of 2 steps: 1), and ends full.
    done, total = re.findall(r"interpolation\s*:?\s*\d+%\|[^|]*\|\s*(\d+)/(\d+)", capsys.readouterr().err)[-1]
    assert done == total == "1"
    assert decode_mp4(out / "000.mp4").shape == (4, 32, 32, 3)  # ↑F's clip length
    assert not (out / "stages" / "temporal_decoder").exists()
    assert (out / "000.txt").read_text().strip() == "in"

    # Raise a user video's frame rate: its first 3 frames through ↑F (skip 2) → 5 frames at twice the rate.
    from mav_train.media import write_mp4

    video = tmp_path / "clip.mp4"
    write_mp4([np.full((12, 12, 3), v, dtype=np.uint8) for v in (0, 100, 200, 250)], video, fps=6)
    out = tmp_path / "up"
    assert main(["generate", f"video={video}", *video_args(ckpts), "stages=interpolation", "frames=3",
                 f"out={out}"]) == 0
    clip = decode_mp4(out / "000.mp4")
    assert clip.shape == (5, 8, 8, 3)
    assert json.loads((out / "generate.json").read_text())["output"]["fps"] == 12.0
    # Variation: D^t from the embedding of the video's first frame.
    out = tmp_path / "var"
    assert main(["generate", f"video={video}", *video_args(ckpts, "temporal_decoder"), "num=2",
                 f"out={out}"]) == 0
    assert decode_mp4(out / "001.mp4").shape == (4, 8, 8, 3)


def _fails(capsys, args: list[str], expected: str) -> str:
    assert main(["generate", *args]) == 2, args
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err
    assert "Traceback" not in err
    return err


def test_bad_input_is_one_line_before_sampling(ckpts, tmp_path, capsys, monkeypatch):
    # Nothing may sample: fail loudly if a component's sampler runs.
    from mav_train.components.base import DiffusionComponent

    def no_sampling(*_, **__):
        raise AssertionError("sampling started")

    monkeypatch.setattr(DiffusionComponent, "sample", no_sampling)
    ok = video_args(ckpts)
    _fails(capsys, ["prompt=  ", *ok], "the prompt is empty")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    _fails(capsys, [f"prompt={empty}", *ok], "holds no prompt")
    _fails(capsys, ["prompt=x", *ok, f"sr_high={tmp_path / 'nope.ckpt'}"], "sr_high=")
    _fails(capsys, ["prompt=x", *ok, f"sr_high={tmp_path / 'nope.ckpt'}"], "checkpoint not found")
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(ckpts["sr_high"].read_bytes()[:5000])
    _fails(capsys, ["prompt=x", *ok, f"temporal_sr_low={broken}"], "unreadable checkpoint")
    _fails(capsys, ["prompt=x", *ok, f"temporal_decoder={ckpts['decoder']}"],
           "is a decoder checkpoint, not a temporal_decoder")
    # Another CLIP: a D^t trained with the tiny CLIP of another seed.
    other = tiny_checkpoint("temporal_decoder", tmp_path / "other.ckpt", steps=1, extra=("clip.seed=1",))
    _fails(capsys, ["prompt=x", *ok, f"temporal_decoder={other}"], "trained with CLIP")
    # Sizes and frame counts that do not chain.
    _fails(capsys, ["prompt=x", *video_args(ckpts, "prior", "temporal_decoder", "sr_high")],
           "takes 16x16 input, but the stage before it gives a video of 4 frames at 8x8")
    _fails(capsys, ["prompt=x", *ok, "interpolation.skip=9"], "skip 9 does not fit")
    from mav_train.media import write_mp4

    long_video = tmp_path / "long.mp4"
    write_mp4([np.full((8, 8, 3), 10 * i, dtype=np.uint8) for i in range(8)], long_video, fps=8)
    _fails(capsys, [f"video={long_video}", *ok, "stages=interpolation,temporal_sr_low", "frames=8",
                    "interpolation.skip=3"], "handles at most 16 frames (unet.max_frames), but it would get 22")
    _fails(capsys, ["prompt=x", *ok, "temporal_sr_low.steps=0"], "temporal_sr_low.steps must be >= 1")
    _fails(capsys, ["prompt=x", *video_args(ckpts, "prior", "decoder", "temporal_sr_low")],
           "temporal_sr_low takes video, but the stage before it gives an image at 8x8")
    _fails(capsys, ["prompt=x", *video_args(ckpts, "prior", "decoder", "temporal_decoder")], "not both")
    # Arguments and settings.
    _fails(capsys, ["prompt=x", *ok, "interpolation.skp=2"], "interpolation.skp")
    _fails(capsys, ["prompt=x", *ok, "prior.skip=2"], "does not apply to the prior stage")
    _fails(capsys, ["prompt=x", *ok, "sr_high.shared_noise=true"], "does not apply to the sr_high stage")
    _fails(capsys, ["prompt=x", *ok, "temporal_decoder.strength=0.5"], "does not apply to the temporal_decoder")
    _fails(capsys, ["prompt=x", *ok, "interpolation.strength=0"], "'interpolation.strength' must lie in (0, 1]")
    _fails(capsys, ["prompt=x", *ok, "prior.frame_noise_share=0.5"], "does not apply to the prior stage")
    _fails(capsys, ["prompt=x", *ok, "temporal_decoder.frame_noise_share=1"],
           "'temporal_decoder.frame_noise_share' must lie in [0, 1)")
    _fails(capsys, ["prompt=x", "temporal_decoder=none"], "no stage to run")
    _fails(capsys, [f"temporal_decoder={ckpts['temporal_decoder']}"], "give prior= with a prompt")
    _fails(capsys, ["prompt=x", f"image={tmp_path / 'none.png'}", *ok], "cannot read image")
    _fails(capsys, ["prompt=x", "pipeline=no_such_pipeline"], "pipeline 'no_such_pipeline' not found")
    _fails(capsys, ["prompt=x", *ok, "num=two"], "num must be an integer, got 'two'")
    _fails(capsys, ["prompt=x", *ok, "prior.sampler=euler"], "euler")
