"""Images per second of the image-text datamodule over several epochs, with and without ``data.memory_cache_mb``,
against webdataset's own pipeline on the same shards.

``python -m bench.bench_image_data [--recipe demo/clip] [--epochs 3]``

All three read the demo toy-world shards (20,000 128 px JPEGs in 16 tars, written into the cache on first use) in
batches of the recipe's ``data.batch_size``, each image centre-cropped and resized to ``data.resolution``, in this
process (``data.num_workers: 0``, as the demo recipes run):

- ``webdataset``: ``wds.WebDataset(shards, shardshuffle=..., empty_check=False).shuffle(buffer).decode("pil")``
  with the same bicubic resize (``datamodules.transforms.square_image``), batches of the recipe's size;
- ``datamodule``: ``ImageTextDataModule.train_dataloader()`` with the recipe's data settings (shuffle buffer,
  skip accounting, caption parsing) and ``data.memory_cache_mb=0``;
- ``datamodule + cache``: the same with the recipe's ``data.memory_cache_mb`` (or 256 when the recipe sets none).

Each variant runs ``--epochs`` epochs of the recipe's ``data.epoch_samples``; the table gives images/s per epoch
and over all of them, and the ratios to webdataset's. It also checks that the cached datamodule gave exactly the
batches of the uncached one.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from dataclasses import dataclass

import torch


def _digest(batch: dict, h) -> None:
    h.update(batch["image"].numpy().tobytes())
    h.update("|".join(batch["caption"]).encode())


def run_datamodule(cfg, epochs: int) -> tuple[list[float], str]:
    from datamodules.factory import build_datamodule

    dm = build_datamodule(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    loader = dm.train_dataloader()
    rates, h = [], hashlib.sha256()
    for _ in range(epochs):
        start, n = time.perf_counter(), 0
        for batch in loader:
            _digest(batch, h)
            n += len(batch["caption"])
        rates.append(n / (time.perf_counter() - start))
    return rates, h.hexdigest()[:16]


def run_webdataset(cfg, shards: list[str], epochs: int) -> list[float]:
    import webdataset as wds

    from datamodules.transforms import square_image

    per_epoch, size, batch_size = cfg.data.epoch_samples, cfg.data.resolution, cfg.data.batch_size
    dataset = (wds.WebDataset(shards, shardshuffle=len(shards), empty_check=False).repeat()
               .shuffle(cfg.data.shuffle_buffer).decode("pil").to_tuple("jpg", "txt"))
    stream = iter(dataset)
    rates = []
    for _ in range(epochs):
        start, n = time.perf_counter(), 0
        for _ in range(per_epoch // batch_size):
            items = [next(stream) for _ in range(batch_size)]
            torch.stack([square_image(image.convert("RGB"), size) for image, _ in items])
            n += batch_size
        rates.append(n / (time.perf_counter() - start))
    return rates


@dataclass
class ImageBenchResult:
    recipe: str
    shards: int
    batch_size: int
    epoch_samples: int
    cache_mb: float
    rates: dict[str, list[float]]  # variant -> images/s per epoch
    same_batches: bool  # the cached datamodule gave exactly the uncached one's batches


def run_image_benchmark(cfg, epochs: int) -> ImageBenchResult:
    """The three variants on ``cfg``'s training shards (``cfg.data.num_workers`` should be 0)."""
    from omegaconf import OmegaConf

    from datamodules.image_text import ImageTextDataModule
    from datamodules.sharding import expand_shards

    cache_mb = cfg.data.memory_cache_mb or 256
    dm = ImageTextDataModule(cfg.data)
    dm.prepare_data()
    urls = expand_shards(dm.train_shard_spec(), "data.shards")

    def variant(mb: float):
        return OmegaConf.merge(cfg, {"data": {"memory_cache_mb": mb}})

    plain, plain_digest = run_datamodule(variant(0), epochs)
    cached, cached_digest = run_datamodule(variant(cache_mb), epochs)
    reference = run_webdataset(cfg, urls, epochs)
    return ImageBenchResult(cfg.recipe, len(urls), cfg.data.batch_size, cfg.data.epoch_samples, cache_mb,
                            {"webdataset": reference, "datamodule": plain,
                             f"datamodule + cache {cache_mb:g} MB": cached},
                            plain_digest == cached_digest)


def overall(rates: list[float]) -> float:
    """Images/s over all epochs (epochs of equal size: the harmonic mean)."""
    return len(rates) / sum(1 / r for r in rates)


def format_image_report(result: ImageBenchResult) -> str:
    epochs = len(result.rates["webdataset"])
    reference = overall(result.rates["webdataset"])
    lines = [f"{result.recipe}: {result.shards} shards, batch {result.batch_size}, {result.epoch_samples} images "
             f"per epoch, {epochs} epochs (images/s)",
             f"{'variant':<28}" + "".join(f"{f'epoch {i + 1}':>10}" for i in range(epochs))
             + f"{'all':>10}{'/ webdataset':>14}"]
    for name, rates in result.rates.items():
        lines.append(f"{name:<28}" + "".join(f"{r:>10.0f}" for r in rates) + f"{overall(rates):>10.0f}"
                     + f"{overall(rates) / reference:>13.2f}x")
    lines.append("cached vs uncached datamodule: "
                 + ("the same batches" if result.same_batches else "DIFFERENT batches (a bug)"))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="demo/clip")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    from mav_train.config.load import load_config

    print(format_image_report(run_image_benchmark(load_config(args.recipe, ["data.num_workers=0"]), args.epochs)))


if __name__ == "__main__":
    main()
