"""Frozen open_clip CLIP (C_x in Make-A-Video): text embedding x_e, per-token states, image embedding y_e.

Building never downloads anything for ``model: custom`` (random init, or a local weights file) or for a
local checkpoint path; only a pretrained *tag* of a named model asks open_clip to download. The BPE
vocabulary of the tokenizer ships inside open_clip.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from einops import rearrange
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.model import CLIP
from open_clip.modified_resnet import ModifiedResNet
from open_clip.pretrained import is_pretrained_cfg
from torch import Tensor, nn

from mav_train.config.schema import ClipConfig
from mav_train.nn.token_cache import CachedTokenizer

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".npz")

# ``model: toy``: the CLIP of the toy world (``recipes/demo/clip.yaml`` trains it). Our choice, by measurement: a
# small open_clip ModifiedResNet on the 32-pixel toy images and a 2-layer text transformer over 16 tokens (toy
# captions are at most 14). A ViT of the same cost (8-pixel patches on 32 pixels) never learned where the shape
# is (position read at chance after 400 steps, against 88% for this ResNet). The same ResNet on 64-pixel input
# (images upsampled) read shape better (94% against 84%) at 4.7 times the image tower's cost (README).
TOY_CLIP_ARCH: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 32, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 96, "heads": 3, "layers": 2},
}


@dataclass(frozen=True)
class TextEncoding:
    """CLIP text encoding of ``b`` captions tokenised to ``n`` (= context length) tokens."""

    pooled: Tensor  # (b, embed_dim): the CLIP text embedding x_e (state at EOT @ text_projection)
    states: Tensor  # (b, n, text_width): text transformer output after ln_final, before the projection
    mask: Tensor  # (b, n) bool: True up to and including the EOT token
    tokens: Tensor  # (b, n) long: the BPE token ids


def _plain(value: Any) -> Any:
    """Nested mappings/sequences (e.g. OmegaConf containers) as plain dicts/lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(v) for v in value]
    return value


def _looks_like_path(value: str) -> bool:
    return os.sep in value or "/" in value or value.lower().endswith(_CHECKPOINT_SUFFIXES)


def _check_named_model(name: str) -> None:
    if ":" in name:  # hf-hub: / local-dir: schemas go to open_clip as they are
        return
    if name not in open_clip.list_models():
        close = difflib.get_close_matches(name, open_clip.list_models(), n=3)
        raise ValueError(
            f"unknown open_clip model {name!r}; close matches: {close} (see open_clip.list_models())"
        )
    model_cfg = open_clip.get_model_config(name)
    if model_cfg.get("custom_text") or "hf_model_name" in model_cfg.get("text_cfg", {}):
        raise TypeError(
            f"FrozenCLIP needs a CLIP with the standard open_clip text transformer; {name!r} has another"
        )


def clip_architecture(cfg: ClipConfig) -> dict[str, Any] | None:
    """``open_clip.model.CLIP`` kwargs for ``model: toy`` / ``custom``; None for a named open_clip model."""
    if cfg.model == "toy":
        return TOY_CLIP_ARCH
    if cfg.model == "custom":
        return _plain(cfg.custom_cfg)
    return None


def build_clip_model(cfg: ClipConfig) -> nn.Module:
    """The open_clip model of ``cfg`` with its weights (random, a local file, or a pretrained tag).

    Random weights come from ``cfg.seed`` inside a forked RNG: every process builds the same CLIP, and the
    caller's global RNG is neither read nor advanced.
    """
    pretrained = cfg.pretrained
    if pretrained == "demo":
        raise ValueError("clip.pretrained=demo names the toy CLIP trained on first use; resolve it to its weights "
                         "file first (mav_train.components.clip_source.resolve_clip_config)")
    expanded = os.path.expanduser(pretrained) if pretrained is not None else None
    local = expanded if expanded is not None and os.path.isfile(expanded) else None
    arch = clip_architecture(cfg)
    if pretrained is not None and local is None and (arch is not None or _looks_like_path(pretrained)):
        raise FileNotFoundError(
            f"CLIP checkpoint file {pretrained!r} does not exist (model={cfg.model!r}; "
            "model=custom/toy takes a local weights file, demo or null)"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if arch is not None:
            model = CLIP(**arch)
        else:
            _check_named_model(cfg.model)
            if pretrained is not None and local is None and ":" not in cfg.model:
                tags = open_clip.list_pretrained_tags_by_model(cfg.model)
                if not is_pretrained_cfg(cfg.model, pretrained):
                    raise ValueError(
                        f"{pretrained!r} is neither a local file nor a pretrained tag of {cfg.model!r}; "
                        f"tags: {tags}"
                    )
            # With a local file: build with random weights, then load the file below.
            model = open_clip.create_model(cfg.model, pretrained=None if local else pretrained)
    if local is not None:
        open_clip.load_checkpoint(model, local)
    if isinstance(model.visual, ModifiedResNet):
        # oneDNN's convolutions run faster on channels-last tensors (the toy CLIP's image tower, forward and
        # backward on 128 images: 0.099 s against 0.139 s on the 2-core CPU); values are unchanged.
        model.visual.to(memory_format=torch.channels_last)
    if not isinstance(model, CLIP):
        raise TypeError(
            f"FrozenCLIP needs an open_clip CLIP model with the standard text transformer, "
            f"got {type(model).__name__} for {cfg.model!r}"
        )
    return model


def clip_fingerprint(model: nn.Module) -> str:
    """A short hash of a CLIP's weights (names, shapes, dtypes and values): two checkpoints trained with the
    same CLIP carry the same fingerprint, whatever the config said."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def clip_preprocess(images: Tensor, size: int, mean: Tensor, std: Tensor) -> Tensor:
    """``b c h w`` in [-1, 1], any size → CLIP input ``b c size size``: bicubic (antialiased) resize of the
    shorter side to ``size``, centre crop, [0, 1], CLIP mean/std normalisation (``mean``/``std``: ``1 c 1 1``)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"CLIP images must be (b, 3, h, w), got {tuple(images.shape)}")
    x = images.to(device=mean.device, dtype=torch.float32)
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    x = x[:, :, top : top + size, left : left + size]
    x = ((x + 1.0) / 2.0).clamp(0.0, 1.0)
    return (x - mean) / std


def clip_normalisation(model: nn.Module) -> tuple[Tensor, Tensor]:
    """The mean and std (``1 c 1 1``) a CLIP expects its input normalised with."""
    pre = open_clip.get_model_preprocess_cfg(model)
    mean = torch.tensor(pre.get("mean", OPENAI_DATASET_MEAN), dtype=torch.float32)
    std = torch.tensor(pre.get("std", OPENAI_DATASET_STD), dtype=torch.float32)
    return rearrange(mean, "c -> 1 c 1 1"), rearrange(std, "c -> 1 c 1 1")


class FrozenCLIP(nn.Module):
    """Frozen CLIP, C_x of Make-A-Video: text → (x_e, per-token states), image → y_e. Always in eval mode.

    ``model`` is ``custom`` (``open_clip.model.CLIP(**custom_cfg)``) or an open_clip name; ``pretrained`` is
    null, a pretrained tag, or a local checkpoint file (loaded with open_clip's own loader; for OpenAI weights
    use the ``-quickgelu`` model names). No gradients flow into it; ``train()`` keeps it in eval mode.
    """

    def __init__(self, cfg: ClipConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = build_clip_model(cfg)
        self.model.requires_grad_(False)
        height, width = _pair(self.model.visual.image_size)
        if height != width:
            raise ValueError(f"FrozenCLIP needs a square CLIP input, got image_size {(height, width)}")
        self._image_size = height
        context = self.model.context_length
        self.tokenizer = CachedTokenizer(open_clip.get_tokenizer(cfg.tokenizer, context_length=context))
        mean, std = clip_normalisation(self.model)
        self.register_buffer("image_mean", mean, persistent=False)
        self.register_buffer("image_std", std, persistent=False)
        self._fingerprint: str | None = None
        self.eval()

    @property
    def fingerprint(self) -> str:
        """:func:`clip_fingerprint` of the weights (computed once: the model is frozen)."""
        if self._fingerprint is None:
            self._fingerprint = clip_fingerprint(self.model)
        return self._fingerprint

    def train(self, mode: bool = True) -> FrozenCLIP:
        """Stays in eval mode whatever ``mode`` is (dropout off, frozen)."""
        return super().train(False)

    @property
    def embed_dim(self) -> int:
        """Width of the pooled text and image embeddings."""
        proj = self.model.text_projection
        if proj is None:
            return self.text_width
        return proj.out_features if isinstance(proj, nn.Linear) else proj.shape[1]

    @property
    def text_width(self) -> int:
        """Width of the per-token text states."""
        return self.model.transformer.width

    @property
    def image_size(self) -> int:
        """Side of CLIP's square image input."""
        return self._image_size

    @property
    def context_length(self) -> int:
        """Number of text tokens ``n``."""
        return self.model.context_length

    def _device(self) -> torch.device:
        return self.model.token_embedding.weight.device

    def tokenize(self, texts: list[str]) -> Tensor:
        """BPE token ids ``(b, n)`` on the model's device (truncated with EOT kept, zero-padded)."""
        return self.tokenizer(list(texts)).to(self._device())

    def _eot_index(self, tokens: Tensor) -> Tensor:
        pool = self.model.text_pool_type
        if pool == "argmax":  # EOT has the largest id of the CLIP BPE vocabulary
            return tokens.argmax(dim=-1)
        if pool == "eos":
            return (tokens == self.model.text_eos_id).int().argmax(dim=-1)
        raise ValueError(f"unsupported text pool type {pool!r} (need argmax or eos)")

    def _project(self, pooled: Tensor) -> Tensor:
        proj = self.model.text_projection
        if proj is None:
            return pooled
        return proj(pooled) if isinstance(proj, nn.Linear) else pooled @ proj

    @torch.no_grad()
    def encode_text(self, texts: list[str], normalize: bool = False) -> TextEncoding:
        """Captions → pooled ``(b, embed_dim)``, states ``(b, n, text_width)``, mask/tokens ``(b, n)``.

        ``normalize`` L2-normalises ``pooled`` (the states are left as they are).
        """
        tokens = self.tokenize(texts)
        model = self.model
        cast_dtype = model.transformer.get_cast_dtype()
        x = model.token_embedding(tokens).to(cast_dtype) + model.positional_embedding.to(cast_dtype)
        states = model.ln_final(model.transformer(x, attn_mask=model.attn_mask))
        eot = self._eot_index(tokens)
        pooled = self._project(states[torch.arange(states.shape[0], device=states.device), eot])
        mask = torch.arange(tokens.shape[1], device=tokens.device) <= rearrange(eot, "b -> b 1")
        if normalize:
            pooled = F.normalize(pooled, dim=-1)
        return TextEncoding(pooled=pooled, states=states, mask=mask, tokens=tokens)

    def preprocess(self, images: Tensor) -> Tensor:
        """``b c h w`` in [-1, 1], any size → CLIP input ``b c s s``: bicubic (antialiased) resize of the
        shorter side to ``s``, centre crop, [0, 1], CLIP mean/std normalisation."""
        return clip_preprocess(images, self._image_size, self.image_mean, self.image_std)

    @torch.no_grad()
    def encode_image(self, images: Tensor, normalize: bool = False) -> Tensor:
        """CLIP image embedding y_e ``(b, embed_dim)`` of ``images`` ``b c h w`` in [-1, 1], any size."""
        x = self.preprocess(images).to(next(self.model.visual.parameters()).dtype)
        return self.model.encode_image(x, normalize=normalize)


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)
