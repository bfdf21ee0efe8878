"""What a toy-world caption says: :func:`parse_caption` turns a caption of ``datamodules.toy_world`` back into
its labels (the judge's ground truth)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from datamodules.toy_world import COLORS, SHAPES

_COLOR = "|".join(name for name, _ in COLORS)
_SHAPE = "|".join(SHAPES)
_PLACE = "top left|top right|bottom left|bottom right|top|bottom|left|right"
_THING = rf"an? (?:(?P<size>small|large) )?(?P<color>{_COLOR}) (?P<shape>{_SHAPE})"
_ON = rf"on an? (?P<background>{_COLOR}) background"
_IMAGE = re.compile(rf"{_THING} (?:at the (?P<place>{_PLACE})|in the middle) {_ON}")
_VIDEO = re.compile(rf"{_THING} moving (?P<direction>left|right)(?P<pulsing> and pulsing)? {_ON}")


@dataclass(frozen=True)
class ToyLabel:
    """The attributes a toy-world caption names. ``position`` is None for videos (their captions say how the
    shape moves instead), ``direction`` is None for images. ``size`` is "small", "medium" or "large"."""

    color: str
    background: str
    shape: str
    position: str | None
    size: str
    direction: str | None
    pulsing: bool

    @property
    def is_video(self) -> bool:
        return self.direction is not None


def parse_caption(caption: str) -> ToyLabel:
    """``"a small red circle at the top left on a blue background"`` → ToyLabel(color="red", ...,
    position="top left", size="small"). Accepts "a" or "an" before any colour. Raises ValueError for a caption
    that is not a toy-world caption."""
    text = caption.strip()
    match = _IMAGE.fullmatch(text) or _VIDEO.fullmatch(text)
    if match is None:
        raise ValueError(f"not a toy-world caption: {caption!r}")
    groups = match.groupdict()
    is_video = groups.get("direction") is not None
    return ToyLabel(
        color=groups["color"],
        background=groups["background"],
        shape=groups["shape"],
        position=None if is_video else (groups["place"] or "middle"),
        size=groups["size"] or "medium",
        direction=groups["direction"] if is_video else None,
        pulsing=bool(groups.get("pulsing")),
    )
