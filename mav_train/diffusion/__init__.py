"""Diffusion core: noise schedules, eps/v parameterisation, MSE loss, DDPM/DDIM/DPM-Solver++(2M) samplers, guidance."""

from mav_train.diffusion.gaussian import GaussianDiffusion
from mav_train.diffusion.guidance import batched_guided_model_fn, guided_model_fn
from mav_train.diffusion.parameterization import PARAMETERIZATIONS
from mav_train.diffusion.samplers import SAMPLERS
from mav_train.diffusion.schedule import (
    SCHEDULES,
    cosine_betas,
    linear_betas,
    make_betas,
    respaced_betas,
    spaced_timesteps,
)

__all__ = [
    "PARAMETERIZATIONS",
    "SAMPLERS",
    "SCHEDULES",
    "GaussianDiffusion",
    "batched_guided_model_fn",
    "cosine_betas",
    "guided_model_fn",
    "linear_betas",
    "make_betas",
    "respaced_betas",
    "spaced_timesteps",
]
