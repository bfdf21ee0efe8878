"""bench_quality's ↑F readings: extrapolation and animation also sampled with one noise draw for every frame."""

from __future__ import annotations

import torch

from bench.bench_quality import judge_interpolation
from tests.components.test_interpolation import interpolation_module
from tests.nn.tiny import perturb


def test_extrapolation_and_animation_are_also_read_under_one_noise_draw(monkeypatch):
    module = interpolation_module()
    perturb(module.ema_network, std=0.02, seed=1)
    shares = []
    original = module.fill

    def recording_fill(*args, **kwargs):
        shares.append(kwargs.get("noise_share"))
        return original(*args, **kwargs)

    monkeypatch.setattr(module, "fill", recording_fill)
    torch.manual_seed(0)
    report = judge_interpolation(module, num=3, steps=1, modes=("extrapolate", "animate"), one_draw_num=2)
    for mode in ("extrapolate", "animate"):
        one = report[mode]["one_draw"]
        assert one["protocol"].startswith("2 held-out"), one["protocol"]
        assert one["protocol"].endswith(", 1 of every frame's noise one draw per window")
        assert "noise" not in report[mode]["protocol"]
        assert set(one["generated"]) == set(report[mode]["generated"])
    assert set(shares) == {None, 1.0}  # the recipe's noise, then one draw, for each mode
