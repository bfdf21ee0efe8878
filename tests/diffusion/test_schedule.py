"""Noise schedules: golden values, monotonicity, respacing."""

import math

import pytest
import torch

from mav_train.config.schema import DiffusionConfig
from mav_train.diffusion import GaussianDiffusion, make_betas, respaced_betas, spaced_timesteps

# Golden values at T=1000, computed once by hand from the published formulas with the math module
# (cosine: Nichol & Dhariwal 2021, s=0.008, betas clipped at 0.999; linear: DDPM, betas 1e-4 -> 2e-2) and
# kept literally. Columns: t, beta_t, alphas_cumprod_t.
COSINE_GOLDEN = [
    (0, 4.128422482196914e-05, 0.999958715775178),
    (1, 4.614175273665033e-05, 0.9999125759273678),
    (499, 0.0031458862304780677, 0.4938435904406382),
    (999, 0.999, 2.4287669070348567e-09),
]
LINEAR_GOLDEN = [
    (0, 0.0001, 0.9999),
    (1, 0.00011991991991991993, 0.9997800920720721),
    (499, 0.01004004004004004, 0.07858724288177821),
    (999, 0.02, 4.0358297653756754e-05),
]


def _diffusion(schedule: str, **kw) -> GaussianDiffusion:
    return GaussianDiffusion(DiffusionConfig(schedule=schedule, **kw))


@pytest.mark.parametrize(("schedule", "golden"), [("cosine", COSINE_GOLDEN), ("linear", LINEAR_GOLDEN)])
def test_golden_values(schedule, golden):
    diffusion = _diffusion(schedule)
    for t, beta, alpha_bar in golden:
        # float32 buffers (what training uses) to 1e-6 relative, float64 master copy much tighter.
        assert diffusion.betas[t].item() == pytest.approx(beta, rel=1e-6, abs=1e-12)
        assert diffusion.alphas_cumprod[t].item() == pytest.approx(alpha_bar, rel=1e-6, abs=1e-12)
        assert diffusion.alphas_cumprod64[t].item() == pytest.approx(alpha_bar, rel=1e-9, abs=1e-15)
        assert diffusion.sqrt_alphas_cumprod[t].item() == pytest.approx(math.sqrt(alpha_bar), rel=1e-6)
        assert diffusion.sqrt_one_minus_alphas_cumprod[t].item() == pytest.approx(
            math.sqrt(1 - alpha_bar), rel=1e-6
        )


def test_cosine_matches_closed_form_alpha_bar():
    # Without clipping (t < 999) alphas_cumprod[t] = f((t+1)/T) / f(0) with f(u) = cos((u+s)/(1+s) pi/2)^2.
    def f(u: float) -> float:
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    ac = _diffusion("cosine").alphas_cumprod64
    for t in (0, 10, 250, 500, 900, 998):
        assert ac[t].item() == pytest.approx(f((t + 1) / 1000) / f(0), rel=1e-10)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_monotone(schedule):
    d = _diffusion(schedule)
    assert torch.all(d.betas > 0) and torch.all(d.betas <= 0.999)
    assert torch.all(torch.diff(d.alphas_cumprod64) < 0)
    assert torch.all(torch.diff(d.sqrt_one_minus_alphas_cumprod) >= 0)
    if schedule == "linear":
        assert torch.all(torch.diff(d.betas) > 0)


def test_linear_depends_on_start_end_and_timesteps():
    betas = make_betas("linear", 10, 1e-3, 5e-2)
    assert betas.dtype == torch.float64
    assert betas[0].item() == pytest.approx(1e-3) and betas[-1].item() == pytest.approx(5e-2)
    assert torch.allclose(torch.diff(betas), torch.full((9,), (5e-2 - 1e-3) / 9, dtype=torch.float64))
    assert _diffusion("cosine", timesteps=50).alphas_cumprod.shape == (50,)


def test_unknown_schedule_lists_valid_ones():
    with pytest.raises(ValueError, match="cosine, linear"):
        _diffusion("sigmoid")


def test_invalid_linear_range():
    with pytest.raises(ValueError, match="linear_start"):
        _diffusion("linear", linear_start=0.1, linear_end=0.01)


@pytest.mark.parametrize("steps", [1, 10, 1000])
def test_spaced_timesteps(steps):
    ts = spaced_timesteps(1000, steps)
    assert len(ts) == steps and len(set(ts)) == steps
    assert ts[0] == 999 and ts == sorted(ts, reverse=True) and min(ts) >= 0
    if steps == 1000:
        assert ts == list(range(999, -1, -1))
    if steps == 10:
        assert ts == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]


@pytest.mark.parametrize("steps", [0, 1001])
def test_spaced_timesteps_out_of_range(steps):
    with pytest.raises(ValueError, match=str(steps)):
        spaced_timesteps(1000, steps)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_respaced_betas(schedule):
    d = _diffusion(schedule)
    ac = d.alphas_cumprod64
    full = respaced_betas(ac, spaced_timesteps(1000, 1000))
    assert torch.allclose(full, make_betas(schedule, 1000, 1e-4, 2e-2), rtol=1e-9, atol=1e-15)
    ts = spaced_timesteps(1000, 10)
    sub = respaced_betas(ac, ts)
    assert torch.allclose(torch.cumprod(1 - sub, 0), ac[sorted(ts)], rtol=1e-12)
    # A respaced step spans several original steps: its beta is larger than each of theirs.
    assert sub[1].item() > make_betas(schedule, 1000, 1e-4, 2e-2)[100:200].max().item()
