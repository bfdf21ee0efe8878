"""Ancestral DDPM and DDIM sampling loops over a (possibly respaced) subset of timesteps.

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

SAMPLERS = ("ddim", "ddpm")

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
) -> Tensor:
    """Run ``sampler`` from ``noise`` (x_T, any shape ``b ...``) over ``steps`` trailing-spaced timesteps.

    ``alphas_cumprod``: float64 ``(T,)``. ``predict`` receives ``t`` as a LongTensor ``(b,)`` of the original
    (un-respaced) timestep. ``noise_fn``, when given, draws the fresh noise of stochastic steps instead of
    ``generator``. Returns the final sample, shape and dtype of ``noise``.
    """
    check_sampler(sampler)
    if eta < 0.0:
        raise ValueError(f"ddim eta must be >= 0, got {eta}")
    timesteps = spaced_timesteps(alphas_cumprod.shape[0], steps)
    x = noise
    for i, t in enumerate(timesteps):
        ac_t = float(alphas_cumprod[t])
        ac_prev = float(alphas_cumprod[timesteps[i + 1]]) if i + 1 < len(timesteps) else 1.0
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        x0, eps = predict(x, t_batch)
        if sampler == "ddim":
            x_next = ddim_step(x, x0, eps, ac_t, ac_prev, eta, generator, noise_fn)
        else:
            x_next = ddpm_step(x, x0, ac_t, ac_prev, generator, noise_fn)
        x = x_next.to(noise.dtype)
        if callback is not None:
            callback(i, t, x, x0)
    return x
