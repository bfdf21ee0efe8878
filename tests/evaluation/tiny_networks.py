"""Tiny randomly initialised feature networks, saved as TorchScript with the calling conventions of the real ones
(StyleGAN-V's I3D and C3D, StyleGAN2-ADA's Inception): the metrics' tests need no download."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class TinyI3D(nn.Module):
    """uint8 ``b 3 t h w`` → ``(b, 8)``: rescale to [-1, 1], resize frames to 32 x 32 (the real one: 224)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 8, kernel_size=3, stride=2)

    def forward(self, x: Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False
                ) -> Tensor:
        x = x.float()
        if rescale:
            x = x / 127.5 - 1.0
        if resize:
            x = F.interpolate(x, size=(x.shape[2], 32, 32), mode="trilinear", align_corners=False)
        features = torch.tanh(self.conv(x)).mean(dim=(2, 3, 4))
        return features if return_features else torch.softmax(features, dim=1)


class TinyInception(nn.Module):
    """uint8 ``b 3 h w`` → ``(b, 6)`` features."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, kernel_size=3, stride=2)

    def forward(self, x: Tensor, return_features: bool = False) -> Tensor:
        x = F.interpolate(x.float() / 127.5 - 1.0, size=(32, 32), mode="bilinear", align_corners=False)
        features = torch.tanh(self.conv(x)).mean(dim=(2, 3))
        return features if return_features else torch.softmax(features, dim=1)


class TinyC3D(nn.Module):
    """uint8 ``b 3 t h w`` → class probabilities ``(b, 5)``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 5, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        logits = self.conv(x.float() / 127.5 - 1.0).mean(dim=(2, 3, 4)) * 20.0
        return torch.softmax(logits, dim=1)


def save_tiny(kind: str, directory: Path, seed: int = 0) -> Path:
    """Script and save one of the tiny networks (``i3d``, ``inception``, ``c3d``); returns the file."""
    torch.manual_seed(seed)
    net = {"i3d": TinyI3D, "inception": TinyInception, "c3d": TinyC3D}[kind]().eval()
    path = directory / f"tiny_{kind}.pt"
    torch.jit.save(torch.jit.script(net), str(path))
    return path
