"""``fit``: train one component from its recipe."""

from __future__ import annotations

import logging
from pathlib import Path

from mav_train.components.registry import COMPONENTS, component_class
from mav_train.config.load import ConfigError, load_config, save_config
from mav_train.config.run_dir import with_run_dir
from mav_train.config.validate import validate

HELP = """\
Train one component (decoder, temporal_decoder, ...) from a recipe.

usage: python -m mav_train fit recipe=NAME [key=value ...]

  python -m mav_train fit recipe=demo/decoder                 tiny decoder on the built-in toy data (CPU)
  python -m mav_train fit recipe=demo/temporal_decoder init.checkpoint=runs/demo/decoder/last.ckpt
  python -m mav_train fit recipe=decoder data.shards='/data/laion/{00000..09999}.tar'
  python -m mav_train fit recipe=temporal_decoder init.checkpoint=runs/decoder/last.ckpt \\
      data.shards='/data/webvid/{00000..09999}.tar' trainer.devices=8 trainer.strategy=ddp

The run directory (run_dir, default runs/<recipe>) receives config.yaml (the fully resolved config),
last.ckpt and best-*.ckpt, samples/ and the W&B run (offline unless W&B credentials are configured).
Rerunning with an existing run_dir resumes from its newest readable checkpoint (unreadable ones are reported;
if there are checkpoints and none is readable, fit stops; checkpoint.resume=never starts afresh). The CLIP's
weights (clip.pretrained) and init.checkpoint are checked before any work starts.
init.checkpoint starts from an earlier component: decoder -> temporal_decoder inflates the image UNet into the
video UNet with every new temporal layer at the identity."""

log = logging.getLogger("mav_train")


def recipe_and_overrides(args: list[str]) -> tuple[str, list[str]]:
    recipes = [a.split("=", 1)[1] for a in args if a.startswith("recipe=")]
    if not recipes:
        from mav_train.config.load import ConfigError

        raise ConfigError("missing required config value 'recipe' (e.g. recipe=demo/decoder; see `recipes`)")
    return recipes[-1], [a for a in args if not a.startswith("recipe=")]


def prepare_run(args: list[str]):
    """Load, validate and freeze the config; create the run directory and save the resolved config there."""
    recipe, overrides = recipe_and_overrides(args)
    cfg = load_config(recipe, overrides)
    if cfg.unet.temporal and cfg.model.freeze_spatial and not cfg.init.checkpoint:
        # Nothing to preserve: frozen random spatial layers would make the run useless.
        log.info("no init.checkpoint: training all layers of %s (model.freeze_spatial applies only when "
                 "inflating a trained image model)", cfg.component)
        cfg = load_config(recipe, [*overrides, "model.freeze_spatial=false"])
    cfg = with_run_dir(cfg)
    validate(cfg, COMPONENTS)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return cfg, run_dir


def setup_logging() -> None:
    """Our own loggers print INFO to stderr; Lightning keeps its own handler (no duplicated lines)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    for name in ("mav_train", "datamodules"):
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


def run(args: list[str], strategy=None, extra_callbacks: list | None = None) -> int:
    """``strategy`` / ``extra_callbacks``: for scripts that call fit with a custom Lightning strategy object
    or additional callbacks (e.g. the CPU DeepSpeed and key-recording script of tests/distributed/)."""
    setup_logging()
    cfg, run_dir = prepare_run(args)
    # Heavy imports only once the config is known to be valid.
    import lightning as L

    from datamodules.factory import build_datamodule
    from mav_train.components.init import initialise_from_checkpoint
    from mav_train.preflight import check_checkpoint, check_clip
    from mav_train.training import build_trainer, resume_checkpoint

    # Weights and checkpoints that are not there fail now, in one line, before loaders or the Trainer exist.
    check_clip(cfg.clip)
    from mav_train.components.clip_source import resolve_clip_config

    resolve_clip_config(cfg)  # clip.pretrained=demo: the toy CLIP is trained now, before anything else starts
    from mav_train.components.demo_embeddings import resolve_demo_embeddings

    cfg = resolve_demo_embeddings(cfg)  # data.embeddings=demo: the demo shards' CLIP embeddings, computed once
    resume = resume_checkpoint(cfg, run_dir)
    if not resume and cfg.init.checkpoint:
        check_checkpoint(cfg.init.checkpoint, "init.checkpoint")
    L.seed_everything(cfg.trainer.seed, workers=True)
    try:
        datamodule = build_datamodule(cfg.data, cache_dir=cfg.cache_dir, component=cfg.component)
    except ValueError as err:  # an embedding folder whose files disagree, ...
        raise ConfigError(str(err)) from err
    module = component_class(cfg.component)(cfg)
    if resume:
        log.info("resuming from %s", resume)
    elif cfg.init.checkpoint:
        try:
            log.info(initialise_from_checkpoint(module, cfg.init.checkpoint))
        except ValueError as err:  # a checkpoint of another CLIP, of no mav_train component, ...
            raise ConfigError(f"init.checkpoint: {err}") from err
    elif cfg.unet.temporal:
        log.info("init.checkpoint is not set: training %s from scratch (no image decoder to inflate)",
                 cfg.component)
    trainer = build_trainer(cfg, run_dir, extra_callbacks=extra_callbacks, strategy=strategy)
    if trainer.is_global_zero:
        save_config(cfg, run_dir / "config.yaml")
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
    if trainer.is_global_zero:
        print(f"done: step {trainer.global_step}; checkpoints, config.yaml and samples/ are in {run_dir}")
    return 0
