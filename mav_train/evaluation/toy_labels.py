"""What a toy-world caption says, for the judge: the caption grammar lives with the generator
(:mod:`datamodules.toy_world`); a label is its :class:`~datamodules.toy_world.ToyCaption`."""

from __future__ import annotations

from datamodules.toy_world import ToyCaption, parse_caption

ToyLabel = ToyCaption

__all__ = ["ToyLabel", "parse_caption"]
