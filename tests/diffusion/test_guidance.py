"""Classifier-free guidance helpers."""

import pytest
import torch

from mav_train.config.schema import DiffusionConfig
from mav_train.diffusion import GaussianDiffusion, batched_guided_model_fn, guided_model_fn


def _cond(x, t):
    return x * 2.0 + 1.0


def _uncond(x, t):
    return x - 1.0


def _drop_fn(calls):
    """fn(x_t, t, drop): rows with drop=True behave like _uncond, the others like _cond."""

    def fn(x, t, drop):
        calls.append((x.shape[0], drop.clone()))
        mask = drop.view(-1, *[1] * (x.ndim - 1))
        return torch.where(mask, _uncond(x, t), _cond(x, t))

    return fn


def test_scale_one_is_cond_and_skips_uncond():
    def uncond(x, t):
        raise AssertionError("unconditional pass must be skipped at scale 1")

    x, t = torch.randn(2, 3, 4, 4), torch.tensor([3, 4])
    assert torch.equal(guided_model_fn(_cond, uncond, 1.0)(x, t), _cond(x, t))
    calls = []
    assert torch.equal(batched_guided_model_fn(_drop_fn(calls), 1.0)(x, t), _cond(x, t))
    assert calls[0][0] == 2 and not calls[0][1].any()


@pytest.mark.parametrize("scale", [0.0, 3.0, 7.5])
def test_formula_and_batched_variant_agree(scale):
    x, t = torch.randn(3, 3, 2, 4, 4), torch.tensor([1, 2, 3])
    expected = _uncond(x, t) + scale * (_cond(x, t) - _uncond(x, t))
    assert torch.allclose(guided_model_fn(_cond, _uncond, scale)(x, t), expected)
    calls = []
    assert torch.allclose(batched_guided_model_fn(_drop_fn(calls), scale)(x, t), expected)
    ((batch, drop),) = calls
    assert batch == 6 and drop.tolist() == [False] * 3 + [True] * 3


def test_batched_rows_pair_up():
    seen = {}

    def fn(x, t, drop):
        seen["x"], seen["t"] = x, t
        return x

    x, t = torch.randn(2, 1, 2, 2), torch.tensor([7, 9])
    batched_guided_model_fn(fn, 2.0)(x, t)
    assert torch.equal(seen["x"][:2], x) and torch.equal(seen["x"][2:], x)
    assert seen["t"].tolist() == [7, 9, 7, 9]


def test_diffusion_default_scale_from_config():
    d = GaussianDiffusion(DiffusionConfig(guidance_scale=4.0))
    x, t = torch.randn(2, 3, 4, 4), torch.tensor([0, 1])
    expected = _uncond(x, t) + 4.0 * (_cond(x, t) - _uncond(x, t))
    assert torch.allclose(d.guided(_cond, _uncond)(x, t), expected)
    assert torch.allclose(d.guided_batched(_drop_fn([]))(x, t), expected)
    assert torch.equal(d.guided(_cond, _uncond, scale=1.0)(x, t), _cond(x, t))
    sample = d.sample(d.guided(_cond, _uncond), torch.randn(2, 3, 4, 4), steps=3)
    assert sample.shape == (2, 3, 4, 4)


def _guided(x, t, scale):
    return _uncond(x, t) + scale * (_cond(x, t) - _uncond(x, t))


def test_interval_scale_inside_and_base_scale_outside():
    x = torch.randn(4, 3, 4, 4)
    t = torch.tensor([299, 300, 800, 801])  # just outside, the two edges (inclusive), just outside
    out = batched_guided_model_fn(_drop_fn([]), 2.0, interval=(300, 800), interval_scale=6.0)(x, t)
    for row, scale in enumerate([2.0, 6.0, 6.0, 2.0]):
        assert torch.allclose(out[row], _guided(x, t, scale)[row])


def test_interval_skips_the_unconditional_pass_where_every_scale_is_one():
    x = torch.randn(2, 3, 4, 4)
    calls = []
    fn = batched_guided_model_fn(_drop_fn(calls), 1.0, interval=(200, 800), interval_scale=4.0)
    assert torch.equal(fn(x, torch.tensor([100, 900])), _cond(x, torch.tensor([100, 900])))
    assert calls[-1][0] == 2  # one pass: no unconditional rows
    assert torch.allclose(fn(x, torch.tensor([500, 500])), _guided(x, None, 4.0))
    assert calls[-1][0] == 4


def test_recipe_interval_applies_only_to_the_recipes_guidance():
    d = GaussianDiffusion(DiffusionConfig(guidance_scale=2.0, guidance_interval=[0.3, 0.8],
                                          guidance_interval_scale=6.0))
    assert d.guidance_timesteps == (300, 800)
    x = torch.randn(2, 3, 4, 4)
    inside, outside = torch.tensor([500, 500]), torch.tensor([900, 900])
    assert torch.allclose(d.guided_batched(_drop_fn([]))(x, inside), _guided(x, None, 6.0))
    assert torch.allclose(d.guided_batched(_drop_fn([]))(x, outside), _guided(x, None, 2.0))
    # The two-predictor form reads the same guidance.
    assert torch.allclose(d.guided(_cond, _uncond)(x, inside), _guided(x, None, 6.0))
    assert torch.allclose(d.guided(_cond, _uncond)(x, outside), _guided(x, None, 2.0))
    # A call that names its scale gets it at every step, the interval's too.
    assert torch.allclose(d.guided_batched(_drop_fn([]), 3.0)(x, inside), _guided(x, None, 3.0))
    assert GaussianDiffusion(DiffusionConfig()).guidance_timesteps is None


@pytest.mark.parametrize("interval", [[0.8, 0.3], [-0.1, 0.5], [0.2, 1.5], [0.5]])
def test_malformed_interval_is_refused(interval):
    with pytest.raises(ValueError, match="guidance_interval"):
        GaussianDiffusion(DiffusionConfig(guidance_interval=interval))
