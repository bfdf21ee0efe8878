"""Command-line entry: one dict maps verbs to the modules that implement them.

Each verb module exposes ``HELP`` (its --help text, first line = summary, a plain string literal) and
``run(args: list[str]) -> int``. Help is read from the module's source without importing it, so ``--help`` costs
no torch or Lightning import (12 s -> under a second on a 2-core machine). Configuration errors are printed as
one line (no traceback) and exit with status 2; a checkpoint that cannot be
read or written (unsafe, truncated, a full disk) is one line too, with status 1.

A process that seems stuck prints the Python stack of every thread to stderr on SIGUSR2 and carries on
(``kill -USR2 PID``; for a SLURM job ``scancel --signal=USR2 JOB`` reaches every rank and its loader workers).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys

from mav_train.config.load import ConfigError
from mav_train.stacks import dump_stacks_on_sigusr2

VERBS = {
    "fit": "mav_train.cli.fit",
    "sample": "mav_train.cli.sample",
    "prepare": "mav_train.cli.prepare",
    "recipes": "mav_train.cli.recipes",
    "submit": "mav_train.cli.submit",
    "consolidate": "mav_train.cli.consolidate",
    "evaluate": "mav_train.cli.evaluate",
    "embed": "mav_train.cli.embed",
    "generate": "mav_train.cli.generate",
    "pipeline": "mav_train.cli.pipeline",
}

OVERRIDES_HELP = """\
Configuration: every verb that trains or samples takes recipe=NAME and any number of key=value overrides.
  recipe=demo/decoder             a recipe under recipes/ (or a path to a .yaml file); see `recipes`
  trainer.max_steps=200           dotted keys into the typed schema (mav_train/config/schema.py)
  data.shards='/data/{00000..00099}.tar'   brace patterns are passed through to WebDataset
  data.filters='pwatermark<0.5'   a list key accepts one value or [a,b]
  logger=none                     shorthand for logger.kind=none (wandb | csv | none)
Unknown keys, wrong types and missing values fail before any work starts, naming the key."""


def _verb_module(name: str):
    return importlib.import_module(VERBS[name])


def help_text(name: str) -> str:
    """The verb module's ``HELP``, read from its source (falls back to importing it if not a literal)."""
    spec = importlib.util.find_spec(VERBS[name])
    if spec is not None and spec.origin and spec.origin.endswith(".py"):
        with open(spec.origin, encoding="utf-8") as handle:
            tree = ast.parse(handle.read(), spec.origin)
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "HELP" for t in node.targets):
                try:
                    return str(ast.literal_eval(node.value)).strip()
                except ValueError:
                    break
    return _verb_module(name).HELP.strip()


def usage() -> str:
    lines = ["usage: python -m mav_train VERB [key=value ...] [--help]", "", "verbs:"]
    for name in VERBS:
        summary = help_text(name).splitlines()[0]
        lines.append(f"  {name:<12} {summary}")
    return "\n".join(lines + ["", OVERRIDES_HELP])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    verb, args = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"mav_train: unknown verb '{verb}'; known verbs: {', '.join(VERBS)}", file=sys.stderr)
        return 2
    if "-h" in args or "--help" in args:
        print(help_text(verb))
        return 0
    module = _verb_module(verb)
    dump_stacks_on_sigusr2()
    from mav_train.checkpoints import CheckpointError  # torch; after the verb module, which needs it anyway

    try:
        return int(module.run(args) or 0)
    except ConfigError as err:
        print(f"mav_train {verb}: config error: {err}", file=sys.stderr)
        return 2
    except CheckpointError as err:
        print(f"mav_train {verb}: checkpoint error: {err}", file=sys.stderr)
        return 1
