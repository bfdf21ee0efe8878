"""One UNet for images (``b c h w``) and, with pseudo-3D layers, videos (``b c t h w``).

Used by the decoder D, the super-resolution nets SR_l / SR_h and their video versions D^t, ↑F and SR_l^t.
The video networks are the image networks plus identity-initialised temporal layers (see ``pseudo3d.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from mav_train.config.schema import UNetConfig
from mav_train.nn.attention import num_heads
from mav_train.nn.blocks import Downsample, ResBlock, UNetBlock, Upsample
from mav_train.nn.embeddings import ConditionEmbedding, FpsEmbedding, TimestepEmbedding
from mav_train.nn.pseudo3d import (
    TEMPORAL_MODULES,
    FrameConv2d,
    FrameGroupNorm,
    Pseudo3DAttention,
    apply_per_frame,
)


def norm_groups(base_channels: int, channels_per_group: int = 4) -> int:
    """GroupNorm groups used throughout the UNet: 32 (ADM), or fewer for a narrow UNet so that every group holds at
    least ``channels_per_group`` channels (``unet.norm_channels_per_group``). With one channel per group GroupNorm is
    InstanceNorm, which removes every feature map's mean, i.e. the flat colour fields the toy world is made of."""
    return max(1, min(32, base_channels // channels_per_group))


def validate_unet_config(cfg: UNetConfig) -> None:
    """Raise ValueError (naming field and value) if ``cfg`` cannot build a UNet. Does not modify ``cfg``."""
    for name in (
        "in_channels",
        "out_channels",
        "base_channels",
        "num_res_blocks",
        "head_dim",
        "temporal_kernel",
        "max_frames",
        "norm_channels_per_group",
        "patch_size",
    ):
        if getattr(cfg, name) < 1:
            raise ValueError(f"unet.{name} must be >= 1, got {getattr(cfg, name)}")
    for name in ("extra_in_channels", "cond_dim", "num_cond_tokens", "text_dim"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"unet.{name} must be >= 0, got {getattr(cfg, name)}")
    mults = list(cfg.channel_mults)
    if not mults or min(mults) < 1:
        raise ValueError(f"unet.channel_mults must be a non-empty list of positive ints, got {mults}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ValueError(f"unet.dropout must be in [0, 1), got {cfg.dropout}")
    groups = norm_groups(cfg.base_channels, cfg.norm_channels_per_group)
    if cfg.base_channels % groups != 0:
        raise ValueError(
            f"unet.base_channels {cfg.base_channels} must be divisible by GroupNorm groups {groups}"
        )
    factors = [2**level for level in range(len(mults))]
    unused = sorted(set(cfg.attention_levels) - set(factors))
    if unused:
        raise ValueError(
            f"unet.attention_levels {unused} are not downsampling factors of this UNet {factors}"
        )
    for level, mult in enumerate(mults):
        if factors[level] in cfg.attention_levels or level == len(mults) - 1:
            num_heads(cfg.base_channels * mult, cfg.head_dim)
    if cfg.temporal and cfg.temporal_kernel % 2 == 0:
        raise ValueError(f"unet.temporal_kernel must be odd, got {cfg.temporal_kernel}")
    if cfg.fps_cond and not cfg.temporal:
        raise ValueError("unet.fps_cond requires unet.temporal=True")
    if cfg.temporal_attn_emb and not cfg.temporal:
        raise ValueError("unet.temporal_attn_emb requires unet.temporal=True")
    if cfg.fps_temporal_only and not (cfg.fps_cond and cfg.temporal_attn_emb):
        raise ValueError("unet.fps_temporal_only requires unet.fps_cond=True and unet.temporal_attn_emb=True")


class UNet(nn.Module):
    """Diffusion UNet for D, SR_l, SR_h (images) and D^t, ↑F, SR_l^t (videos, ``cfg.temporal``).

    ADM-style: input conv, ``len(channel_mults)`` levels of residual blocks (with self + cross attention at
    the factors in ``attention_levels``), a middle block (res, attention, res), an up path with skip
    concatenation and a GroupNorm/SiLU/conv output. The CLIP image embedding is added to the time embedding
    and turned into ``num_cond_tokens`` context tokens (DALL-E 2's decoder); text states add context tokens.
    """

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        validate_unet_config(cfg)
        self.cfg = cfg
        base = cfg.base_channels
        self.norm_groups = norm_groups(base, cfg.norm_channels_per_group)
        self.time_dim = 4 * base
        self.context_dim = self.time_dim
        patch = cfg.patch_size
        self.downsample_factor = patch * 2 ** (len(cfg.channel_mults) - 1)  # the input size must divide by it
        self.time_embed = TimestepEmbedding(base, self.time_dim)
        self.fps_embed = FpsEmbedding(base, self.time_dim) if cfg.fps_cond else None
        # SR nets: the noise-augmentation level of the low-res input, embedded like a timestep (Imagen).
        self.aug_embed = TimestepEmbedding(base, self.time_dim) if cfg.aug_level_cond else None
        self.cond = ConditionEmbedding(
            cfg.cond_dim, cfg.num_cond_tokens, cfg.text_dim, self.time_dim, self.context_dim, cfg.cond_normalize
        )
        # On patches, channel c of pixel (i, j) of a patch is input channel c * p^2 + i * p + j, so the extra
        # channels still come after the noisy input's and can be zero-initialised (and appended, see inflate.py).
        self.input_conv = FrameConv2d((cfg.in_channels + cfg.extra_in_channels) * patch**2, base, 3, padding=1)
        nn.init.zeros_(self.input_conv.weight[:, cfg.in_channels * patch**2 :])
        skip_channels = self._build_down()
        self._down_channels = skip_channels[1:]  # the output width of each block of self.down, in order
        self._build_middle()
        self._build_up(skip_channels)
        self.out_norm = FrameGroupNorm(self.norm_groups, base * cfg.channel_mults[0])
        self.out_conv = FrameConv2d(base * cfg.channel_mults[0], cfg.out_channels * patch**2, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)
        self._temporal_names = frozenset(self._find_temporal_names())

    def _block(self, in_channels: int, out_channels: int, attention: bool) -> UNetBlock:
        cfg = self.cfg
        res = ResBlock(
            in_channels,
            out_channels,
            self.time_dim,
            self.norm_groups,
            cfg.dropout,
            cfg.temporal,
            cfg.temporal_kernel,
        )
        attn = None
        if attention:
            context_dim = self.context_dim if self.cond.has_context else 0
            attn = Pseudo3DAttention(
                out_channels, cfg.head_dim, context_dim, self.norm_groups, cfg.temporal, cfg.max_frames,
                self.time_dim if cfg.temporal_attn_emb else 0,
            )
        return UNetBlock(res, attn)

    def _build_down(self) -> list[int]:
        cfg = self.cfg
        self.down = nn.ModuleList()
        channels, factor = cfg.base_channels, 1
        skip_channels = [channels]
        for level, mult in enumerate(cfg.channel_mults):
            for _ in range(cfg.num_res_blocks):
                out = cfg.base_channels * mult
                self.down.append(self._block(channels, out, factor in cfg.attention_levels))
                channels = out
                skip_channels.append(channels)
            if level < len(cfg.channel_mults) - 1:
                self.down.append(Downsample(channels))
                factor *= 2
                skip_channels.append(channels)
        return skip_channels

    def _build_middle(self) -> None:
        channels = self.cfg.base_channels * self.cfg.channel_mults[-1]
        self.middle = nn.ModuleList(
            [self._block(channels, channels, True), self._block(channels, channels, False)]
        )

    def _build_up(self, skip_channels: list[int]) -> None:
        cfg = self.cfg
        self.up = nn.ModuleList()
        channels, factor = skip_channels[-1], 2 ** (len(cfg.channel_mults) - 1)  # of the levels, not of patches
        for level in reversed(range(len(cfg.channel_mults))):
            for _ in range(cfg.num_res_blocks + 1):
                out = cfg.base_channels * cfg.channel_mults[level]
                self.up.append(
                    self._block(channels + skip_channels.pop(), out, factor in cfg.attention_levels)
                )
                channels = out
            if level > 0:
                self.up.append(Upsample(channels))
                factor //= 2

    def _find_temporal_names(self) -> list[str]:
        names = []
        for module_name, module in self.named_modules():
            if isinstance(module, (*TEMPORAL_MODULES, FpsEmbedding)):
                names.extend(f"{module_name}.{key}" for key in module.state_dict())
        return sorted(names)

    def feature_channels(self, name: str) -> int:
        """The width of a feature ``forward(capture=...)`` hands over: ``"middle"`` or ``"down.K"``."""
        if name == "middle":
            return self.cfg.base_channels * self.cfg.channel_mults[-1]
        if name.startswith("down.") and name[5:].isdigit() and int(name[5:]) < len(self._down_channels):
            return self._down_channels[int(name[5:])]
        raise ValueError(f"repa.unet_feature: {name!r} is not a feature of this UNet; it has 'middle' and "
                         f"'down.0' to 'down.{len(self._down_channels) - 1}' (encoder blocks, downsamplers included)")

    def temporal_parameter_names(self) -> list[str]:
        """Sorted state-dict keys of the video-only layers (temporal convs/attention, fps embedding)."""
        return sorted(self._temporal_names)

    def is_temporal_parameter(self, name: str) -> bool:
        """Whether ``name`` (a named_parameters / state_dict key) belongs to a video-only layer."""
        return name in self._temporal_names

    def is_text_parameter(self, name: str) -> bool:
        """Whether ``name`` belongs to the text branch (per-token text states → context tokens)."""
        return name.startswith(("cond.text_norm.", "cond.text_to_tokens."))

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        image_emb: Tensor | None = None,
        text_states: Tensor | None = None,
        text_mask: Tensor | None = None,
        fps: Tensor | None = None,
        drop_image: Tensor | None = None,
        drop_text: Tensor | None = None,
        extra: Tensor | None = None,
        aug_level: Tensor | None = None,
        capture: dict | None = None,
    ) -> Tensor:
        """Predict the diffusion target for a noisy batch.

        Args:
            x: ``b c h w`` images, or ``b c t h w`` videos (temporal UNet only); c = in_channels.
            t: ``(b,)`` timesteps, int or float.
            image_emb: ``(b, cond_dim)`` CLIP image embedding; required when cond_dim > 0.
            text_states: ``(b, n, text_dim)`` per-token text states (text_dim > 0); None = text dropped.
            text_mask: ``(b, n)`` bool, True = real token.
            fps: ``(b,)`` float frames per second (fps_cond only); required for videos, optional for images.
            drop_image: ``(b,)`` bool, True = learned null image embedding (ignored when cond_dim is 0).
            drop_text: ``(b,)`` bool, True = text masked out (ignored when text_dim is 0).
            extra: ``b e h w`` / ``b e t h w`` channels concatenated to ``x`` (e = extra_in_channels).
            aug_level: ``(b,)`` noise-augmentation timestep of the low-res input in ``extra`` (aug_level_cond
                only, then required).
            capture: a dict that receives the middle blocks' output (``"middle"``: ``b c h w`` / ``b c t h w``)
                and each encoder block's (``"down.K"``, K = index in ``self.down``), for losses on the network's
                features (``repa``).

        Returns:
            ``x``'s layout with out_channels channels.
        """
        self._check_inputs(x, extra)
        batch = x.shape[0]
        if t.shape != (batch,):
            raise ValueError(f"t must have shape ({batch},), got {tuple(t.shape)}")
        fps_add = self._fps_embedding(fps, x.ndim, batch)
        only_temporal = self.cfg.fps_temporal_only
        emb = self.time_embed(t) if only_temporal else self.time_embed(t) + fps_add
        emb = emb + self._aug_embedding(aug_level, batch)
        time_add, context, context_mask = self.cond(
            batch, image_emb, drop_image, text_states, text_mask, drop_text
        )
        if time_add is not None:
            emb = emb + time_add
        # The temporal attention's embedding (unet.temporal_attn_emb) always carries the fps; the spatial layers'
        # does unless unet.fps_temporal_only.
        temporal_emb = emb + fps_add if only_temporal else emb
        h = self._patchify(x if extra is None else torch.cat([x, extra.to(x.dtype)], dim=1))
        h = self.input_conv(h)
        skips = [h]
        for index, block in enumerate(self.down):
            h = (
                self._run(block, h)
                if isinstance(block, Downsample)
                else self._run(block, h, emb, context, context_mask, temporal_emb)
            )
            skips.append(h)
            if capture is not None:
                capture[f"down.{index}"] = h
        for block in self.middle:
            h = self._run(block, h, emb, context, context_mask, temporal_emb)
        if capture is not None:
            capture["middle"] = h
        for block in self.up:
            if isinstance(block, Upsample):
                h = self._run(block, h)
            else:
                h = self._run(block, torch.cat([h, skips.pop()], dim=1), emb, context, context_mask, temporal_emb)
        return self._unpatchify(self.out_conv(F.silu(self.out_norm(h))))

    def _patchify(self, x: Tensor) -> Tensor:
        p = self.cfg.patch_size
        return x if p == 1 else apply_per_frame(lambda frames: F.pixel_unshuffle(frames, p), x)

    def _unpatchify(self, x: Tensor) -> Tensor:
        p = self.cfg.patch_size
        return x if p == 1 else apply_per_frame(lambda frames: F.pixel_shuffle(frames, p), x)

    def _run(self, block: nn.Module, *args: Tensor | None) -> Tensor:
        if self.cfg.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def _fps_embedding(self, fps: Tensor | None, ndim: int, batch: int) -> Tensor | float:
        if fps is None:
            if self.fps_embed is not None and ndim == 5:
                raise ValueError("fps (b,) is required for video input when unet.fps_cond is True")
            return 0.0
        if self.fps_embed is None:
            raise ValueError("fps was given but the UNet was built with fps_cond=False")
        if fps.shape != (batch,):
            raise ValueError(f"fps must have shape ({batch},), got {tuple(fps.shape)}")
        return self.fps_embed(fps)

    def _aug_embedding(self, aug_level: Tensor | None, batch: int) -> Tensor | float:
        if self.aug_embed is None:
            if aug_level is not None:
                raise ValueError("aug_level was given but the UNet was built with aug_level_cond=False")
            return 0.0
        if aug_level is None or aug_level.shape != (batch,):
            got = None if aug_level is None else tuple(aug_level.shape)
            raise ValueError(f"aug_level must have shape ({batch},) when unet.aug_level_cond is True, got {got}")
        return self.aug_embed(aug_level)

    def _check_inputs(self, x: Tensor, extra: Tensor | None) -> None:
        cfg = self.cfg
        if x.ndim == 5 and not cfg.temporal:
            raise ValueError(
                f"got a video input of shape {tuple(x.shape)} (b c t h w) but the UNet has temporal=False; "
                "pass images b c h w or build the UNet with temporal=True"
            )
        if x.ndim not in (4, 5):
            raise ValueError(f"x must be b c h w or b c t h w, got shape {tuple(x.shape)}")
        if x.shape[1] != cfg.in_channels:
            raise ValueError(f"x has {x.shape[1]} channels, the UNet expects in_channels {cfg.in_channels}")
        height, width = x.shape[-2:]
        if height % self.downsample_factor or width % self.downsample_factor:
            raise ValueError(
                f"spatial size {height}x{width} must be divisible by {self.downsample_factor} "
                f"(patch_size * 2 ** (len(channel_mults) - 1))"
            )
        if cfg.extra_in_channels == 0:
            if extra is not None:
                raise ValueError("extra was given but the UNet has extra_in_channels 0")
            return
        expected = (x.shape[0], cfg.extra_in_channels, *x.shape[2:])
        if extra is None or tuple(extra.shape) != expected:
            got = None if extra is None else tuple(extra.shape)
            raise ValueError(f"extra must have shape {expected} (extra_in_channels), got {got}")
