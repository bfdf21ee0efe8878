"""Checks on a loaded config that the type system cannot express. Validation never mutates the config."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from omegaconf import DictConfig

from datamodules.toy_world import CAPTION_ATTRIBUTES
from mav_train.config.load import ConfigError
from mav_train.config.schema import interval_fractions

CHOICES = {
    "data.kind": ("image_text", "video"),
    "data.short_clip": ("adjust", "skip"),
    "data.cond_frame": ("first", "middle", "random"),
    "data.small_images": ("upscale", "skip"),
    "data.worker_start": ("forkserver", "fork", "spawn"),
    "diffusion.schedule": ("cosine", "linear"),
    "diffusion.parameterization": ("eps", "v", "x0", "edm"),
    "diffusion.sampler": ("ddim", "ddpm", "dpmpp"),
    "logger.kind": ("wandb", "csv", "none"),
    "logger.mode": ("auto", "online", "offline", "disabled"),
    "checkpoint.resume": ("auto", "never"),
    "trainer.precision": ("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true"),
}


# Where diffusion.self_condition is implemented: each component's own extra input channels (↑F: known frames +
# mask), which the UNet reads after the x0 estimate's unet.out_channels.
SELF_CONDITIONED = {"decoder": 0, "temporal_decoder": 0, "interpolation": 4}


def self_condition_problem(cfg) -> str | None:
    """Why ``cfg`` cannot train with ``diffusion.self_condition`` (one line), or None when it can or does not ask."""
    if not cfg.diffusion.self_condition:
        return None
    if cfg.component not in SELF_CONDITIONED:
        return (f"diffusion.self_condition is implemented for {', '.join(SELF_CONDITIONED)}, not "
                f"{cfg.component}: set it false")
    own = SELF_CONDITIONED[cfg.component]
    if cfg.unet.extra_in_channels != cfg.unet.out_channels + own:
        mine = f" + its own {own}" if own else ""
        return (f"diffusion.self_condition feeds the x0 estimate back as unet.out_channels ({cfg.unet.out_channels}) "
                f"extra input channels{mine}: set unet.extra_in_channels={cfg.unet.out_channels + own} "
                f"(got {cfg.unet.extra_in_channels})")
    if cfg.component == "interpolation" and cfg.model.residual:
        return ("diffusion.self_condition is not implemented for a residual ↑F (model.residual): set one of them "
                "false")
    return None


def _get(cfg: DictConfig, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def _check_choice(cfg: DictConfig, key: str, choices: Iterable[str]) -> None:
    value = str(_get(cfg, key))
    choices = tuple(choices)
    if value not in choices:
        close = difflib.get_close_matches(value, choices, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"invalid value for '{key}': '{value}'{hint}; expected one of {', '.join(choices)}")


def validate(cfg: DictConfig, components: Iterable[str]) -> None:
    """Raise ConfigError (one line) on the first problem found."""
    _check_choice(cfg, "component", components)
    for key, choices in CHOICES.items():
        _check_choice(cfg, key, choices)
    if cfg.data.shards is None and not cfg.data.demo and cfg.data.embeddings is None:
        demo = f"demo/{cfg.component}"
        raise ConfigError(
            f"data.shards is not set: pass data.shards='/path/to/shards/{{00000..00099}}.tar' "
            f"(img2dataset/video2dataset output), or train on the built-in toy data with recipe={demo}"
        )
    positive = ["data.batch_size", "data.resolution", "data.num_frames", "data.epoch_samples",
                "unet.base_channels", "unet.num_res_blocks", "diffusion.timesteps", "trainer.max_steps",
                "checkpoint.every_n_steps",  # also the validation interval unless trainer.val_check_interval
                "diffusion.sigma_data"]
    for key in positive:
        if _get(cfg, key) <= 0:
            raise ConfigError(f"invalid value for '{key}': {_get(cfg, key)} must be positive")
    d = cfg.diffusion
    if d.min_snr_floor < 0 or (d.min_snr_floor > 0 and not 0 < d.min_snr_floor <= d.min_snr_gamma):
        raise ConfigError(f"invalid value for 'diffusion.min_snr_floor': {d.min_snr_floor} needs "
                          f"diffusion.min_snr_gamma > 0 and at least the floor (got {d.min_snr_gamma}); 0 disables it")
    if not 0.0 <= d.frame_noise_share < 1.0:
        raise ConfigError(f"invalid value for 'diffusion.frame_noise_share': {d.frame_noise_share} (it lies in [0, 1))")
    if not 0.0 <= d.noisy_fraction <= 1.0 or not 0.0 <= d.noisy_from < 1.0:
        key = "diffusion.noisy_fraction" if not 0.0 <= d.noisy_fraction <= 1.0 else "diffusion.noisy_from"
        raise ConfigError(f"invalid value for '{key}': {_get(cfg, key)} (noisy_fraction lies in [0, 1], "
                          f"noisy_from in [0, 1))")
    if d.guidance_interval is not None:
        try:
            interval_fractions(d.guidance_interval)
        except ValueError as err:
            raise ConfigError(f"invalid value for 'diffusion.guidance_interval': {list(d.guidance_interval)} ({err}; "
                              "null = guidance_scale everywhere)") from err
    problem = self_condition_problem(cfg)
    if problem:
        raise ConfigError(problem)
    if cfg.data.memory_cache_mb < 0:
        raise ConfigError(f"invalid value for 'data.memory_cache_mb': {cfg.data.memory_cache_mb} must be >= 0 "
                          "(0 = off)")
    if cfg.data.memory_cache_mb > 0 and cfg.data.kind == "video" and not cfg.data.image_shards:
        raise ConfigError("data.memory_cache_mb keeps decoded images; video clips are drawn at random on every read "
                          "and never cached, and this config has no data.image_shards: leave it 0")
    if cfg.data.num_workers < 0:
        raise ConfigError(f"invalid value for 'data.num_workers': {cfg.data.num_workers} must be >= 0")
    if cfg.repa.weight < 0:
        raise ConfigError(f"invalid value for 'repa.weight': {cfg.repa.weight} must be >= 0 (0 = off)")
    if cfg.repa.weight > 0 and cfg.repa.projector_dim < 1:
        raise ConfigError(f"invalid value for 'repa.projector_dim': {cfg.repa.projector_dim} must be >= 1")
    feature = str(cfg.repa.unet_feature)
    if feature != "middle" and not (feature.startswith("down.") and feature[5:].isdigit()):
        raise ConfigError(f"invalid value for 'repa.unet_feature': {feature!r} must be 'middle' or 'down.K' (K: an "
                          f"encoder block's index in UNet.down)")
    if not 0.0 < cfg.model.sample_strength <= 1.0:
        raise ConfigError(f"invalid value for 'model.sample_strength': {cfg.model.sample_strength} must lie in (0, 1]")
    if not 0.0 <= cfg.model.p_drop_image_emb <= 1.0 or not 0.0 <= cfg.model.p_drop_text <= 1.0:
        raise ConfigError("model.p_drop_image_emb and model.p_drop_text must lie in [0, 1]")
    if cfg.data.epoch_samples < cfg.data.batch_size:
        raise ConfigError(
            f"data.epoch_samples ({cfg.data.epoch_samples}) must be at least data.batch_size ({cfg.data.batch_size})"
        )
    sharded = str(cfg.trainer.strategy).startswith("fsdp")
    if sharded and (cfg.ema.enabled or cfg.sampling.every_n_steps > 0):
        # The EMA update and rank-zero sampling read whole parameters; under FSDP each rank holds a shard.
        # (DeepSpeed ZeRO-3 is supported: the EMA is updated shard by shard and every rank takes part in sampling.)
        raise ConfigError(
            f"trainer.strategy={cfg.trainer.strategy} shards the weights, and EMA and sample logging do not "
            "support FSDP yet: set ema.enabled=false sampling.every_n_steps=0, or use ddp / deepspeed_stage_2 / "
            "deepspeed_stage_3"
        )
    if cfg.component == "interpolation":  # ↑F's mask mix must fit its window (frame_masks imports no component)
        from mav_train.components.frame_masks import validate_masks

        try:
            validate_masks(cfg.model.masks, cfg.data.num_frames)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if cfg.model.residual_scale <= 0:
            raise ConfigError(f"invalid value for 'model.residual_scale': {cfg.model.residual_scale} must be "
                              "positive")
        if cfg.model.residual and cfg.diffusion.guidance_scale != 1.0:
            raise ConfigError(f"invalid value for 'diffusion.guidance_scale': {cfg.diffusion.guidance_scale}; a "
                              "residual ↑F (model.residual) samples without guidance: set it to 1.0")
        if cfg.model.residual and cfg.model.masks.unconditional > 0:
            raise ConfigError(f"invalid value for 'model.masks.unconditional': {cfg.model.masks.unconditional}; a "
                              "residual ↑F samples without guidance, so nothing-known windows only add frames "
                              "to its residual target: set it to 0")
    elif cfg.model.residual_scale != 1.0:
        raise ConfigError(f"invalid value for 'model.residual_scale': {cfg.model.residual_scale}; only a residual "
                          f"↑F (component interpolation) scales its residual, not {cfg.component}")
    attributes = list(cfg.model.hard_negative_attributes)
    unknown = sorted(set(attributes) - set(CAPTION_ATTRIBUTES))
    if unknown or not attributes or len(set(attributes)) != len(attributes):
        raise ConfigError(f"invalid value for 'model.hard_negative_attributes': {attributes}; a non-empty list "
                          f"without repeats of {list(CAPTION_ATTRIBUTES)}")
    cur = cfg.data.curriculum
    if not 0 < cur.fps_min < cur.fps_max:
        raise ConfigError(f"data.curriculum: need 0 < fps_min ({cur.fps_min}) < fps_max ({cur.fps_max})")
    if min(cur.alpha_start, cur.beta_start, cur.alpha_end, cur.beta_end) <= 0:
        raise ConfigError("data.curriculum: alpha_* and beta_* must be positive")
