"""``recipes``: list every recipe with its one-line description."""

from __future__ import annotations

from mav_train.config.load import list_cascade_names, list_recipe_names, read_recipe

HELP = """\
List every recipe with its one-line description: component recipes (for fit, submit), then cascades (for
pipeline, submit).

usage: python -m mav_train recipes"""


def run(args: list[str]) -> int:
    names = list_recipe_names() + list_cascade_names()
    width = max((len(n) for n in names), default=0)
    for name in names:
        data = read_recipe(name)
        description = str(data.get("description", "")).strip().splitlines()
        print(f"{name:<{width}}  {description[0] if description else ''}")
    return 0
