"""Which frames ↑F knows: the training masks (interpolation, extrapolation forwards/backwards, image animation,
nothing known), the 4 extra input channels built from them, and how interpolation windows tile a long video.

A mask is a bool tensor over frames, True = known. The extra channels are the known frames with the unknown ones
zeroed (3 channels) and the mask itself (1 channel), concatenated to the noisy input (Make-A-Video §3.3).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange, repeat
from torch import Tensor

from mav_train.config.schema import MaskConfig

MODES = ("interpolation", "extrapolation_forward", "extrapolation_backward", "animation", "unconditional")


def interpolation_mask(frames: int, skip: int) -> Tensor:
    """Every ``skip``-th frame known, from the first: ``(frames,)`` bool."""
    if skip < 1:
        raise ValueError(f"skip must be >= 1, got {skip}")
    return torch.arange(frames) % skip == 0


def forward_mask(frames: int, known: int) -> Tensor:
    """The first ``known`` frames known (extrapolation forwards in time)."""
    return torch.arange(frames) < known


def backward_mask(frames: int, known: int) -> Tensor:
    """The last ``known`` frames known (extrapolation backwards in time)."""
    return torch.arange(frames) >= frames - known


def animation_mask(frames: int) -> Tensor:
    """Only the first frame known (image animation)."""
    return forward_mask(frames, 1)


def validate_masks(cfg: MaskConfig, frames: int) -> None:
    """ValueError naming the ``model.masks`` key when the mask mix cannot be drawn for ``frames``-frame clips."""
    ratios = [getattr(cfg, mode) for mode in MODES]
    if min(ratios) < 0 or sum(ratios) <= 0:
        raise ValueError(f"model.masks ratios {dict(zip(MODES, ratios, strict=True))} must be >= 0 with a positive sum")
    if not 1 <= cfg.min_skip <= cfg.max_skip <= frames - 1:
        raise ValueError(f"model.masks needs 1 <= min_skip ({cfg.min_skip}) <= max_skip ({cfg.max_skip}) <= "
                         f"data.num_frames - 1 ({frames - 1}): a window must hold two keyframes")
    if not 1 <= cfg.max_known <= frames - 1:
        raise ValueError(f"model.masks.max_known {cfg.max_known} must lie in [1, data.num_frames - 1 = {frames - 1}]")
    if cfg.known_noise < 0:
        raise ValueError(f"model.masks.known_noise must be >= 0, got {cfg.known_noise}")


@dataclass
class MaskDraw:
    """Masks drawn for a batch: ``known`` ``(b, t)`` bool, each row's mode, and its skip (interpolation) or
    number of known frames (extrapolation); 0 where neither applies."""

    known: Tensor
    modes: list[str]
    sizes: list[int]


def draw_masks(batch: int, frames: int, cfg: MaskConfig, generator: torch.Generator | None = None) -> MaskDraw:
    """One mask per clip, its mode drawn with the ``cfg`` ratios (on the CPU; move ``known`` where needed)."""
    validate_masks(cfg, frames)
    weights = torch.tensor([float(getattr(cfg, mode)) for mode in MODES])
    picks = torch.multinomial(weights, batch, replacement=True, generator=generator).tolist()
    rows, modes, sizes = [], [], []
    for pick in picks:
        mode = MODES[pick]
        size = 0
        if mode == "interpolation":
            size = int(torch.randint(cfg.min_skip, cfg.max_skip + 1, (), generator=generator))
            row = interpolation_mask(frames, size)
        elif mode.startswith("extrapolation"):
            size = int(torch.randint(1, cfg.max_known + 1, (), generator=generator))
            row = (forward_mask if mode.endswith("forward") else backward_mask)(frames, size)
        elif mode == "animation":
            row = animation_mask(frames)
        else:
            row = torch.zeros(frames, dtype=torch.bool)
        rows.append(row)
        modes.append(mode)
        sizes.append(size)
    return MaskDraw(torch.stack(rows), modes, sizes)


def known_channels(video: Tensor, known: Tensor, noise_std: float = 0.0,
                   generator: torch.Generator | None = None) -> Tensor:
    """The 4 extra input channels ``b 4 t h w``: ``video`` (``b 3 t h w``) with unknown frames zeroed (known
    ones optionally noised with ``noise_std``), then the mask ``known`` (``(b, t)`` bool) as a 0/1 channel."""
    if known.shape != (video.shape[0], video.shape[2]):
        raise ValueError(f"known must have shape {(video.shape[0], video.shape[2])} (b, t), got {tuple(known.shape)}")
    mask = rearrange(known.to(video.device, video.dtype), "b t -> b 1 t 1 1")
    frames = video
    if noise_std > 0:
        noise = torch.randn(video.shape, generator=generator, device=video.device if generator is None
                            else generator.device, dtype=video.dtype).to(video.device)
        frames = video + noise_std * noise
    mask_channel = repeat(mask, "b 1 t 1 1 -> b 1 t h w", h=video.shape[3], w=video.shape[4])
    return torch.cat([frames * mask, mask_channel], dim=1)


def known_frame_blend(video: Tensor, known: Tensor) -> Tensor:
    """Every frame of ``video`` ``b c t h w`` made from its known frames (``known`` ``(b, t)``): between two known
    frames the linear cross-fade of the two, before the first (after the last) known frame a copy of it, and zeros
    where nothing is known. ↑F can start sampling from it (``model.sample_strength``)."""
    b, t = known.shape
    index = torch.arange(t, device=video.device).expand(b, t)
    never = torch.full_like(index, -1)
    # The nearest known frame at or before each frame, and at or after it (-1 where there is none).
    before = torch.cummax(torch.where(known, index, never), dim=1).values
    after_flipped = torch.cummax(torch.where(known, t - 1 - index, never).flip(1), dim=1).values
    after = torch.where(after_flipped >= 0, t - 1 - after_flipped, never).flip(1)
    before = torch.where(before >= 0, before, after)  # before the first known frame: hold it
    after = torch.where(after >= 0, after, before)  # after the last known frame: hold it
    gap = (after - before).clamp(min=1)
    weight = ((index - before) / gap).to(video.dtype)

    def gather(idx: Tensor) -> Tensor:
        c, _, h, w = video.shape[1:]
        return torch.gather(video, 2, repeat(idx.clamp(min=0), "b t -> b c t h w", c=c, h=h, w=w))

    blend = torch.lerp(gather(before), gather(after), rearrange(weight, "b t -> b 1 t 1 1"))
    return blend * rearrange(known.any(dim=1), "b -> b 1 1 1 1").to(video.dtype)


def first_known_frames(video: Tensor, known: Tensor) -> Tensor:
    """``b 3 h w``: each clip's first known frame (its first frame when none is known), for the CLIP condition."""
    index = known.long().argmax(dim=1).to(video.device)  # 0 when no frame is known
    return video[torch.arange(video.shape[0], device=video.device), :, index]


def interpolation_windows(keyframes: int, skip: int, window: int) -> list[int]:
    """Start keyframe of each window when a ``keyframes``-frame video is interpolated at ``skip`` by a model of
    ``window`` frames: a window holds ``(window - 1) // skip + 1`` keyframes at its frames 0, skip, 2 skip, ...;
    consecutive windows share their boundary keyframe, and the last one is moved back to end on the last keyframe.
    ValueError naming the sizes when the skip does not fit the window or the video is shorter than a window."""
    if skip < 1:
        raise ValueError(f"skip must be >= 1, got {skip}")
    if skip > window - 1:
        raise ValueError(f"skip {skip} does not fit this model's window of {window} frames "
                         f"(a window must hold two keyframes: skip <= {window - 1})")
    per_window = (window - 1) // skip + 1
    if keyframes < per_window:
        raise ValueError(f"video has {keyframes} frames, fewer than the {per_window} keyframes one {window}-frame "
                         f"window holds at skip {skip}")
    step = per_window - 1
    starts = list(range(0, keyframes - per_window + 1, step))
    if starts[-1] + per_window < keyframes:
        starts.append(keyframes - per_window)
    return starts
