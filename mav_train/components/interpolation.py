"""↑F: masked frame interpolation and extrapolation (16 → 76 frames at skip 5, image animation), from D^t."""

from __future__ import annotations

import torch
from einops import rearrange, repeat
from torch import Tensor
from typing_extensions import override

from mav_train.components.base import Conditions, with_estimate
from mav_train.components.frame_masks import (
    animation_mask,
    backward_mask,
    draw_masks,
    first_known_frames,
    forward_mask,
    interpolation_mask,
    interpolation_windows,
    known_channels,
    known_frame_blend,
    validate_masks,
)
from mav_train.components.temporal_decoder import TemporalDecoder

EXTRA_CHANNELS = 4  # 3 known-frame channels + 1 mask channel


class Interpolation(TemporalDecoder):
    """↑F: D^t with 4 extra input channels — the known frames, zeroed where unknown, and a binary mask — whose
    input weights start at zero, so that at initialisation ↑F is exactly D^t (``init.checkpoint`` a
    ``temporal_decoder``). Conditioned like D^t (CLIP image embedding of a frame, here the window's first known
    frame; fps = the frame rate of the frames it generates) plus the mask channels.

    Training masks mix (``model.masks``) interpolation (every s-th frame known), extrapolation forwards and
    backwards (the first or last k frames known), animation (the first frame known) and nothing known, which
    also drops the image embedding: that is the unconditional branch of classifier-free guidance. The loss is
    D^t's over every frame. With ``model.freeze_spatial`` the temporal layers and the input convolution (which
    reads the new channels) train. Inference: :meth:`interpolate`, :meth:`extrapolate`, :meth:`animate`; known
    frames come back unchanged.

    With ``diffusion.self_condition`` the UNet reads the last x0 estimate before the known frames and the mask
    (``unet.extra_in_channels`` 7); from a self-conditioned D^t it keeps D^t's estimate weights.

    ``model.residual`` (ours, not the paper's): diffuse what the known frames' cross-fade misses, times
    ``model.residual_scale``; the network reads the noisy residual on top of the cross-fade and its output layer
    restarts at zero after ``init.checkpoint``, so an untrained residual ↑F returns the cross-fade. No guidance.
    """

    # ----- training -----------------------------------------------------------------------------------------
    @override
    def configure_trainable(self) -> None:
        cfg = self.cfg
        estimate = cfg.unet.out_channels if cfg.diffusion.self_condition else 0
        if cfg.unet.extra_in_channels != EXTRA_CHANNELS + estimate:
            what = f"the x0 estimate ({estimate}) + " if estimate else ""
            raise ValueError(f"interpolation needs unet.extra_in_channels={EXTRA_CHANNELS + estimate} ({what}known "
                             f"frames + mask), got {cfg.unet.extra_in_channels}")
        if cfg.data.image_batch_size > 0:
            raise ValueError("interpolation trains on video only: set data.image_batch_size=0")
        validate_masks(cfg.model.masks, cfg.data.num_frames)
        if not 1 <= cfg.model.frame_skip <= cfg.data.num_frames - 1:
            raise ValueError(f"model.frame_skip {cfg.model.frame_skip} must lie in [1, data.num_frames - 1 = "
                             f"{cfg.data.num_frames - 1}]")
        super().configure_trainable()
        for param in self.network.input_conv.parameters():  # it reads the new channels: always trained
            param.requires_grad_(True)

    @override
    def prepare_batch(self, batch: dict) -> tuple[Tensor, Conditions]:
        video = batch["video"]
        b, t = video.shape[0], video.shape[2]
        # Validation draws the same masks every time, so its loss is comparable across steps.
        generator = None if self.training else torch.Generator().manual_seed(0)
        known = draw_masks(b, t, self.cfg.model.masks, generator).known.to(video.device)
        extra = known_channels(video, known, self.cfg.model.masks.known_noise if self.training else 0.0)
        cond = self.masked_conditions(video, known, batch["fps"].to(video.dtype), extra)
        if self.cfg.model.residual:  # the target is what the cross-fade of the known frames misses
            return (video - known_frame_blend(video, known)) * self.cfg.model.residual_scale, cond
        return video, cond

    @override
    def network_input(self, x_t: Tensor, extra: Tensor | None) -> Tensor:
        if not self.cfg.model.residual:
            return x_t
        # The noisy residual on top of the known frames' cross-fade: the network sees frames, as D^t did, and at
        # low noise nearly the true ones. The blend is rebuilt from the extra channels (zeros when they are dropped).
        known = extra[:, -1, :, 0, 0] > 0.5
        return x_t / self.cfg.model.residual_scale + known_frame_blend(extra[:, :-1], known)

    @override
    def after_initialisation(self) -> str:
        if not self.cfg.model.residual:
            return ""
        # D^t's output layer predicts frames; a residual ↑F starts from "no change to the cross-fade".
        torch.nn.init.zeros_(self.network.out_conv.weight)
        torch.nn.init.zeros_(self.network.out_conv.bias)
        return "model.residual: output convolution zeroed (an untrained ↑F returns the known frames' cross-fade)"

    def masked_conditions(self, video: Tensor, known: Tensor, fps: Tensor, extra: Tensor | None = None) -> Conditions:
        """Conditions of clips ``b 3 t h w`` whose frames ``known`` ``(b, t)`` are given: CLIP embedding of the
        first known frame, fps ``(b,)``, the extra channels."""
        extra = known_channels(video, known) if extra is None else extra
        image_emb = self.clip.encode_image(first_known_frames(video, known))
        return Conditions(image_emb=image_emb, fps=fps, extra=extra, always_drop_text=True)

    @override
    def condition_dropout(self, cond: Conditions, b: int) -> dict[str, Tensor]:
        drops = super().condition_dropout(cond, b)
        nothing_known = cond.extra[:, -1].flatten(1).amax(dim=1) == 0
        drops["drop_image"] = drops["drop_image"] | nothing_known
        return drops

    @override
    def extra_losses(self, batch: dict) -> Tensor | float:
        return 0.0

    # ----- sampling -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def fill(self, video: Tensor, known: Tensor, fps: float | Tensor, *, generator: torch.Generator | None = None,
             steps: int | None = None, guidance_scale: float | None = None, strength: float | None = None,
             noise_share: float | None = None) -> Tensor:
        """Generate the unknown frames of windows ``b 3 t h w`` (``known`` ``(b, t)`` or ``(t,)`` bool); known
        frames are pasted back unchanged. Guidance contrasts with nothing known and no image embedding.
        ``strength`` (default ``model.sample_strength``) below 1 starts from :func:`known_frame_blend` noised to
        that fraction of the timesteps instead of from pure noise. ``noise_share`` (default
        ``diffusion.frame_noise_share``) is the share of every frame's noise drawn once per window; 1 gives every
        frame the same noise, so that frames differ only by what ↑F makes of the known frames and frame position
        (``bench_quality``'s one-draw reading)."""
        b = video.shape[0]
        known = (known if known.ndim == 2 else repeat(known, "t -> b t", b=b)).to(video.device)
        fps = fps if isinstance(fps, Tensor) else self.fps_tensor(fps, b)
        cond = self.masked_conditions(video, known, fps.to(video.device, video.dtype))
        net = self.sampling_network()

        def make_fn(estimate: dict | None):
            def fn(x_t: Tensor, t: Tensor, drop: Tensor) -> Tensor:
                reps = x_t.shape[0] // b
                tile = {k: repeat(v, "b ... -> (r b) ...", r=reps) for k, v in
                        (("image_emb", cond.image_emb), ("fps", cond.fps), ("extra", cond.extra))}
                known = tile["extra"] * rearrange(~drop, "b -> b 1 1 1 1").to(x_t.dtype)  # guidance: nothing known
                tile["extra"] = known if estimate is None else with_estimate(
                    repeat(estimate["x0"], "b ... -> (r b) ...", r=reps), known)
                return net(self.network_input(x_t, known), t, **tile, drop_image=drop,
                           drop_text=torch.ones_like(drop))
            return fn

        scale = self.cfg.diffusion.guidance_scale if guidance_scale is None else guidance_scale
        noise = self.diffusion.noise(tuple(video.shape), device=self.device, generator=generator, share=noise_share)
        noise_fn = self.fresh_noise_fn(video.ndim, generator, share=noise_share)
        strength = self.cfg.model.sample_strength if strength is None else strength
        blend = known_frame_blend(video, known)
        if self.cfg.model.residual:
            if scale != 1.0:
                raise ValueError(f"a residual ↑F (model.residual) samples without guidance: guidance_scale must be "
                                 f"1, got {scale} (its nothing-known branch predicts frames, not a residual)")
            # x = blend + residual / scale, kept in [-1, 1] by the sampler's clamp; strength < 1 starts from
            # "no change".
            k = self.cfg.model.residual_scale
            out = self.diffusion.sample(self.guided_sampling_fn(make_fn, 1.0, noise), noise, steps=steps,
                                        generator=generator,
                                        init=torch.zeros_like(blend) if strength < 1.0 else None, strength=strength,
                                        clip_offset=blend, clip_scale=k, noise_fn=noise_fn)
            out = (out / k + blend).clamp(-1.0, 1.0)
        else:
            # guidance_scale None: the recipe's guidance, with its diffusion.guidance_interval if it has one
            # With self-conditioning each step also reads the last step's x0 estimate (zeros at the first).
            out = self.diffusion.sample(self.guided_sampling_fn(make_fn, guidance_scale, noise), noise, steps=steps,
                                        generator=generator, init=blend if strength < 1.0 else None,
                                        strength=strength, noise_fn=noise_fn)
        return torch.where(rearrange(known, "b t -> b 1 t 1 1"), video, out)

    @override
    def sample_from_batch(self, batch: dict, num: int, generator: torch.Generator | None = None,
                          steps: int | None = None, guidance_scale: float | None = None) -> Tensor:
        """Sample logging: the first ``num`` clips with every ``model.frame_skip``-th frame known."""
        video = batch["video"][:num].to(self.device)
        known = interpolation_mask(video.shape[2], self.cfg.model.frame_skip)
        return self.fill(video, known, batch["fps"][:num].to(self.device), generator=generator, steps=steps,
                         guidance_scale=guidance_scale)

    @property
    def window(self) -> int:
        """Frames the network generates at once (``data.num_frames``)."""
        return self.cfg.data.num_frames

    def default_fps(self) -> float:
        """fps when none is given: the top of the training range (``data.curriculum.fps_max``)."""
        return float(self.cfg.data.curriculum.fps_max)

    @torch.no_grad()
    def interpolate(self, video: Tensor, skip: int | None = None, *, fps: float | None = None,
                    generator: torch.Generator | None = None, steps: int | None = None,
                    guidance_scale: float | None = None, strength: float | None = None,
                    noise_share: float | None = None) -> Tensor:
        """``video`` ``b 3 t h w`` in [-1, 1] → ``b 3 (t-1)*skip+1 h w``: frame ``i`` of the input is frame
        ``i * skip`` of the output, unchanged; ``skip - 1`` frames are generated between each pair.

        Windows of ``data.num_frames`` frames hold the keyframes at their frames 0, skip, 2 skip, ... and share
        their boundary keyframes (:func:`interpolation_windows`); all windows are sampled as one batch. ``fps``
        is the frame rate of the output (the input's times ``skip``; default :meth:`default_fps`). ``skip``
        defaults to ``model.frame_skip``; ``strength`` to ``model.sample_strength`` (see :meth:`fill`). ValueError
        naming the sizes when the skip or the video does not fit.
        """
        skip = self.cfg.model.frame_skip if skip is None else int(skip)
        _check_pixels(video, "video", ndim=5)
        b, _, t, h, w = video.shape
        if skip == 1:
            return video.clone()
        starts = interpolation_windows(t, skip, self.window)
        per_window = (self.window - 1) // skip + 1
        known = interpolation_mask(self.window, skip)
        windows = video.new_zeros(b, len(starts), 3, self.window, h, w)
        for i, start in enumerate(starts):
            for j in range(per_window):
                windows[:, i, :, j * skip] = video[:, :, start + j]
        flat = rearrange(windows, "b n c t h w -> (b n) c t h w")
        filled = self.fill(flat, known, self.default_fps() if fps is None else fps, generator=generator,
                           steps=steps, guidance_scale=guidance_scale, strength=strength, noise_share=noise_share)
        filled = rearrange(filled, "(b n) c t h w -> b n c t h w", b=b)
        span = (per_window - 1) * skip + 1
        out = video.new_zeros(b, 3, (t - 1) * skip + 1, h, w)
        for i, start in enumerate(starts):
            out[:, :, start * skip:start * skip + span] = filled[:, i, :, :span]
        out[:, :, ::skip] = video  # the keyframes, exactly
        return out

    @torch.no_grad()
    def extrapolate(self, video: Tensor, n: int, direction: str = "forward", *, fps: float | None = None,
                    generator: torch.Generator | None = None, steps: int | None = None,
                    guidance_scale: float | None = None, strength: float | None = None,
                    noise_share: float | None = None) -> Tensor:
        """``video`` ``b 3 t h w`` → ``b 3 t+n h w``: ``n`` new frames after it (``direction="forward"``) or
        before it (``"backward"``); the given frames come back unchanged. Window by window, each conditioned on
        the last (first) ``min(t, model.masks.max_known)`` frames so far. ``fps``: the video's frame rate."""
        if direction not in ("forward", "backward"):
            raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")
        _check_count(n, "n")
        _check_pixels(video, "video", ndim=5)
        fps = self.default_fps() if fps is None else fps
        context_max = min(self.cfg.model.masks.max_known, self.window - 1)
        while n > 0:
            c = min(video.shape[2], context_max)
            new = min(self.window - c, n)
            blank = video.new_zeros(*video.shape[:2], self.window - c, *video.shape[3:])
            if direction == "forward":
                window = torch.cat([video[:, :, video.shape[2] - c:], blank], dim=2)
                out = self.fill(window, forward_mask(self.window, c), fps, generator=generator, steps=steps,
                                guidance_scale=guidance_scale, strength=strength, noise_share=noise_share)
                video = torch.cat([video, out[:, :, c:c + new]], dim=2)
            else:
                window = torch.cat([blank, video[:, :, :c]], dim=2)
                out = self.fill(window, backward_mask(self.window, c), fps, generator=generator, steps=steps,
                                guidance_scale=guidance_scale, strength=strength, noise_share=noise_share)
                video = torch.cat([out[:, :, self.window - c - new:self.window - c], video], dim=2)
            n -= new
        return video

    @torch.no_grad()
    def animate(self, image: Tensor, n: int, *, fps: float | None = None, generator: torch.Generator | None = None,
                steps: int | None = None, guidance_scale: float | None = None,
                strength: float | None = None, noise_share: float | None = None) -> Tensor:
        """``image`` ``b 3 h w`` in [-1, 1] → ``b 3 n h w`` whose frame 0 is the image (unchanged): one window
        with only its first frame known, then forward extrapolation for the rest. ``fps``: the video's rate."""
        _check_count(n, "n")
        _check_pixels(image, "image", ndim=4)
        fps = self.default_fps() if fps is None else fps
        window = torch.cat([image[:, :, None], image.new_zeros(*image.shape[:2], self.window - 1, *image.shape[2:])],
                           dim=2)
        video = self.fill(window, animation_mask(self.window), fps, generator=generator, steps=steps,
                          guidance_scale=guidance_scale, strength=strength, noise_share=noise_share)[:, :, :n]
        if n > self.window:
            video = self.extrapolate(video, n - self.window, fps=fps, generator=generator, steps=steps,
                                     guidance_scale=guidance_scale, strength=strength, noise_share=noise_share)
        return video


def _check_count(n: int, name: str) -> None:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"{name} must be a positive int, got {n!r}")


def _check_pixels(x: Tensor, name: str, ndim: int) -> None:
    layout = "b 3 t h w" if ndim == 5 else "b 3 h w"
    if not isinstance(x, Tensor) or x.ndim != ndim or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be {layout} with 3 channels, got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be float pixels in [-1, 1], got dtype {x.dtype}")
    low, high = float(x.min()), float(x.max())
    if low < -1.5 or high > 1.5:
        raise ValueError(f"{name} must hold pixels in [-1, 1], got values in [{low:.3g}, {high:.3g}]")
