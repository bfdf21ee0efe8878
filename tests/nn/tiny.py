"""Tiny UNet configs and weight perturbation shared by the nn tests."""

from __future__ import annotations

import torch
from torch import nn

from mav_train.config.schema import UNetConfig


def tiny_config(**overrides: object) -> UNetConfig:
    """A small UNet config (16 base channels, 8-channel heads, CLIP dim 12) with ``overrides`` applied."""
    fields: dict[str, object] = {
        "base_channels": 16,
        "channel_mults": [1, 2],
        "attention_levels": [2],
        "head_dim": 8,
        "num_res_blocks": 1,
        "cond_dim": 12,
        "num_cond_tokens": 2,
    }
    fields.update(overrides)
    return UNetConfig(**fields)


def perturb(module: nn.Module, std: float = 0.1, seed: int = 0, skip: frozenset[str] = frozenset()) -> None:
    """Add N(0, std) noise to every parameter of ``module`` whose name is not in ``skip`` (in place)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name not in skip:
                param.add_(torch.randn(param.shape, generator=generator) * std)
