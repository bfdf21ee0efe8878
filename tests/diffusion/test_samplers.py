"""DDPM / DDIM samplers: oracle recovery, respacing, determinism, a Gaussian data distribution."""

import pytest
import torch

from mav_train.config.schema import DiffusionConfig
from mav_train.diffusion import GaussianDiffusion
from mav_train.diffusion import parameterization as param
from mav_train.diffusion.samplers import run_timesteps


def _diffusion(**kw) -> GaussianDiffusion:
    return GaussianDiffusion(DiffusionConfig(**kw))


def _oracle(d: GaussianDiffusion, x0: torch.Tensor):
    """model_fn returning the exact network target (eps, v or edm's F) of the known x0 at x_t (float64 schedule)."""
    ac = d.alphas_cumprod64

    def model_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert t.dtype == torch.long and t.shape == (x_t.shape[0],)
        a = ac[t].sqrt().view(-1, *[1] * (x_t.ndim - 1)).to(x_t.dtype)
        s = (1 - ac[t]).sqrt().view(-1, *[1] * (x_t.ndim - 1)).to(x_t.dtype)
        eps = (x_t - a * x0) / s
        return param.target(d.cfg.parameterization, x0, eps, a, s, d.cfg.sigma_data)

    return model_fn


def _x0(shape, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=torch.float64) * 1.8 - 0.9


@pytest.mark.parametrize("kind", ["eps", "v", "edm"])
@pytest.mark.parametrize("schedule", ["cosine", "linear"])
@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
@pytest.mark.parametrize("steps", [1, 10, 1000])
def test_oracle_recovers_x0(kind, schedule, sampler, steps):
    d = _diffusion(parameterization=kind, schedule=schedule)
    x0 = _x0((2, 3, 4, 4))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    out = d.sample(
        _oracle(d, x0),
        noise,
        steps=steps,
        sampler=sampler,
        clip_denoised=False,
        generator=torch.Generator().manual_seed(2),
    )
    assert out.dtype == torch.float64 and out.shape == x0.shape
    assert torch.allclose(out, x0, atol=1e-6), (out - x0).abs().max()


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_oracle_video_float32_with_clipping(sampler):
    d = _diffusion(parameterization="v", sampler=sampler, sample_steps=20)
    x0 = _x0((2, 3, 5, 4, 4)).float()
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    out = d.sample(_oracle(d, x0), noise, generator=torch.Generator().manual_seed(1))
    assert out.shape == (2, 3, 5, 4, 4) and out.dtype == torch.float32
    assert torch.allclose(out, x0, atol=1e-4)


def test_ddim_eta1_equals_ddpm_with_same_generator():
    d = _diffusion(parameterization="eps", schedule="linear")

    def model_fn(x_t, t):  # any deterministic network
        return torch.tanh(x_t * 0.5 + t.view(-1, 1, 1, 1) / 1000)

    noise = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    kw = dict(steps=25, clip_denoised=True)
    ddpm = d.sample(model_fn, noise, sampler="ddpm", generator=torch.Generator().manual_seed(5), **kw)
    ddim = d.sample(
        model_fn, noise, sampler="ddim", eta=1.0, generator=torch.Generator().manual_seed(5), **kw
    )
    assert torch.allclose(ddpm, ddim, atol=1e-4)


def _net(x_t, t):
    return torch.sin(x_t + t.view(-1, *[1] * (x_t.ndim - 1)).float() / 100)


@pytest.mark.parametrize(("sampler", "eta"), [("ddpm", None), ("ddim", 0.5)])
def test_same_generator_same_samples(sampler, eta):
    d = _diffusion(sample_steps=10)
    noise = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    a = d.sample(_net, noise, sampler=sampler, eta=eta, generator=torch.Generator().manual_seed(7))
    b = d.sample(_net, noise, sampler=sampler, eta=eta, generator=torch.Generator().manual_seed(7))
    c = d.sample(_net, noise, sampler=sampler, eta=eta, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_ddim_eta0_is_deterministic_without_generator():
    d = _diffusion(sampler="ddim", ddim_eta=0.0, sample_steps=10)
    noise = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(d.sample(_net, noise), d.sample(_net, noise))


def test_defaults_come_from_config():
    noise = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    seen = []
    d = _diffusion(sample_steps=7, sampler="ddpm")
    d.sample(
        _net,
        noise,
        callback=lambda i, t, x, x0: seen.append((i, t, x0.abs().max().item())),
        generator=torch.Generator().manual_seed(0),
    )
    assert [i for i, _, _ in seen] == list(range(7)) and seen[0][1] == 999
    assert max(m for _, _, m in seen) <= 1.0  # clip_denoised=True by default
    unclipped = []
    d = _diffusion(sample_steps=7, clip_denoised=False)
    d.sample(lambda x, t: torch.full_like(x, 3.0), noise, callback=lambda i, t, x, x0: unclipped.append(x0))
    assert max(x0.abs().max().item() for x0 in unclipped) > 1.0
    # eta from the config: eta > 0 makes DDIM stochastic.
    d = _diffusion(sampler="ddim", ddim_eta=1.0, sample_steps=5)
    assert not torch.equal(
        d.sample(_net, noise, generator=torch.Generator().manual_seed(0)),
        d.sample(_net, noise, generator=torch.Generator().manual_seed(1)),
    )


def test_same_noise_for_every_frame_gives_same_frames():
    # SR_h at video time: per-frame sampling with the same x_T gives identical outputs for identical inputs.
    d = _diffusion(sample_steps=5, sampler="ddim")
    frame_noise = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    noise = frame_noise.expand(4, -1, -1, -1).contiguous()
    out = d.sample(_net, noise)
    assert torch.allclose(out, out[:1].expand_as(out))


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_gaussian_data_distribution(sampler):
    # Data ~ N(mu, sigma^2): the exact denoiser is known in closed form, so the sampler must reproduce it.
    mu, sigma = 0.2, 0.3
    # All 1000 steps: with few steps both samplers shrink the variance (discretisation, posterior variance).
    d = _diffusion(sampler=sampler, sample_steps=1000, clip_denoised=False)
    ac = d.alphas_cumprod64

    def model_fn(x_t, t):
        a, s2 = ac[t].sqrt().view(-1, 1), (1 - ac[t]).view(-1, 1)
        x0 = mu + a * sigma**2 / (a**2 * sigma**2 + s2) * (x_t - a * mu)
        return (x_t - a * x0) / s2.sqrt()

    noise = torch.randn(20000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = d.sample(model_fn, noise, generator=torch.Generator().manual_seed(1))
    assert out.mean().item() == pytest.approx(mu, abs=0.01)
    assert out.std().item() == pytest.approx(sigma, abs=0.01)


def test_invalid_steps_and_sampler():
    d = _diffusion()
    noise = torch.randn(1, 3, 4, 4)
    with pytest.raises(ValueError, match="1001"):
        d.sample(_net, noise, steps=1001)
    with pytest.raises(ValueError, match="ddim, ddpm"):
        d.sample(_net, noise, sampler="plms")


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_respaced_ddim_trajectory_stays_on_q(schedule):
    # Oracle + DDIM(eta=0): the implied noise never changes, so after every respaced step
    # x = q_sample(x0, next timestep, eps_T) exactly; this pins the respaced step coefficients.
    d = _diffusion(schedule=schedule)
    x0 = _x0((2, 3, 4, 4))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    ac = d.alphas_cumprod64
    eps_T = (noise - ac[999].sqrt() * x0) / (1 - ac[999]).sqrt()
    seen = []
    d.sample(
        _oracle(d, x0),
        noise,
        steps=10,
        sampler="ddim",
        eta=0.0,
        clip_denoised=False,
        callback=lambda i, t, x, x0_pred: seen.append((t, x)),
    )
    timesteps = [t for t, _ in seen]
    assert timesteps == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    for (_, x), nxt in zip(seen, timesteps[1:] + [None]):
        a = 1.0 if nxt is None else ac[nxt].item()
        assert torch.allclose(x, a**0.5 * x0 + (1 - a) ** 0.5 * eps_T, atol=1e-8)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_respaced_ddpm_marginals_match_q(schedule):
    # Oracle + ancestral DDPM over a respaced subset: q(x_prev | x_t, x0) integrated over q(x_t | x0) is
    # q(x_prev | x0), so after every step x ~ N(sqrt(a_prev) x0, 1 - a_prev).
    d = _diffusion(schedule=schedule)
    x0 = torch.full((20000, 1), 0.5, dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ac = d.alphas_cumprod64
    seen = []
    d.sample(
        _oracle(d, x0),
        noise,
        steps=8,
        sampler="ddpm",
        clip_denoised=False,
        generator=torch.Generator().manual_seed(1),
        callback=lambda i, t, x, x0_pred: seen.append(x),
    )
    timesteps = [999 - round(i * 125) for i in range(8)]
    for x, nxt in zip(seen[:-1], timesteps[1:]):
        a = ac[nxt].item()
        assert x.mean().item() == pytest.approx(0.5 * a**0.5, abs=0.03)
        assert x.var().item() == pytest.approx(1 - a, rel=0.05)
    assert torch.allclose(seen[-1], x0)


def test_clip_offset_clamps_the_sum_not_the_residual():
    """Residual SR: x0 is a residual over a known image ``up``; the clamp keeps ``x0 + up`` in [-1, 1]."""
    d = _diffusion(parameterization="x0", sample_steps=4)
    noise = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    up = torch.linspace(-0.9, 0.9, 2 * 3 * 4 * 4).view(2, 3, 4, 4)
    want = torch.full_like(noise, 1.5) - up  # the sum is 1.5 everywhere: out of range
    seen = []
    d.sample(lambda x, t: want.clone(), noise, clip_offset=up, callback=lambda i, t, x, x0: seen.append(x0))
    assert all(torch.allclose(x0, (want + up).clamp(-1, 1) - up) for x0 in seen)
    assert (seen[-1] + up).max() <= 1.0 + 1e-6 and seen[-1].max() > 1.0  # the residual itself leaves [-1, 1]
    plain = []
    d.sample(lambda x, t: want.clone(), noise, callback=lambda i, t, x, x0: plain.append(x0))
    assert torch.allclose(plain[-1], want.clamp(-1, 1))
    scaled = []  # a residual diffused times 8 (↑F's model.residual_scale): x0 / 8 + up is what stays in [-1, 1]
    d.sample(lambda x, t: 8 * want.clone(), noise, clip_offset=up, clip_scale=8.0,
             callback=lambda i, t, x, x0: scaled.append(x0))
    assert all(torch.allclose(x0, 8 * ((want + up).clamp(-1, 1) - up), atol=1e-5) for x0 in scaled)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpmpp"])
def test_strength_starts_part_way_from_the_noised_init(sampler):
    """SDEdit: with strength s only the spaced timesteps below s*T run, starting from init noised to the first;
    an oracle denoiser of init then returns init, and strength 1 is the ordinary sampler."""
    d = _diffusion(parameterization="v", sampler=sampler, sample_steps=20, ddim_eta=0.0)
    x0 = _x0((2, 3, 4, 4))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    seen = []
    out = d.sample(_oracle(d, x0), noise, init=x0, strength=0.4, clip_denoised=False,
                   generator=torch.Generator().manual_seed(2), callback=lambda i, t, x, p: seen.append(t))
    assert max(seen) < 0.4 * d.num_timesteps and len(seen) == 8  # 20 spaced steps, 8 of them below t = 400
    assert seen == run_timesteps(d.num_timesteps, 20, 0.4)  # what generate's progress bar counts
    assert run_timesteps(1000, 50, 0.001) == [19]  # below the first spaced step: that step alone
    assert torch.allclose(out, x0, atol=1e-6)
    full = d.sample(_oracle(d, x0), noise, init=x0 * 0, strength=1.0, clip_denoised=False)
    assert torch.allclose(full, x0, atol=1e-6)  # strength 1 ignores init
    with pytest.raises(ValueError, match="pass init"):
        d.sample(_oracle(d, x0), noise, strength=0.5)
    with pytest.raises(ValueError, match="strength must lie in"):
        d.sample(_oracle(d, x0), noise, init=x0, strength=0.0)
