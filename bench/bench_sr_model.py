"""SR model benchmark: one training step of our super-resolution UNet against imagen-pytorch's ``Unet`` in its
super-resolution configuration (``lowres_cond=True``), at a matched parameter count.

Run from the repo root: ``python -m bench.bench_sr_model [--quick]``. For each case (an SR recipe, its overrides
and a batch size) it builds

* ours: ``mav_train.nn.unet.UNet`` from the recipe's ``unet`` section: the upsampled low-res image as extra input
  channels (``unet.extra_in_channels``), the noise-augmentation level embedded and added to the timestep
  embedding (``unet.aug_level_cond``), CLIP image-embedding conditioning only where the recipe has it;
* imagen-pytorch's ``Unet(lowres_cond=True, cond_on_text=False)`` with its attention at the same resolutions as
  ours, and its width / deepest multiplier / resnet blocks searched (meta-device builds) for the parameter count
  closest to ours (row ``imagen``, the one the target is checked against), and the closest with
  ``num_resnet_blocks=0`` (row ``imagen_b0``: one resnet block per level each way, imagen's lightest top level), to
  show how much of the ratio comes from where the parameter match puts imagen's blocks;

and times one training step of each: forward (noisy image, low-res conditioning image at the target size,
timesteps, augmentation level) + MSE to a random target + backward + ``zero_grad``. Both models live in one
process and are stepped in interleaved rounds with a rotating order; the ratio ours / imagen is the median of
the per-round ratios (as ``bench_model``). Target (issue 9): ratio <= 0.8.

imagen-pytorch is imported without running its package ``__init__`` (which pulls in its trainer, ``datasets`` and
``ema-pytorch``) and with the T5 config lookup that its ``Unet`` signature makes at import time answered locally
(``d_model`` 768, the default T5's width; unused with ``cond_on_text=False``), so nothing is downloaded. If it
cannot be imported, the baseline is skipped with the import error printed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import importlib.util
import io
import json
import math
import os
import statistics
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from bench.bench_model import PARAM_TOLERANCE, count_parameters, met, package_versions, paired_ratio, time_steps
from mav_train.config.load import load_config
from mav_train.nn.unet import UNet, norm_groups

TARGET_RATIO = 0.8
IMAGEN_DIST = "imagen-pytorch"
T5_BASE_WIDTH = 768  # d_model of google/t5-v1_1-base, imagen-pytorch's default text encoder
UNUSED_WITHOUT_TEXT = ("null_text_embed", "null_text_hidden")  # imagen parameters no step touches without text


@dataclass
class SrCase:
    """One comparison: an SR recipe, config overrides and the training batch size."""

    recipe: str
    batch: int
    overrides: list[str] = field(default_factory=list)


def default_cases() -> list[SrCase]:
    return [
        SrCase("demo/sr_low", 8),  # 32 -> 64 px, base 16: the demo SR_l as it trains
        # 64 -> 128 px on the full frame, twice as wide: a larger SR net at a step of about a second
        SrCase("demo/sr_high", 2, ["unet.base_channels=32", "model.crop_size=null"]),
    ]


@dataclass
class SrBenchConfig:
    """What to compare and the timing protocol."""

    cases: list[SrCase] = field(default_factory=default_cases)
    warmup: int = 1
    repeats: int = 9
    threads: int = 1
    seed: int = 0


def quick_config() -> SrBenchConfig:
    """``--quick``: the demo SR_l at batch 4, 5 rounds (well under 2 minutes on one loaded thread)."""
    return SrBenchConfig(cases=[SrCase("demo/sr_low", 4)], repeats=5)


# ---------------------------------------------------------------------------------------------- our SR net


@dataclass
class SrSetup:
    """What a case resolves to: our UNet config and the sizes of one training step."""

    case: SrCase
    unet: DictConfig
    size: int  # the side of the network's input (the crop when the recipe trains on crops)
    resolution: int  # the target image's side
    low_res: int
    timesteps: int
    aug_max: int  # largest augmentation timestep drawn in training

    @property
    def label(self) -> str:
        extra = f", {' '.join(self.case.overrides)}" if self.case.overrides else ""
        crop = f", {self.size} px crops" if self.size != self.resolution else ""
        return f"{self.low_res}->{self.resolution} px{crop}, batch {self.case.batch} ({self.case.recipe}{extra})"


def resolve_case(case: SrCase) -> SrSetup:
    """Load the case's recipe; raise ValueError unless it is an SR recipe (low-res channels + aug level)."""
    cfg = load_config(case.recipe, list(case.overrides))
    unet = cfg.unet
    if unet.extra_in_channels != unet.in_channels or not unet.aug_level_cond:
        raise ValueError(f"{case.recipe} is not a super-resolution recipe: it needs unet.extra_in_channels = "
                         f"unet.in_channels and unet.aug_level_cond=true")
    if unet.temporal:
        raise ValueError(f"{case.recipe}: the video SR net is not compared here (imagen's Unet is 2D)")
    crop = cfg.model.get("crop_size")
    size = crop if crop else cfg.data.resolution
    steps = cfg.diffusion.timesteps
    aug_max = math.floor(cfg.model.low_res_noise_max * (steps - 1))
    return SrSetup(case, unet, size, cfg.data.resolution, cfg.model.low_res, steps, aug_max)


def build_ours(setup: SrSetup) -> UNet:
    return UNet(setup.unet)


# ---------------------------------------------------------------------------------------------- imagen-pytorch


def load_imagen_unet() -> type[nn.Module]:
    """imagen-pytorch's ``Unet`` class.

    The package ``__init__`` imports its trainer and data modules (``datasets``, ``ema-pytorch``,
    ``pytorch-warmup``), none of which the network needs; so the package is registered as an empty module and
    only ``imagen_pytorch.t5`` and ``imagen_pytorch.imagen_pytorch`` are run. ``Unet``'s signature calls
    ``get_encoded_dim('google/t5-v1_1-base')`` when the module is imported, which fetches that T5's config from
    the Hugging Face hub; the answer (its width, 768) is put in the module's cache first, so nothing is
    downloaded.
    """
    loaded = sys.modules.get("imagen_pytorch.imagen_pytorch")
    if loaded is not None:
        return loaded.Unet
    spec = importlib.util.find_spec("imagen_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("No module named 'imagen_pytorch'")
    inserted = "imagen_pytorch" not in sys.modules
    if inserted:
        sys.modules["imagen_pytorch"] = importlib.util.module_from_spec(spec)  # not executed
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. torch.jit.script deprecation at import
            t5 = importlib.import_module("imagen_pytorch.t5")
            from transformers import T5Config

            t5.T5_CONFIGS.setdefault(t5.DEFAULT_T5_NAME, {"config": T5Config(d_model=T5_BASE_WIDTH)})
            module = importlib.import_module("imagen_pytorch.imagen_pytorch")
    except Exception:
        if inserted:
            for name in [n for n in sys.modules if n == "imagen_pytorch" or n.startswith("imagen_pytorch.")]:
                del sys.modules[name]
        raise
    return module.Unet


def imagen_import_error() -> str | None:
    """None if imagen-pytorch's Unet imports, else the reason (exception type and message)."""
    try:
        load_imagen_unet()
    except Exception as error:  # any failure to import means the baseline cannot run here
        return f"cannot import imagen_pytorch's Unet: {type(error).__name__}: {error}"
    return None


def imagen_kwargs(unet: DictConfig, dim: int, last_mult: int, blocks: int) -> dict[str, Any]:
    """``Unet`` arguments for an SR net shaped like ours: same levels, attention at our resolutions only."""
    mults = [*unet.channel_mults[:-1], last_mult]
    levels = len(mults)
    return {
        "dim": dim,
        "dim_mults": tuple(mults),
        "num_resnet_blocks": blocks,
        "channels": unet.in_channels,
        "channels_out": unet.out_channels,
        "lowres_cond": True,  # low-res image concatenated to the input, its noise level conditions the net
        "cond_on_text": False,  # our SR nets read no text
        "attn_pool_text": False,  # the text resampler: unused without text
        "layer_attns": tuple(2**level in unet.attention_levels for level in range(levels)),
        "layer_cross_attns": False,  # no cross-attention in the levels' first resnet blocks (ours has no context)
        "use_global_context_attn": False,  # no global-context attention in the levels' resnet blocks
        "attend_at_middle": True,  # as our middle block
        "attn_dim_head": unet.head_dim,
        # our deepest width over our head width; imagen asserts at least 2 heads
        "attn_heads": max(2, unet.base_channels * unet.channel_mults[-1] // unet.head_dim),
        "dropout": unet.dropout,
    }


def build_imagen(kwargs: dict[str, Any]) -> nn.Module:
    """imagen-pytorch's Unet from ``kwargs`` on the current default device (its small-width advice muted)."""
    unet_class = load_imagen_unet()
    with contextlib.redirect_stdout(io.StringIO()):
        return unet_class(**kwargs)


def imagen_parameters(model: nn.Module) -> int:
    """Parameters a training step can update: all but the null-text embeddings, unused without text."""
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith(UNUSED_WITHOUT_TEXT))


BLOCK_CHOICES = (1, 0, 2)  # imagen's num_resnet_blocks: resnet blocks per level after the level's first one


def imagen_candidates(
    unet: DictConfig, widths: Sequence[int], blocks: Sequence[int] = BLOCK_CHOICES
) -> list[dict[str, Any]]:
    """Unet configs to match: width ``dim`` in ``widths`` x resnet blocks per level in ``blocks`` x deepest
    multiplier (from our second-deepest to twice our deepest)."""
    mults = list(unet.channel_mults)
    low = mults[-2] if len(mults) > 1 else 1
    return [
        imagen_kwargs(unet, dim, last, n)
        for dim in widths
        for n in blocks
        for last in range(low, 2 * mults[-1] + 1)
    ]


def _meta_parameters(kwargs: dict[str, Any]) -> int | None:
    try:
        with torch.device("meta"):
            return imagen_parameters(build_imagen(kwargs))
    except (AssertionError, ValueError, RuntimeError):  # a width the library rejects
        return None


def match_imagen(
    unet: DictConfig, target: int, blocks: Sequence[int] = BLOCK_CHOICES
) -> tuple[dict[str, Any], int]:
    """The imagen Unet config (``num_resnet_blocks`` in ``blocks``) whose parameter count is closest (log ratio)
    to ``target``; the first candidate wins ties.

    First with our top width (``dim`` = our base channels): the top level does most of an SR net's work, so it
    stays as wide as ours and the depth and deepest width absorb the difference. Other widths (half to twice ours,
    in steps of an eighth) are tried only if nothing is within PARAM_TOLERANCE.
    """
    base = unet.base_channels
    step = max(1, base // 8)
    others = [w for w in range(max(1, base // 2), 2 * base + 1, step) if w != base]
    best: tuple[dict[str, Any], int] | None = None
    for widths in ([base], others):
        for kwargs in imagen_candidates(unet, widths, blocks):
            count = _meta_parameters(kwargs)
            if count is not None and (best is None or abs(math.log(count / target)) < abs(math.log(best[1] / target))):
                best = (kwargs, count)
        if best is not None and abs(best[1] / target - 1) <= PARAM_TOLERANCE:
            break
    if best is None:
        raise ValueError(f"no imagen-pytorch Unet candidate could be built for {dict(unet)}")
    return best


# ---------------------------------------------------------------------------------------------- stepping


@dataclass
class StepData:
    """The fixed random batch both models train on."""

    x: Tensor  # noisy image, b 3 s s
    low_res: Tensor  # the low-res image resized up to s (bicubic), b 3 s s
    target: Tensor
    t: Tensor  # (b,) integer timesteps
    aug: Tensor  # (b,) integer augmentation timesteps
    image_emb: Tensor | None


def make_data(setup: SrSetup, seed: int) -> StepData:
    gen = torch.Generator().manual_seed(seed)
    b, s, c = setup.case.batch, setup.size, setup.unet.in_channels
    small = max(1, setup.low_res * s // setup.resolution)  # the low-res pixels under the crop
    low = torch.rand(b, c, small, small, generator=gen) * 2 - 1
    image_emb = torch.randn(b, setup.unet.cond_dim, generator=gen) if setup.unet.cond_dim > 0 else None
    return StepData(
        x=torch.randn(b, c, s, s, generator=gen),
        low_res=F.interpolate(low, size=(s, s), mode="bicubic", align_corners=False),
        target=torch.randn(b, setup.unet.out_channels, s, s, generator=gen),
        t=torch.randint(0, setup.timesteps, (b,), generator=gen),
        aug=torch.randint(0, setup.aug_max + 1, (b,), generator=gen),
        image_emb=image_emb,
    )


def ours_forward(model: UNet, data: StepData) -> Callable[[], Tensor]:
    return lambda: model(data.x, data.t, image_emb=data.image_emb, extra=data.low_res, aug_level=data.aug)


def imagen_forward(model: nn.Module, data: StepData, timesteps: int) -> Callable[[], Tensor]:
    """imagen's Unet takes continuous times in [0, 1] for both the image and the low-res noise."""
    times, aug_times = data.t.float() / timesteps, data.aug.float() / timesteps
    return lambda: model(data.x, times, lowres_cond_img=data.low_res, lowres_noise_times=aug_times)


def training_step(model: nn.Module, forward: Callable[[], Tensor], target: Tensor) -> Callable[[], None]:
    """forward + MSE to ``target`` + backward + zero_grad."""
    model.train()

    def step() -> None:
        F.mse_loss(forward(), target).backward()
        model.zero_grad(set_to_none=True)

    return step


# ---------------------------------------------------------------------------------------------- running


# The baselines: imagen's Unet at the closest parameter count over the whole search, and the closest one with
# num_resnet_blocks=0 (one resnet block per level on each path: the lightest top level imagen-pytorch builds, where
# ours has 1 down + 2 up). The second shows how much of the ratio comes from the search's choice of depth.
BASELINES = {
    "imagen": ("imagen-pytorch Unet (closest params)", BLOCK_CHOICES),
    "imagen_b0": ("imagen-pytorch Unet, num_resnet_blocks=0", (0,)),
}


@dataclass
class Baseline:
    key: str
    label: str
    kwargs: dict[str, Any]
    params: int


@dataclass
class CaseResult:
    """Everything measured for one case."""

    label: str
    batch: int
    size: int
    ours_params: int
    ours_desc: str
    baselines: list[Baseline] = field(default_factory=list)
    times: dict[str, list[float]] = field(default_factory=dict)
    skipped: str | None = None

    def ratio(self, key: str = "imagen") -> float | None:
        """Median over rounds of t_ours / t_key; None when ``key`` did not run."""
        if key not in self.times:
            return None
        return paired_ratio(self.times["ours"], self.times[key])

    def params_delta(self, key: str = "imagen") -> float | None:
        """Relative parameter difference of baseline ``key`` to ours; None when it did not run."""
        found = [b for b in self.baselines if b.key == key]
        return found[0].params / self.ours_params - 1 if found else None


def describe_ours(setup: SrSetup) -> str:
    u = setup.unet
    cond = f"CLIP image embedding {u.cond_dim} -> {u.num_cond_tokens} tokens" if u.cond_dim else "no CLIP/text"
    groups = norm_groups(u.base_channels, u.norm_channels_per_group)
    blocks = f"{u.num_res_blocks} down + {u.num_res_blocks + 1} up per level"
    return (f"base {u.base_channels}, mults {list(u.channel_mults)}, res blocks {blocks}, attention at "
            f"{list(u.attention_levels)} + middle, head_dim {u.head_dim}, GroupNorm {groups}, "
            f"extra_in_channels {u.extra_in_channels}, aug_level_cond, {cond}, "
            f"checkpointing {u.gradient_checkpointing}")


def run_case(case: SrCase, cfg: SrBenchConfig, skip_reason: str | None) -> CaseResult:
    """Match, build and time our net and the imagen baselines of one case."""
    setup = resolve_case(case)
    with torch.device("meta"):
        target = count_parameters(build_ours(setup))
    result = CaseResult(setup.label, case.batch, setup.size, target, describe_ours(setup), skipped=skip_reason)
    torch.manual_seed(cfg.seed)
    models: dict[str, nn.Module] = {"ours": build_ours(setup)}
    if skip_reason is None:
        for key, (label, blocks) in BASELINES.items():
            kwargs, params = match_imagen(setup.unet, target, blocks)
            if any(b.kwargs == kwargs for b in result.baselines):
                continue  # the closest match already has this depth
            result.baselines.append(Baseline(key, label, kwargs, params))
            torch.manual_seed(cfg.seed)
            models[key] = build_imagen(kwargs)
    data = make_data(setup, cfg.seed)
    steps = {"ours": training_step(models["ours"], ours_forward(models["ours"], data), data.target)}
    for b in result.baselines:
        forward = imagen_forward(models[b.key], data, setup.timesteps)
        steps[b.key] = training_step(models[b.key], forward, data.target)
    result.times = time_steps(steps, cfg.warmup, cfg.repeats)
    return result


# ---------------------------------------------------------------------------------------------- report

DIFFERENCES = [
    "what differs (imagen-pytorch options cannot remove these): its middle resnet blocks cross-attend to its 4 "
    "time tokens (2 timestep + 2 aug-level; ours has no cross-attention without CLIP), its final resnet block "
    "keeps global-context attention, its attention blocks are transformer blocks (self-attention + feed-forward, "
    "ff_mult 2; ours self-attention only), input conv = cross-embed 3/7/15 kernels (ours 3x3), pixel-(un)shuffle "
    "resampling (ours strided conv / nearest + conv), channel RMSNorm (ours GroupNorm), the low-res image "
    "concatenated again before its final conv, learned-sinusoidal continuous times in [0, 1] (ours integer "
    "timesteps)",
    "set to match ours: lowres_cond=True, cond_on_text=False (ours reads no text), attn_pool_text=False, "
    "layer_cross_attns=False, use_global_context_attn=False, self-attention at our resolutions only "
    "(layer_attns) + middle, attn_dim_head = our head_dim",
]


def header(cfg: SrBenchConfig) -> list[str]:
    return [
        "SR model benchmark: training step = forward(noisy image, upsampled low-res image, t, aug level) + "
        "MSE(output, random target) + backward + zero_grad",
        f"{package_versions(('torch', IMAGEN_DIST))}; torch.set_num_threads({cfg.threads}); "
        f"cpu count {os.cpu_count()}; "
        f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}",
        f"step s = median of {cfg.repeats} interleaved rounds (rotating order) after {cfg.warmup} warm-up "
        f"step(s); ours/imagen = median over rounds of t_ours / t_imagen; target <= {TARGET_RATIO}",
        "imagen Unet: dim (= our base first), deepest multiplier and resnet blocks searched on the meta device for "
        "the parameter count closest to ours (row imagen); row imagen_b0: the closest with num_resnet_blocks=0, "
        "imagen's lightest top level; imagen params exclude its null-text embeddings (unused without text)",
        *DIFFERENCES,
    ]


def imagen_desc(kwargs: dict[str, Any]) -> str:
    names = ("dim", "dim_mults", "num_resnet_blocks", "layer_attns", "attn_heads", "attn_dim_head")
    per_level = 1 + kwargs["num_resnet_blocks"]  # each level's first resnet block + num_resnet_blocks more
    text = ", ".join(f"{n}={kwargs[n]}" for n in names)
    return f"Unet({text}, lowres_cond=True, cond_on_text=False): {per_level} down + {per_level} up res blocks per level"


def format_case(r: CaseResult) -> list[str]:
    """The case's table and target check."""
    lines = [f"== {r.label} ==", f"  ours: {r.ours_desc}"]
    lines += [f"  {b.key}: {imagen_desc(b.kwargs)}" for b in r.baselines]
    lines.append(f"  {'model':<42}{'params':>9} {'vs ours':>8} {'step s':>8} {'ours/it':>8}")
    lines.append(f"  {'ours: SR UNet':<42}{r.ours_params / 1e6:8.3f}M {'':>8} "
                 f"{statistics.median(r.times['ours']):8.3f} {'':>8}")
    if r.skipped:
        lines.append(f"  {'imagen-pytorch Unet(lowres_cond=True)':<42}skipped: {r.skipped}")
        return lines
    for b in r.baselines:
        lines.append(f"  {b.label:<42}{b.params / 1e6:8.3f}M {100 * r.params_delta(b.key):+7.1f}% "
                     f"{statistics.median(r.times[b.key]):8.3f} {r.ratio(b.key):8.3f}")
    within = all(abs(r.params_delta(b.key)) <= PARAM_TOLERANCE for b in r.baselines)
    lines.append(f"  baseline parameters within {PARAM_TOLERANCE:.0%} of ours: {within}")
    ratio = r.ratio("imagen")
    lines.append(f"  target: ours / imagen (closest params) = {ratio:.3f} <= {TARGET_RATIO} -> "
                 f"{met(ratio <= TARGET_RATIO)}")
    for b in r.baselines[1:]:
        other = r.ratio(b.key)
        lines.append(f"  against {b.key} ({b.label}): {other:.3f} <= {TARGET_RATIO} -> {met(other <= TARGET_RATIO)}")
    return lines


def json_line(r: CaseResult, cfg: SrBenchConfig) -> str:
    """One JSON record of the case: ratio = ours / imagen (closest parameter count)."""
    ratio = r.ratio("imagen")
    record: dict[str, Any] = {
        "bench": "sr_model",
        "case": r.label,
        "batch": r.batch,
        "size": r.size,
        "threads": cfg.threads,
        "repeats": cfg.repeats,
        "ours_params": r.ours_params,
        "ours_step_s": statistics.median(r.times["ours"]),
    }
    for b in r.baselines:
        record[f"{b.key}_params"] = b.params
        record[f"{b.key}_params_within_10pct"] = abs(r.params_delta(b.key)) <= PARAM_TOLERANCE
        record[f"{b.key}_step_s"] = statistics.median(r.times[b.key])
        if b.key != "imagen":
            record[f"ratio_{b.key}"] = r.ratio(b.key)
    record.update({
        "ratio": ratio,
        "target": TARGET_RATIO,
        "target_met": None if ratio is None else ratio <= TARGET_RATIO,
        "imagen_skipped": r.skipped,
    })
    return json.dumps(record)


def run(cfg: SrBenchConfig) -> list[CaseResult]:
    """Run every case; prints the report as it goes and returns the results."""
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        print("\n".join(header(cfg)), flush=True)
        reason = imagen_import_error()
        if reason:
            print(f"imagen baseline skipped: {reason}", flush=True)
        results = []
        for case in cfg.cases:
            result = run_case(case, cfg, reason)
            print("\n".join(["", *format_case(result)]), flush=True)
            print(json_line(result, cfg), flush=True)
            results.append(result)
        print(f"load average at the end {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
        return results
    finally:
        torch.set_num_threads(threads)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_sr_model", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="demo/sr_low at batch 4, 5 rounds (< 1 min)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default 1)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per case")
    parser.add_argument("--recipe", help="one case: this SR recipe (default: the built-in cases)")
    parser.add_argument("--batch", type=int, default=None, help="batch size of --recipe's case (default 8)")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value for --recipe's case")
    args = parser.parse_args(argv)
    cfg = quick_config() if args.quick else SrBenchConfig()
    if args.recipe:
        cfg.cases = [SrCase(args.recipe, args.batch or 8, list(args.overrides))]
    elif args.overrides or args.batch:
        parser.error("--batch and overrides need --recipe")
    if args.threads is not None:
        cfg.threads = args.threads
    if args.repeats is not None:
        cfg.repeats = args.repeats
    run(cfg)


if __name__ == "__main__":
    main()
