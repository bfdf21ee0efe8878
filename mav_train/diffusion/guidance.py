"""Classifier-free guidance (Ho & Salimans 2022): ``out = uncond + scale * (cond - uncond)``.

Both helpers turn conditional/unconditional predictors into a plain ``model_fn(x_t, t) -> model_out`` for
:meth:`GaussianDiffusion.sample`. With ``scale == 1`` the guided output equals the conditional one, so the
unconditional pass is skipped.

Guidance in a limited interval (Kynkäänniemi et al. 2024, "Applying guidance in a limited interval improves sample
and distribution quality"): ``interval=(lo, hi)`` applies ``interval_scale`` to the timesteps ``lo <= t <= hi`` and
``scale`` to the others; the unconditional pass is skipped where every row's scale is 1.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from einops import rearrange, repeat
from torch import Tensor

ModelFn = Callable[[Tensor, Tensor], Tensor]
# fn(x_t, t, drop) -> model_out; drop (B,) bool: True rows must ignore (drop) their condition.
DropModelFn = Callable[[Tensor, Tensor, Tensor], Tensor]


def guided_model_fn(cond_fn: ModelFn, uncond_fn: ModelFn, scale: float, interval: tuple[int, int] | None = None,
                    interval_scale: float = 1.0) -> ModelFn:
    """Guidance from two predictors, each ``(x_t (b ...), t (b,)) -> (b ...)``; scales as :func:`scale_at`."""
    if scale == 1.0 and (interval is None or interval_scale == 1.0):
        return cond_fn

    def model_fn(x_t: Tensor, t: Tensor) -> Tensor:
        cond = cond_fn(x_t, t)
        uncond = uncond_fn(x_t, t)
        w = scale_at(t, scale, interval, interval_scale).to(cond.dtype).view(-1, *([1] * (cond.ndim - 1)))
        return uncond + w * (cond - uncond)

    return model_fn


def scale_at(t: Tensor, scale: float, interval: tuple[int, int] | None, interval_scale: float) -> Tensor:
    """Each row's guidance scale (``(b,)`` float): ``interval_scale`` where ``interval[0] <= t <= interval[1]``,
    ``scale`` elsewhere (everywhere without ``interval``)."""
    base = torch.full(t.shape, float(scale), device=t.device)
    if interval is None:
        return base
    inside = (t >= interval[0]) & (t <= interval[1])
    return torch.where(inside, torch.full_like(base, float(interval_scale)), base)


def batched_guided_model_fn(fn: DropModelFn, scale: float, interval: tuple[int, int] | None = None,
                            interval_scale: float = 1.0) -> ModelFn:
    """Guidance with the conditional and unconditional passes in one doubled batch.

    ``fn(x_t, t, drop)`` is called with ``x_t (2b ...)``, ``t (2b,)`` and ``drop (2b,)`` bool, where rows
    ``[0, b)`` are the conditional pass (``drop`` False) and rows ``[b, 2b)`` the unconditional pass
    (``drop`` True) of the same samples: row ``i`` and row ``b + i`` share ``x_t`` and ``t``. ``fn`` repeats
    its conditions the same way (``repeat(cond, 'b ... -> (two b) ...', two=2)``) and replaces those of the
    dropped rows by the null condition used in training. Where every row's scale is 1 (see :func:`scale_at`) it
    is called once with ``x_t (b ...)`` and ``drop`` all False.
    """

    def model_fn(x_t: Tensor, t: Tensor) -> Tensor:
        b = x_t.shape[0]
        w = scale_at(t, scale, interval, interval_scale)
        if bool((w == 1.0).all()):
            return fn(x_t, t, torch.zeros(b, dtype=torch.bool, device=x_t.device))
        drop = repeat(torch.tensor([False, True], device=x_t.device), "two -> (two b)", b=b)
        out = fn(repeat(x_t, "b ... -> (two b) ...", two=2), repeat(t, "b -> (two b)", two=2), drop)
        cond, uncond = rearrange(out, "(two b) ... -> two b ...", two=2)
        w = w.to(out.dtype).view(b, *([1] * (out.ndim - 1)))
        return uncond + w * (cond - uncond)

    return model_fn
