"""Optimiser parameter groups with per-pattern learning-rate multipliers (``optim.lr_scales``)."""

from __future__ import annotations

import re

from torch import nn


def lr_scale_groups(named: list[tuple[str, nn.Parameter]], scales: dict[str, float], lr: float) -> list[dict]:
    """Split ``named`` parameters into AdamW groups: each ``{regex: scale}`` entry (first match wins, ``re.search``
    on the parameter name) gets ``lr * scale``; the rest ``lr``. Raises ``ValueError`` naming a pattern that is not
    a valid regex or matches no parameter, or a negative scale."""
    compiled = []
    for pattern, scale in scales.items():
        try:
            compiled.append((pattern, re.compile(pattern), float(scale)))
        except re.error as err:
            raise ValueError(f"optim.lr_scales: {pattern!r} is not a regular expression ({err})") from err
        if float(scale) < 0:
            raise ValueError(f"optim.lr_scales: the scale of {pattern!r} is negative ({scale})")
    buckets: dict[str | None, list[nn.Parameter]] = {None: []}
    buckets.update({pattern: [] for pattern, _, _ in compiled})
    for name, param in named:
        hit = next((pattern for pattern, regex, _ in compiled if regex.search(name)), None)
        buckets[hit].append(param)
    unused = [pattern for pattern, _, _ in compiled if not buckets[pattern]]
    if unused:
        raise ValueError(f"optim.lr_scales: {', '.join(map(repr, unused))} matches no trained parameter "
                         f"(e.g. {named[0][0]!r})")
    groups = [{"params": buckets[None], "lr": lr, "name": "default"}] if buckets[None] else []
    groups += [{"params": buckets[pattern], "lr": lr * scale, "name": pattern} for pattern, _, scale in compiled]
    return groups
