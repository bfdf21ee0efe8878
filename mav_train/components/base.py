"""The shared diffusion LightningModule every Make-A-Video component stands on.

A component only says how a batch becomes ``(x0, conditions)`` (:meth:`prepare_batch`) and which network it
builds; the diffusion training step, validation loss, condition dropout for classifier-free guidance, EMA,
optimiser/schedule and sampling live here once.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import lightning as L
import torch
from einops import repeat
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from typing_extensions import override

from datamodules.skips import SkipTally
from mav_train.components.clip_source import CLIP_FINGERPRINT_KEY, build_frozen_clip
from mav_train.components.param_groups import lr_scale_groups
from mav_train.components.repa import RepaHead, build_repa
from mav_train.config.load import config_from_container
from mav_train.config.validate import self_condition_problem
from mav_train.diffusion import GaussianDiffusion
from mav_train.diffusion.guidance import DropModelFn
from mav_train.diffusion.samplers import NoiseFn
from mav_train.distributed import uses_fused_adamw
from mav_train.nn.encoders import FrozenCLIP
from mav_train.nn.unet import UNet

# Counters that datamodules report beside the skips, for samples that were kept.
KEPT_REASONS = ("fps_adjusted", "upscaled")


@dataclass
class Conditions:
    """Everything the network is conditioned on besides ``x_t`` and ``t`` (all optional)."""

    image_emb: Tensor | None = None  # (b, cond_dim) CLIP image embedding
    text_states: Tensor | None = None  # (b, n, text_dim) per-token CLIP text states
    text_mask: Tensor | None = None  # (b, n) bool
    fps: Tensor | None = None  # (b,) frames per second of the clip
    extra: Tensor | None = None  # (b, e, [t,] h, w) extra input channels (↑F)
    always_drop_text: bool = False  # video batches carry no text
    kwargs: dict = field(default_factory=dict)

    def network_kwargs(self) -> dict:
        return {
            "image_emb": self.image_emb,
            "text_states": self.text_states,
            "text_mask": self.text_mask,
            "fps": self.fps,
            "extra": self.extra,
            **self.kwargs,
        }

    def batch_size(self) -> int:
        for value in (self.image_emb, self.fps, self.text_states, self.extra):
            if value is not None:
                return value.shape[0]
        raise ValueError("Conditions hold no tensor to read the batch size from")


class TrainableComponent(L.LightningModule):
    """What every component shares, diffusion or not: the resolved config, the frozen CLIP, data-skip logging,
    the gradient norm, AdamW with warm-up and cosine decay. ``cfg`` is the fully resolved run config; ``clip``
    the frozen CLIP (optional, built from ``cfg.clip`` on first use).

    The frozen CLIP is a runtime object: it is kept outside the module tree, so it is neither in checkpoints
    nor wrapped by DDP/DeepSpeed, and is moved to the module's device when first used. Its fingerprint is
    written into every checkpoint, so that a later stage can refuse a checkpoint trained with another CLIP.
    """

    def __init__(self, cfg: DictConfig | dict, clip: FrozenCLIP | None = None):
        super().__init__()
        if not isinstance(cfg, DictConfig):
            cfg = config_from_container(cfg)
        self.cfg = cfg
        self.save_hyperparameters({"config": OmegaConf.to_container(cfg, resolve=True)})
        self.__dict__["_clip"] = clip
        self.skip_tally = SkipTally()
        self._lr_scale_frozen: set[str] = set()  # names of parameters an optim.lr_scales entry of 0 froze

    # ----- frozen CLIP --------------------------------------------------------------------------------------
    @property
    def clip(self) -> FrozenCLIP:
        clip = self.__dict__["_clip"]
        if clip is None:
            clip = build_frozen_clip(self.cfg)
            self.__dict__["_clip"] = clip
        if next(clip.parameters()).device != self.device:
            clip.to(self.device)
        return clip

    def clip_fingerprint(self) -> str:
        """Fingerprint of the CLIP this component is trained with (see :func:`clip_fingerprint`)."""
        return self.clip.fingerprint

    @override
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[CLIP_FINGERPRINT_KEY] = self.clip_fingerprint()

    # ----- what every training step shares -------------------------------------------------------------------
    def _log_skips(self, batch: dict) -> None:
        """Per-rank totals of skipped samples by reason (``fps_adjusted`` counts kept clips, not skips)."""
        if "skips" not in batch:
            return
        totals = self.skip_tally.update(batch)
        b = len(batch.get("key", [])) or 1
        for reason, count in totals.items():
            prefix = "data/" if reason in KEPT_REASONS else "data/skipped_"
            self.log(f"{prefix}{reason}", float(count), on_step=True, batch_size=b)
        skipped = sum(c for r, c in totals.items() if r not in KEPT_REASONS)
        self.log("data/skipped_total", float(skipped), on_step=True, batch_size=b)

    def trained_module(self) -> torch.nn.Module:
        """The module whose parameters the optimiser trains."""
        return self.network

    @override
    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad for p in self.trained_module().parameters() if p.grad is not None]
        if grads:
            # One fused norm over all gradients (Lightning's grad_norm computes and logs one per parameter).
            total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)
            self.log("train/grad_norm", total, on_step=True)

    def lr_scaled_groups(self) -> list[dict]:
        """AdamW parameter groups of ``optim.lr_scales``. A scale of 0 freezes: those parameters get
        ``requires_grad=False`` and no group (no gradient, no AdamW state); they still count as matching their
        pattern when this runs again."""
        o = self.cfg.optim
        frozen = self._lr_scale_frozen
        named = [(n, p) for n, p in self.trained_module().named_parameters() if p.requires_grad or n in frozen]
        if not named:
            raise ValueError("no trainable parameters: check model.freeze_spatial and the network config")
        groups = lr_scale_groups(named, dict(o.lr_scales or {}), o.lr)
        zero = {id(p) for g in groups if g["lr"] == 0 for p in g["params"]}
        for name, param in named:
            if id(param) in zero:
                param.requires_grad_(False)
                frozen.add(name)
        groups = [g for g in groups if g["lr"] != 0]
        if not groups:
            raise ValueError("no trainable parameters: every optim.lr_scales group has scale 0")
        return groups

    def extra_param_groups(self) -> list[dict]:
        """AdamW groups of trained modules outside ``trained_module()`` (the REPA projector), at ``optim.lr``."""
        return []

    @override
    def setup(self, stage: str) -> None:
        # Freeze before the strategy wraps the model: DDP records at wrapping which parameters will get gradients.
        if stage == "fit":
            self.lr_scaled_groups()

    @override
    def configure_optimizers(self):
        o = self.cfg.optim
        groups = self.lr_scaled_groups() + self.extra_param_groups()
        # The fused kernel where torch has one (CPU, CUDA): measured on the demo decoder's 3M parameters on 2 CPU
        # cores, 4.4 ms per step against 15.9 ms for torch's CPU default (a Python loop over the parameters).
        fused = uses_fused_adamw(self.cfg.trainer.precision) and all(
            p.device.type in ("cpu", "cuda") and p.is_floating_point() for g in groups for p in g["params"])
        optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay,
                                      fused=fused)
        total = o.decay_steps or self.cfg.trainer.max_steps
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=warmup_cosine(o.warmup_steps, total,
                                                                                         o.min_lr_ratio))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class DiffusionComponent(TrainableComponent):
    """Base of the diffusion components (D, D^t, ...): ``prepare_batch`` and ``build_network`` are theirs; the
    diffusion training step, validation loss, condition dropout, EMA and sampling are here."""

    def __init__(self, cfg: DictConfig | dict, clip: FrozenCLIP | None = None):
        super().__init__(cfg, clip)
        cfg = self.cfg
        self.diffusion = GaussianDiffusion(cfg.diffusion)
        problem = self_condition_problem(cfg)  # also checked at load; here for configs built in code
        if problem:
            raise ValueError(problem)
        self.network = self.build_network()
        self.ema_network: UNet | None = None
        if cfg.ema.enabled:
            self.ema_network = copy.deepcopy(self.network).requires_grad_(False)
        # REPA (repa.weight > 0): a projector trained beside the network, and the frozen CLIP's feature reader
        # (a runtime object, like the CLIP itself).
        self.repa_head: RepaHead | None = None
        self.__dict__["_repa_features"] = None
        if cfg.repa.weight > 0:
            self.repa_head, self.__dict__["_repa_features"] = build_repa(cfg, self.network, self.clip)
        self.configure_trainable()

    # ----- what a component decides -------------------------------------------------------------------------
    def build_network(self) -> UNet:
        return UNet(self.cfg.unet)

    def configure_trainable(self) -> None:
        """Hook for components that freeze part of the network (D^t trains only its temporal layers)."""

    def prepare_batch(self, batch: dict) -> tuple[Tensor, Conditions]:
        """A batch from the datamodule → (x0 in [-1, 1], conditions)."""
        raise NotImplementedError

    def after_initialisation(self) -> str:
        """Hook run after ``init.checkpoint`` loaded another component's weights (before the EMA restarts);
        returns what it changed, for the log ('' when nothing)."""
        return ""

    def reset_ema(self) -> None:
        """Restart the EMA from the current weights (after initialising from another component)."""
        if self.ema_network is not None:
            self.ema_network.load_state_dict(self.network.state_dict())

    # ----- training -----------------------------------------------------------------------------------------
    def condition_dropout(self, cond: Conditions, b: int) -> dict[str, Tensor]:
        """Per-sample drop masks for classifier-free guidance (DALL-E 2: image 10%, text 50%)."""
        p_img, p_txt = self.cfg.model.p_drop_image_emb, self.cfg.model.p_drop_text
        drop_image = torch.rand(b, device=self.device) < p_img
        if cond.always_drop_text:
            drop_text = torch.ones(b, dtype=torch.bool, device=self.device)
        else:
            drop_text = torch.rand(b, device=self.device) < p_txt
        return {"drop_image": drop_image, "drop_text": drop_text}

    def diffusion_loss(self, x0: Tensor, cond: Conditions, generator: torch.Generator | None = None,
                       dropout: bool = True, capture: dict | None = None) -> Tensor:
        """The diffusion loss of one batch; ``capture`` (a dict) receives the network's features (``UNet.forward``)."""
        b = x0.shape[0]
        t = self.diffusion.sample_timesteps(b, x0.device, generator=generator)
        noise = self.diffusion.noise(tuple(x0.shape), device=x0.device, dtype=x0.dtype, generator=generator)
        x_t = self.diffusion.q_sample(x0, t, noise)
        drops = self.condition_dropout(cond, b) if dropout else self._no_drop(cond, b)
        kwargs = cond.network_kwargs()
        if self.cfg.diffusion.self_condition:
            estimate = self.self_condition_estimate(x_t, t, kwargs, drops, generator)
            kwargs["extra"] = with_estimate(estimate, cond.extra)
        out = self.network(self.network_input(x_t, cond.extra), t, **kwargs, **drops, capture=capture)
        return self.diffusion.loss(out, x0, noise, t)

    def self_condition_estimate(self, x_t: Tensor, t: Tensor, kwargs: dict, drops: dict,
                                generator: torch.Generator | None) -> Tensor:
        """The x0 estimate a self-conditioned training step feeds the network: zeros, or with probability 1/2 (one
        draw per batch) the network's own clamped x0 prediction from zeros, made without gradient.
        ``kwargs["extra"]`` holds the component's own extra channels (↑F's known frames), or None."""
        estimate = torch.zeros_like(x_t)
        coin = torch.rand((), generator=generator, device=generator.device if generator is not None else "cpu")
        if coin < 0.5:
            with torch.no_grad():
                first = self.network(self.network_input(x_t, kwargs["extra"]), t,
                                     **{**kwargs, "extra": with_estimate(estimate, kwargs["extra"])}, **drops)
                estimate = self.diffusion.predict_x0(x_t, t, first).clamp(-1.0, 1.0)
        return estimate

    def guided_sampling_fn(self, make_fn: Callable[[dict | None], DropModelFn], guidance_scale: float | None,
                           like: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
        """The sampler's guided ``model_fn(x_t, t)`` from ``make_fn(estimate)``, a ``fn(x_t, t, drop)`` for
        batched guidance. With self-conditioning each step reads the x0 estimate of the step before, as the guided
        output gives it (``estimate["x0"]``, zeros like ``like`` at the first step); ``make_fn`` gets None
        otherwise. ``guidance_scale`` None: the recipe's guidance (scale and interval)."""
        if not self.cfg.diffusion.self_condition:
            return self.diffusion.guided_batched(make_fn(None), guidance_scale)
        last = {"x0": torch.zeros_like(like)}
        guided = self.diffusion.guided_batched(make_fn(last), guidance_scale)

        def model_fn(x_t: Tensor, t: Tensor) -> Tensor:
            out = guided(x_t, t)
            last["x0"] = self.diffusion.predict_x0(x_t, t, out).clamp(-1.0, 1.0)
            return out

        return model_fn

    def network_input(self, x_t: Tensor, extra: Tensor | None) -> Tensor:
        """What the network reads for the noisy ``x_t`` (hook: a residual ↑F reads it on top of the cross-fade)."""
        return x_t

    def _no_drop(self, cond: Conditions, b: int) -> dict[str, Tensor]:
        keep = torch.zeros(b, dtype=torch.bool, device=self.device)
        return {"drop_image": keep, "drop_text": torch.full_like(keep, cond.always_drop_text)}

    @override
    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        x0, cond = self.prepare_batch(batch)
        capture = {} if self.repa_head is not None else None
        loss = self.diffusion_loss(x0, cond, capture=capture)
        if capture is not None:
            loss = loss + self.cfg.repa.weight * self.repa_loss(capture[self.cfg.repa.unet_feature], x0)
        loss = loss + self.extra_losses(batch)
        self.log("train/loss", loss, prog_bar=True, on_step=True, batch_size=x0.shape[0])
        self._log_skips(batch)
        return loss

    def repa_loss(self, features: Tensor, x0: Tensor) -> Tensor:
        """REPA's alignment loss (logged as ``train/repa``) between the network's ``features`` (the one named by
        ``repa.unet_feature``) and the frozen CLIP's features of the clean ``x0``."""
        self.clip  # noqa: B018 - moves the CLIP (which the feature reader holds) to this module's device
        loss = self.repa_head.loss(features, self.__dict__["_repa_features"](x0))
        self.log("train/repa", loss, on_step=True, batch_size=x0.shape[0])
        return loss

    @override
    def extra_param_groups(self) -> list[dict]:
        if self.repa_head is None:
            return []
        return [{"params": list(self.repa_head.parameters()), "lr": self.cfg.optim.lr, "name": "repa"}]

    def extra_losses(self, batch: dict) -> Tensor | float:
        """Hook for joint objectives (e.g. image batches mixed into video training)."""
        return 0.0

    @override
    def validation_step(self, batch: dict, batch_idx: int) -> Tensor:
        x0, cond = self.prepare_batch(batch)
        # Fixed noise and timesteps per batch index, so validation losses are comparable across steps.
        generator = torch.Generator(device=x0.device).manual_seed(1000 + batch_idx)
        loss = self.diffusion_loss(x0, cond, generator=generator, dropout=False)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=x0.shape[0])
        return loss

    @override
    def optimizer_step(self, *args, **kwargs) -> None:
        # EMA right after the weights change: callbacks' on_train_batch_end (run before the module's; where
        # ModelCheckpoint and the Preemption callback save) then see the EMA of this very step.
        super().optimizer_step(*args, **kwargs)
        step = self.trainer.global_step
        if self.ema_network is not None and step != getattr(self, "_ema_step", -1):
            self._ema_step = step
            if step >= self.cfg.ema.start_step:
                self.update_ema(step)

    @torch.no_grad()
    def update_ema(self, step: int) -> None:
        decay = self.cfg.ema.decay
        if self.cfg.ema.warmup:
            decay = min(decay, (1 + step) / (10 + step))
        # Under DeepSpeed ZeRO-3 ``param.data`` is a placeholder and each rank holds a flat shard in
        # ``param.ds_tensor``; the EMA copy is partitioned the same way, so every rank updates its own shards.
        pairs = [(_local(e), _local(p).detach()) for e, p in zip(self.ema_network.parameters(),
                                                                 self.network.parameters(), strict=True)
                 if p.requires_grad]
        if not getattr(self, "_ema_checked", False):  # once: this runs after every optimizer step
            for e, p in pairs:
                if e.shape != p.shape:
                    raise ValueError(
                        f"EMA shard of shape {tuple(e.shape)} does not match the weight's {tuple(p.shape)}")
            self._ema_checked = True
        if pairs:
            torch._foreach_lerp_([e for e, _ in pairs], [p.to(e.dtype) for e, p in pairs], 1.0 - decay)

    # ----- sampling -----------------------------------------------------------------------------------------
    def sampling_network(self) -> UNet:
        return self.ema_network if self.ema_network is not None else self.network

    def fresh_noise_fn(self, ndim: int, generator: torch.Generator | None,
                       share: float | None = None) -> NoiseFn | None:
        """The fresh noise of stochastic sampling steps for tensors of ``ndim`` dimensions: correlated across
        frames like x_T when ``diffusion.frame_noise_share`` (or ``share``, see ``GaussianDiffusion.noise``) > 0
        and the tensor is a video, else None (the sampler then draws plain ``randn`` from ``generator``)."""
        if (self.cfg.diffusion.frame_noise_share if share is None else share) <= 0 or ndim != 5:
            return None

        def noise_fn(x_t: Tensor) -> Tensor:
            return self.diffusion.noise(tuple(x_t.shape), device=x_t.device, dtype=x_t.dtype, generator=generator,
                                        share=share)
        return noise_fn

    @torch.no_grad()
    def sample(self, cond: Conditions, shape: tuple[int, ...], *, guidance_scale: float | None = None,
               steps: int | None = None, generator: torch.Generator | None = None,
               noise: Tensor | None = None, noise_fn: NoiseFn | None = None, sampler: str | None = None,
               clip_offset: Tensor | None = None) -> Tensor:
        """Sample ``x0`` of ``shape`` (``b c h w`` or ``b c t h w``) with classifier-free guidance, EMA weights.

        ``noise`` is x_T (drawn from ``generator`` when None); ``noise_fn(x_t)`` draws the fresh noise of
        stochastic steps (DDPM, DDIM eta > 0) instead of ``generator``; ``sampler`` (ddim, ddpm, dpmpp) overrides
        ``diffusion.sampler``; ``clip_offset`` moves the [-1, 1] clamp of the predicted x0 (see
        ``GaussianDiffusion.sample``). ``guidance_scale`` None samples with the recipe's guidance
        (``diffusion.guidance_scale``, and ``diffusion.guidance_interval_scale`` inside
        ``diffusion.guidance_interval``); a number is the scale at every step."""
        net = self.sampling_network()
        if noise is None:
            noise = self.diffusion.noise(tuple(shape), device=self.device, generator=generator)
        if noise_fn is None:
            noise_fn = self.fresh_noise_fn(len(shape), generator)
        model_fn = self.guided_sampling_fn(lambda estimate: self.network_fn(net, cond, shape[0], estimate=estimate),
                                           guidance_scale, noise)
        return self.diffusion.sample(model_fn, noise, steps=steps, generator=generator, noise_fn=noise_fn,
                                     sampler=sampler, clip_offset=clip_offset)

    def network_fn(self, net: torch.nn.Module, cond: Conditions, b: int, estimate: dict | None = None) -> DropModelFn:
        """``fn(x_t, t, drop)`` for batched classifier-free guidance (``batched_guided_model_fn``): ``net`` on the
        ``b`` rows of ``cond``, tiled to the rows of ``x_t``; ``drop`` rows drop the image embedding and the text.
        With ``estimate`` (self-conditioning), ``estimate["x0"]`` (``b ...``) is the extra input of every pass."""
        kwargs = cond.network_kwargs()
        drop_text = torch.full((b,), cond.always_drop_text or kwargs["text_states"] is None, device=self.device)

        def fn(x_t: Tensor, t: Tensor, drop: Tensor) -> Tensor:
            # Rows [0, b) conditional, [b, 2b) unconditional (image embedding and text both dropped).
            reps = x_t.shape[0] // b
            tiled = {k: (repeat(v, "b ... -> (r b) ...", r=reps) if isinstance(v, Tensor) else v)
                     for k, v in kwargs.items()}
            if estimate is not None:
                tiled["extra"] = with_estimate(repeat(estimate["x0"], "b ... -> (r b) ...", r=reps), tiled["extra"])
            return net(x_t, t, **tiled, drop_image=drop, drop_text=drop | drop_text.repeat(reps))

        return fn

    def sample_from_batch(self, batch: dict, num: int, generator: torch.Generator | None = None,
                          steps: int | None = None, guidance_scale: float | None = None) -> Tensor:
        """Sample ``num`` outputs conditioned like the first ``num`` items of a training batch."""
        small = {k: (v[:num] if isinstance(v, (Tensor, list)) else v) for k, v in batch.items()}
        x0, cond = self.prepare_batch(small)
        return self.sample(cond, tuple(x0.shape), generator=generator, steps=steps, guidance_scale=guidance_scale)


def with_estimate(estimate: Tensor, extra: Tensor | None) -> Tensor:
    """A self-conditioned network's extra input: the x0 estimate, then the component's own extra channels."""
    return estimate if extra is None else torch.cat([estimate, extra.to(estimate.dtype)], dim=1)


def _local(param: Tensor) -> Tensor:
    """The part of ``param`` this rank holds: its ZeRO-3 shard (``ds_tensor``), else the whole tensor."""
    shard = getattr(param, "ds_tensor", None)
    return param if shard is None else shard


def warmup_cosine(warmup: int, total: int, min_ratio: float):
    """LR multiplier: linear warm-up over ``warmup`` steps, then cosine decay to ``min_ratio`` at ``total``."""

    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        span = max(1, total - warmup)
        progress = min(1.0, (step - warmup) / span)
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor
