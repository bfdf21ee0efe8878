"""The fps curriculum of D^t training: fps = fps_min + (fps_max - fps_min) * Beta(alpha, beta).

(alpha, beta) move linearly from (alpha_start, beta_start) at step 0 to (alpha_end, beta_end) at ``steps``
and stay there. The paper draws fps from a beta distribution over [1, 30], starting at high fps (little
motion) and moving to low fps (more motion); the parameters are ours.
"""

from __future__ import annotations

import numpy as np

from mav_train.config.schema import CurriculumConfig


def validate_curriculum(cfg: CurriculumConfig) -> None:
    if not 0 < cfg.fps_min <= cfg.fps_max:
        raise ValueError(
            f"curriculum needs 0 < fps_min <= fps_max, got fps_min {cfg.fps_min} fps_max {cfg.fps_max}"
        )
    for name in ("alpha_start", "beta_start", "alpha_end", "beta_end"):
        if getattr(cfg, name) <= 0:
            raise ValueError(f"curriculum.{name} must be > 0, got {getattr(cfg, name)}")
    if cfg.steps < 0:
        raise ValueError(f"curriculum.steps must be >= 0, got {cfg.steps}")


class FpsCurriculum:
    """Draws the target fps of a training clip for a given global step."""

    def __init__(self, cfg: CurriculumConfig) -> None:
        validate_curriculum(cfg)
        self.cfg = cfg

    def params_at(self, step: int) -> tuple[float, float]:
        """(alpha, beta) of the beta distribution at ``step``."""
        cfg = self.cfg
        progress = 1.0 if cfg.steps == 0 else min(max(step / cfg.steps, 0.0), 1.0)
        alpha = cfg.alpha_start + (cfg.alpha_end - cfg.alpha_start) * progress
        beta = cfg.beta_start + (cfg.beta_end - cfg.beta_start) * progress
        return alpha, beta

    def mean_at(self, step: int) -> float:
        """Expected fps at ``step``."""
        alpha, beta = self.params_at(step)
        return self.cfg.fps_min + (self.cfg.fps_max - self.cfg.fps_min) * alpha / (alpha + beta)

    def sample(self, rng: np.random.Generator, step: int) -> float:
        """One fps in [fps_min, fps_max] drawn for ``step``."""
        alpha, beta = self.params_at(step)
        return float(self.cfg.fps_min + (self.cfg.fps_max - self.cfg.fps_min) * rng.beta(alpha, beta))
