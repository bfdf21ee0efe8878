"""``embed``: img2dataset shards → CLIP embeddings in the clip-retrieval layout (what the prior trains from)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from mav_train.config.load import ConfigError

HELP = """\
Compute CLIP embeddings of image-text shards once, in the clip-retrieval layout the prior trains from.

usage: python -m mav_train embed recipe=NAME out=DIR [data.shards=PATTERN] [--part i/n] [key=value ...]

  recipe      says which CLIP (clip.*), the image preprocessing (data.resolution / data.clip_resolution,
              data.filters, data.holdout_pairs) and the batch size (data.batch_size)
  out         writes out/img_emb/img_emb_{k}.npy, out/text_emb/text_emb_{k}.npy and
              out/metadata/metadata_{k}.parquet (caption, key) for the k-th input shard (float32 rows aligned)
  --part i/n  process only the shards k with k % n == i (SLURM arrays: --part $SLURM_ARRAY_TASK_ID/$N)

One output part per input shard: a part is written under temporary names and renamed when complete, so a rerun
skips finished parts and a crash loses at most the part in progress. Skipped samples (undecodable, empty
captions, filtered) and captions longer than the CLIP context (truncated) are counted and printed.

  python -m mav_train embed recipe=prior data.shards='/data/laion/{00000..09999}.tar' out=/data/laion-emb
  python -m mav_train fit recipe=prior data.embeddings=/data/laion-emb"""

log = logging.getLogger("mav_train")


def parse(args: list[str]) -> tuple[list[str], Path, int, int]:
    out, part, rest = None, "0/1", []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--part" and i + 1 < len(args):
            part, i = args[i + 1], i + 2
            continue
        if arg.startswith("--part="):
            part = arg.split("=", 1)[1]
        elif arg.startswith("out="):
            out = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    if not out:
        raise ConfigError("embed: missing required value 'out' (the embedding folder to write)")
    try:
        index, count = (int(x) for x in part.split("/"))
    except ValueError as err:
        raise ConfigError(f"embed: --part must be i/n, got {part!r}") from err
    if not 0 <= index < count:
        raise ConfigError(f"embed: --part {part}: need 0 <= i < n")
    return rest, Path(out), index, count


def part_done(out: Path, k: int) -> bool:
    from datamodules.embeddings import part_paths

    return all(p.is_file() for p in part_paths(out, k))


def write_part(out: Path, k: int, img: np.ndarray, text: np.ndarray, captions: list[str], keys: list[str]) -> None:
    """The three files of part ``k``, each written to a temporary name and renamed; metadata last (it marks the
    part complete)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from datamodules.embeddings import part_paths

    img_path, text_path, meta_path = part_paths(out, k)
    for path in (img_path, text_path, meta_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    for path, array in ((img_path, img), (text_path, text)):
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    tmp = meta_path.with_name(f".{meta_path.name}.tmp")
    pq.write_table(pa.table({"caption": captions, "key": keys}), tmp)
    os.replace(tmp, meta_path)


def embed_shard(url: str, clip, decoder, batch_size: int, counter, progress) -> tuple[np.ndarray, np.ndarray,
                                                                                         list[str], list[str]]:
    """Image and text embeddings (float32), captions and keys of the decodable samples of one shard."""
    from datamodules.sharding import iter_tar_samples
    from datamodules.skips import SkipSample
    from datamodules.transforms import batch_pixels_to_float

    rng = np.random.default_rng(0)
    imgs, texts, captions, keys, pending = [], [], [], [], []

    def flush() -> None:
        if not pending:
            return
        batch = batch_pixels_to_float(decoder.collate(pending))
        with torch.no_grad():
            imgs.append(clip.encode_image(batch["clip_image"]).float().cpu().numpy())
            texts.append(clip.encode_text(batch["caption"]).pooled.float().cpu().numpy())
        captions.extend(batch["caption"])
        keys.extend(batch["key"])
        progress.update(len(pending))
        pending.clear()

    for sample in iter_tar_samples(url):
        try:
            item = decoder.decode(sample, rng, counter)
        except SkipSample as skip:
            counter.count(skip.reason, str(sample.get("__key__")), skip.detail)
            continue
        pending.append(item)
        if len(pending) == batch_size:
            flush()
    flush()
    dim = clip.embed_dim
    img = np.concatenate(imgs) if imgs else np.zeros((0, dim), np.float32)
    text = np.concatenate(texts) if texts else np.zeros((0, dim), np.float32)
    return img, text, captions, keys


def run(args: list[str]) -> int:
    from datamodules.factory import build_datamodule
    from datamodules.sharding import expand_shards
    from mav_train.cli.fit import recipe_and_overrides, setup_logging
    from mav_train.components.clip_source import build_frozen_clip
    from mav_train.config.load import load_config

    setup_logging()
    rest, out, index, count = parse(args)
    recipe, overrides = recipe_and_overrides(rest)
    cfg = load_config(recipe, overrides)
    if cfg.data.kind != "image_text":
        raise ConfigError(f"embed reads image-text shards; the recipe has data.kind={cfg.data.kind}")
    # The shards are read, not joined to embeddings (a demo recipe's data.embeddings=demo is what this writes).
    data = OmegaConf.merge(cfg.data, {"embeddings": None})
    datamodule = build_datamodule(data, cache_dir=cfg.cache_dir)  # demo shards are written on first use
    shards = expand_shards(datamodule.train_shard_spec(), "data.shards")
    mine = [(k, url) for k, url in enumerate(shards) if k % count == index]
    todo = [(k, url) for k, url in mine if not part_done(out, k)]
    print(f"embed: {len(shards)} shard(s), part {index}/{count}: {len(mine)}, of which {len(mine) - len(todo)} "
          f"already done")
    if not todo:
        return 0
    clip = build_frozen_clip(cfg)
    if torch.cuda.is_available():
        clip = clip.cuda()
    skipped, truncated = embed_parts(cfg, clip, datamodule, out, todo)
    print(f"embed: wrote {len(todo)} part(s) to {out}; skipped {skipped or 'none'}; "
          f"captions truncated to the CLIP context: {truncated}")
    return 0


def embed_parts(cfg, clip, datamodule, out: Path, todo: list[tuple[int, str]]) -> tuple[dict[str, int], int]:
    """Write part ``k`` of ``out`` for every ``(k, shard url)`` in ``todo``, with one progress bar. Returns the
    skipped samples by reason and the number of captions longer than the CLIP context."""
    from tqdm import tqdm

    from datamodules.skips import SkipCounter

    decoder = datamodule.decoder()
    counter = SkipCounter(decoder.reasons)
    truncated = 0
    tokenize = getattr(clip.tokenizer, "encode", None)
    with tqdm(desc="embed", unit="sample") as progress:
        for k, url in todo:
            img, text, captions, keys = embed_shard(url, clip, decoder, cfg.data.batch_size, counter, progress)
            if tokenize is not None:
                truncated += sum(len(tokenize(c)) + 2 > clip.context_length for c in captions)
            write_part(out, k, img, text, captions, keys)
    return {r: c for r, c in counter.as_ints().items() if c}, truncated
