"""``data.embeddings: demo``: the demo shards' CLIP embeddings, computed once into the cache.

A decoder trained on the demo shards then reads its conditioning embeddings by key (as with any ``embed`` folder)
instead of running the CLIP image tower on every batch; on this project's 2-core CPU that tower took about 40% of
the toy decoder's step. The folder is the ``embed`` verb's clip-retrieval layout, written next to the demo shards;
its name hashes the demo set, the image preprocessing and the CLIP's weight fingerprint, so another CLIP or
another toy world gets a folder of its own. A file lock makes concurrent first uses (DDP ranks) wait for one
computation; parts are renamed into place when complete, so an interrupted first use resumes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from mav_train.config.load import ConfigError

log = logging.getLogger(__name__)

DEMO = "demo"


def resolve_demo_embeddings(cfg: DictConfig) -> DictConfig:
    """``cfg`` with ``data.embeddings: demo`` replaced by the folder of the demo shards' embeddings (a read-only
    copy), computed first when this cache has none for the current demo set and CLIP. Other configs: ``cfg``."""
    from omegaconf import OmegaConf

    if cfg.data.embeddings != DEMO:
        return cfg
    if cfg.data.kind != "image_text":
        raise ConfigError(f"data.embeddings=demo holds image embeddings of the demo image shards; data.kind is "
                          f"{cfg.data.kind} (set data.embeddings=null)")
    if cfg.data.shards is not None or not cfg.data.demo:
        # A demo recipe pointed at the user's own shards: there are no demo embeddings to read.
        log.info("data.embeddings=demo applies to the built-in demo shards only; with data.shards set the CLIP image "
                 "tower runs on every batch (precompute with `embed` and pass data.embeddings=FOLDER instead)")
        folder = None
    else:
        folder = str(ensure_demo_embeddings(cfg))
    out = OmegaConf.merge(cfg, {"data": {"embeddings": folder}})
    OmegaConf.set_readonly(out, True)
    return out


def ensure_demo_embeddings(cfg: DictConfig) -> Path:
    """The embedding folder of ``cfg``'s demo shards under ``cfg``'s CLIP (computed on first use)."""
    import torch
    from omegaconf import OmegaConf

    from datamodules.factory import build_datamodule
    from datamodules.sharding import expand_shards
    from mav_train.cli.embed import embed_parts, part_done
    from mav_train.components.clip_source import build_frozen_clip

    data = OmegaConf.merge(cfg.data, {"embeddings": None})
    datamodule = build_datamodule(data, cache_dir=cfg.get("cache_dir"))
    shards = expand_shards(datamodule.train_shard_spec(), "data.shards")
    clip = build_frozen_clip(cfg)
    key = {"shards": shards, "clip": clip.fingerprint, "clip_resolution": datamodule.clip_resolution,
           "filters": list(data.filters), "holdout_pairs": list(data.holdout_pairs)}
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:12]
    out = Path(shards[0]).parent.parent / f"embeddings-{digest}"
    todo = [(k, url) for k, url in enumerate(shards) if not part_done(out, k)]
    if not todo:
        return out
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        todo = [(k, url) for k, url in todo if not part_done(out, k)]
        if todo:
            log.info("data.embeddings=demo: computing the CLIP embeddings of %d demo shard(s) once, into %s",
                     len(todo), out)
            with torch.inference_mode():
                skipped, _ = embed_parts(cfg, clip, datamodule, out, todo)
            if skipped:
                log.info("data.embeddings=demo: samples skipped while embedding: %s", skipped)
    return out
