"""The ↑F measurements: baselines are exact, the judge reads the true trajectory, and the whole measurement runs
end to end on a (random, tiny) interpolation model."""

from __future__ import annotations

import math

import torch

from datamodules.heldout import heldout_scenes
from mav_train.components.registry import component_class
from mav_train.config.load import load_config
from mav_train.evaluation.interpolation import (
    centroid_errors,
    cross_fade,
    measure_animation,
    measure_extrapolation,
    measure_interpolation,
    nearest_keyframe,
    psnr,
    render_clips,
    true_centroids,
)
from tests.components.test_decoder import OVERRIDES


def test_cross_fade_and_nearest_keyframe():
    keys = torch.tensor([0.0, 1.0, -1.0]).reshape(1, 1, 3, 1, 1)
    assert cross_fade(keys, 4).flatten().tolist() == [0, 0.25, 0.5, 0.75, 1, 0.5, 0, -0.5, -1]
    assert nearest_keyframe(keys, 5).flatten().tolist() == [0, 0, 0, 1, 1, 1, 1, 1, -1, -1, -1]
    assert psnr(keys, keys) == math.inf and abs(psnr(keys * 0, keys) - 10 * math.log10(1 / (2 / 3 / 4))) < 1e-4


def test_the_judge_reads_the_true_trajectory():
    scenes = heldout_scenes(8, moving=True)
    clips = render_clips(scenes, 11, 32, 30.0)
    errors = centroid_errors(clips, true_centroids(scenes, 11, 32, 30.0), list(range(11)))
    assert errors["readable"] > 0.9 and errors["mean_px"] < 0.75, errors
    shifted = centroid_errors(clips.flip(2),
                              true_centroids(scenes, 11, 32, 30.0), [0])
    assert shifted["mean_px"] > errors["mean_px"]  # the last frame is not where the first one should be


def test_measurements_run_end_to_end_on_a_tiny_model():
    module = component_class("interpolation")(load_config("demo/interpolation", OVERRIDES + [
        "data.num_frames=6", "data.resolution=32", "model.masks.max_known=3"]))
    report = measure_interpolation(module, num=2, skip=5, keyframes=3, steps=1)
    assert report["psnr_keyframes"] == math.inf
    assert report["psnr_cross_fade"] > report["psnr_nearest_keyframe"] > 5
    assert report["centroid_truth"]["mean_px"] < 1.0
    assert set(report["centroid_model"]) == {"mean_px", "median_px", "readable"}
    extra = measure_extrapolation(module, num=2, context=2, n=5, steps=1)
    animated = measure_animation(module, num=2, n=5, steps=1)
    for result in (extra, animated):
        assert result["truth"]["identity"] > 0.9 and set(result["generated"]) == set(result["truth"])
