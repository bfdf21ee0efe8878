"""The paper's metrics over sample sources: FVD and IS (UCF-101), FID and CLIPSIM (MSR-VTT).

Each takes :class:`EvalSettings` (the command's values, a protocol's defaults filled in) and returns a
:class:`MetricResult` with the number, how many items went in on each side and what was skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from mav_train.evaluation.feature_networks import (
    C3D_KWARGS,
    I3D_KWARGS,
    INCEPTION_KWARGS,
    extract_features,
    load_torchscript,
)
from mav_train.evaluation.media_source import MediaSource
from mav_train.evaluation.scores import frechet_distance, inception_score
from mav_train.evaluation.selection import clips, frames


@dataclass
class EvalSettings:
    """Everything a metric needs. ``num_*`` / ``frames_per_video`` None = all available."""

    samples: str
    real: str | None = None
    network: str | None = None
    num_real: int | None = None
    num_fake: int | None = None
    frames: int = 16
    frames_per_video: int | None = None
    splits: int = 10
    batch_size: int = 16
    device: str = "cpu"
    seed: int = 0
    clip_model: str = "ViT-B-32-quickgelu"
    clip_pretrained: str | None = None


@dataclass
class MetricResult:
    """``value`` of ``metric``; ``extra`` holds secondary numbers (IS: ``std``); ``counts`` the items that went
    in (``fake``, ``real``); ``skipped`` per side the items left out, by reason."""

    metric: str
    value: float
    extra: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)


def fvd(s: EvalSettings) -> MetricResult:
    """Fréchet Video Distance: I3D features of ``s.frames``-frame clips, generated vs real."""
    device = torch.device(s.device)
    net = load_torchscript(s.network, "fvd", device)
    fake_source, real_source = MediaSource(s.samples), MediaSource(s.real)
    fake = extract_features(net, clips(fake_source, s.frames, s.num_fake), I3D_KWARGS, s.batch_size, device,
                            s.num_fake, "fvd generated")
    real = extract_features(net, clips(real_source, s.frames, s.num_real, np.random.default_rng(s.seed)),
                            I3D_KWARGS, s.batch_size, device, s.num_real, "fvd real")
    return _frechet_result("fvd", real, fake, real_source, fake_source)


def fid(s: EvalSettings) -> MetricResult:
    """Fréchet Inception Distance over frames (images, or frames of clips), generated vs real."""
    device = torch.device(s.device)
    net = load_torchscript(s.network, "fid", device)
    fake_source, real_source = MediaSource(s.samples), MediaSource(s.real)
    fake = extract_features(net, frames(fake_source, s.frames_per_video, s.num_fake), INCEPTION_KWARGS,
                            s.batch_size, device, s.num_fake, "fid generated")
    real = extract_features(net, frames(real_source, s.frames_per_video, s.num_real), INCEPTION_KWARGS,
                            s.batch_size, device, s.num_real, "fid real")
    return _frechet_result("fid", real, fake, real_source, fake_source)


def _frechet_result(metric: str, real: torch.Tensor, fake: torch.Tensor, real_source: MediaSource,
                    fake_source: MediaSource) -> MetricResult:
    counts = {"fake": int(fake.shape[0]), "real": int(real.shape[0])}
    skipped = {"fake": dict(fake_source.skipped), "real": dict(real_source.skipped)}
    if min(counts.values()) < 2:
        raise ValueError(f"{metric}: need at least 2 usable items on each side, got {counts['fake']} generated "
                         f"(skipped: {skipped['fake'] or 'none'}) and {counts['real']} real "
                         f"(skipped: {skipped['real'] or 'none'})")
    return MetricResult(metric, frechet_distance(real, fake), counts=counts, skipped=skipped)


def inception_score_of_clips(s: EvalSettings) -> MetricResult:
    """Inception Score of generated clips under a C3D classifier (the first ``s.frames`` frames of each)."""
    device = torch.device(s.device)
    net = load_torchscript(s.network, "is", device)
    source = MediaSource(s.samples)
    outputs = extract_features(net, clips(source, s.frames, s.num_fake), C3D_KWARGS, s.batch_size, device,
                               s.num_fake, "is generated")
    if outputs.shape[0] < s.splits:
        raise ValueError(f"is: need at least splits={s.splits} usable clips, got {outputs.shape[0]} "
                         f"(skipped: {dict(source.skipped) or 'none'})")
    mean, std = inception_score(outputs, s.splits, s.seed)
    return MetricResult("is", mean, extra={"std": std}, counts={"fake": int(outputs.shape[0])},
                        skipped={"fake": dict(source.skipped)})
