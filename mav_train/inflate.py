"""Inflation: load an image UNet's weights into a video UNet whose new temporal layers start as the identity.

Used for D -> D^t, SR_l -> SR_l^t, and D^t -> ↑F (where the input conv gains the masked-frame channels, whose
new weights are zero). The key check is strict: only the video network's temporal/fps parameters may be
missing from the source, nothing may be unexpected, and every shape must match (the input conv aside).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from mav_train.nn.unet import UNet

INPUT_CONV_WEIGHT = "input_conv.weight"


@dataclass
class InflationReport:
    """What :func:`inflate` did: keys loaded, temporal keys left at their identity init, keys expanded."""

    loaded: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)
    # key -> (shape in the source, shape in the video network)
    expanded: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)
    loaded_numel: int = 0
    initialised_numel: int = 0

    def __str__(self) -> str:
        lines = [
            f"inflation: loaded {len(self.loaded)} tensors ({self.loaded_numel:,} values), "
            f"initialised {len(self.initialised)} temporal tensors ({self.initialised_numel:,} values), "
            f"expanded {len(self.expanded)}"
        ]
        lines += [
            f"  expanded {key}: {list(old)} -> {list(new)} (new input channels zero)"
            for key, (old, new) in self.expanded.items()
        ]
        return "\n".join(lines)


def select_prefix(state_dict: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries whose key starts with ``prefix``, with the prefix removed; raises if there are none."""
    if not prefix:
        return dict(state_dict)
    selected = {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}
    if not selected:
        sample = sorted(state_dict)[:5]
        raise ValueError(f"no key of the state dict starts with prefix {prefix!r}; first keys: {sample}")
    return selected


def _expand_input_conv(source: Tensor, target_shape: torch.Size) -> Tensor:
    """Copy ``source`` into a zero tensor of ``target_shape`` (extra input channels appended)."""
    expanded = torch.zeros(target_shape, dtype=source.dtype, device=source.device)
    expanded[:, : source.shape[1]] = source
    return expanded


def _check_keys(video_unet: UNet, source: dict[str, Tensor], target: dict[str, Tensor]) -> None:
    unexpected = sorted(set(source) - set(target))
    missing = sorted(key for key in set(target) - set(source) if not video_unet.is_temporal_parameter(key))
    problems = []
    if missing:
        problems.append(f"missing non-temporal keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    if problems:
        raise ValueError("cannot inflate the image state dict: " + "; ".join(problems))


def _match_shapes(
    source: dict[str, Tensor], target: dict[str, Tensor], report: InflationReport
) -> dict[str, Tensor]:
    loadable: dict[str, Tensor] = {}
    mismatched = []
    for key in sorted(source):
        value, want = source[key], target[key].shape
        if value.shape == want:
            loadable[key] = value
        elif (
            key == INPUT_CONV_WEIGHT
            and value.ndim == len(want)
            and value.shape[0] == want[0]
            and value.shape[1] < want[1]
            and value.shape[2:] == want[2:]
        ):
            loadable[key] = _expand_input_conv(value, want)
            report.expanded[key] = (tuple(value.shape), tuple(want))
        else:
            mismatched.append(f"{key}: {list(value.shape)} vs {list(want)}")
    if mismatched:
        raise ValueError(
            f"cannot inflate the image state dict: shape mismatches (source vs video) {mismatched}"
        )
    return loadable


def inflate(video_unet: UNet, image_state_dict: dict[str, Tensor], prefix: str = "") -> InflationReport:
    """Load an image UNet's state dict into ``video_unet`` (in place).

    Args:
        video_unet: the temporal UNet; its temporal/fps layers keep their (identity) initialisation.
        image_state_dict: the image (or a smaller video) UNet's state dict.
        prefix: use only the keys starting with this prefix, stripped (``"network."``, ``"ema_network."``).

    Returns:
        An :class:`InflationReport`.

    Raises:
        ValueError: listing (sorted) every missing non-temporal key and every unexpected key, or the shape
        mismatches (the input conv may only gain input channels).
    """
    source = select_prefix(image_state_dict, prefix)
    target = video_unet.state_dict()
    _check_keys(video_unet, source, target)
    report = InflationReport()
    loadable = _match_shapes(source, target, report)
    result = video_unet.load_state_dict(loadable, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys
    report.loaded = sorted(loadable)
    report.initialised = sorted(result.missing_keys)
    report.loaded_numel = sum(value.numel() for value in loadable.values())
    report.initialised_numel = sum(target[key].numel() for key in report.initialised)
    return report
