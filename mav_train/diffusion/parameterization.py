"""What the network predicts: the noise ``eps``, the velocity ``v`` (Salimans & Ho 2022) or the clean sample
``x0`` itself (DALL-E 2's prior).

With ``a = sqrt(alphas_cumprod[t])`` and ``s = sqrt(1 - alphas_cumprod[t])`` (broadcastable to ``x``):

    x_t = a x0 + s eps,    v = a eps - s x0,    x0 = a x_t - s v,    eps = s x_t + a v,    eps = (x_t - a x0) / s.

All functions are shape-agnostic (images ``b c h w``, videos ``b c t h w``) and exact inverses of each other.
"""

from __future__ import annotations

from torch import Tensor

PARAMETERIZATIONS = ("eps", "v", "x0")


def check_parameterization(kind: str) -> None:
    if kind not in PARAMETERIZATIONS:
        raise ValueError(f"unknown parameterization {kind!r}; valid: {', '.join(PARAMETERIZATIONS)}")


def velocity(x0: Tensor, eps: Tensor, a: Tensor, s: Tensor) -> Tensor:
    """``v = a eps - s x0``."""
    return a * eps - s * x0


def target(kind: str, x0: Tensor, eps: Tensor, a: Tensor, s: Tensor) -> Tensor:
    """The regression target of the network: ``eps``, ``v`` or ``x0``."""
    check_parameterization(kind)
    if kind == "x0":
        return x0
    return eps if kind == "eps" else velocity(x0, eps, a, s)


def x0_from_output(kind: str, x_t: Tensor, out: Tensor, a: Tensor, s: Tensor) -> Tensor:
    """Clean sample implied by the network output ``out`` at ``x_t``."""
    check_parameterization(kind)
    if kind == "x0":
        return out
    if kind == "eps":
        return (x_t - s * out) / a
    return a * x_t - s * out


def eps_from_output(kind: str, x_t: Tensor, out: Tensor, a: Tensor, s: Tensor) -> Tensor:
    """Noise implied by the network output ``out`` at ``x_t``."""
    check_parameterization(kind)
    if kind == "x0":
        return eps_from_x0(x_t, out, a, s)
    if kind == "eps":
        return out
    return s * x_t + a * out


def eps_from_x0(x_t: Tensor, x0: Tensor, a: Tensor, s: Tensor) -> Tensor:
    """Noise that takes ``x0`` to ``x_t``: ``(x_t - a x0) / s``."""
    return (x_t - a * x0) / s
