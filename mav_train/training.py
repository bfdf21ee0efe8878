"""Build the run directory, logger, callbacks and Trainer for a resolved config."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from mav_train.callbacks.curriculum import FpsCurriculumSync
from mav_train.callbacks.final_checkpoint import FinalCheckpoint
from mav_train.callbacks.preemption import Preemption
from mav_train.callbacks.sample_logger import SampleLogger
from mav_train.callbacks.throughput import Throughput
from mav_train.checkpoints import CheckpointError, newest_readable, resume_candidates
from mav_train.distributed import build_strategy, deepspeed_precision, plugins, precision_plugin

log = logging.getLogger(__name__)

WANDB_ID_FILE = "wandb_run_id.txt"
PREEMPT_CKPT = "preempted.ckpt"  # written by the Preemption callback on SIGUSR1 / SIGTERM


def wandb_mode(mode: str) -> str:
    """``auto``: online when W&B credentials are configured (WANDB_API_KEY or a netrc entry), else offline."""
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    if netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        return "online"
    return "offline"


def wandb_run_id(run_dir: Path) -> str:
    """The run id kept in the run directory, so a resumed or requeued job continues the same W&B run."""
    path = run_dir / WANDB_ID_FILE
    if path.is_file():
        return path.read_text().strip()
    run_id = secrets.token_hex(4)
    if int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))) == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(run_id)
    return run_id


def build_logger(cfg: DictConfig, run_dir: Path) -> Logger | bool:
    lc = cfg.logger
    if lc.kind == "none":
        return False
    if lc.kind == "csv":
        return CSVLogger(save_dir=str(run_dir), name="csv")
    mode = wandb_mode(lc.mode)
    return WandbLogger(
        project=lc.project, entity=lc.entity, name=lc.name or str(cfg.recipe), group=lc.group,
        tags=list(lc.tags), id=wandb_run_id(run_dir), resume="allow", save_dir=str(run_dir), mode=mode,
        config=OmegaConf.to_container(cfg, resolve=True),
    )


def build_callbacks(cfg: DictConfig, run_dir: Path, has_logger: bool) -> list[L.Callback]:
    ck = cfg.checkpoint
    callbacks: list[L.Callback] = [
        ModelCheckpoint(dirpath=str(run_dir), filename="best-{step:07d}", monitor=ck.monitor, mode="min",
                        save_top_k=ck.save_top_k, save_last=True, every_n_train_steps=ck.every_n_steps,
                        # last.ckpt is replaced (atomically) in place, never beside it as last-v1.ckpt: also
                        # in a run directory copied or moved elsewhere, where Lightning's stored paths differ.
                        enable_version_counter=False),
        Throughput("video" if cfg.data.kind == "video" else "image"),
        Preemption(run_dir / PREEMPT_CKPT),
        FinalCheckpoint(run_dir / "last.ckpt", ck.every_n_steps),
    ]
    if cfg.component not in ("clip", "prior"):  # nothing to draw: CLIP training, or embeddings (prior)
        callbacks.append(SampleLogger(run_dir / "samples", cfg.sampling.every_n_steps, cfg.sampling.num_samples,
                                      steps=cfg.sampling.steps, guidance_scale=cfg.sampling.guidance_scale,
                                      seed=cfg.trainer.seed))
    if cfg.data.kind == "video":
        callbacks.append(FpsCurriculumSync())
    if has_logger:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    return callbacks


def build_trainer(cfg: DictConfig, run_dir: Path, extra_callbacks: list[L.Callback] | None = None,
                  strategy=None) -> L.Trainer:
    """The Trainer for ``cfg``; ``strategy`` (a Lightning strategy object) replaces ``trainer.strategy``."""
    t = cfg.trainer
    logger = build_logger(cfg, run_dir)
    callbacks = build_callbacks(cfg, run_dir, has_logger=bool(logger)) + list(extra_callbacks or [])
    strategy = strategy if strategy is not None else build_strategy(t, batch_size=cfg.data.batch_size)
    precision = precision_plugin(t.precision, strategy, str(t.accelerator))
    return L.Trainer(
        max_steps=t.max_steps, max_epochs=t.max_epochs, devices=t.devices, num_nodes=t.num_nodes,
        accelerator=t.accelerator, strategy=strategy, plugins=plugins(strategy, precision),
        precision=deepspeed_precision(t.precision, strategy) if precision is None else None,
        accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_val=t.gradient_clip_val, log_every_n_steps=t.log_every_n_steps,
        val_check_interval=t.val_check_interval or cfg.checkpoint.every_n_steps, check_val_every_n_epoch=None,
        limit_val_batches=t.limit_val_batches, enable_progress_bar=t.enable_progress_bar,
        deterministic=t.deterministic, use_distributed_sampler=False, default_root_dir=str(run_dir),
        logger=logger, callbacks=callbacks, **dict(t.extra),
    )


def resume_checkpoint(cfg: DictConfig, run_dir: Path) -> str | None:
    """``checkpoint.resume=auto``: continue from the run directory's newest readable checkpoint.

    Candidates: every ``*.ckpt`` of the run (``best-*`` and periodic ones, ``last.ckpt``, ``preempted.ckpt``
    from the Preemption callback, Lightning's ``hpc_ckpt_*.ckpt``); the readable one with the highest global
    step wins (the later one on a tie), so a requeued job never goes back to an older checkpoint. Unreadable
    ones (truncated, unsafe to unpickle, bad CRC) are reported in one warning line. Checkpoints that exist but
    none of which is readable raise :class:`CheckpointError`: starting over would overwrite them.
    """
    if cfg.checkpoint.resume == "never":
        return None
    candidates = resume_candidates(run_dir)
    newest, unreadable = newest_readable(candidates)
    if unreadable and rank_zero_only.rank == 0:
        log.warning("unreadable checkpoints, not resumed from: %s",
                    "; ".join(f"{path} ({reason})" for path, reason in unreadable))
    if newest is None and unreadable:
        raise CheckpointError(
            f"{run_dir} holds {len(unreadable)} checkpoint(s) and none is readable "
            f"({'; '.join(f'{p.name}: {r}' for p, r in unreadable)}); refusing to start over and overwrite them: "
            "move them away, or start afresh with checkpoint.resume=never")
    return str(newest) if newest is not None else None
