"""The shape readings behind the judge's shape accuracy (``mav_train.evaluation.shape_probe``): exact renders and a
decoder that draws what it is told read the shape; circles drawn for every shape read near chance behind the
circles and fail the swap."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from datamodules.heldout import heldout_scenes, scene_images
from datamodules.toy_world import SHAPES, caption_of
from mav_train.evaluation.shape_probe import behind_circles, shape_swap, template_fits


def test_exact_renders_read_their_shape_behind_the_circles():
    scenes = heldout_scenes(64, 1)
    result = behind_circles(scene_images(scenes, 32), [caption_of(s) for s in scenes])
    assert result["n"] == sum(s.shape != "circle" for s in scenes) > 30
    assert result["share"] >= 0.95, result


def test_circles_drawn_for_every_shape_stay_near_chance():
    scenes = heldout_scenes(64, 1)
    circles = [dataclasses.replace(s, shape="circle") for s in scenes]
    result = behind_circles(scene_images(circles, 32), [caption_of(s) for s in scenes])
    assert result["share"] <= 0.4, result  # one non-circle template fits a disc best, whatever the truth (0.25)


def test_template_fits_name_the_drawn_shape_and_refuse_noise():
    scene = dataclasses.replace(heldout_scenes(1, 1)[0], shape="triangle", size=0.45, x=0.5, y=0.5)
    fits = template_fits(((scene_images([scene], 32)[0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy())
    assert max(fits, key=fits.__getitem__) == "triangle" and set(fits) == set(SHAPES)
    noise = torch.randint(0, 256, (32, 32, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    assert template_fits(noise.numpy()) is None


class PixelClip:
    """A 'CLIP' whose embedding is the image itself, so that a fake decoder can draw exactly what it was shown."""

    @staticmethod
    def encode_image(images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)


def fake_decoder(draw_circles: bool, num: int):
    circles = scene_images([dataclasses.replace(s, shape="circle") for s in heldout_scenes(num, 1)], 32)

    def sample(cond, shape, noise=None, generator=None):
        return circles.clone() if draw_circles else cond.image_emb.view(shape)

    return SimpleNamespace(cfg=SimpleNamespace(data=SimpleNamespace(resolution=32)), device=torch.device("cpu"),
                           clip=PixelClip(), sample=sample)


@pytest.mark.parametrize("draw_circles", [False, True])
def test_shape_swap_tells_a_decoder_that_draws_what_it_is_told_from_one_that_draws_circles(draw_circles):
    report = shape_swap(fake_decoder(draw_circles, 16), num=16)
    assert set(report) == set(SHAPES)
    assert report["circle"]["read"] == 1.0 and report["circle"]["embedding_cos"] == pytest.approx(1.0)
    for shape in SHAPES[1:]:
        assert report[shape]["embedding_cos"] < 0.999
        if draw_circles:
            assert report[shape]["read"] <= 0.2 and report[shape]["sample_change"] == 0.0
        else:
            assert report[shape]["read"] >= 0.9 and report[shape]["sample_change"] > 0.0


def test_shape_swap_runs_a_real_decoder():
    from mav_train.components.registry import component_class
    from mav_train.config.load import load_config
    from tests.components.test_decoder import OVERRIDES

    torch.manual_seed(0)
    module = component_class("decoder")(load_config("demo/decoder", OVERRIDES)).eval()
    with torch.no_grad():  # a fresh UNet's output conv is zero: give it weights, so that samples follow the condition
        for p in module.ema_network.parameters():
            p.add_(0.05 * torch.randn_like(p))
    report = shape_swap(module, num=4)
    assert set(report) == set(SHAPES)
    assert report["circle"]["embedding_cos"] == pytest.approx(1.0)
    # Each shape's own embedding reaches the sampler: the noise is the same, so only the embedding can move the
    # sample (the tests' CLIP is the untrained stand-in, whose embeddings differ only slightly between shapes).
    for shape in SHAPES[1:]:
        assert report[shape]["sample_change"] > 1e-4, report[shape]
    assert all(0.0 <= r["read"] <= 1.0 for r in report.values())
