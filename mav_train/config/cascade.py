"""The cascade recipe: every stage of Make-A-Video as one dependency graph (``recipes/demo/cascade.yaml``).

```yaml
description: the demo cascade
run_root: runs/demo/cascade           # stage NAME trains in run_root/NAME
stages:
  clip: {recipe: demo/clip}
  decoder: {recipe: demo/decoder, clip: clip}
  temporal_decoder: {recipe: demo/temporal_decoder, parent: decoder, clip: clip, overrides: [trainer.max_steps=400]}
generate: {pipeline: demo, stages: [prior, temporal_decoder], heldout_prompts: 32}
```

``parent``: the stage starts from the parent's ``last.ckpt`` (``init.checkpoint``) and runs after it. ``clip``: the
stage uses the CLIP that stage exported (``clip.pretrained=run_root/CLIP/open_clip_weights.pt``) and runs after
it. A typo in a key is one error line naming it, as in every recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING, DictConfig

from mav_train.config.load import ConfigError, load_structured, read_recipe, recipe_path


@dataclass
class CascadeStage:
    recipe: str = MISSING  # a component recipe (demo/decoder) or a path to one
    parent: str | None = None  # init.checkpoint = run_root/PARENT/last.ckpt
    clip: str | None = None  # clip.pretrained = the open_clip weights the CLIP stage CLIP exported
    overrides: list[str] = field(default_factory=list)  # key=value for this stage's run


@dataclass
class CascadeGenerate:
    """What ``pipeline`` runs once every stage is trained: ``generate`` then ``evaluate toy``."""

    enabled: bool = True
    pipeline: str | None = None  # the sampling settings (recipes/pipelines/NAME.yaml); checkpoints come from stages
    stages: list[str] = field(default_factory=list)  # the trained stages whose last.ckpt generate uses
    prompts: list[str] = field(default_factory=list)
    heldout_prompts: int = 0  # plus this many toy-world prompts of the prior stage's data.holdout_pairs
    num: int = 1  # samples per prompt
    seed: int = 0
    arguments: list[str] = field(default_factory=list)  # more generate key=value arguments
    evaluate: bool = True  # `evaluate toy` on the generated videos


@dataclass
class CascadeRecipe:
    description: str = ""
    run_root: str = MISSING
    stages: dict[str, CascadeStage] = field(default_factory=dict)
    generate: CascadeGenerate = field(default_factory=CascadeGenerate)


def load_cascade(name: str, overrides: dict | None = None) -> DictConfig:
    """The cascade recipe ``name`` validated (schema, stage references, no cycle), with ``overrides`` (a nested
    mapping, e.g. ``{"run_root": "x"}``) on top."""
    path = recipe_path(name)
    cfg = load_structured(CascadeRecipe, [read_recipe(name), overrides or {}], f"cascade recipe {path}")
    if not cfg.stages:
        raise ConfigError(f"cascade recipe {path}: no stages")
    for stage_name, stage in cfg.stages.items():
        for key in ("parent", "clip"):
            ref = stage[key]
            if ref is not None and ref not in cfg.stages:
                raise ConfigError(f"cascade recipe {path}: stages.{stage_name}.{key} names '{ref}', which is not a "
                                  f"stage ({', '.join(cfg.stages)})")
    for stage_name in cfg.generate.stages:
        if stage_name not in cfg.stages:
            raise ConfigError(f"cascade recipe {path}: generate.stages names '{stage_name}', which is not a stage")
    order(cfg)  # refuses a cycle
    return cfg


def needs(stage: DictConfig) -> list[str]:
    """The stages ``stage`` runs after."""
    return [ref for ref in (stage.parent, stage.clip) if ref is not None]


def order(cfg: DictConfig) -> list[str]:
    """Stage names in dependency order (recipe order among the ready ones); a cycle is one error line."""
    done: list[str] = []
    pending = list(cfg.stages)
    while pending:
        ready = [n for n in pending if all(d in done for d in needs(cfg.stages[n]))]
        if not ready:
            raise ConfigError(f"cascade: the stages {', '.join(pending)} depend on each other in a cycle")
        done.append(ready[0])
        pending.remove(ready[0])
    return done
