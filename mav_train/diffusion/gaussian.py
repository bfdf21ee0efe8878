"""Gaussian diffusion: forward process, training target and loss, and sampling, from a ``DiffusionConfig``."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import Tensor, nn

from mav_train.config.schema import DiffusionConfig, interval_fractions
from mav_train.diffusion import parameterization as param
from mav_train.diffusion.guidance import DropModelFn, ModelFn, batched_guided_model_fn, guided_model_fn
from mav_train.diffusion.samplers import Callback, NoiseFn, check_sampler, sample_loop
from mav_train.diffusion.schedule import make_betas


class GaussianDiffusion(nn.Module):
    """Noise schedule, parameterisation (``eps``, ``v`` or ``x0``), MSE loss and DDPM/DDIM/DPM-Solver++ samplers.

    The schedule lives in non-persistent float32 buffers (computed in float64), so ``.to(device)`` moves it
    and checkpoints do not contain it. Dtype casts of the module (``.half()``, Lightning's ``bf16-true``) do
    not reach the schedule: it is rebuilt in float32 from the float64 master copy after every ``_apply``.
    Sampling uses the float64 master copy directly.

    Timesteps ``t`` are LongTensors ``(b,)`` in ``[0, T)``; ``x`` is any ``b ...`` tensor (images ``b c h w``,
    videos ``b c t h w``).
    """

    def __init__(self, cfg: DiffusionConfig) -> None:
        super().__init__()
        param.check_parameterization(cfg.parameterization)
        check_sampler(cfg.sampler)
        if cfg.min_snr_floor < 0.0 or (cfg.min_snr_floor > 0.0 and not 0.0 < cfg.min_snr_floor <= cfg.min_snr_gamma):
            raise ValueError(f"min_snr_floor {cfg.min_snr_floor} needs min_snr_gamma > 0 and at least the floor "
                             f"(got {cfg.min_snr_gamma}); 0 disables it")
        if cfg.ddim_eta < 0.0:
            raise ValueError(f"ddim_eta must be >= 0, got {cfg.ddim_eta}")
        if not 0.0 <= cfg.noisy_fraction <= 1.0 or not 0.0 <= cfg.noisy_from < 1.0:
            raise ValueError(f"noisy_fraction must lie in [0, 1] and noisy_from in [0, 1), got "
                             f"{cfg.noisy_fraction} and {cfg.noisy_from}")
        if not 0.0 <= cfg.frame_noise_share < 1.0:
            raise ValueError(f"frame_noise_share must lie in [0, 1), got {cfg.frame_noise_share}")
        if cfg.sampler == "dpmpp" and cfg.ddim_eta > 0.0:
            raise ValueError(f"sampler dpmpp (DPM-Solver++ 2M) is deterministic: ddim_eta must be 0, "
                             f"got {cfg.ddim_eta}")
        self.cfg = cfg
        # cfg.guidance_interval as inclusive timesteps of [0, T) (ValueError when malformed), or None
        self.guidance_timesteps = None
        if cfg.guidance_interval is not None:
            lo, hi = interval_fractions(cfg.guidance_interval)
            self.guidance_timesteps = round(lo * cfg.timesteps), round(hi * cfg.timesteps)
        betas = make_betas(cfg.schedule, cfg.timesteps, cfg.linear_start, cfg.linear_end)
        if not 1 <= cfg.sample_steps <= cfg.timesteps:
            raise ValueError(f"sample_steps {cfg.sample_steps} must be in [1, timesteps={cfg.timesteps}]")
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self._schedule64 = {
            "betas": betas,
            "alphas_cumprod": alphas_cumprod,
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).sqrt(),
        }
        for name, value in self._schedule64.items():
            self.register_buffer(name, value.float(), persistent=False)

    @property
    def num_timesteps(self) -> int:
        return self.cfg.timesteps

    @property
    def alphas_cumprod64(self) -> Tensor:
        """Float64 ``alphas_cumprod`` on the CPU (the master copy)."""
        return self._schedule64["alphas_cumprod"]

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> GaussianDiffusion:
        super()._apply(fn, recurse)
        for name, value in self._schedule64.items():
            self._buffers[name] = value.to(device=self._buffers[name].device, dtype=torch.float32)
        return self

    def _coef(self, name: str, t: Tensor, x: Tensor) -> Tensor:
        """``buffer[t]`` shaped ``b 1 1 ...`` to broadcast against ``x``, in at least float32.

        Float64 ``x`` gets the float64 master copy, so float64 computations are exact to float64.
        """
        if t.ndim != 1 or t.shape[0] != x.shape[0]:
            raise ValueError(
                f"t must have shape ({x.shape[0]},) to match x {tuple(x.shape)}, got {tuple(t.shape)}"
            )
        table = self._schedule64[name] if x.dtype == torch.float64 else self._buffers[name]
        value = table[t.to(table.device)].to(
            device=x.device, dtype=torch.promote_types(x.dtype, torch.float32)
        )
        return rearrange(value, "b -> b" + " 1" * (x.ndim - 1))

    def _a_s(self, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._coef("sqrt_alphas_cumprod", t, x), self._coef("sqrt_one_minus_alphas_cumprod", t, x)

    def sample_timesteps(
        self, batch: int, device: torch.device | str, generator: torch.Generator | None = None
    ) -> Tensor:
        """Training timesteps, LongTensor ``(batch,)`` in ``[0, T)`` on ``device``: uniform, except that each sample,
        with probability ``noisy_fraction``, is drawn uniformly from the noisy end ``[noisy_from * T, T)`` instead."""
        gen_device = generator.device if generator is not None else device
        t = torch.randint(0, self.num_timesteps, (batch,), generator=generator, device=gen_device)
        if self.cfg.noisy_fraction > 0.0:
            start = int(self.cfg.noisy_from * self.num_timesteps)
            noisy = torch.randint(start, self.num_timesteps, (batch,), generator=generator, device=gen_device)
            pick = torch.rand(batch, generator=generator, device=gen_device) < self.cfg.noisy_fraction
            t = torch.where(pick, noisy, t)
        return t.to(device)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Forward process ``x_t = sqrt(a_t) x0 + sqrt(1 - a_t) noise``; ``x0, noise (b ...)``, ``t (b,)``."""
        a, s = self._a_s(t, x0)
        return (a * x0 + s * noise).to(x0.dtype)

    def target(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """Regression target of the network (``noise`` for eps, ``v`` for v, ``x0`` for x0), shape of ``x0``."""
        a, s = self._a_s(t, x0)
        return param.target(self.cfg.parameterization, x0, noise, a, s, self.cfg.sigma_data).to(x0.dtype)

    def predict_x0(self, x_t: Tensor, t: Tensor, model_out: Tensor) -> Tensor:
        """Clean sample implied by the network output at ``x_t``, shape of ``x_t``."""
        a, s = self._a_s(t, x_t)
        return param.x0_from_output(self.cfg.parameterization, x_t, model_out, a, s, self.cfg.sigma_data).to(x_t.dtype)

    def predict_eps(self, x_t: Tensor, t: Tensor, model_out: Tensor) -> Tensor:
        """Noise implied by the network output at ``x_t``, shape of ``x_t``."""
        a, s = self._a_s(t, x_t)
        return param.eps_from_output(self.cfg.parameterization, x_t, model_out, a, s, self.cfg.sigma_data).to(x_t.dtype)

    def loss_per_sample(self, model_out: Tensor, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """Float32 MSE against the target, averaged over all but the batch dim: ``(b,)``."""
        err = F.mse_loss(model_out.float(), self.target(x0, noise, t).float(), reduction="none")
        return reduce(err, "b ... -> b", "mean")

    def loss(self, model_out: Tensor, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """Mean MSE against the target (scalar), weighted per sample by :meth:`loss_weight`."""
        per_sample = self.loss_per_sample(model_out, x0, noise, t)
        if self.cfg.min_snr_gamma > 0:
            per_sample = per_sample * self.loss_weight(t)
        return per_sample.mean()

    def loss_weight(self, t: Tensor) -> Tensor:
        """Min-SNR-gamma weighting (Hang et al. 2023), ``(b,)``: the x0-error weight ``min(SNR, gamma)``
        expressed for this parameterization's target (÷ SNR for eps, ÷ (SNR + 1) for v, as is for x0). It stops the many
        nearly-clean timesteps from dominating training. ``min_snr_floor`` raises the x0-error weight of the noisiest
        timesteps to at least that value: min-SNR alone gives them weight SNR ≈ 0, and they decide the composition
        (toy-world decoder, 700-800 steps: position read 20% with the floor, 5% with unweighted x0 loss, 0% with
        min-SNR and v-prediction; README)."""
        alphas = self.alphas_cumprod64[t.long().cpu()]
        snr = (alphas / (1.0 - alphas)).clamp(min=1e-12)
        clipped = snr.clamp(max=self.cfg.min_snr_gamma, min=self.cfg.min_snr_floor)
        # The x0 error is this many times the target's: SNR (eps), SNR + 1 (v), 1 (x0), 1 / c_out^2 (edm).
        d2 = self.cfg.sigma_data**2
        per_x0 = {"eps": snr, "v": snr + 1.0, "x0": torch.ones_like(snr), "edm": (1.0 + d2 * snr) / d2}
        return (clipped / per_x0[self.cfg.parameterization]).float().to(t.device)

    def guided(self, cond_fn: ModelFn, uncond_fn: ModelFn, scale: float | None = None) -> ModelFn:
        """:func:`guided_model_fn` with the recipe's guidance when ``scale`` is None (see :meth:`guided_batched`)."""
        return guided_model_fn(cond_fn, uncond_fn, *self._guidance(scale))

    def guided_batched(self, fn: DropModelFn, scale: float | None = None) -> ModelFn:
        """:func:`batched_guided_model_fn` with the recipe's guidance when ``scale`` is None (``cfg.guidance_scale``,
        and ``cfg.guidance_interval_scale`` inside ``cfg.guidance_interval``), else ``scale`` at every step."""
        return batched_guided_model_fn(fn, *self._guidance(scale))

    def _guidance(self, scale: float | None) -> tuple[float, tuple[int, int] | None, float]:
        if scale is not None:
            return scale, None, 1.0
        return self.cfg.guidance_scale, self.guidance_timesteps, self.cfg.guidance_interval_scale

    def noise(self, shape: tuple[int, ...], *, generator: torch.Generator | None = None,
              device: torch.device | str | None = None, dtype: torch.dtype | None = None,
              share: float | None = None) -> Tensor:
        """Standard normal noise of ``shape``; for a video (``b c t h w``) with ``frame_noise_share`` s > 0, each
        frame's is ``sqrt(s)`` times one draw per clip plus ``sqrt(1 - s)`` times its own (unit variance, frames
        correlated by s). With s = 0 it is exactly ``torch.randn`` (the same draws from ``generator``).

        ``share`` replaces ``frame_noise_share`` for this draw, in [0, 1]. A sampling-time reading only: with
        s = 1 every frame gets the same noise (one ``b c 1 h w`` draw), which training must not use (every frame
        of every clip would be noised alike; the config keeps s below 1)."""
        share = self.cfg.frame_noise_share if share is None else float(share)
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"noise share must lie in [0, 1], got {share}")
        if share == 1.0 and len(shape) == 5:
            clip = torch.randn((*shape[:2], 1, *shape[3:]), generator=generator, device=device, dtype=dtype)
            return clip.expand(shape).contiguous()
        z = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        if share > 0 and len(shape) == 5:
            clip = torch.randn((*shape[:2], 1, *shape[3:]), generator=generator, device=device, dtype=dtype)
            z = math.sqrt(1.0 - share) * z + math.sqrt(share) * clip
        return z

    @torch.no_grad()
    def sample(
        self,
        model_fn: ModelFn,
        noise: Tensor,
        *,
        steps: int | None = None,
        sampler: str | None = None,
        eta: float | None = None,
        clip_denoised: bool | None = None,
        clip_offset: Tensor | None = None,
        clip_scale: float = 1.0,
        generator: torch.Generator | None = None,
        callback: Callback | None = None,
        noise_fn: NoiseFn | None = None,
        init: Tensor | None = None,
        strength: float = 1.0,
    ) -> Tensor:
        """Denoise ``noise`` (x_T, ``b ...``) to x0 of the same shape; ``model_fn(x_t, t (b,)) -> model_out``.
        ``init`` and ``strength`` < 1: start part-way from a guess of x0 (see :func:`sample_loop`).

        Defaults from the config: ``sampler`` (ddim, ddpm or dpmpp), ``steps=sample_steps``, ``eta=ddim_eta``
        (DDIM only) and
        ``clip_denoised`` (clamp the predicted x0 to [-1, 1]; the implied noise is then recomputed from it).
        ``clip_offset`` (broadcastable to x0) moves that clamp: ``x0 + clip_offset`` is kept in [-1, 1], for a
        network that diffuses a residual over a known image (residual SR: the offset is the resized-up input);
        ``clip_scale`` is the residual's scale: ``x0 / clip_scale + clip_offset`` is kept in [-1, 1] (↑F).
        Fresh noise of DDPM and DDIM(eta>0) steps comes from ``generator`` when given (any device).
        ``model_fn`` gets the original timestep (in ``[0, T)``) even when respaced; ``callback(step_index,
        timestep, x_prev, x0_pred)`` runs after every step; ``noise_fn(x_t)`` (optional) draws the fresh noise of
        stochastic steps instead of ``generator``. Runs without gradients.
        """
        sampler = self.cfg.sampler if sampler is None else sampler
        steps = self.cfg.sample_steps if steps is None else steps
        if eta is None:  # the configured DDIM eta; a caller that switches to deterministic dpmpp drops it
            eta = 0.0 if sampler == "dpmpp" else self.cfg.ddim_eta
        clip = self.cfg.clip_denoised if clip_denoised is None else clip_denoised
        return sample_loop(
            self._predictor(model_fn, clip, clip_offset, clip_scale),
            noise,
            self.alphas_cumprod64,
            steps,
            sampler,
            eta,
            generator,
            callback,
            noise_fn,
            init,
            strength,
        )

    def _predictor(self, model_fn: ModelFn, clip: bool,
                   offset: Tensor | None = None,
                   scale: float = 1.0) -> Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]:
        def predict(x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
            out = model_fn(x_t, t)
            x0 = self.predict_x0(x_t, t, out)
            if not clip:
                return x0, self.predict_eps(x_t, t, out)
            if offset is None and scale == 1.0:
                x0 = x0.clamp(-1.0, 1.0)
            else:
                shift = 0.0 if offset is None else offset
                x0 = ((x0 / scale + shift).clamp(-1.0, 1.0) - shift) * scale
            a, s = self._a_s(t, x_t)
            return x0, param.eps_from_x0(x_t, x0, a, s).to(x_t.dtype)

        return predict

    def extra_repr(self) -> str:
        c = self.cfg
        return f"schedule={c.schedule}, timesteps={c.timesteps}, parameterization={c.parameterization}"
