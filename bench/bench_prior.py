"""Prior P benchmark: our prior's training step against DALLE2-pytorch's, and prior training throughput from an
embedding folder against from image shards.

Run from the repo root: ``python -m bench.bench_prior [--quick | --vit-l]``. Two parts:

1. Step time (issue 8's target: ours / DALLE2 <= 0.8). Our ``Prior`` component (``PriorTransformer``) against
   DALLE2-pytorch's ``DiffusionPrior`` around its ``DiffusionPriorNetwork``, both given the same precomputed
   batch (pooled text embedding, per-token text states with zeroed padding, unit-norm image embedding; no CLIP),
   the same dtype (float32), no dropout, 10% text dropout for guidance, x0 prediction, cosine schedule with 1000
   steps and plain MSE. One step = the diffusion loss (timesteps, noise, q_sample, network, MSE) + backward +
   ``zero_grad``. DALLE2's network width is its image-embedding width (it asserts so) and it reads text
   states of that width, so only its depth (and, if no depth at its default ``ff_mult`` 4 comes within 10%,
   ``ff_mult`` 3 or 2) is searched for the parameter count closest to ours; where the CLIP text width differs
   from the embedding width a bias-free ``Linear`` (counted) maps the text states. Timing as
   ``bench.bench_model``: both models in one process, interleaved rounds with rotating order, medians of the
   per-round ratios.
2. Throughput (issue 8's target: embeddings / shards >= 5x samples/s). Toy-world image shards (the demo set's
   generator and resolution) are written into a temporary folder and embedded once with the ``embed`` verb's
   code (``mav_train.cli.embed.embed_parts``); then the same prior (``recipes/demo/prior.yaml``) trains from the
   embedding folder (``data.embeddings``) and from the shards (``data.shards``: the CLIP image tower runs on
   every batch) with the recipe's batch size and loader workers. A step is the whole loop body of a bare
   training loop: next batch from ``train_dataloader()``, ``on_after_batch_transfer``, ``Prior.prepare_batch``,
   diffusion loss, backward, AdamW step, EMA update (no Lightning, logging, validation or checkpoints).
   ``--vit-l``: the same with ViT-L/14's towers at seeded random weights (fewer images and steps).
3. Sampling (no target): ``sample_prompts`` x ``sample_candidates`` embeddings with DDIM and guidance, ours as
   ``generate`` samples (the text tokens' keys and values computed once per prompt), ours running the whole
   sequence at every step, and DALLE2's ``p_sample_loop_ddim`` (its whole sequence, twice per step) with the
   same number of network calls; interleaved rounds.

The CLIP is the toy world's CLIP architecture with seeded random weights (``clip.pretrained=null``) unless
``--clip-pretrained demo`` is given: the weights do not change the compute, and a fresh machine would otherwise
train the toy CLIP first (~14 min). Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import importlib
import importlib.metadata
import json
import logging
import math
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from bench.bench_fit_overhead import torch_threads
from bench.bench_model import (
    PARAM_TOLERANCE,
    count_parameters,
    met,
    package_versions,
    paired_ratio,
    time_steps_on_clocks,
)
from mav_train.components.prior import Prior, select_candidates
from mav_train.config.load import load_config
from mav_train.nn.encoders import TextEncoding

DALLE2_MODULE = "dalle2_pytorch"
DALLE2_DIST = "dalle2-pytorch"
STEP_TARGET = 0.8  # ours / DALLE2 step time
THROUGHPUT_TARGET = 5.0  # samples/s from the embedding folder / from the image shards
DALLE2_FF_MULTS = (4, 3, 2)  # 4 = DALLE2's default and ours; the others only if no depth at 4 comes within 10%
DALLE2_MAX_DEPTH = 64
DALLE2_DIM_HEAD = 64  # DALLE2's default head width
TIMESTEPS = 1000
EMBEDDINGS, SHARDS = "embeddings", "shards"


@dataclass(frozen=True)
class PriorSize:
    """Shapes of one step comparison: the CLIP's widths, our network and the batch."""

    name: str
    embed_dim: int  # CLIP embedding width (image and pooled text)
    text_dim: int  # CLIP text transformer width (per-token states)
    text_tokens: int  # CLIP context length
    dim: int  # our transformer width
    depth: int
    heads: int
    batch: int

    def describe(self) -> str:
        return (f"{self.name}: CLIP embed {self.embed_dim}, text states {self.text_tokens} x {self.text_dim}; "
                f"ours dim {self.dim} x depth {self.depth}, {self.heads} heads; batch {self.batch}")


DEMO = PriorSize("demo", embed_dim=64, text_dim=96, text_tokens=16, dim=128, depth=4, heads=4, batch=128)
VIT_L_MID = PriorSize("vit-l-mid", embed_dim=768, text_dim=768, text_tokens=77, dim=512, depth=6, heads=8, batch=16)
VIT_L_WIDE = PriorSize("vit-l-wide", embed_dim=768, text_dim=768, text_tokens=77, dim=768, depth=6, heads=12,
                       batch=8)


@dataclass(frozen=True)
class PriorBenchSettings:
    """What to run. ``repeats`` / ``throughput_repeats`` are the interleaved rounds of the two parts."""

    parts: tuple[str, ...] = ("step", "throughput", "sample")
    threads: int = 1  # torch threads of this process (loader workers use 1)
    seed: int = 0
    p_drop_text: float = 0.1  # text dropout for guidance, both priors (the demo recipe's and DALL-E 2's)
    # step comparison
    sizes: tuple[PriorSize, ...] = (DEMO, VIT_L_MID, VIT_L_WIDE)
    warmup: int = 1
    repeats: int = 5
    # throughput
    recipe: str = "demo/prior"
    clip_pretrained: str | None = None  # null: seeded random toy CLIP; "demo": the trained one (cached)
    # an open_clip architecture (e.g. ViT-L-14) with seeded random weights instead of the toy CLIP: the compute of
    # the paper-scale towers; the prior keeps the recipe's network, its input widths set from that CLIP
    clip_model: str | None = None
    num_samples: int = 4096  # toy-world images written (10 of the 50 colour x shape pairs are held out)
    samples_per_shard: int = 1024
    image_resolution: int = 128  # the demo set's (datamodules.demo.DemoSpec)
    batch_size: int = 0  # 0: the recipe's
    workers: int = -1  # loader workers; -1: the recipe's
    steps: int = 16  # timed steps per run
    warmup_steps: int = 3  # steps dropped at the start of every run (worker start, first calls)
    throughput_repeats: int = 3
    # sampling (part 3): prompts x candidates, DDIM steps, guidance; sizes as part 1 but batch = prompts
    sample_prompts: int = 8
    sample_candidates: int = 2
    sample_steps: int = 10
    sample_guidance: float = 2.0
    sample_repeats: int = 3
    sample_sizes: tuple[PriorSize, ...] = (DEMO, VIT_L_MID)


# The throughput part with ViT-L/14's towers (the width of LAION's published embeddings) at random weights: one
# image costs ~1 s of one CPU thread there, so fewer images and smaller, fewer steps.
VIT_L_THROUGHPUT = dict(clip_model="ViT-L-14", num_samples=128, samples_per_shard=64, batch_size=8, steps=4,
                        warmup_steps=1, throughput_repeats=2)

QUICK = PriorBenchSettings(sizes=(DEMO,), repeats=3, num_samples=1536, samples_per_shard=512, steps=6,
                           warmup_steps=2, throughput_repeats=2, sample_repeats=2, sample_sizes=(DEMO,))


# ---------------------------------------------------------------------------------------------- the batch


@dataclass
class PriorBatch:
    """One precomputed batch, as both priors train from it."""

    text_emb: Tensor  # (b, embed_dim) pooled CLIP text embedding
    text_states: Tensor  # (b, n, text_dim) per-token text states; rows after EOT are zero (DALLE2's padding)
    text_mask: Tensor  # (b, n) bool, True up to and including EOT
    image_emb: Tensor  # (b, embed_dim) unit-norm CLIP image embedding


def make_batch(size: PriorSize, seed: int) -> PriorBatch:
    """Random embeddings of CLIP's shapes; caption lengths uniform in [2, n] tokens."""
    gen = torch.Generator().manual_seed(seed)
    b, n = size.batch, size.text_tokens
    lengths = torch.randint(2, n + 1, (b,), generator=gen)
    mask = torch.arange(n) < lengths[:, None]
    states = torch.randn(b, n, size.text_dim, generator=gen) * mask[..., None]
    text_emb = torch.randn(b, size.embed_dim, generator=gen)
    image_emb = F.normalize(torch.randn(b, size.embed_dim, generator=gen), dim=-1)
    return PriorBatch(text_emb, states, mask, image_emb)


# ---------------------------------------------------------------------------------------------- ours


def ours_config(size: PriorSize, settings: PriorBenchSettings) -> DictConfig:
    """The demo prior recipe at ``size``: x0, cosine, 1000 steps, plain MSE, no dropout, l2 scaling (as DALLE2)."""
    overrides = [
        f"prior.embed_dim={size.embed_dim}", f"prior.text_dim={size.text_dim}",
        f"prior.text_tokens={size.text_tokens}", f"prior.dim={size.dim}", f"prior.depth={size.depth}",
        f"prior.heads={size.heads}", "prior.ff_mult=4", "prior.dropout=0.0", "prior.normalization=l2",
        "diffusion.parameterization=x0", "diffusion.schedule=cosine", f"diffusion.timesteps={TIMESTEPS}",
        "diffusion.min_snr_gamma=0.0", f"model.p_drop_text={settings.p_drop_text}", "clip.pretrained=null",
        "ema.enabled=false",
    ]
    return load_config("demo/prior", overrides)


def ours_step(prior: Prior, batch: PriorBatch) -> Callable[[], None]:
    """Our training step: ``Prior.normalize`` (unit norm x sqrt(d)), ``diffusion_loss``, backward, zero_grad."""
    text = TextEncoding(pooled=batch.text_emb, states=batch.text_states, mask=batch.text_mask,
                        tokens=torch.zeros(batch.text_mask.shape, dtype=torch.long))
    cond = prior.conditions(text, batch.text_emb)
    prior.train()

    def step() -> None:
        prior.diffusion_loss(prior.normalize(batch.image_emb), cond).backward()
        prior.zero_grad(set_to_none=True)

    return step


# ---------------------------------------------------------------------------------------------- DALLE2-pytorch


def dalle2_import_error() -> str | None:
    """None if DALLE2-pytorch imports, else why not (its import warns about deprecated torch.cuda.amp: muted)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importlib.import_module(DALLE2_MODULE)
    except Exception as error:  # any failure to import means the baseline cannot run here
        return f"cannot import {DALLE2_MODULE}: {type(error).__name__}: {error}"
    return None


def dalle2_network_kwargs(size: PriorSize, depth: int, ff_mult: int) -> dict[str, Any]:
    """``DiffusionPriorNetwork`` arguments: width = the image-embedding width (DALLE2 requires it), heads of
    its default width 64, a learned embedding per timestep, text padded to our context length (not its default
    256, which would lengthen its sequence); dropout 0 and the rest at its defaults."""
    return {
        "dim": size.embed_dim,
        "depth": depth,
        "dim_head": DALLE2_DIM_HEAD,
        "heads": max(1, size.embed_dim // DALLE2_DIM_HEAD),
        "ff_mult": ff_mult,
        "num_timesteps": TIMESTEPS,
        "max_text_len": size.text_tokens,
        "attn_dropout": 0.0,
        "ff_dropout": 0.0,
    }


class Dalle2Prior(nn.Module):
    """DALLE2-pytorch's training step on precomputed embeddings: ``DiffusionPrior`` (no CLIP, x0 prediction, l2
    loss, cosine schedule) around a ``DiffusionPriorNetwork``. Its network reads text states of the embedding
    width; where the CLIP text width differs, a bias-free ``Linear`` maps them (zero padding rows stay zero, which
    is how DALLE2 finds the padding)."""

    def __init__(self, size: PriorSize, network: dict[str, Any], p_drop_text: float) -> None:
        super().__init__()
        from dalle2_pytorch import DiffusionPrior, DiffusionPriorNetwork

        self.adapter = None
        if size.text_dim != size.embed_dim:
            self.adapter = nn.Linear(size.text_dim, size.embed_dim, bias=False)
        self.prior = DiffusionPrior(
            DiffusionPriorNetwork(**network), image_embed_dim=size.embed_dim, timesteps=TIMESTEPS,
            text_cond_drop_prob=p_drop_text, image_cond_drop_prob=0.0, loss_type="l2", predict_x_start=True,
            beta_schedule="cosine", condition_on_text_encodings=True,
        )

    def forward(self, batch: PriorBatch) -> Tensor:
        """The diffusion loss (scalar) of ``batch``."""
        states = batch.text_states if self.adapter is None else self.adapter(batch.text_states)
        # DiffusionPrior scales the image embedding by sqrt(d) in place: hand it a copy.
        return self.prior(text_embed=batch.text_emb, image_embed=batch.image_emb.clone(), text_encodings=states)


def dalle2_step(model: Dalle2Prior, batch: PriorBatch) -> Callable[[], None]:
    """DALLE2's training step: ``DiffusionPrior.forward`` (loss), backward, zero_grad."""
    model.train()

    def step() -> None:
        model(batch).backward()
        model.zero_grad(set_to_none=True)

    return step


def dalle2_parameters(size: PriorSize, depth: int, ff_mult: int) -> int:
    """Parameter count of DALLE2's network (+ adapter), built on the meta device."""
    from dalle2_pytorch import DiffusionPriorNetwork

    with torch.device("meta"):
        count = count_parameters(DiffusionPriorNetwork(**dalle2_network_kwargs(size, depth, ff_mult)))
    return count + (size.text_dim * size.embed_dim if size.text_dim != size.embed_dim else 0)


def match_dalle2(size: PriorSize, target: int) -> tuple[dict[str, Any], int]:
    """DALLE2 network arguments with the parameter count closest to ``target`` (in log ratio): depth searched at
    ``ff_mult`` 4; 3 and 2 are tried only when no depth at 4 is within ``PARAM_TOLERANCE``."""
    best: tuple[float, dict[str, Any], int] | None = None
    for ff_mult in DALLE2_FF_MULTS:
        # Parameters grow linearly with depth: two meta builds give every depth.
        one, two = dalle2_parameters(size, 1, ff_mult), dalle2_parameters(size, 2, ff_mult)
        for depth in range(1, DALLE2_MAX_DEPTH + 1):
            count = one + (depth - 1) * (two - one)
            off = abs(math.log(count / target))
            if best is None or off < best[0]:
                best = (off, dalle2_network_kwargs(size, depth, ff_mult), count)
        if best[0] <= math.log1p(PARAM_TOLERANCE):
            break
    assert best is not None
    return best[1], best[2]


# ---------------------------------------------------------------------------------------------- part 1


# perf_counter; process_time (with one torch thread: blind to other users' load)
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


@dataclass
class StepResult:
    """One size: parameter counts and per-round step times (``times[clock][model]``) of ``ours`` and
    ``dalle2`` (if it ran)."""

    size: PriorSize
    params: dict[str, int]
    times: dict[str, dict[str, list[float]]]
    dalle2_network: dict[str, Any] | None = None
    skipped: str | None = None

    def ratio(self, clock: str = "wall") -> float | None:
        """Median over rounds of t_ours / t_dalle2 (None when DALLE2 did not run)."""
        if "dalle2" not in self.times[clock]:
            return None
        return paired_ratio(self.times[clock]["ours"], self.times[clock]["dalle2"])

    def median(self, model: str, clock: str = "wall") -> float | None:
        return statistics.median(self.times[clock][model]) if model in self.times[clock] else None

    def params_within(self) -> bool | None:
        if "dalle2" not in self.params:
            return None
        return abs(self.params["dalle2"] / self.params["ours"] - 1) <= PARAM_TOLERANCE


def run_step_size(size: PriorSize, settings: PriorBenchSettings, skipped: str | None) -> StepResult:
    """Build both priors at ``size`` and time their steps in interleaved rounds on one shared batch."""
    torch.manual_seed(settings.seed)
    ours = Prior(ours_config(size, settings))
    batch = make_batch(size, settings.seed)
    steps = {"ours": ours_step(ours, batch)}
    params = {"ours": count_parameters(ours.network)}
    network = None
    if skipped is None:
        network, _ = match_dalle2(size, params["ours"])
        dalle2 = Dalle2Prior(size, network, settings.p_drop_text)
        steps["dalle2"] = dalle2_step(dalle2, batch)
        params["dalle2"] = count_parameters(dalle2)
    times = time_steps_on_clocks(steps, settings.warmup, settings.repeats, CLOCKS)
    return StepResult(size, params, times, network, skipped)


def format_step(result: StepResult) -> list[str]:
    """Table and target lines of one size (step times wall / CPU)."""
    size, ours_params = result.size, result.params["ours"]
    lines = [f"== {size.describe()} ==",
             f"{'model':<52}{'params':>9} {'vs ours':>8} {'step s wall/cpu':>16} {'ours/it wall/cpu':>17}"]
    label = f"ours: Prior / PriorTransformer dim {size.dim} x {size.depth}"
    lines.append(f"{label:<52}{ours_params / 1e6:8.2f}M {'':>8} "
                 f"{result.median('ours'):7.3f} /{result.median('ours', 'cpu'):7.3f}")
    if result.skipped is not None:
        lines.append(f"{'DALLE2-pytorch DiffusionPrior':<52}skipped: {result.skipped}")
        return lines
    net = result.dalle2_network or {}
    adapter = " + text Linear" if size.text_dim != size.embed_dim else ""
    label = f"DALLE2 DiffusionPrior dim {net['dim']} x {net['depth']}, ff {net['ff_mult']}{adapter}"
    delta = 100 * (result.params["dalle2"] / ours_params - 1)
    wall, cpu = result.ratio("wall"), result.ratio("cpu")
    lines.append(f"{label:<52}{result.params['dalle2'] / 1e6:8.2f}M {delta:+7.1f}% "
                 f"{result.median('dalle2'):7.3f} /{result.median('dalle2', 'cpu'):7.3f} {wall:8.2f} /{cpu:6.2f}")
    rounds = {clock: " ".join(f"{o / d:.2f}" for o, d in zip(result.times[clock]["ours"],
                                                              result.times[clock]["dalle2"], strict=True))
              for clock in CLOCKS}
    lines.append(f"parameters within {PARAM_TOLERANCE:.0%}: {result.params_within()}; rounds ours/DALLE2 wall: "
                 f"{rounds['wall']}; cpu: {rounds['cpu']}")
    verdicts = []
    for clock, ratio in (("wall", wall), ("cpu", cpu)):
        slower = ", ours slower" if ratio > 1 else ""
        verdicts.append(f"{clock} {ratio:.2f} -> {met(ratio <= STEP_TARGET)}{slower}")
    lines.append(f"target: ours / DALLE2 <= {STEP_TARGET}: " + "; ".join(verdicts))
    return lines


def step_header(settings: PriorBenchSettings) -> list[str]:
    return [
        "Part 1: training step of the prior P against DALLE2-pytorch's DiffusionPrior(DiffusionPriorNetwork)",
        f"step = diffusion loss (uniform timestep, noise, q_sample, network, MSE to x0) + backward + zero_grad on one "
        f"fixed batch (pooled text emb, per-token text states with zeroed padding, unit-norm image emb x sqrt(d) "
        f"in both); float32; no dropout; text dropped {settings.p_drop_text:.0%} (both: learned null tokens); "
        f"cosine schedule, {TIMESTEPS} steps, x0 prediction, plain MSE.",
        "DALLE2: width = image-embedding width (its DiffusionPrior asserts it), heads of 64, one learned embedding "
        "per timestep, max_text_len = our context length; depth searched (ff_mult 4, else 3/2) for the parameter "
        "count closest to ours; a bias-free text Linear where the CLIP text width differs from the embedding width.",
        f"step s = median of {settings.repeats} interleaved rounds (rotating order) after {settings.warmup} "
        "warm-up step(s), on two clocks: wall (perf_counter) and this process's CPU time (process_time; with one "
        "torch thread it does not count time lost to other users' load); ours/it = median over rounds of "
        "t_ours / t_DALLE2 (< 1: ours faster).",
    ]


# ---------------------------------------------------------------------------------------------- part 2


def throughput_config(settings: PriorBenchSettings, shards: Path, embeddings: Path | None) -> DictConfig:
    """The recipe on ``shards`` (``embeddings`` None) or on the embedding folder, with exactly the batches of one
    run per epoch, no validation rows, the benchmark's CLIP."""
    base = load_config(settings.recipe, [])
    batch = settings.batch_size or base.data.batch_size
    workers = base.data.num_workers if settings.workers < 0 else settings.workers
    pretrained = settings.clip_pretrained if settings.clip_pretrained is not None else "null"
    overrides = [
        f"clip.pretrained={pretrained}", f"data.batch_size={batch}", f"data.num_workers={workers}",
        "data.val_samples=0", f"data.epoch_samples={(settings.warmup_steps + settings.steps) * batch}",
        f"data.shards={shards}", f"data.embeddings={embeddings if embeddings is not None else 'null'}",
        *clip_model_overrides(settings),
    ]
    return load_config(settings.recipe, overrides)


def clip_model_overrides(settings: PriorBenchSettings) -> list[str]:
    """``clip.model`` and the prior's input widths for ``settings.clip_model`` (none for the recipe's CLIP)."""
    return [] if settings.clip_model is None else list(_clip_model_overrides(settings.recipe, settings.clip_model))


@functools.cache
def _clip_model_overrides(recipe: str, model: str) -> tuple[str, ...]:
    """The widths are read from the model once (a ViT-L/14 build takes seconds; every run config asks)."""
    from mav_train.components.clip_source import build_frozen_clip

    clip_only = (f"clip.model={model}", "clip.pretrained=null")
    clip = build_frozen_clip(load_config(recipe, list(clip_only)))
    return (*clip_only, f"prior.embed_dim={clip.embed_dim}", f"prior.text_dim={clip.text_width}",
            f"prior.text_tokens={clip.context_length}")


def write_and_embed(settings: PriorBenchSettings, root: Path, clip) -> tuple[Path, Path, dict[str, Any]]:
    """Toy-world image shards under ``root/shards`` and their embedding folder ``root/embeddings`` (written by
    the ``embed`` verb's ``embed_parts``). Returns both folders and what was written."""
    from datamodules.demo import write_image_shards
    from datamodules.factory import build_datamodule
    from datamodules.sharding import expand_shards
    from mav_train.cli.embed import embed_parts

    shard_dir, out = root / "shards", root / "embeddings"
    started = time.perf_counter()
    paths = write_image_shards(shard_dir, settings.num_samples, settings.samples_per_shard,
                               resolution=settings.image_resolution, seed=settings.seed)
    written = time.perf_counter()
    cfg = throughput_config(settings, shard_dir, None)
    datamodule = build_datamodule(cfg.data)
    todo = list(enumerate(expand_shards(datamodule.train_shard_spec(), "data.shards")))
    with torch.inference_mode():
        skipped, _ = embed_parts(cfg, clip, datamodule, out, todo)
    rows = sum(np.load(p, mmap_mode="r").shape[0] for p in (out / "img_emb").glob("img_emb_*.npy"))
    info = {"shards": len(paths), "samples": settings.num_samples, "rows": rows, "skipped": skipped,
            "write_s": written - started, "embed_s": time.perf_counter() - written}
    return shard_dir, out, info


@dataclass
class SourceRun:
    """One training run from one source: samples/s after the warm-up and mean seconds per step by phase."""

    samples_per_s: float
    wait_s: float  # waiting for the next batch from the loader
    prepare_s: float  # on_after_batch_transfer + Prior.prepare_batch (CLIP towers)
    train_s: float  # loss forward, backward, AdamW step, EMA update


def train_from(prior: Prior, optimizer: torch.optim.Optimizer, cfg: DictConfig,
               settings: PriorBenchSettings) -> SourceRun:
    """Train ``prior`` for ``warmup_steps + steps`` batches of ``cfg``'s datamodule; time the last ``steps``."""
    from datamodules.factory import build_datamodule

    datamodule = build_datamodule(cfg.data, component="prior")
    loader = datamodule.train_dataloader()
    prior.train()
    stamps, sizes, phases = [time.perf_counter()], [], []
    for raw in loader:
        arrived = time.perf_counter()
        batch = datamodule.on_after_batch_transfer(raw, 0)
        x0, cond = prior.prepare_batch(batch)
        prepared = time.perf_counter()
        loss = prior.diffusion_loss(x0, cond)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        prior.update_ema(len(sizes))
        stamps.append(time.perf_counter())
        sizes.append(x0.shape[0])
        phases.append((arrived - stamps[-2], prepared - arrived, stamps[-1] - prepared))
    del loader, datamodule
    gc.collect()  # shut the persistent workers down before the next run
    expected = settings.warmup_steps + settings.steps
    if len(sizes) != expected:
        raise RuntimeError(f"the datamodule gave {len(sizes)} batches, expected {expected}")
    first = settings.warmup_steps
    rate = sum(sizes[first:]) / (stamps[-1] - stamps[first])
    wait, prepare, train = (statistics.fmean(p[i] for p in phases[first:]) for i in range(3))
    return SourceRun(rate, wait, prepare, train)


@dataclass
class ThroughputResult:
    settings: PriorBenchSettings
    cfg: DictConfig  # the embedding-folder run's config (batch, workers, prior)
    data: dict[str, Any]
    params: int
    runs: dict[str, list[SourceRun]] = field(default_factory=dict)

    def samples_per_s(self, source: str) -> float:
        return statistics.median(run.samples_per_s for run in self.runs[source])

    def ratio(self) -> float:
        """Median over rounds of (embeddings samples/s) / (shards samples/s)."""
        pairs = zip(self.runs[EMBEDDINGS], self.runs[SHARDS], strict=True)
        return statistics.median(e.samples_per_s / s.samples_per_s for e, s in pairs)


@contextlib.contextmanager
def quiet_skips() -> Iterator[None]:
    """Mute the per-sample skip warnings (the recipe's held-out pairs are skipped by design; the counts are
    printed in the report), in this process and in the loader workers forked meanwhile."""
    skip_logger = logging.getLogger("datamodules.skips")
    previous = skip_logger.level
    skip_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        skip_logger.setLevel(previous)


def run_throughput(settings: PriorBenchSettings, work_dir: Path) -> ThroughputResult:
    """Write and embed the shards, then train the same prior from both sources in interleaved rounds."""
    with quiet_skips():
        return _run_throughput(settings, work_dir)


def _run_throughput(settings: PriorBenchSettings, work_dir: Path) -> ThroughputResult:
    from mav_train.components.clip_source import build_frozen_clip

    cfg = throughput_config(settings, work_dir / "shards", None)
    clip = build_frozen_clip(cfg)
    shard_dir, emb_dir, data = write_and_embed(settings, work_dir, clip)
    configs = {EMBEDDINGS: throughput_config(settings, shard_dir, emb_dir),
               SHARDS: throughput_config(settings, shard_dir, None)}
    torch.manual_seed(settings.seed)
    prior = Prior(configs[EMBEDDINGS], clip)
    prior.check_clip()
    embeddings = np.concatenate([np.load(p) for p in sorted((emb_dir / "img_emb").glob("img_emb_*.npy"))])
    prior.set_statistics(torch.from_numpy(embeddings))  # what on_fit_start does (standardize: mean/std)
    optimizer = prior.configure_optimizers()["optimizer"]
    result = ThroughputResult(settings, configs[EMBEDDINGS], data, count_parameters(prior.network))
    names = list(configs)
    for repeat in range(settings.throughput_repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            result.runs.setdefault(name, []).append(train_from(prior, optimizer, configs[name], settings))
    return result


def format_throughput(result: ThroughputResult) -> list[str]:
    s, cfg, data = result.settings, result.cfg, result.data
    p = cfg.prior
    clip = "seeded random toy CLIP (clip.pretrained=null; same compute as the trained demo CLIP)"
    if s.clip_model is not None:
        clip = f"open_clip {s.clip_model} with seeded random weights (the compute of its towers, not its embeddings)"
    elif s.clip_pretrained is not None:
        clip = f"toy CLIP, clip.pretrained={s.clip_pretrained}"
    lines = [
        "Part 2: prior training throughput, embedding folder (data.embeddings) vs image shards (data.shards)",
        f"prior: recipe {s.recipe} (PriorTransformer dim {p.dim} x {p.depth}, {result.params / 1e6:.2f}M params, "
        f"embed {p.embed_dim}, text {p.text_tokens} x {p.text_dim}); {clip}",
        f"data: {data['samples']} toy-world images ({s.image_resolution} px, the demo set's) in {data['shards']} "
        f"shards, written in {data['write_s']:.1f} s; embedded once with the embed verb's embed_parts into "
        f"{data['rows']} rows in {data['embed_s']:.1f} s (held-out colour x shape pairs skipped: "
        f"{data['skipped'] or 'none'}); batch {cfg.data.batch_size}, {cfg.data.num_workers} loader worker(s)",
        "step = next batch from train_dataloader() + on_after_batch_transfer + Prior.prepare_batch (shards: CLIP "
        "image tower on the decoded images + CLIP text tower; embeddings: the text tower only, the clip-retrieval "
        "layout holds pooled embeddings, not the per-token states the prior attends to) + diffusion loss + "
        "backward + AdamW step + EMA update; no Lightning loop, logging, validation or checkpoints",
        f"samples/s over {s.steps} steps after {s.warmup_steps} warm-up steps per run, a fresh loader per run; "
        f"medians of {s.throughput_repeats} interleaved rounds; ratio = median of per-round ratios",
        f"{'source':<14}{'samples/s':>10}  {'wait s':>7} {'prepare s':>9} {'train s':>8}  samples/s of the rounds",
    ]
    for name, runs in result.runs.items():
        wait, prepare, train = (statistics.fmean(getattr(r, f) for r in runs)
                                for f in ("wait_s", "prepare_s", "train_s"))
        rounds = " ".join(f"{r.samples_per_s:.3g}" for r in runs)
        lines.append(f"{name:<14}{result.samples_per_s(name):>10.1f}  {wait:>7.3f} {prepare:>9.3f} {train:>8.3f}  "
                     f"{rounds}")
    ratio = result.ratio()
    lines.append("(wait/prepare/train s: mean seconds per step waiting for the loader, in the CLIP towers, in the "
                 "prior's loss + backward + optimizer)")
    lines.append(f"target: embeddings / shards >= {THROUGHPUT_TARGET:g}x: {ratio:.2f}x -> "
                 f"{met(ratio >= THROUGHPUT_TARGET)}")
    return lines


# ---------------------------------------------------------------------------------------------- part 3


SAMPLERS = ("ours", "ours, full sequence", "dalle2")


@dataclass
class SampleResult:
    """One size: wall seconds per call (``times[sampler]``, one per round) of each way to sample."""

    size: PriorSize
    times: dict[str, list[float]]
    params: dict[str, int]
    max_difference: float  # between ours with and without the text prefix (same noise)

    def ratio(self, a: str, b: str) -> float | None:
        return paired_ratio(self.times[a], self.times[b]) if a in self.times and b in self.times else None


def run_sample_size(size: PriorSize, settings: PriorBenchSettings, skipped: str | None) -> SampleResult:
    """Sampling ``sample_prompts`` x ``sample_candidates`` embeddings: ours as ``generate`` does it (the text
    prefix computed once), ours running the full sequence at every step, and DALLE2's DDIM loop
    (``p_sample_loop_ddim``, which runs its whole sequence twice per step for guidance); interleaved rounds."""
    from mav_train.components.base import DiffusionComponent

    torch.manual_seed(settings.seed)
    ours = Prior(ours_config(size, settings)).eval()
    n, k = settings.sample_prompts, settings.sample_candidates
    batch = make_batch(replace(size, batch=n), settings.seed)
    text = TextEncoding(pooled=batch.text_emb, states=batch.text_states, mask=batch.text_mask,
                        tokens=torch.zeros(batch.text_mask.shape, dtype=torch.long))

    def ours_sample(full: bool) -> Callable[[], Tensor]:
        def run() -> Tensor:
            if full:  # the base class's network function: every token at every step
                ours.network_fn = lambda net, cond, b, estimate=None: DiffusionComponent.network_fn(
                    ours, net, cond, b, estimate)
            try:
                return ours.sample_embeddings(text, batch.text_emb, num_candidates=k, steps=settings.sample_steps,
                                              guidance_scale=settings.sample_guidance,
                                              generator=torch.Generator().manual_seed(settings.seed))
            finally:
                ours.__dict__.pop("network_fn", None)
        return run

    difference = float((ours_sample(False)() - ours_sample(True)()).abs().max())
    runs: dict[str, Callable[[], Any]] = {SAMPLERS[0]: ours_sample(False), SAMPLERS[1]: ours_sample(True)}
    params = {"ours": count_parameters(ours.network)}
    if skipped is None:
        network, _ = match_dalle2(size, params["ours"])
        dalle2 = Dalle2Prior(size, network, settings.p_drop_text).eval()
        params["dalle2"] = count_parameters(dalle2)
        states = batch.text_states if dalle2.adapter is None else dalle2.adapter(batch.text_states)
        cond = {"text_embed": repeat_rows(batch.text_emb, k), "text_encodings": repeat_rows(states.detach(), k)}

        def dalle2_sample() -> Tensor:
            # DALLE2's DDIM loop takes `timesteps` points and steps between neighbours: one more than our steps
            # gives both the same number of network calls.
            candidates = dalle2.prior.p_sample_loop_ddim((n * k, size.embed_dim), cond,
                                                         timesteps=settings.sample_steps + 1,
                                                         cond_scale=settings.sample_guidance)
            return select_candidates(candidates.view(n, k, -1), batch.text_emb)

        runs[SAMPLERS[2]] = dalle2_sample
    with torch.no_grad(), quiet_dalle2_progress():
        times = time_steps_on_clocks(runs, 1, settings.sample_repeats, {"wall": time.perf_counter})["wall"]
    return SampleResult(size, times, params, difference)


@contextlib.contextmanager
def quiet_dalle2_progress() -> Iterator[None]:
    """DALLE2's sampling loops draw a tqdm bar per call: silence them while timing."""
    try:
        module = importlib.import_module(DALLE2_MODULE + ".dalle2_pytorch")
    except Exception:  # the baseline is not installed: nothing to silence
        yield
        return
    bar = module.tqdm
    module.tqdm = lambda *args, **kwargs: bar(*args, **{**kwargs, "disable": True})
    try:
        yield
    finally:
        module.tqdm = bar


def repeat_rows(x: Tensor, k: int) -> Tensor:
    """``(b, ...)`` -> ``(b * k, ...)``, each row ``k`` times in a row (the candidates of one prompt together)."""
    return x.repeat_interleave(k, dim=0)


def format_sample(result: SampleResult, settings: PriorBenchSettings) -> list[str]:
    size = result.size
    lines = [f"== {size.name}: {settings.sample_prompts} prompts x {settings.sample_candidates} candidates, "
             f"{settings.sample_steps} DDIM steps, guidance {settings.sample_guidance:g}; ours {size.dim} x "
             f"{size.depth} ({result.params['ours'] / 1e6:.2f}M), DALLE2 matched as in part 1"
             + (f" ({result.params['dalle2'] / 1e6:.2f}M)" if "dalle2" in result.params else "") + " ==",
             f"{'sampler':<24}{'s per call':>11}  rounds"]
    for name, times in result.times.items():
        lines.append(f"{name:<24}{statistics.median(times):>11.3f}  " + " ".join(f"{t:.3f}" for t in times))
    for other in SAMPLERS[1:]:
        ratio = result.ratio(SAMPLERS[0], other)
        if ratio is not None:
            lines.append(f"ours / {other}: {ratio:.3f} (median of per-round ratios)")
    lines.append(f"largest difference, ours with vs without the text prefix (same noise): {result.max_difference:.1e}")
    return lines


# ---------------------------------------------------------------------------------------------- running


@dataclass
class PriorBenchResult:
    settings: PriorBenchSettings
    steps: list[StepResult] = field(default_factory=list)
    throughput: ThroughputResult | None = None
    samples: list[SampleResult] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The JSON line: every ratio against its target."""
        out: dict[str, Any] = {"bench": "bench_prior", "threads": self.settings.threads}
        if self.steps:
            out["step"] = []
            for r in self.steps:
                ratio, cpu = r.ratio("wall"), r.ratio("cpu")
                out["step"].append({
                    "size": r.size.name, "batch": r.size.batch, "ours_params": r.params["ours"],
                    "dalle2_params": r.params.get("dalle2"), "params_within_10pct": r.params_within(),
                    "ours_step_s": r.median("ours"), "dalle2_step_s": r.median("dalle2"),
                    "dalle2_network": r.dalle2_network, "ratio": ratio, "ratio_cpu": cpu, "target": STEP_TARGET,
                    "met": None if ratio is None else ratio <= STEP_TARGET,
                    "met_cpu": None if cpu is None else cpu <= STEP_TARGET, "skipped": r.skipped,
                })
        if self.throughput is not None:
            t = self.throughput
            out["throughput"] = {
                "embeddings_samples_per_s": t.samples_per_s(EMBEDDINGS),
                "shards_samples_per_s": t.samples_per_s(SHARDS),
                "ratio": t.ratio(), "target": THROUGHPUT_TARGET, "met": t.ratio() >= THROUGHPUT_TARGET,
                "batch": t.cfg.data.batch_size, "workers": t.cfg.data.num_workers,
                "clip_model": t.cfg.clip.model,
            }
        if self.samples:
            out["sample"] = [{"size": r.size.name, "seconds": {k: statistics.median(v) for k, v in r.times.items()},
                              "ours_vs_full_sequence": r.ratio(SAMPLERS[0], SAMPLERS[1]),
                              "ours_vs_dalle2": r.ratio(SAMPLERS[0], SAMPLERS[2]),
                              "max_difference": r.max_difference} for r in self.samples]
        return out


def header(settings: PriorBenchSettings) -> list[str]:
    versions = package_versions(("torch", DALLE2_DIST))
    return [f"prior P benchmark; {versions}; torch threads {settings.threads}; cpu count "
            f"{os.cpu_count()}; load average {load_average()}"]


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def run_prior_benchmark(settings: PriorBenchSettings, work_dir: Path | None = None,
                        echo: Callable[[str], None] | None = None) -> PriorBenchResult:
    """Run the selected parts; ``echo`` gets the report lines as they come (e.g. ``print``)."""
    say = echo or (lambda line: None)
    result = PriorBenchResult(settings)
    with tempfile.TemporaryDirectory(prefix="bench_prior_") as scratch, torch_threads(settings.threads):
        say("\n".join(header(settings)))
        if "step" in settings.parts:
            skipped = dalle2_import_error()
            say("\n".join(["", *step_header(settings)]))
            if skipped:
                say(f"DALLE2-pytorch baseline skipped: {skipped}")
            for size in settings.sizes:
                step = run_step_size(size, settings, skipped)
                result.steps.append(step)
                say("\n".join(["", *format_step(step)]))
        if "throughput" in settings.parts:
            root = Path(work_dir) if work_dir is not None else Path(scratch)
            result.throughput = run_throughput(settings, root)
            say("\n".join(["", *format_throughput(result.throughput)]))
        if "sample" in settings.parts:
            skipped = dalle2_import_error()
            say("\nPart 3: sampling embeddings (no target in issue 8; wall seconds per call, interleaved rounds)")
            for size in settings.sample_sizes:
                result.samples.append(run_sample_size(size, settings, skipped))
                say("\n".join(["", *format_sample(result.samples[-1], settings)]))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_prior", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="demo size only, fewer rounds and steps (~1-2 min)")
    parser.add_argument("--threads", type=int, help="torch threads of this process (default 1)")
    parser.add_argument("--repeats", type=int, help="interleaved rounds of both parts")
    parser.add_argument("--steps", type=int, help="timed training steps per throughput run")
    parser.add_argument("--workers", type=int, help="loader workers of the throughput runs (default: the recipe's)")
    parser.add_argument("--only", choices=("step", "throughput", "sample"), help="run one part")
    parser.add_argument("--clip-pretrained", help="clip.pretrained of the throughput runs (default null: seeded "
                                                  "random toy CLIP; 'demo' trains/reads the toy CLIP in the cache)")
    parser.add_argument("--vit-l", action="store_true",
                        help="throughput only, with ViT-L/14's towers at random weights (128 images, batch 8, 4 steps "
                             "x 2 rounds; ~6 min on one thread)")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else PriorBenchSettings()
    if args.vit_l:
        settings = replace(settings, parts=("throughput",), **VIT_L_THROUGHPUT)
    changes = {"threads": args.threads, "repeats": args.repeats, "throughput_repeats": args.repeats,
               "steps": args.steps, "workers": args.workers, "clip_pretrained": args.clip_pretrained,
               "parts": (args.only,) if args.only else None}
    settings = replace(settings, **{name: value for name, value in changes.items() if value is not None})
    started = time.perf_counter()
    result = run_prior_benchmark(settings, echo=lambda text: print(text, flush=True))
    print(f"\nload average at the end {load_average()}; wall {time.perf_counter() - started:.0f} s")
    print(json.dumps(result.summary()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
