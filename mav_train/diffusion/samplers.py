"""Ancestral DDPM, DDIM and DPM-Solver++(2M) sampling loops over a (possibly respaced) subset of timesteps.

The loops are independent of the parameterisation: they receive ``predict(x_t, t) -> (x0, eps)``. Step
coefficients are Python floats from the float64 ``alphas_cumprod``, so the loop runs in the dtype of the
noise. Fresh Gaussian noise is drawn on the generator's device (a CPU generator works for GPU sampling and
gives the same samples on every device) and then moved to the sample's device.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from mav_train.diffusion.schedule import spaced_timesteps

SAMPLERS = ("ddim", "ddpm", "dpmpp")

Predict = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
# callback(step_index, timestep, x_prev, x0_pred): called after every step.
Callback = Callable[[int, int, Tensor, Tensor], None]
# noise_fn(x_t) -> fresh standard normal noise of x_t's shape for a stochastic step (replaces the generator's
# draw; SR_h on video shares one draw across the frames of a clip).
NoiseFn = Callable[[Tensor], Tensor]


def check_sampler(name: str) -> None:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid: {', '.join(SAMPLERS)}")


def gaussian_like(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard normal noise of ``x``'s shape, dtype and device, drawn from ``generator`` when given."""
    if generator is None:
        return torch.randn_like(x)
    z = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
    return z.to(x.device)


def ddim_step(
    x_t: Tensor,
    x0: Tensor,
    eps: Tensor,
    ac_t: float,
    ac_prev: float,
    eta: float,
    generator: torch.Generator | None = None,
    noise_fn: NoiseFn | None = None,
) -> Tensor:
    """One DDIM step (Song et al. 2021, eq. 12) from ``alphas_cumprod`` ``ac_t`` to ``ac_prev``.

    ``eta=0`` is deterministic; ``eta=1`` has the DDPM posterior variance.
    """
    var = eta**2 * (1.0 - ac_prev) / (1.0 - ac_t) * (1.0 - ac_t / ac_prev)
    x_prev = math.sqrt(ac_prev) * x0 + math.sqrt(max(1.0 - ac_prev - var, 0.0)) * eps
    if var > 0.0:
        x_prev = x_prev + math.sqrt(var) * _fresh_noise(x_t, generator, noise_fn)
    return x_prev


def _fresh_noise(x_t: Tensor, generator: torch.Generator | None, noise_fn: NoiseFn | None) -> Tensor:
    if noise_fn is None:
        return gaussian_like(x_t, generator)
    z = noise_fn(x_t)
    if z.shape != x_t.shape:
        raise ValueError(f"noise_fn returned shape {tuple(z.shape)} for x_t of shape {tuple(x_t.shape)}")
    return z.to(device=x_t.device, dtype=x_t.dtype)


def ddpm_step(
    x_t: Tensor, x0: Tensor, ac_t: float, ac_prev: float, generator: torch.Generator | None = None,
    noise_fn: NoiseFn | None = None,
) -> Tensor:
    """One ancestral step: a draw from ``q(x_prev | x_t, x0)`` of the (respaced) process ``ac_t -> ac_prev``.

    The step's beta is ``1 - ac_t / ac_prev`` (the respaced beta); the variance is the posterior one.
    """
    beta = 1.0 - ac_t / ac_prev
    coef_x0 = math.sqrt(ac_prev) * beta / (1.0 - ac_t)
    coef_xt = math.sqrt(1.0 - beta) * (1.0 - ac_prev) / (1.0 - ac_t)
    var = beta * (1.0 - ac_prev) / (1.0 - ac_t)
    x_prev = coef_x0 * x0 + coef_xt * x_t
    if var > 0.0:
        x_prev = x_prev + math.sqrt(var) * _fresh_noise(x_t, generator, noise_fn)
    return x_prev


def dpmpp_step(x_t: Tensor, x0: Tensor, ac_t: float, ac_prev: float, ac_before: float | None,
               x0_previous: Tensor | None) -> Tensor:
    """One step of DPM-Solver++(2M) (Lu et al. 2022, algorithm 2), the data-prediction multistep solver.

    From ``x_t`` at ``alphas_cumprod`` ``ac_t`` to ``ac_prev`` (the next, less noisy one). With ``alpha = sqrt(ac)``,
    ``sigma = sqrt(1 - ac)`` and ``lambda = log(alpha / sigma)``, ``h = lambda_prev - lambda_t``:

        x_prev = sigma_prev / sigma_t * x_t + alpha_prev * (1 - exp(-h)) * D

    where ``D = x0`` (first order: the first step, and the last step into ``ac_prev = 1``, where the second-order
    correction is undefined) or ``D = (1 + 1/(2r)) x0 - 1/(2r) x0_previous`` with ``r = h_before / h``, the
    step-size ratio to the step before (``ac_before`` is the ``alphas_cumprod`` that step started from).
    ``exp(-h) = alpha_t sigma_prev / (sigma_t alpha_prev)`` is computed as that ratio, so a first timestep with
    ``alpha_t = 0`` (zero terminal SNR) is fine.
    """
    alpha_t, sigma_t = math.sqrt(ac_t), math.sqrt(1.0 - ac_t)
    alpha_prev, sigma_prev = math.sqrt(ac_prev), math.sqrt(max(1.0 - ac_prev, 0.0))
    decay = alpha_t * sigma_prev / (sigma_t * alpha_prev)  # exp(-h)
    data = x0
    if x0_previous is not None and ac_before is not None and sigma_prev > 0.0 and alpha_t > 0.0:
        h = _log_snr_half(ac_prev) - _log_snr_half(ac_t)
        h_before = _log_snr_half(ac_t) - _log_snr_half(ac_before)
        if h > 0.0 and h_before > 0.0 and math.isfinite(h_before):
            half_inverse_r = h / (2.0 * h_before)
            data = (1.0 + half_inverse_r) * x0 - half_inverse_r * x0_previous
    return (sigma_prev / sigma_t) * x_t + alpha_prev * (1.0 - decay) * data


def _log_snr_half(ac: float) -> float:
    """``lambda = log(alpha / sigma) = 0.5 * log(ac / (1 - ac))``; -inf at ``ac = 0``."""
    return 0.5 * (math.log(ac) - math.log1p(-ac)) if ac > 0.0 else -math.inf


def run_timesteps(num_timesteps: int, steps: int, strength: float = 1.0) -> list[int]:
    """The timesteps :func:`sample_loop` visits: ``steps`` trailing-spaced ones, of which only those below
    ``strength * num_timesteps`` when ``strength`` < 1 (at least the last one)."""
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must lie in (0, 1], got {strength}")
    timesteps = spaced_timesteps(num_timesteps, steps)
    if strength < 1.0:
        timesteps = [t for t in timesteps if t < strength * num_timesteps] or timesteps[-1:]
    return timesteps


def sample_loop(
    predict: Predict,
    noise: Tensor,
    alphas_cumprod: Tensor,
    steps: int,
    sampler: str,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    noise_fn: NoiseFn | None = None,
    init: Tensor | None = None,
    strength: float = 1.0,
) -> Tensor:
    """Run ``sampler`` (ddim, ddpm or dpmpp) from ``noise`` (x_T, any shape ``b ...``) over ``steps``
    trailing-spaced timesteps. With ``init`` (an x0 guess of the shape of ``noise``) and ``strength`` < 1 it
    starts part-way (SDEdit, Meng et al. 2022): only the spaced timesteps below ``strength * T`` run, from ``init``
    noised with ``noise`` to the first of them. ``dpmpp`` (DPM-Solver++ 2M) is deterministic: it draws no noise,
    so ``generator`` and ``noise_fn`` do not change its result, and ``eta`` must be 0.

    ``alphas_cumprod``: float64 ``(T,)``. ``predict`` receives ``t`` as a LongTensor ``(b,)`` of the original
    (un-respaced) timestep. ``noise_fn``, when given, draws the fresh noise of stochastic steps instead of
    ``generator``. Returns the final sample, shape and dtype of ``noise``.
    """
    check_sampler(sampler)
    if eta < 0.0:
        raise ValueError(f"ddim eta must be >= 0, got {eta}")
    if sampler == "dpmpp" and eta > 0.0:
        raise ValueError(f"sampler dpmpp (DPM-Solver++ 2M) is deterministic; ddim eta must be 0, got {eta}")
    timesteps = run_timesteps(alphas_cumprod.shape[0], steps, strength)
    x, x0_previous = noise, None
    if strength < 1.0:
        if init is None:
            raise ValueError("strength < 1 starts from an x0 guess: pass init")
        ac = float(alphas_cumprod[timesteps[0]])
        x = (math.sqrt(ac) * init + math.sqrt(1.0 - ac) * noise).to(noise.dtype)
    for i, t in enumerate(timesteps):
        ac_t = float(alphas_cumprod[t])
        ac_prev = float(alphas_cumprod[timesteps[i + 1]]) if i + 1 < len(timesteps) else 1.0
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        x0, eps = predict(x, t_batch)
        if sampler == "ddim":
            x_next = ddim_step(x, x0, eps, ac_t, ac_prev, eta, generator, noise_fn)
        elif sampler == "ddpm":
            x_next = ddpm_step(x, x0, ac_t, ac_prev, generator, noise_fn)
        else:
            ac_before = float(alphas_cumprod[timesteps[i - 1]]) if i > 0 else None
            x_next = dpmpp_step(x, x0, ac_t, ac_prev, ac_before, x0_previous)
            x0_previous = x0
        x = x_next.to(noise.dtype)
        if callback is not None:
            callback(i, t, x, x0)
    return x
