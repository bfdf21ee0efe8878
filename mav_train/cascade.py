"""A cascade recipe turned into runs: each stage's ``fit`` arguments (its run directory under ``run_root``, the
parent's checkpoint as ``init.checkpoint``, the CLIP stage's weights as ``clip.pretrained``), whether a stage has
finished, and the command-line overrides of a cascade (``key=value`` for every stage, ``stages.NAME.key=value``
for one, ``run_root=DIR`` and ``generate.KEY=VALUE`` for the cascade itself)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from mav_train.checkpoints import newest_readable, resume_candidates
from mav_train.config.cascade import load_cascade, order
from mav_train.config.load import ConfigError, load_config

EXPORTED_CLIP = "open_clip_weights.pt"  # what a `clip` run writes at its end (components/clip.py EXPORT_NAME)


@dataclass
class CascadeRun:
    """A loaded cascade and the command line's overrides."""

    name: str
    cfg: DictConfig
    common: list[str]  # key=value for every stage
    per_stage: dict[str, list[str]]  # stage -> key=value

    @property
    def root(self) -> Path:
        return Path(self.cfg.run_root)

    def order(self) -> list[str]:
        return order(self.cfg)

    def run_dir(self, stage: str) -> Path:
        return self.root / stage

    def fit_args(self, stage: str) -> list[str]:
        """``fit`` arguments of ``stage`` (recipe, its overrides, the wiring, then the command line's)."""
        s = self.cfg.stages[stage]
        wiring = [f"run_dir={self.run_dir(stage)}"]
        if s.parent is not None:
            wiring.append(f"init.checkpoint={self.run_dir(s.parent) / 'last.ckpt'}")
        if s.clip is not None:
            wiring.append(f"clip.pretrained={self.run_dir(s.clip) / EXPORTED_CLIP}")
        return [f"recipe={s.recipe}", *s.overrides, *wiring, *self.common, *self.per_stage.get(stage, [])]

    def stage_config(self, stage: str) -> DictConfig:
        """The stage's resolved run config (every key checked now, before any stage trains)."""
        args = self.fit_args(stage)
        try:
            return load_config(args[0].split("=", 1)[1], args[1:])
        except ConfigError as err:
            raise ConfigError(f"stage {stage}: {err}") from err

    def finished(self, stage: str) -> bool:
        """Trained to ``trainer.max_steps`` (a clip stage: and its weights exported)."""
        cfg = self.stage_config(stage)
        run_dir = self.run_dir(stage)
        if cfg.component == "clip" and not (run_dir / EXPORTED_CLIP).is_file():
            return False
        newest, _ = newest_readable(resume_candidates(run_dir)) if run_dir.is_dir() else (None, [])
        if newest is None:
            return False
        from mav_train.checkpoints import checkpoint_step

        step = checkpoint_step(newest)
        return step is not None and step >= cfg.trainer.max_steps


def split_overrides(args: list[str]) -> tuple[dict, list[str], dict[str, list[str]]]:
    """Command-line ``key=value`` → (cascade-level overrides: ``run_root``, ``generate.*``; every stage's; per
    stage's)."""
    top, common, per_stage = {}, [], {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ConfigError(f"override '{arg}' is not of the form key=value")
        if key == "run_root":
            top["run_root"] = value
        elif key.startswith("generate."):
            from omegaconf import OmegaConf

            top = OmegaConf.to_container(OmegaConf.merge(top, OmegaConf.from_dotlist([arg])))
        elif key.startswith("stages."):
            _, stage, rest = key.split(".", 2) if key.count(".") >= 2 else (None, key, "")
            if not rest:
                raise ConfigError(f"'{arg}': per-stage overrides are stages.NAME.KEY=VALUE")
            per_stage.setdefault(stage, []).append(f"{rest}={value}")
        else:
            common.append(arg)
    return top, common, per_stage


def load_run(name: str, args: list[str]) -> CascadeRun:
    """The cascade ``name`` with the command line's overrides; every stage's config validated."""
    from mav_train.components.registry import COMPONENTS
    from mav_train.config.validate import validate

    top, common, per_stage = split_overrides(args)
    run = CascadeRun(name, load_cascade(name, top), common, per_stage)
    for stage in per_stage:
        if stage not in run.cfg.stages:
            raise ConfigError(f"stages.{stage}: no stage '{stage}' in cascade {name} ({', '.join(run.cfg.stages)})")
    for stage in run.order():
        cfg = run.stage_config(stage)
        try:
            validate(cfg, COMPONENTS)
        except ConfigError as err:
            raise ConfigError(f"stage {stage}: {err}") from err
    return run
