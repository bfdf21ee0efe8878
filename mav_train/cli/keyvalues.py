"""``key=value`` arguments of the verbs that take a fixed set of keys (``sample``, ``generate``)."""

from __future__ import annotations

from mav_train.config.load import ConfigError


def parse_key_values(verb: str, args: list[str], keys: dict[str, str | None], required: tuple[str, ...],
                     may_be_blank: tuple[str, ...] = ()) -> dict[str, str | None]:
    """``keys`` (name → default) filled from ``args``; an unknown or malformed argument, or a missing required
    value, is one-line :class:`ConfigError`. A required key in ``may_be_blank`` may be given empty (the verb
    reports that itself, more precisely)."""
    values = dict(keys)
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or key not in keys:
            raise ConfigError(f"{verb}: unknown argument '{arg}'; expected key=value with key in {', '.join(keys)}")
        values[key] = value
    for name in required:
        value = values[name]
        if value is None or (name not in may_be_blank and not value.strip()):
            raise ConfigError(f"{verb}: missing required value '{name}'")
    return values
