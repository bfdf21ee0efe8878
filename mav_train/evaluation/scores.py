"""Fréchet distance and Inception Score of ready-made feature sets, computed by torchmetrics.

The feature networks run elsewhere (:mod:`mav_train.evaluation.feature_networks`); torchmetrics' FID and IS
metrics take them as features through an identity "feature network", so FID, FVD and IS share torchmetrics'
float64 statistics and its matrix square root (``eigvals`` of ``sigma_1 sigma_2``).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore


class PrecomputedFeatures(nn.Module):
    """The identity, as torchmetrics' ``feature`` module: ``update`` receives features ``(n, d)``."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


def frechet_distance(real: Tensor, fake: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``(n, d)`` and ``(m, d)`` (n, m >= 2):
    ``|mu_r - mu_f|^2 + tr(S_r + S_f - 2 (S_r S_f)^(1/2))``."""
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature sets must be (n, d) with the same d, got {tuple(real.shape)} and "
                         f"{tuple(fake.shape)}")
    if real.shape[0] < 2 or fake.shape[0] < 2:
        raise ValueError(f"the Fréchet distance needs at least 2 items on each side, got {real.shape[0]} real and "
                         f"{fake.shape[0]} generated")
    metric = FrechetInceptionDistance(feature=PrecomputedFeatures(real.shape[1])).double()
    metric.update(real.double(), real=True)
    metric.update(fake.double(), real=False)
    return float(metric.compute())


def as_logits(outputs: Tensor) -> Tensor:
    """Class probabilities (non-negative rows summing to 1, what StyleGAN-V's C3D returns) → their logs, which
    softmax maps back to them; anything else is taken to be logits already."""
    rows_sum_to_one = torch.allclose(outputs.sum(dim=1), torch.ones_like(outputs[:, 0]), atol=1e-3)
    if bool((outputs >= 0).all()) and rows_sum_to_one:
        return outputs.clamp_min(1e-30).log()
    return outputs


def inception_score(outputs: Tensor, splits: int, seed: int = 0) -> tuple[float, float]:
    """(mean, std) over ``splits`` of ``exp(E_x KL(p(y|x) || p(y)))`` for class probabilities or logits
    ``(n, classes)``. The items are shuffled (torchmetrics: ``torch.randperm``, here from ``seed``) and cut into
    ``splits`` chunks (``Tensor.chunk``)."""
    if outputs.ndim != 2 or outputs.shape[0] < splits:
        raise ValueError(f"the Inception Score needs (n, classes) outputs with n >= splits={splits}, got "
                         f"{tuple(outputs.shape)}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = InceptionScore(feature=PrecomputedFeatures(outputs.shape[1]), splits=splits).double()
    metric.update(as_logits(outputs.double()))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)
