"""What the super-resolution components SR_l, SR_h and SR_l^t share: the low-res input, noise-conditioning
augmentation, optional CLIP image-embedding conditioning, optional random crops, and sampling from a low-res input.
"""

from __future__ import annotations

import math

import torch
from einops import repeat
from torch import Tensor
from typing_extensions import override

from mav_train.components.base import Conditions, DiffusionComponent
from mav_train.components.low_res import downsample, random_blur, upsample
from mav_train.diffusion.samplers import NoiseFn
from mav_train.nn.unet import UNet


def per_clip_noise(shape: tuple[int, ...], frames: int, generator: torch.Generator | None,
                   device: torch.device) -> Tensor:
    """One standard normal draw of ``b c h w`` per clip, repeated over ``frames``: ``b c t h w`` (the noise SR_h
    on video and SR_l^t with ``shared_noise`` give every frame of a clip)."""
    gen_device = generator.device if generator is not None else device
    z = torch.randn(shape, generator=generator, device=gen_device).to(device)
    return repeat(z, "b c h w -> b c t h w", t=frames)


class SuperResolution(DiffusionComponent):
    """Base of SR_l, SR_h and SR_l^t (Imagen-style cascaded super-resolution).

    The high-res target ``x0`` (``b 3 [t] R R``, R = ``data.resolution``) is downsampled (antialiased) to the low
    resolution ``model.low_res``, optionally blurred, resized back up to R (bicubic), noised at an augmentation
    level ``s`` (a diffusion timestep: drawn per sample from ``[0, model.low_res_noise_max * T]`` in training,
    ``model.low_res_noise_level * T`` in evaluation and sampling) and concatenated to the noisy input
    (``unet.extra_in_channels`` 3); ``s`` is embedded and added to the timestep embedding (``unet.aug_level_cond``).
    With ``unet.cond_dim > 0`` the CLIP image embedding of the image is a further condition, dropped
    ``model.p_drop_image_emb`` of the time for classifier-free guidance.
    """

    pixel_key = "image"

    @override
    def build_network(self) -> UNet:
        """The UNet with its low-res input weights drawn like the noisy input's: the UNet zero-initialises extra
        input channels so that adding them to a trained net changes nothing (↑F), but an SR net trained from
        scratch would first have to grow them from zero (slower start, measured on demo/sr_low). A net
        initialised from a checkpoint (SR_l -> SR_l^t) loads them."""
        network = UNet(self.cfg.unet)
        weight = network.input_conv.weight
        with torch.no_grad():
            fan_in = weight[:, : self.cfg.unet.in_channels * self.cfg.unet.patch_size**2].numel() // weight.shape[0]
            bound = 1.0 / math.sqrt(2 * fan_in)  # the default conv init's bound, for twice the input channels
            weight.uniform_(-bound, bound)
        return network

    @override
    def configure_trainable(self) -> None:
        u, m, d = self.cfg.unet, self.cfg.model, self.cfg.data
        if u.extra_in_channels != u.in_channels:
            raise ValueError(f"{self.cfg.component} needs unet.extra_in_channels = unet.in_channels "
                             f"({u.in_channels}) for the low-res image, got {u.extra_in_channels}")
        if not u.aug_level_cond:
            raise ValueError(f"{self.cfg.component} needs unet.aug_level_cond=true (noise-conditioning augmentation)")
        if not 0 < m.low_res < d.resolution:
            raise ValueError(f"model.low_res {m.low_res} must lie between 0 and data.resolution {d.resolution}")
        for name in ("low_res_noise_max", "low_res_noise_level", "low_res_blur_prob"):
            if not 0.0 <= m[name] <= 1.0:
                raise ValueError(f"model.{name} must lie in [0, 1], got {m[name]}")

    # ----- the low-res condition ----------------------------------------------------------------------------
    def level_timestep(self, level: float, batch: int) -> Tensor:
        """An augmentation level in [0, 1] as a ``(b,)`` timestep tensor."""
        if not 0.0 <= level <= 1.0:
            raise ValueError(f"low-res noise level must lie in [0, 1], got {level}")
        t = min(self.diffusion.num_timesteps - 1, round(level * self.diffusion.num_timesteps))
        return torch.full((batch,), t, dtype=torch.long, device=self.device)

    def random_levels(self, batch: int) -> Tensor:
        top = math.floor(self.cfg.model.low_res_noise_max * (self.diffusion.num_timesteps - 1))
        return torch.randint(0, top + 1, (batch,), device=self.device)

    def low_res_condition(self, up: Tensor, levels: Tensor, noise: Tensor | None = None,
                          generator: torch.Generator | None = None) -> Tensor:
        """The low-res input resized up (``b 3 [t] R R``) -> the extra input channels: noised at the augmentation
        timesteps ``levels`` (``(b,)``) with ``noise`` (drawn when None)."""
        if noise is None:
            gen_device = generator.device if generator is not None else up.device
            noise = torch.randn(up.shape, generator=generator, device=gen_device, dtype=up.dtype).to(up.device)
        return self.diffusion.q_sample(up, levels, noise)

    def check_low_res(self, low_res: Tensor) -> None:
        want = self.cfg.model.low_res
        if low_res.shape[-2:] != (want, want):
            raise ValueError(f"low-res input is {low_res.shape[-2]}x{low_res.shape[-1]}, but this "
                             f"{self.cfg.component} upsamples {want}x{want} inputs to "
                             f"{self.cfg.data.resolution}x{self.cfg.data.resolution}")

    def image_embedding(self, batch: dict, x0: Tensor) -> Tensor | None:
        if self.cfg.unet.cond_dim == 0:
            return None
        return self.clip.encode_image(batch.get("clip_image", x0 if x0.ndim == 4 else x0[:, :, 0]))

    def crop(self, x0: Tensor, extra: Tensor) -> tuple[Tensor, Tensor]:
        """Hook for SR_h: the same window of target and low-res channels."""
        return x0, extra

    def fps(self, batch: dict) -> Tensor | None:
        return None

    # ----- training -----------------------------------------------------------------------------------------
    @override
    def prepare_batch(self, batch: dict) -> tuple[Tensor, Conditions]:
        x0 = batch[self.pixel_key]
        m = self.cfg.model
        low = downsample(x0, m.low_res)
        if self.training:
            low = random_blur(low, m.low_res_blur_prob, tuple(m.low_res_blur_sigma))
            levels = self.random_levels(x0.shape[0])
        else:  # validation: the sampling level, so that val/loss measures what sampling sees
            levels = self.level_timestep(m.low_res_noise_level, x0.shape[0])
        up = upsample(low, x0.shape[-1])
        extra = self.low_res_condition(up, levels)
        if m.residual:  # the target is what the clean resized-up input misses
            x0 = x0 - up
        x0, extra = self.crop(x0, extra)
        cond = Conditions(image_emb=self.image_embedding(batch, x0), fps=self.fps(batch), extra=extra,
                          always_drop_text=True, kwargs={"aug_level": levels})
        return x0, cond

    # ----- sampling -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def upsample(self, low_res: Tensor, *, image_emb: Tensor | None = None, fps: Tensor | float | None = None,
                 noise_level: float | None = None, generator: torch.Generator | None = None,
                 steps: int | None = None, guidance_scale: float | None = None, noise: Tensor | None = None,
                 aug_noise: Tensor | None = None, noise_fn: NoiseFn | None = None) -> Tensor:
        """Super-resolve ``low_res`` (``b 3 l l``, or ``b 3 t l l`` for SR_l^t; l = ``model.low_res``, values in
        [-1, 1]) to ``b 3 [t] R R`` (R = ``data.resolution``), at any size the UNet accepts (SR_h trains on crops
        and samples the whole image).

        ``noise_level`` (default ``model.low_res_noise_level``) is the augmentation level of the low-res input;
        ``aug_noise`` its noise (``b 3 [t] R R``), ``noise`` the initial x_T and ``noise_fn`` the noise of
        stochastic steps (all drawn from ``generator`` when None; SR_h on video passes shared ones).
        """
        self.check_low_res(low_res)
        low_res = low_res.to(self.device)
        b, size = low_res.shape[0], self.cfg.data.resolution
        level = self.cfg.model.low_res_noise_level if noise_level is None else noise_level
        levels = self.level_timestep(level, b)
        up = upsample(low_res, size)
        extra = self.low_res_condition(up, levels, noise=aug_noise, generator=generator)
        if self.cfg.unet.cond_dim > 0 and image_emb is None:
            raise ValueError(f"this {self.cfg.component} is conditioned on the CLIP image embedding "
                             f"(unet.cond_dim {self.cfg.unet.cond_dim}): pass image_emb")
        if isinstance(fps, (int, float)):
            fps = torch.full((b,), float(fps), device=self.device)
        cond = Conditions(image_emb=image_emb, fps=fps, extra=extra, always_drop_text=True,
                          kwargs={"aug_level": levels})
        shape = (b, self.cfg.unet.out_channels, *low_res.shape[2:-2], size, size)
        # Residual SR: the clean image is residual + up, so that sum (not the residual) is kept in [-1, 1].
        out = self.sample(cond, shape, guidance_scale=guidance_scale, steps=steps, generator=generator,
                          noise=noise, noise_fn=noise_fn, clip_offset=up if self.cfg.model.residual else None)
        if self.cfg.model.residual:
            out = (out + up).clamp(-1, 1)
        return out

    @override
    def sample_from_batch(self, batch: dict, num: int, generator: torch.Generator | None = None,
                          steps: int | None = None, guidance_scale: float | None = None) -> Tensor:
        """Full-size SR samples of the first ``num`` items of a batch (their low-res versions as input)."""
        small = {k: (v[:num] if isinstance(v, (Tensor, list)) else v) for k, v in batch.items()}
        x0 = small[self.pixel_key].to(self.device)
        return self.upsample(downsample(x0, self.cfg.model.low_res), image_emb=self.image_embedding(small, x0),
                             fps=self.fps(small), generator=generator, steps=steps, guidance_scale=guidance_scale)
