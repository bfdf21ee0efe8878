"""What the network predicts: the noise ``eps``, the velocity ``v`` (Salimans & Ho 2022), the clean sample
``x0`` itself (DALL-E 2's prior), or ``edm``: a correction ``F`` to a skip connection from the input (the
preconditioning of Karras et al. 2022, written for this VP schedule).

With ``a = sqrt(alphas_cumprod[t])`` and ``s = sqrt(1 - alphas_cumprod[t])`` (broadcastable to ``x``):

    x_t = a x0 + s eps,    v = a eps - s x0,    x0 = a x_t - s v,    eps = s x_t + a v,    eps = (x_t - a x0) / s.

``edm`` with data standard deviation ``d`` (``sigma_data``), ``r = sqrt(s^2 + d^2 a^2)``:

    x0 = (d^2 a / r^2) x_t + (d s / r) F.

Near the clean end the skip carries the input through (x0 ≈ x_t / a: details need not be redrawn, as with eps and
v); at the noisy end F is x0 itself scaled by 1/d (as with x0-prediction, no input noise leaks through). With
``d = 1`` it is v-prediction with F = -v.

All functions are shape-agnostic (images ``b c h w``, videos ``b c t h w``) and exact inverses of each other.
"""

from __future__ import annotations

from torch import Tensor

PARAMETERIZATIONS = ("eps", "v", "x0", "edm")


def check_parameterization(kind: str) -> None:
    if kind not in PARAMETERIZATIONS:
        raise ValueError(f"unknown parameterization {kind!r}; valid: {', '.join(PARAMETERIZATIONS)}")


def velocity(x0: Tensor, eps: Tensor, a: Tensor, s: Tensor) -> Tensor:
    """``v = a eps - s x0``."""
    return a * eps - s * x0


def edm_coefficients(a: Tensor, s: Tensor, sigma_data: float) -> tuple[Tensor, Tensor]:
    """``(c_skip, c_out)`` of ``edm``: ``x0 = c_skip x_t + c_out F``."""
    r2 = s**2 + (sigma_data * a) ** 2
    return sigma_data**2 * a / r2, sigma_data * s / r2.sqrt()


def target(kind: str, x0: Tensor, eps: Tensor, a: Tensor, s: Tensor, sigma_data: float = 0.5) -> Tensor:
    """The regression target of the network: ``eps``, ``v``, ``x0`` or ``edm``'s F."""
    check_parameterization(kind)
    if kind == "x0":
        return x0
    if kind == "edm":  # (x0 - c_skip x_t) / c_out, written without dividing by c_out (-> 0 at the clean end)
        r = (s**2 + (sigma_data * a) ** 2).sqrt()
        return (s / (r * sigma_data)) * x0 - (sigma_data * a / r) * eps
    return eps if kind == "eps" else velocity(x0, eps, a, s)


def x0_from_output(kind: str, x_t: Tensor, out: Tensor, a: Tensor, s: Tensor, sigma_data: float = 0.5) -> Tensor:
    """Clean sample implied by the network output ``out`` at ``x_t``."""
    check_parameterization(kind)
    if kind == "x0":
        return out
    if kind == "edm":
        c_skip, c_out = edm_coefficients(a, s, sigma_data)
        return c_skip * x_t + c_out * out
    if kind == "eps":
        return (x_t - s * out) / a
    return a * x_t - s * out


def eps_from_output(kind: str, x_t: Tensor, out: Tensor, a: Tensor, s: Tensor, sigma_data: float = 0.5) -> Tensor:
    """Noise implied by the network output ``out`` at ``x_t``."""
    check_parameterization(kind)
    if kind == "x0":
        return eps_from_x0(x_t, out, a, s)
    if kind == "edm":
        return eps_from_x0(x_t, x0_from_output(kind, x_t, out, a, s, sigma_data), a, s)
    if kind == "eps":
        return out
    return s * x_t + a * out


def eps_from_x0(x_t: Tensor, x0: Tensor, a: Tensor, s: Tensor) -> Tensor:
    """Noise that takes ``x0`` to ``x_t``: ``(x_t - a x0) / s``."""
    return (x_t - a * x0) / s
