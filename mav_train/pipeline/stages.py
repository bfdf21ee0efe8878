"""The stages of a ``generate`` run, read and checked before anything samples: each checkpoint readable and of the
component its slot names, and one CLIP for every stage that consumes CLIP embeddings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from mav_train.checkpoints import CheckpointError
from mav_train.components.clip_source import CLIP_FINGERPRINT_KEY
from mav_train.config.load import ConfigError
from mav_train.config.pipeline_file import VIDEO_STAGES


@dataclass
class Stage:
    """One stage of the chain: its slot name, checkpoint path, settings (``StageSettings``), the checkpoint as
    read, its run config, and (once built) the component."""

    name: str
    path: str
    settings: DictConfig
    checkpoint: dict
    module: object | None = None

    @property
    def config(self) -> dict:
        return self.checkpoint["hyper_parameters"]["config"]

    def get(self, dotted: str):
        """A value of the stage's run config, e.g. ``data.resolution``."""
        value = self.config
        for part in dotted.split("."):
            value = value[part]
        return value

    @property
    def fingerprint(self) -> str | None:
        return self.checkpoint.get(CLIP_FINGERPRINT_KEY)

    def uses_clip(self) -> bool:
        """Whether this stage's network takes CLIP embeddings (the prior, the decoders, ↑F; SR only with
        ``unet.cond_dim > 0``). Stages that take none need not share the CLIP."""
        if self.name == "prior":
            return True
        return int(self.config.get("unet", {}).get("cond_dim", 0)) > 0


def read_stage(name: str, path: str, settings: DictConfig) -> Stage:
    """Read the checkpoint of stage ``name``: a missing, unreadable or unsafe file, or one of another component,
    is one :class:`ConfigError` line naming the stage and the path."""
    from mav_train.components.registry import load_checkpoint_file

    try:
        ckpt = load_checkpoint_file(path)
    except FileNotFoundError:
        raise ConfigError(f"{name}={path}: checkpoint not found") from None
    except (CheckpointError, ValueError, OSError) as err:
        raise ConfigError(f"{name}={path}: unreadable checkpoint: {err}") from err
    config = ckpt.get("hyper_parameters", {}).get("config") if isinstance(ckpt, dict) else None
    if not isinstance(config, dict) or "state_dict" not in ckpt:
        raise ConfigError(f"{name}={path}: not a mav_train checkpoint (no state_dict and config)")
    got = config.get("component")
    if got != name:
        raise ConfigError(f"{name}={path} is a {got} checkpoint, not a {name}")
    return Stage(name, str(path), settings, ckpt)


def check_one_clip(stages: list[Stage]) -> str | None:
    """Every stage that consumes CLIP embeddings must have been trained with the same CLIP; returns its
    fingerprint (None when no stage records one)."""
    first: Stage | None = None
    for stage in stages:
        if not stage.uses_clip() or stage.fingerprint is None:
            continue
        if first is None:
            first = stage
        elif stage.fingerprint != first.fingerprint:
            raise ConfigError(f"{stage.name}={stage.path} was trained with CLIP {stage.fingerprint}, but "
                              f"{first.name}={first.path} with CLIP {first.fingerprint}: the embeddings would not "
                              "match (train every stage with the same clip.model / clip.pretrained / clip.seed)")
    return first.fingerprint if first is not None else None


def build(stage: Stage) -> object:
    """The stage's component, sampling with its ``sampler`` / ``eta`` / ``frame_noise_share`` settings where
    given."""
    from mav_train.components.registry import component_from_checkpoint

    given = (("sampler", stage.settings.sampler), ("ddim_eta", stage.settings.eta),
             ("frame_noise_share", stage.settings.frame_noise_share))
    diffusion = {k: v for k, v in given if v is not None}
    if diffusion.get("sampler") == "dpmpp" and "ddim_eta" not in diffusion:
        diffusion["ddim_eta"] = 0.0  # DPM-Solver++ is deterministic: a recipe's DDIM eta does not carry over
    try:
        stage.module = component_from_checkpoint(stage.checkpoint, stage.path,
                                                 {"diffusion": diffusion} if diffusion else None)
    except ValueError as err:  # an unknown sampler, a CLIP that is not the checkpoint's own, ...
        raise ConfigError(f"{stage.name}={stage.path}: {err}") from err
    return stage.module


def effective_settings(stage: Stage) -> dict:
    """The sampling settings the stage ran with: the given ones, the rest from its checkpoint's recipe."""
    from mav_train.pipeline.plan import DEFAULT_FPS, skip_of

    s = stage.settings

    def pick(given, default):
        return default if given is None else given

    out = {"steps": pick(s.steps, stage.get("diffusion.sample_steps")),
           "guidance": pick(s.guidance, stage.get("diffusion.guidance_scale")),
           "sampler": pick(s.sampler, stage.get("diffusion.sampler")),
           "eta": pick(s.eta, 0.0 if s.sampler == "dpmpp" else stage.get("diffusion.ddim_eta"))}
    if stage.name == "prior":
        out["candidates"] = pick(s.candidates, stage.get("prior.num_candidates"))
    elif stage.name == "temporal_decoder":
        out["fps"] = pick(s.fps, DEFAULT_FPS)
    elif stage.name == "interpolation":
        out["skip"] = skip_of(stage)
        out["strength"] = pick(s.strength, stage.get("model.sample_strength"))
    elif stage.name in ("sr_low", "temporal_sr_low", "sr_high"):
        out["noise_level"] = pick(s.noise_level, stage.get("model.low_res_noise_level"))
        if stage.name == "temporal_sr_low":
            out["shared_noise"] = bool(s.shared_noise)
    if stage.name in VIDEO_STAGES:
        out["frame_noise_share"] = pick(s.frame_noise_share, stage.get("diffusion.frame_noise_share"))
    return out


def describe(stage: Stage) -> dict:
    """What generate.json records of a stage."""
    return {"checkpoint": str(Path(stage.path)), "component": stage.config.get("component"),
            "recipe": stage.config.get("recipe"), "global_step": stage.checkpoint.get("global_step"),
            "clip_fingerprint": stage.fingerprint, "uses_clip": stage.uses_clip(),
            "effective_settings": effective_settings(stage)}
