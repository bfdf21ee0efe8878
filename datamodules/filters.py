"""Sample filters on json metadata fields: ``"pwatermark<0.5"``, ``"punsafe<=0.1"``, ``"status==success"``.

A field may be a dotted path into nested dicts (``exif.Orientation==1``). Numbers compare as numbers
(strings such as ``"2.5"`` are converted); other values compare as strings with ``==``/``!=``.

Decision on missing values: a sample whose json lacks the field (or has null/NaN there, as LAION's punsafe
sometimes does) is *dropped* and counted as ``filtered``. Filters are mostly safety filters, so unknown means
no; a filter on a column the data never has then drops everything and the warnings name the field.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_PATTERN = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=|==|!=|<|>)\s*(\S.*?)\s*$")
_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


@dataclass(frozen=True)
class FieldFilter:
    """One parsed ``field OP value`` condition."""

    text: str
    path: tuple[str, ...]
    op: str
    value: float | str

    def lookup(self, meta: Mapping[str, Any]) -> Any:
        node: Any = meta
        for part in self.path:
            if not isinstance(node, Mapping) or part not in node:
                return None
            node = node[part]
        return node

    def why_rejected(self, meta: Mapping[str, Any]) -> str | None:
        """None when ``meta`` passes, else a short reason for the log."""
        found = self.lookup(meta)
        if found is None or (isinstance(found, float) and math.isnan(found)):
            return f"{'.'.join(self.path)} missing (filter {self.text!r})"
        if isinstance(self.value, float):
            number = _as_number(found)
            if number is None:
                return f"{'.'.join(self.path)}={found!r} is not a number (filter {self.text!r})"
            found = number
        else:
            found = str(found)
        if not _OPERATORS[self.op](found, self.value):
            return f"{'.'.join(self.path)}={found!r} fails {self.text!r}"
        return None


def parse_filter(text: str) -> FieldFilter:
    """Parse ``field OP value``; raises ``ValueError`` naming the string when it is malformed."""
    match = _PATTERN.match(text)
    if match is None:
        raise ValueError(
            f"data.filters entry {text!r} is not 'field OP value' with OP one of < <= > >= == !="
        )
    field, op, raw = match.groups()
    raw = raw.strip("'\"")
    number = _as_number(raw)
    if number is None and op not in ("==", "!="):
        raise ValueError(f"data.filters entry {text!r}: {op} needs a number, got {raw!r}")
    return FieldFilter(
        text=text, path=tuple(field.split(".")), op=op, value=raw if number is None else number
    )


def parse_filters(texts: list[str]) -> tuple[FieldFilter, ...]:
    return tuple(parse_filter(text) for text in texts)


def first_rejection(filters: tuple[FieldFilter, ...], meta: Mapping[str, Any]) -> str | None:
    """The reason the first failing filter gives, or None when all pass."""
    for condition in filters:
        reason = condition.why_rejected(meta)
        if reason is not None:
            return reason
    return None
