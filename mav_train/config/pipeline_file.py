"""The ``generate`` pipeline file: which checkpoint each stage of the cascade uses and how it samples.

```yaml
description: the demo cascade trained by `pipeline recipe=demo/cascade`
prior:            {checkpoint: runs/demo/cascade/prior/last.ckpt, steps: 16, guidance: 2.0, candidates: 2}
temporal_decoder: {checkpoint: runs/demo/cascade/temporal_decoder/last.ckpt, steps: 25, fps: 8}
interpolation:    {checkpoint: runs/demo/cascade/interpolation/last.ckpt, skip: 4}
temporal_sr_low:  {checkpoint: runs/demo/cascade/temporal_sr_low/last.ckpt, noise_level: 0.05, shared_noise: true}
sr_high:          {checkpoint: runs/demo/cascade/sr_high/last.ckpt, noise_level: 0.05}
```

Relative checkpoint paths are relative to the working directory (where ``pipeline`` wrote its runs). Every
setting left null takes the value the checkpoint's own recipe samples with. The command line overrides the file:
``STAGE=PATH`` (``STAGE=none`` leaves the stage out) and ``STAGE.KEY=VALUE``. A key that does not exist, or one
that does not apply to its stage (``skip`` on the prior), is one error line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import DictConfig

from mav_train.config.load import ConfigError, load_structured, pipeline_path, read_yaml_file

# The chain, in the order a sample goes through it. The image chain (text → image) uses decoder and sr_low
# in place of temporal_decoder / interpolation / temporal_sr_low.
STAGES = ("prior", "decoder", "temporal_decoder", "interpolation", "sr_low", "temporal_sr_low", "sr_high")
VIDEO_STAGES = ("temporal_decoder", "interpolation", "temporal_sr_low")
IMAGE_STAGES = ("decoder", "sr_low")
SR_STAGES = ("sr_low", "temporal_sr_low", "sr_high")

# Settings that only some stages take; the rest (checkpoint, steps, guidance, sampler, eta) apply to all.
ONLY = {"candidates": ("prior",), "fps": ("temporal_decoder",), "skip": ("interpolation",),
        "strength": ("interpolation",),
        "noise_level": SR_STAGES, "shared_noise": ("temporal_sr_low",), "frame_noise_share": VIDEO_STAGES}


@dataclass
class StageSettings:
    checkpoint: str | None = None  # a .ckpt / .safetensors written by fit or consolidate; null: stage left out
    steps: int | None = None  # sampling steps (default: the checkpoint's diffusion.sample_steps)
    guidance: float | None = None  # classifier-free guidance scale (default: diffusion.guidance_scale)
    sampler: str | None = None  # diffusion.sampler to sample with (ddim, ddpm, dpmpp)
    eta: float | None = None  # DDIM eta
    candidates: int | None = None  # prior: samples per prompt, the one closest to the text kept
    fps: float | None = None  # temporal_decoder: frames per second of the generated clip (default 8)
    skip: int | None = None  # interpolation: frame skip, t -> (t - 1) * skip + 1 frames (default model.frame_skip)
    # interpolation: start sampling from the cross-fade of the known frames noised to this fraction of the
    # timesteps, in (0, 1]; 1 = from pure noise (default model.sample_strength)
    strength: float | None = None
    noise_level: float | None = None  # super-resolution: augmentation level of the low-res input, in [0, 1]
    # temporal_sr_low: one noise draw for every frame of a clip (as SR_h on video always does); default false
    shared_noise: bool | None = None
    # video stages (temporal_decoder, interpolation, temporal_sr_low): the share of every frame's noise variance
    # drawn once per clip while sampling, in [0, 1) (default: the checkpoint's diffusion.frame_noise_share)
    frame_noise_share: float | None = None


@dataclass
class PipelineFile:
    description: str = ""
    prior: StageSettings = field(default_factory=StageSettings)
    decoder: StageSettings = field(default_factory=StageSettings)
    temporal_decoder: StageSettings = field(default_factory=StageSettings)
    interpolation: StageSettings = field(default_factory=StageSettings)
    sr_low: StageSettings = field(default_factory=StageSettings)
    temporal_sr_low: StageSettings = field(default_factory=StageSettings)
    sr_high: StageSettings = field(default_factory=StageSettings)


def stage_overrides(items: dict[str, str]) -> dict:
    """Command-line ``STAGE=PATH`` / ``STAGE=none`` / ``STAGE.KEY=VALUE`` → a nested mapping to merge."""
    out: dict[str, dict] = {}
    for key, value in items.items():
        stage, _, setting = key.partition(".")
        if stage not in STAGES:
            raise ConfigError(f"generate: unknown stage '{stage}' in '{key}'; stages: {', '.join(STAGES)}")
        if not setting:
            setting, value = "checkpoint", (None if value.strip().lower() in ("", "none", "null") else value)
        out.setdefault(stage, {})[setting] = value
    return out


def load_pipeline(name: str | None, overrides: dict[str, str]) -> DictConfig:
    """The pipeline file ``name`` (``recipes/pipelines/NAME.yaml`` or a path; None: none) with ``overrides``
    (``STAGE...=VALUE`` strings) on top, validated."""
    layers: list[dict] = []
    if name:
        path = pipeline_path(name)
        layers.append(read_yaml_file(path, "pipeline file"))
        what = f"pipeline file {path}"
    else:
        what = "generate"
    layers.append(stage_overrides(overrides))
    cfg = load_structured(PipelineFile, layers, what)
    for stage in STAGES:
        for key, stages in ONLY.items():
            if cfg[stage][key] is not None and stage not in stages:
                raise ConfigError(f"{what}: '{stage}.{key}' does not apply to the {stage} stage (only to "
                                  f"{', '.join(stages)})")
    strength = cfg.interpolation.strength
    if strength is not None and not 0.0 < strength <= 1.0:
        raise ConfigError(f"{what}: 'interpolation.strength' must lie in (0, 1], got {strength}")
    for stage in VIDEO_STAGES:
        share = cfg[stage].frame_noise_share
        if share is not None and not 0.0 <= share < 1.0:
            raise ConfigError(f"{what}: '{stage}.frame_noise_share' must lie in [0, 1), got {share}")
    return cfg


def given_stages(cfg: DictConfig) -> list[str]:
    """The stages that name a checkpoint, in chain order."""
    return [stage for stage in STAGES if cfg[stage].checkpoint]
