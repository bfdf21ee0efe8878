"""Where a run lives: ``run_dir``, or ``runs/<recipe>`` when the config leaves it unset (light: no Lightning, so
``submit`` can resolve it without importing the trainer)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def default_run_dir(cfg: DictConfig) -> Path:
    return Path("runs") / str(cfg.recipe)


def with_run_dir(cfg: DictConfig) -> DictConfig:
    """A copy of ``cfg`` with ``run_dir`` filled in (``runs/<recipe>`` when not given)."""
    run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
    out = OmegaConf.merge(cfg, {"run_dir": str(run_dir)})
    OmegaConf.set_readonly(out, True)
    return out
