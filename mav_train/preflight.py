"""Checks that run before any work starts (before the Trainer, the loaders, the first step): the CLIP's weights
can be had, and every checkpoint a run names exists and reads safely. Each failure is one
:class:`~mav_train.config.load.ConfigError` line that says what to set.

A pretrained CLIP tag (``clip.pretrained=openai``) is looked up in the local caches first (Hugging Face hub,
``~/.cache/clip``); only when it is not there is the download host contacted, once and with a short timeout,
and then the weights are fetched here, so a machine without network fails in seconds rather than after the
hub's retries inside the first training step.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import DictConfig

from mav_train.config.load import ConfigError

HINT = "set clip.pretrained=/path/to/weights (a local open_clip checkpoint file)"
PROBE_TIMEOUT_S = 5.0


def _looks_like_path(value: str) -> bool:
    return "/" in value or os.sep in value or value.lower().endswith((".pt", ".pth", ".bin", ".safetensors"))


def check_clip(clip: DictConfig) -> None:
    """One line naming ``clip.pretrained`` when the weights of ``clip`` cannot be had (missing file, unknown
    tag, not cached with the download host unreachable, a failed download)."""
    pretrained = clip.pretrained
    if pretrained is None or (pretrained == "demo" and clip.model == "toy"):
        return  # random weights, or the toy CLIP trained into the cache on first use: nothing to fetch
    if os.path.isfile(os.path.expanduser(pretrained)):
        return
    where = f"clip.model={clip.model} clip.pretrained={pretrained}"
    if clip.model in ("custom", "toy") or _looks_like_path(pretrained):
        raise ConfigError(f"CLIP weights file not found ({where}): {HINT}")
    if ":" in clip.model:  # hf-hub: / local-dir: model names: open_clip resolves them itself
        return
    import open_clip
    from open_clip.pretrained import download_pretrained, get_pretrained_cfg, is_pretrained_cfg

    if clip.model not in open_clip.list_models():
        raise ConfigError(f"unknown open_clip model clip.model={clip.model} (see open_clip.list_models())")
    if not is_pretrained_cfg(clip.model, pretrained):
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(clip.model)) or "none"
        raise ConfigError(f"'{pretrained}' is not a pretrained tag of {clip.model} (tags: {tags}) nor a local "
                          f"file: {HINT}")
    cfg = get_pretrained_cfg(clip.model, pretrained)
    if cached_weights(cfg) is not None:
        return
    host = download_host(cfg)
    unreachable = probe(host)
    if unreachable is not None:
        raise ConfigError(f"CLIP weights ({where}) are not in the local cache and {host} cannot be reached "
                          f"({unreachable}): {HINT}, or download them once where there is network")
    try:
        download_pretrained(cfg)
    except Exception as err:  # hub errors come in many types; the one line carries the first of it
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise ConfigError(f"could not download CLIP weights ({where}): {first}: {HINT}") from err


def cached_weights(cfg: dict) -> str | None:
    """The local file open_clip would load for a pretrained config, if it is already cached (no network)."""
    if cfg.get("file"):
        return cfg["file"] if os.path.isfile(cfg["file"]) else None
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import hf_hub_download
        from open_clip.pretrained import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

        model_id, filename = os.path.split(hub)
        names = [filename] if filename else [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
        for name in names:
            try:
                return hf_hub_download(model_id, name, local_files_only=True)
            except Exception:  # not cached (LocalEntryNotFoundError), or an incomplete entry
                continue
        return None
    url = cfg.get("url", "")
    local = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
    return str(local) if url and local.is_file() else None


def download_host(cfg: dict) -> str:
    if cfg.get("hf_hub"):
        from huggingface_hub import constants

        return urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    return urlparse(cfg.get("url", "")).hostname or "?"


def probe(host: str, port: int = 443) -> str | None:
    """None when ``host:port`` accepts a TCP connection within a few seconds, else why not (one try)."""
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return None
    except OSError as err:
        return f"{type(err).__name__}: {err}"


def check_checkpoint(path: str, key: str) -> None:
    """One line naming ``key`` when the checkpoint at ``path`` is missing, unreadable or unsafe to read."""
    from mav_train.checkpoints import CheckpointError, checkpoint_kind, checkpoint_meta

    if not Path(path).exists():
        raise ConfigError(f"{key}: checkpoint not found: {path}")
    try:
        checkpoint_kind(Path(path))
        checkpoint_meta(Path(path))
    except (CheckpointError, ValueError) as err:
        raise ConfigError(f"{key}: {err}") from err
