"""Recipe loading: schema defaults ← ``base:`` chain ← recipe ← command-line ``key=value`` overrides.

This is the only module that reads YAML. Every failure is a :class:`ConfigError` whose message is one line that
names the dotted key (and the closest valid key, the bad value, or how to fix it).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

from mav_train.config.schema import RunConfig

# Shorthands accepted on the command line: ``logger=none`` means ``logger.kind=none``.
SHORTHANDS = {"logger": "logger.kind"}
MAX_BASE_DEPTH = 8


class ConfigError(ValueError):
    """A configuration mistake, reported to the user as one line."""


def recipes_dir() -> Path:
    """The ``recipes/`` folder inside the ``mav_train`` package (package data: an installed wheel has it)."""
    return Path(__file__).resolve().parents[1] / "recipes"


def recipe_path(name: str) -> Path:
    """Resolve a recipe name (``demo/decoder``) or a path to a YAML file."""
    as_path = Path(name)
    if as_path.suffix in (".yaml", ".yml") and as_path.is_file():
        return as_path
    candidate = recipes_dir() / f"{name}.yaml"
    if candidate.is_file():
        return candidate
    known = ", ".join(list_recipe_names()) or "none"
    raise ConfigError(f"recipe '{name}' not found under {recipes_dir()} (known recipes: {known})")


PIPELINES = "pipelines"  # recipes/pipelines/NAME.yaml: the stage checkpoints and settings of `generate`


def _all_recipe_names() -> list[str]:
    root = recipes_dir()
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml")
                  if p.relative_to(root).parts[0] != PIPELINES)


def is_cascade(name: str) -> bool:
    """A cascade recipe (``recipes/demo/cascade.yaml``): a list of ``stages``, trained by ``pipeline``."""
    return "stages" in read_recipe(name)


def list_recipe_names() -> list[str]:
    """The component recipes (one run each); cascades and ``pipelines/`` files are not among them."""
    return [name for name in _all_recipe_names() if not is_cascade(name)]


def list_cascade_names() -> list[str]:
    return [name for name in _all_recipe_names() if is_cascade(name)]


def pipeline_path(name: str) -> Path:
    """Resolve ``generate pipeline=NAME`` (``recipes/pipelines/NAME.yaml``) or a path to a YAML file."""
    as_path = Path(name)
    if as_path.suffix in (".yaml", ".yml"):
        if as_path.is_file():
            return as_path
        raise ConfigError(f"pipeline file {as_path} not found")
    candidate = recipes_dir() / PIPELINES / f"{name}.yaml"
    if candidate.is_file():
        return candidate
    known = ", ".join(sorted(p.stem for p in (recipes_dir() / PIPELINES).glob("*.yaml"))) or "none"
    raise ConfigError(f"pipeline '{name}' not found under {recipes_dir() / PIPELINES} (known: {known})")


class _RecipeLoader(yaml.SafeLoader):
    """YAML 1.1 safe loading without base-60 numbers: ``time: 48:00:00`` stays the string a user means."""


_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
_RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _NUMBER_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"))
_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)"
               r"|\.[0-9_]+(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def read_recipe(name: str) -> dict:
    """The raw mapping of one recipe file, without following ``base:``."""
    path = recipe_path(name)
    try:
        data = yaml.load(path.read_text(), Loader=_RecipeLoader) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe {path}: invalid YAML: {err}".replace("\n", " ")) from err
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _recipe_chain(name: str) -> list[dict]:
    """Recipe mappings from the deepest base to ``name`` itself."""
    chain: list[dict] = []
    seen: list[str] = []
    current: str | None = name
    while current is not None:
        if current in seen or len(seen) >= MAX_BASE_DEPTH:
            raise ConfigError(f"recipe base chain is circular or too deep: {' -> '.join(seen + [current])}")
        seen.append(current)
        data = read_recipe(current)
        if "stages" in data:
            raise ConfigError(f"recipe '{current}' is a cascade of stages: train it with `python -m mav_train "
                              f"pipeline recipe={current}` (or `submit recipe={current}`)")
        current = data.pop("base", None)
        chain.append(data)
    return list(reversed(chain))


def _field_types(schema: type, prefix: str = "") -> dict[str, object]:
    """Dotted name → type hint of every leaf field in the schema."""
    out: dict[str, object] = {}
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            out |= _field_types(hint, f"{prefix}{f.name}.")
        else:
            out[f"{prefix}{f.name}"] = hint
    return out


def _is_string(hint: object) -> bool:
    return hint is str or (typing.get_origin(hint) in (typing.Union, types.UnionType)
                           and set(typing.get_args(hint)) == {str, type(None)})


def parse_overrides(overrides: list[str]) -> DictConfig:
    """``key=value`` strings to a config.

    A bare string for a list field becomes a one-element list. Values of string fields are taken verbatim
    (YAML would read ``slurm.time=48:00:00`` as the base-60 integer 172800); ``null`` still means None.
    """
    types_by_key = _field_types(RunConfig)
    items: list[str] = []
    verbatim: list[tuple[str, str | None]] = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. trainer.max_steps=100)")
        key, value = item.split("=", 1)
        key = SHORTHANDS.get(key, key)
        hint = types_by_key.get(key)
        if typing.get_origin(hint) is list and value and not value.lstrip().startswith("["):
            value = "[" + ",".join(repr(v) for v in value.split(",")) + "]"
        if hint is not None and _is_string(hint):
            verbatim.append((key, None if value in ("null", "None", "~") else value))
            continue
        items.append(f"{key}={value}")
    try:
        parsed = OmegaConf.from_dotlist(items)
        for key, value in verbatim:
            OmegaConf.update(parsed, key, value, force_add=True)
        return parsed
    except OmegaConfBaseException as err:
        raise ConfigError(f"cannot parse overrides {overrides}: {_one_line(err)}") from err


def _one_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _describe(err: OmegaConfBaseException) -> str:
    key = getattr(err, "full_key", None) or "?"
    first = _one_line(err)
    if isinstance(err, ConfigKeyError):
        names = re.findall(r"'([^']+)'", first.split("Did you mean", 1)[1]) if "Did you mean" in first else []
        if names:
            options = " or ".join(f"'{_sibling(key, n)}'" for n in names)
            return f"unknown config key '{key}' (did you mean {options}?)"
        return f"unknown config key '{key}'"
    if isinstance(err, MissingMandatoryValue):
        return f"missing required config value '{key}'"
    return f"invalid value for '{key}': {first}"


def _sibling(full_key: str, name: str) -> str:
    parent = full_key.rsplit(".", 1)[0] if "." in full_key else ""
    return f"{parent}.{name}" if parent else name


def load_config(recipe: str, overrides: list[str] | None = None) -> DictConfig:
    """Resolve ``recipe`` (+ its bases) and the overrides into a validated, typed config."""
    overrides = list(overrides or [])
    try:
        merged = OmegaConf.structured(RunConfig)
        for layer in _recipe_chain(recipe):
            merged = OmegaConf.merge(merged, layer)
        merged = OmegaConf.merge(merged, parse_overrides(overrides))
        if OmegaConf.is_missing(merged, "recipe"):
            merged.recipe = recipe
        OmegaConf.to_container(merged, throw_on_missing=True)
    except OmegaConfBaseException as err:
        raise ConfigError(_describe(err)) from err
    OmegaConf.set_readonly(merged, True)
    return merged


def save_config(cfg: DictConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OmegaConf.to_yaml(cfg, resolve=True))


def config_from_container(data: dict) -> DictConfig:
    """Rebuild a typed config from a plain mapping (e.g. the one stored in a checkpoint)."""
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(RunConfig), data)
    except OmegaConfBaseException as err:
        raise ConfigError(_describe(err)) from err
    OmegaConf.set_readonly(cfg, True)
    return cfg


def load_structured(schema: type, layers: list[dict | DictConfig], what: str) -> DictConfig:
    """``layers`` merged over the dataclass ``schema`` (structured mode: an unknown key or a wrong type is one
    :class:`ConfigError` line naming the dotted key, prefixed with ``what``), read-only."""
    try:
        merged = OmegaConf.structured(schema)
        for layer in layers:
            merged = OmegaConf.merge(merged, layer)
        OmegaConf.to_container(merged, throw_on_missing=True)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{what}: {_describe(err)}") from err
    OmegaConf.set_readonly(merged, True)
    return merged


def read_yaml_file(path: Path, what: str) -> dict:
    """A YAML mapping from ``path`` (the recipes' loader: ``48:00:00`` stays a string); one line on failure."""
    try:
        data = yaml.load(Path(path).read_text(), Loader=_RecipeLoader) or {}
    except OSError as err:
        raise ConfigError(f"{what} {path}: cannot read it ({err.strerror or err})") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{what} {path}: invalid YAML: {err}".replace("\n", " ")) from err
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path}: expected a mapping at the top level, got {type(data).__name__}")
    return data
