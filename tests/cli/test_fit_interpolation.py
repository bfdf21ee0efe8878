"""A smoke `fit` of demo/interpolation (↑F) through the real CLI, initialised from a demo D^t checkpoint."""

from __future__ import annotations

import decord
import torch

from mav_train.components.clip_source import CLIP_FINGERPRINT_KEY
from mav_train.components.registry import component_class
from mav_train.config.load import load_config
from tests.cli.test_cli import SMOKE
from tests.conftest import run_cli

UPF_SMOKE = [*SMOKE, "trainer.max_steps=2", "checkpoint.every_n_steps=2", "sampling.every_n_steps=2",
             "diffusion.sample_steps=2", "data.batch_size=2", "data.num_frames=6", "logger=none"]


def temporal_decoder_checkpoint(path, overrides: list[str]) -> None:
    """A demo D^t as `fit` would leave it (weights, config, CLIP fingerprint), without training it."""
    module = component_class("temporal_decoder")(load_config("demo/temporal_decoder", overrides))
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": {"config": dict(module.hparams["config"])},
                CLIP_FINGERPRINT_KEY: module.clip_fingerprint()}, path)


def test_fit_demo_interpolation_from_a_temporal_decoder(tmp_path, demo_cache):
    init = tmp_path / "dt.ckpt"
    temporal_decoder_checkpoint(init, ["data.num_frames=6"])
    out = run_cli(["fit", "recipe=demo/interpolation", f"init.checkpoint={init}", *UPF_SMOKE], tmp_path, demo_cache)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "initialised interpolation from" in out.stderr and "expanded input_conv.weight" in out.stderr
    run_dir = tmp_path / "runs" / "demo" / "interpolation"
    videos = sorted((run_dir / "samples").glob("*.mp4"))
    assert [v.name for v in videos] == ["step0000002.mp4"] and len(decord.VideoReader(str(videos[0]))) == 6
    ckpt = torch.load(run_dir / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2 and ckpt["hyper_parameters"]["config"]["data"]["integer_stride"]
    weight = ckpt["state_dict"]["network.input_conv.weight"]
    patch = ckpt["hyper_parameters"]["config"]["unet"]["patch_size"]  # channels per pixel of a patch: p * p
    assert weight.shape[1] == 7 * patch**2 and weight[:, 3 * patch**2:].abs().max() > 0  # the new channels train

    sample = run_cli(["sample", f"checkpoint={run_dir / 'last.ckpt'}", f"image={videos[0]}"], tmp_path, demo_cache)
    lines = [line for line in sample.stderr.splitlines() if line.strip()]
    assert sample.returncode == 2 and len(lines) == 1 and "interpolation (↑F) checkpoint" in lines[0], sample.stderr
