"""GaussianDiffusion: forward process, parameterisations, loss, buffers."""

import pytest
import torch

from mav_train.config.schema import DiffusionConfig
from mav_train.diffusion import GaussianDiffusion
from mav_train.diffusion import parameterization as param


def _diffusion(**kw) -> GaussianDiffusion:
    return GaussianDiffusion(DiffusionConfig(**kw))


def test_schedule_buffers_not_in_state_dict_and_follow_device():
    d = _diffusion()
    assert d.state_dict() == {}
    names = {name for name, _ in d.named_buffers()}
    assert {"betas", "alphas_cumprod", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod"} <= names
    d = d.to("meta")
    assert d.alphas_cumprod.device.type == "meta"


def test_dtype_casts_do_not_reach_schedule():
    d = _diffusion(schedule="linear")
    before = d.sqrt_one_minus_alphas_cumprod.clone()
    d = d.to(torch.bfloat16)
    assert d.sqrt_one_minus_alphas_cumprod.dtype == torch.float32
    assert torch.equal(d.sqrt_one_minus_alphas_cumprod, before)
    d.half()
    assert d.alphas_cumprod.dtype == torch.float32


def test_sample_timesteps_range_and_generator():
    d = _diffusion(timesteps=20, sample_steps=20)
    t = d.sample_timesteps(4000, "cpu", torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and t.shape == (4000,)
    assert t.min().item() == 0 and t.max().item() == 19
    again = d.sample_timesteps(4000, "cpu", torch.Generator().manual_seed(0))
    assert torch.equal(t, again)
    counts = torch.bincount(t, minlength=20).float()
    assert counts.min().item() > 120  # uniform: 200 expected per bin


def test_noisy_fraction_moves_that_share_of_timesteps_to_the_noisy_end():
    d = _diffusion(timesteps=100, sample_steps=10, noisy_fraction=0.5, noisy_from=0.6)
    t = d.sample_timesteps(20000, "cpu", torch.Generator().manual_seed(0))
    assert t.min().item() == 0 and t.max().item() == 99
    # Half uniform over [0, 100) (60% of it below 60), half uniform over [60, 100): 30% below 60 in all.
    below = (t < 60).float().mean().item()
    assert abs(below - 0.3) < 0.015
    noisy = torch.bincount(t[t >= 60] - 60, minlength=40).float()
    assert noisy.min().item() > 0.8 * noisy.mean().item()  # uniform within the noisy end
    assert torch.equal(t, d.sample_timesteps(20000, "cpu", torch.Generator().manual_seed(0)))
    plain = _diffusion(timesteps=100, sample_steps=10).sample_timesteps(20000, "cpu", torch.Generator().manual_seed(0))
    assert abs((plain < 60).float().mean().item() - 0.6) < 0.015


@pytest.mark.parametrize("fraction, start", [(-0.1, 0.6), (1.5, 0.6), (0.5, 1.0), (0.5, -0.2)])
def test_noisy_fraction_out_of_range_is_refused(fraction, start):
    with pytest.raises(ValueError, match="noisy_fraction must lie in"):
        _diffusion(noisy_fraction=fraction, noisy_from=start)


def test_frame_noise_share_correlates_the_frames_of_a_clip():
    shape = (64, 3, 4, 8, 8)
    plain = _diffusion().noise(shape, generator=torch.Generator().manual_seed(0))
    assert torch.equal(plain, torch.randn(shape, generator=torch.Generator().manual_seed(0)))  # share 0: randn
    mixed = _diffusion(frame_noise_share=0.6).noise(shape, generator=torch.Generator().manual_seed(0))
    assert abs(mixed.std().item() - 1.0) < 0.02  # unit variance
    frames = mixed.permute(2, 0, 1, 3, 4).reshape(4, -1)
    corr = torch.corrcoef(frames)
    off_diagonal = corr[~torch.eye(4, dtype=torch.bool)]
    assert (off_diagonal - 0.6).abs().max() < 0.03, corr  # every pair of frames correlated by the share
    image = _diffusion(frame_noise_share=0.6).noise((4, 3, 8, 8), generator=torch.Generator().manual_seed(0))
    assert torch.equal(image, torch.randn((4, 3, 8, 8), generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="frame_noise_share must lie in"):
        _diffusion(frame_noise_share=1.0)


def test_a_noise_share_given_at_sampling_overrides_the_config_and_one_gives_every_frame_one_draw():
    shape = (2, 3, 5, 8, 8)
    d = _diffusion(frame_noise_share=0.6)
    one = d.noise(shape, generator=torch.Generator().manual_seed(0), share=1.0)
    draw = torch.randn((2, 3, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    assert torch.equal(one, draw.expand(shape))  # every frame the same draw
    assert torch.equal(d.noise(shape, generator=torch.Generator().manual_seed(0), share=0.0),
                       torch.randn(shape, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(d.noise(shape, generator=torch.Generator().manual_seed(0), share=None),
                       d.noise(shape, generator=torch.Generator().manual_seed(0)))
    image = d.noise((2, 3, 8, 8), generator=torch.Generator().manual_seed(0), share=1.0)  # not a video: plain
    assert torch.equal(image, torch.randn((2, 3, 8, 8), generator=torch.Generator().manual_seed(0)))
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="noise share must lie in"):
            d.noise(shape, share=bad)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_q_sample_statistics(schedule):
    d = _diffusion(schedule=schedule)
    g = torch.Generator().manual_seed(0)
    n = 20000
    x0 = torch.full((n, 1, 1, 1), 0.7)
    for step in (0, 300, 999):
        t = torch.full((n,), step, dtype=torch.long)
        x_t = d.q_sample(x0, t, torch.randn(x0.shape, generator=g))
        ac = d.alphas_cumprod64[step].item()
        assert x_t.mean().item() == pytest.approx(0.7 * ac**0.5, abs=0.03)
        assert x_t.var().item() == pytest.approx(1 - ac, abs=0.03 * max(1 - ac, 1e-3) + 1e-6)


def test_q_sample_exact_and_per_sample_t():
    d = _diffusion()
    x0, noise = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    t = torch.tensor([0, 500, 999])
    x_t = d.q_sample(x0, t, noise)
    for i in range(3):
        ac = d.alphas_cumprod64[t[i]].item()
        expected = ac**0.5 * x0[i] + (1 - ac) ** 0.5 * noise[i]
        assert torch.allclose(x_t[i], expected, atol=1e-6)


def test_q_sample_rejects_mismatched_t():
    with pytest.raises(ValueError, match=r"\(2,\)"):
        _diffusion().q_sample(
            torch.zeros(2, 3, 4, 4), torch.zeros(3, dtype=torch.long), torch.zeros(2, 3, 4, 4)
        )


@pytest.mark.parametrize("kind", ["eps", "v", "x0", "edm"])
@pytest.mark.parametrize("shape", [(4, 3, 8, 8), (2, 3, 5, 4, 4), (6, 16)])
def test_conversions_are_exact_inverses(kind, shape):
    d = _diffusion(parameterization=kind)
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1
    noise = torch.randn(shape, generator=g, dtype=torch.float64)
    t = torch.linspace(0, 999, shape[0]).long()
    x_t = d.q_sample(x0, t, noise)
    out = d.target(x0, noise, t)
    assert x_t.shape == out.shape == shape
    assert torch.allclose(d.predict_x0(x_t, t, out), x0, atol=1e-9)
    assert torch.allclose(d.predict_eps(x_t, t, out), noise, atol=1e-9)
    if kind == "eps":
        assert torch.equal(out, noise)
    elif kind == "x0":  # the prior's default: the network predicts the clean vector itself
        assert torch.equal(out, x0)
    elif kind == "edm":
        a = d.alphas_cumprod64[t].sqrt().view(-1, *[1] * (len(shape) - 1))
        s = (1 - d.alphas_cumprod64[t]).sqrt().view(-1, *[1] * (len(shape) - 1))
        # sigma_data 1 is v-prediction with the sign flipped; at the clean end the skip passes x_t / a through.
        assert torch.allclose(param.target("edm", x0, noise, a, s, 1.0), -(a * noise - s * x0), atol=1e-12)
        c_skip, c_out = param.edm_coefficients(a, s, d.cfg.sigma_data)
        assert torch.allclose(c_skip[0] * a[0], torch.ones((), dtype=torch.float64), atol=1e-3)
        assert c_out[0].max() < 0.05  # t = 0: nearly all skip
        assert c_skip[-1].max() < 0.01  # t = T - 1: nearly all prediction, F = x0 / sigma_data
        assert torch.allclose(c_out[-1], torch.tensor(d.cfg.sigma_data, dtype=torch.float64), rtol=1e-2)
    else:
        # Float64 inputs use the float64 schedule.
        a = d.alphas_cumprod64[t].sqrt().view(-1, *[1] * (len(shape) - 1))
        s = (1 - d.alphas_cumprod64[t]).sqrt().view(-1, *[1] * (len(shape) - 1))
        assert torch.allclose(out, a * noise - s * x0, atol=1e-12)
        # x0 <-> v <-> eps round trips through the pure functions too.
        assert torch.allclose(param.eps_from_output("v", x_t, out, a, s), param.eps_from_x0(x_t, x0, a, s))


def test_eps_and_v_targets_differ_and_x0_agrees():
    x0, noise = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    t = torch.tensor([100, 800])
    d_eps, d_v = _diffusion(parameterization="eps"), _diffusion(parameterization="v")
    assert not torch.allclose(d_eps.target(x0, noise, t), d_v.target(x0, noise, t))
    x_t = d_eps.q_sample(x0, t, noise)
    assert torch.allclose(d_v.predict_x0(x_t, t, d_v.target(x0, noise, t)), x0, atol=1e-4)


def test_unknown_parameterization_and_sampler():
    with pytest.raises(ValueError, match="eps, v, x0, edm"):
        _diffusion(parameterization="x_start")
    with pytest.raises(ValueError, match="ddim, ddpm"):
        _diffusion(sampler="euler")
    with pytest.raises(ValueError, match="sample_steps 2000"):
        _diffusion(sample_steps=2000)


@pytest.mark.parametrize("kind", ["eps", "v", "x0", "edm"])
def test_loss(kind):
    d = _diffusion(parameterization=kind)
    x0, noise = torch.randn(3, 3, 2, 4, 4), torch.randn(3, 3, 2, 4, 4)
    t = torch.tensor([5, 50, 500])
    target = d.target(x0, noise, t)
    assert d.loss(target, x0, noise, t).item() == pytest.approx(0.0, abs=1e-12)
    out = target.clone()
    out[1] += 2.0
    per_sample = d.loss_per_sample(out, x0, noise, t)
    assert per_sample.shape == (3,)
    assert torch.allclose(per_sample, torch.tensor([0.0, 4.0, 0.0]), atol=1e-5)
    assert d.loss(out, x0, noise, t).item() == pytest.approx(4.0 / 3, rel=1e-5)
    out.requires_grad_(True)
    d.loss(out, x0, noise, t).backward()
    assert out.grad is not None


def test_min_snr_weighting_caps_the_x0_weight():
    import torch as _torch

    from mav_train.config.schema import DiffusionConfig
    from mav_train.diffusion import GaussianDiffusion as _Diffusion

    for parameterization in ("eps", "v", "x0", "edm"):
        diffusion = _Diffusion(DiffusionConfig(parameterization=parameterization, min_snr_gamma=5.0))
        t = _torch.tensor([0, 100, 500, 999])
        alphas = diffusion.alphas_cumprod64[t]
        snr = alphas / (1 - alphas)
        # Converted back to a weight on the x0 error, every timestep gets min(SNR, 5).
        to_x0 = {"eps": snr, "v": snr + 1, "x0": _torch.ones_like(snr),
                 "edm": (1 + 0.25 * snr) / 0.25}[parameterization]  # 1 / c_out^2 at sigma_data 0.5
        x0_weight = diffusion.loss_weight(t).double() * to_x0
        assert _torch.allclose(x0_weight, snr.clamp(max=5.0), rtol=1e-5), (parameterization, x0_weight)
    plain = _Diffusion(DiffusionConfig())
    out, x0, noise = _torch.randn(3, 2, 3, 4, 4)
    tt = _torch.tensor([1, 999])
    assert _torch.allclose(plain.loss(out, x0, noise, tt), plain.loss_per_sample(out, x0, noise, tt).mean())


def test_min_snr_floor_keeps_the_noisiest_timesteps_weighted():
    from mav_train.config.schema import DiffusionConfig
    from mav_train.diffusion import GaussianDiffusion as _Diffusion

    t = torch.tensor([0, 100, 500, 900, 999])
    for parameterization in ("eps", "v", "x0", "edm"):
        d = _Diffusion(DiffusionConfig(parameterization=parameterization, min_snr_gamma=5.0, min_snr_floor=1.0))
        alphas = d.alphas_cumprod64[t]
        snr = alphas / (1 - alphas)
        to_x0 = {"eps": snr, "v": snr + 1, "x0": torch.ones_like(snr),
                 "edm": (1 + 0.25 * snr) / 0.25}[parameterization]
        x0_weight = d.loss_weight(t).double() * to_x0
        # min(SNR, 5), raised to 1 where SNR < 1 (plain min-SNR gives t=999 a weight of about 0).
        assert torch.allclose(x0_weight, snr.clamp(max=5.0, min=1.0), rtol=1e-5), (parameterization, x0_weight)
        assert x0_weight[-1] == pytest.approx(1.0, rel=1e-5)


def test_min_snr_floor_without_min_snr_is_refused():
    from mav_train.config.schema import DiffusionConfig
    from mav_train.diffusion import GaussianDiffusion as _Diffusion

    for gamma, floor in ((0.0, 1.0), (0.5, 1.0), (5.0, -1.0)):
        with pytest.raises(ValueError, match="min_snr_floor"):
            _Diffusion(DiffusionConfig(min_snr_gamma=gamma, min_snr_floor=floor))
