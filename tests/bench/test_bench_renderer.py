"""The renderer benchmark at a minuscule size (structure only: two training steps, four held-out scenes)."""

from __future__ import annotations

import pytest
import torch

from bench.bench_renderer import (
    ATTRIBUTE_DIMS,
    attribute_vector,
    caption_attribute_vector,
    conditioner,
    main,
    rotation,
    whitening,
)
from datamodules.heldout import heldout_scenes
from datamodules.toy_world import Scene, place_of, size_word
from mav_train.config.load import load_config

TINY = ["unet.base_channels=8", "unet.channel_mults=[1,2]", "unet.attention_levels=[2]", "unet.head_dim=8",
        "optim.warmup_steps=1"]


def test_attribute_vector_encodes_the_scene():
    scenes = heldout_scenes(3, 1)
    v = attribute_vector(scenes, 64)
    assert v.shape == (3, 64) and torch.all(v[:, ATTRIBUTE_DIMS:] == 0)
    assert torch.all(v[:, :5].sum(1) == 1) and torch.all(v[:, 5:15].sum(1) == 1) and torch.all(v[:, 15:25].sum(1) == 1)
    assert v[0, 25].item() == pytest.approx(2 * scenes[0].x - 1)
    with pytest.raises(ValueError, match="cond_dim >= 28"):
        attribute_vector(scenes, 16)


def test_caption_attributes_keep_only_the_captions_words():
    scenes = [Scene(shape="square", color=0, background=1, x=x, y=y, size=size)
              for x, y, size in [(0.1, 0.9, 0.22), (0.37, 0.39, 0.33), (0.64, 0.5, 0.45), (0.5, 0.2, 0.30)]]
    v = caption_attribute_vector(scenes, 64)
    assert torch.equal(v[:, :ATTRIBUTE_DIMS - 3], attribute_vector(scenes, 64)[:, :ATTRIBUTE_DIMS - 3])
    words = {(-1.0, 1.0): "bottom left", (-1.0, 0.0): "left", (1.0, 0.0): "right", (0.0, -1.0): "top"}
    sizes = {-1.0: "small", 0.0: "medium", 1.0: "large"}
    for row, scene in zip(v, scenes):
        x, y, size = row[ATTRIBUTE_DIMS - 3:ATTRIBUTE_DIMS].tolist()
        assert words[(x, y)] == place_of(scene.x, scene.y) and sizes[size] == size_word(scene.size)


def test_rotated_attributes_keep_all_information():
    cfg = load_config("demo/decoder", TINY)
    scenes = heldout_scenes(4, 1)
    plain = conditioner("attributes", cfg)(scenes, torch.zeros(4, 3, 32, 32))
    rotated = conditioner("rotated", cfg)(scenes, torch.zeros(4, 3, 32, 32))
    assert torch.allclose(rotated @ rotation(64).T, plain, atol=1e-5)
    assert (rotated[:, ATTRIBUTE_DIMS:] != 0).any()  # mixed into every input


def test_tiny_run_prints_the_judges_scores(capsys):
    scores = main(["--cond", "rotated", "--steps", "2", "--batch", "2", "--num", "4", *TINY])
    assert {"background", "color", "shape", "position", "size", "readable"} <= set(scores)
    assert all(0.0 <= value <= 1.0 for value in scores.values())
    assert "renderer: cond=rotated steps=2" in capsys.readouterr().out


def test_tiny_diffusion_run_samples_and_prints_the_judges_scores(capsys):
    scores = main(["--cond", "caption-attributes", "--objective", "diffusion", "--steps", "2", "--batch", "2",
                   "--num", "4", "diffusion.sample_steps=2", *TINY])
    assert {"background", "shape", "readable"} <= set(scores)
    assert "diffusion: cond=caption-attributes steps=2" in capsys.readouterr().out


def test_band_timestep_outside_the_schedule_is_refused_before_training(capsys):
    with pytest.raises(SystemExit):
        main(["--objective", "band", "--band-t", "1000", "--steps", "1", *TINY])
    assert "--band-t must be in [0, 1000), got 1000" in capsys.readouterr().err


def test_clip_condition_needs_a_weights_file():
    with pytest.raises(SystemExit):
        main(["--cond", "clip", "--steps", "1"])


def test_whitening_gives_unit_covariance():
    mixing = torch.randn(ATTRIBUTE_DIMS, 8, generator=torch.Generator().manual_seed(0))

    def embed(scenes, images):
        return attribute_vector(scenes, 64)[:, :ATTRIBUTE_DIMS] @ mixing

    mean, matrix = whitening(embed, 32, num=1024)
    scenes = heldout_scenes(1024, 1)
    white = (embed(scenes, None) - mean) @ matrix
    assert torch.allclose(torch.cov(white.T), torch.eye(8), atol=0.15)


def test_band_judges_one_prediction_from_the_noised_held_out_images():
    from bench.bench_renderer import judge_renderer
    from datamodules.heldout import scene_images

    cfg = load_config("demo/decoder", TINY + ["diffusion.self_condition=false", "unet.extra_in_channels=0"])
    truth = scene_images(heldout_scenes(16, 1), cfg.data.resolution)
    seen = {}

    def copies_the_truth(x_t, t, image_emb):  # an x0-predicting net that knows the answer
        seen["t"] = t
        return truth

    def returns_its_input(x_t, t, image_emb):
        return x_t

    attributes = conditioner("attributes", cfg)
    exact = judge_renderer(copies_the_truth, cfg, attributes, 16, objective="band", band_t=600)
    assert exact["shape"] >= 0.9 and exact["background"] >= 0.9
    assert torch.all(seen["t"] == 600)
    noisy = judge_renderer(returns_its_input, cfg, attributes, 16, objective="band", band_t=600)
    assert noisy["readable"] <= 0.25  # the noised input itself does not show the shape
    barely = judge_renderer(returns_its_input, cfg, attributes, 16, objective="band", band_t=0)
    assert barely["shape"] >= 0.9  # ... and at t = 0 it is the held-out image
    with pytest.raises(ValueError, match="band-t"):
        judge_renderer(returns_its_input, cfg, attributes, 4, objective="band", band_t=1000)


def test_tiny_band_run_prints_the_judges_scores(capsys):
    scores = main(["--cond", "attributes", "--objective", "band", "--band-t", "300", "--steps", "2", "--batch", "2",
                   "--num", "4", *TINY])
    assert {"background", "shape", "readable"} <= set(scores)
    assert "band t=300: cond=attributes steps=2" in capsys.readouterr().out


def test_tiny_band_run_with_repa_runs(capsys):
    scores = main(["--cond", "attributes", "--objective", "band", "--steps", "2", "--batch", "2", "--num", "4", *TINY,
                   "clip.pretrained=null", "repa.weight=0.1"])
    assert {"background", "shape", "readable"} <= set(scores)
    assert "band t=600: cond=attributes steps=2" in capsys.readouterr().out
