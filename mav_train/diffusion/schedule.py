"""Noise schedules (betas) and timestep respacing.

Everything here is computed in float64; callers cast where they store. ``alphas_cumprod[t]`` is
``prod_{s<=t} (1 - betas[s])``, the signal fraction of ``x_t`` (``x_t = sqrt(a) x0 + sqrt(1 - a) eps``).
"""

from __future__ import annotations

import math

import torch

SCHEDULES = ("cosine", "linear")


def cosine_betas(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal (2021) cosine schedule: ``alpha_bar(u) = cos((u + s) / (1 + s) * pi / 2) ** 2``.

    ``betas[t] = min(1 - alpha_bar((t + 1) / T) / alpha_bar(t / T), max_beta)``. Returns float64 ``(T,)``.
    """
    _check_timesteps(timesteps)

    def alpha_bar(u: float) -> float:
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    betas = [
        min(1.0 - alpha_bar((t + 1) / timesteps) / alpha_bar(t / timesteps), max_beta)
        for t in range(timesteps)
    ]
    return torch.tensor(betas, dtype=torch.float64)


def linear_betas(timesteps: int, start: float, end: float) -> torch.Tensor:
    """DDPM (Ho et al. 2020) schedule: betas linearly spaced from ``start`` to ``end``. Float64 ``(T,)``."""
    _check_timesteps(timesteps)
    if not 0.0 < start <= end < 1.0:
        raise ValueError(f"linear schedule needs 0 < linear_start ({start}) <= linear_end ({end}) < 1")
    return torch.linspace(start, end, timesteps, dtype=torch.float64)


def make_betas(schedule: str, timesteps: int, linear_start: float, linear_end: float) -> torch.Tensor:
    """Betas of the named schedule (one of :data:`SCHEDULES`), float64 ``(T,)``."""
    if schedule == "cosine":
        return cosine_betas(timesteps)
    if schedule == "linear":
        return linear_betas(timesteps, linear_start, linear_end)
    raise ValueError(f"unknown noise schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")


def spaced_timesteps(timesteps: int, steps: int) -> list[int]:
    """``steps`` timesteps out of ``[0, T)``, descending, evenly spaced and always starting at ``T - 1``.

    Trailing spacing (Lin et al. 2023): the first sampling step sees the noisiest timestep, so a sampler
    started from pure noise ``x_T`` matches training even for ``steps=1``. ``steps == T`` gives every
    timestep.
    """
    if not 1 <= steps <= timesteps:
        raise ValueError(f"sampling steps {steps} must be in [1, timesteps={timesteps}]")
    stride = timesteps / steps
    return [math.floor(timesteps - i * stride + 0.5) - 1 for i in range(steps)]


def respaced_betas(alphas_cumprod: torch.Tensor, timesteps: list[int]) -> torch.Tensor:
    """Betas of the process restricted to ``timesteps`` (any order), returned for them in ascending order.

    ``beta'_i = 1 - alphas_cumprod[s_i] / alphas_cumprod[s_{i-1}]`` (with ``alphas_cumprod[s_{-1}] = 1``), so
    that the cumulative product of ``1 - beta'`` equals ``alphas_cumprod`` at the kept timesteps.
    """
    kept = alphas_cumprod[sorted(timesteps)].to(torch.float64)
    previous = torch.cat([kept.new_ones(1), kept[:-1]])
    return 1.0 - kept / previous


def _check_timesteps(timesteps: int) -> None:
    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}")
