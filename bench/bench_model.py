"""Model benchmark for the temporal decoder D^t: a training step of our pseudo-3D ``UNet`` against baselines.

Run from the repo root: ``python -m bench.bench_model [--quick]``. Prints, per input shape (``b c t h w``):

1. step time (forward + MSE + backward + zero_grad) and peak memory of our D^t UNet against diffusers'
   ``UNet3DConditionModel`` (the ModelScope text-to-video UNet) and make-a-video-pytorch's ``SpaceTimeUnet``,
   both at a parameter count matched to ours;
2. activation checkpointing on vs off (peak-memory reduction, time cost);
3. pseudo-3D vs full 3D convolutions (each 3x3 + (3,1,1) conv pair replaced by one 3x3x3 Conv3d).

Timing: all models of a shape live in one process and are stepped in interleaved rounds (rotating order), so
a change in machine load hits every model alike; ratios are medians of the per-round ratios. Peak memory: one
fresh subprocess per (model, shape); after warm-up steps the kernel's peak-RSS mark is reset
(``/proc/self/clear_refs``) and the peak RSS growth of one more step is read from ``VmHWM``. glibc's mmap
threshold is pinned (``MALLOC_MMAP_THRESHOLD_``) so freed tensors go back to the OS and RSS follows live
memory.
Nothing is downloaded: every model is built randomly initialised from its config.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib
import importlib.metadata
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mav_train.config.schema import UNetConfig
from mav_train.nn.pseudo3d import Pseudo3DConv
from mav_train.nn.unet import UNet, norm_groups

REPO_ROOT = Path(__file__).resolve().parents[1]
BASELINE_MODULES = {"diffusers": "diffusers", "make_a_video": "make_a_video_pytorch"}
PARAM_TOLERANCE = 0.10


@dataclass
class BenchConfig:
    """What to benchmark: our D^t UNet's size, the input shapes and the timing protocol."""

    shapes: list[list[int]] = field(default_factory=lambda: [[2, 3, 8, 32, 32], [1, 3, 16, 64, 64]])
    base_channels: int = 32
    channel_mults: list[int] = field(default_factory=lambda: [1, 2, 4])
    num_res_blocks: int = 1
    attention_levels: list[int] = field(default_factory=lambda: [4])
    head_dim: int = 32
    cond_dim: int = 64
    num_cond_tokens: int = 4
    warmup: int = 1
    repeats: int = 5
    threads: int = 1
    seed: int = 0
    # The ModelScope layout puts attention at full resolution; above this many pixels per frame its step takes
    # minutes on CPU, so that row is skipped (with the reason printed).
    modelscope_max_pixels: int = 32 * 32


def quick_config() -> BenchConfig:
    """A small configuration for ``--quick`` (well under a minute on 2 CPU cores)."""
    return BenchConfig(
        shapes=[[1, 3, 4, 16, 16]],
        base_channels=16,
        channel_mults=[1, 2, 4],
        attention_levels=[4],
        head_dim=16,
        cond_dim=16,
        repeats=3,
        modelscope_max_pixels=16 * 16,
    )


@dataclass
class ModelSpec:
    """A model to benchmark: ``family`` picks the constructor, ``kwargs`` (JSON-able) are its arguments."""

    key: str
    label: str
    family: str  # ours | diffusers | make_a_video
    kwargs: dict[str, Any]


# ---------------------------------------------------------------------------------------------- building


class Full3DConv(nn.Module):
    """One ``(k, 3, 3)`` Conv3d standing in for a pseudo-3D conv pair (2D 3x3 + temporal (k,1,1))."""

    def __init__(self, in_channels: int, out_channels: int, temporal_kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(
            in_channels, out_channels, (temporal_kernel, 3, 3), padding=(temporal_kernel // 2, 1, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        """``b c t h w`` -> ``b c' t h w``."""
        if x.ndim != 5:
            raise ValueError(f"Full3DConv expects b c t h w, got shape {tuple(x.shape)}")
        return self.conv(x)


def to_full_3d(unet: UNet) -> UNet:
    """Replace, in place, every ``Pseudo3DConv`` of ``unet`` by a ``Full3DConv`` of the same channels."""
    targets = [(name, m) for name, m in unet.named_modules() if isinstance(m, Pseudo3DConv)]
    if not targets:
        raise ValueError("the UNet has no Pseudo3DConv layers to replace (is temporal=True?)")
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        conv = module.spatial
        full = Full3DConv(conv.in_channels, conv.out_channels, unet.cfg.temporal_kernel)
        setattr(unet.get_submodule(parent_name), child, full)
    return unet


def build_model(spec: ModelSpec) -> nn.Module:
    """Construct the (randomly initialised) model that ``spec`` describes, on the current default device."""
    kwargs = dict(spec.kwargs)
    if spec.family == "ours":
        full3d = kwargs.pop("full3d", False)
        unet = UNet(UNetConfig(**kwargs))
        return to_full_3d(unet) if full3d else unet
    tupled = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    if spec.family == "diffusers":
        from diffusers import UNet3DConditionModel

        return UNet3DConditionModel(**tupled)
    if spec.family == "make_a_video":
        from make_a_video_pytorch import SpaceTimeUnet

        return SpaceTimeUnet(**tupled)
    raise ValueError(f"unknown model family {spec.family!r}; expected ours, diffusers or make_a_video")


def count_parameters(module: nn.Module) -> int:
    """Number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())


def spec_parameters(spec: ModelSpec) -> int:
    """Parameter count of ``spec``'s model, built on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        return count_parameters(build_model(spec))


def match_parameters(target: int, candidates: Sequence[ModelSpec]) -> tuple[ModelSpec, int]:
    """The candidate whose parameter count is closest to ``target`` (in log ratio); first one wins ties."""
    if not candidates:
        raise ValueError("match_parameters needs at least one candidate")
    counted = [(spec, spec_parameters(spec)) for spec in candidates]
    return min(counted, key=lambda pair: abs(math.log(pair[1] / target)))


# ---------------------------------------------------------------------------------------------- specs


def ours_spec(cfg: BenchConfig, checkpointing: bool = False, full3d: bool = False) -> ModelSpec:
    """Our D^t UNet (temporal, fps-conditioned, CLIP-image-embedding tokens), optionally checkpointed/3D."""
    unet = UNetConfig(
        base_channels=cfg.base_channels,
        channel_mults=list(cfg.channel_mults),
        num_res_blocks=cfg.num_res_blocks,
        attention_levels=list(cfg.attention_levels),
        head_dim=cfg.head_dim,
        cond_dim=cfg.cond_dim,
        num_cond_tokens=cfg.num_cond_tokens,
        temporal=True,
        fps_cond=True,
        gradient_checkpointing=checkpointing,
    )
    key, label = "ours", "ours: D^t UNet (pseudo-3D)"
    if checkpointing:
        key, label = "ours_ckpt", "ours + activation checkpointing"
    if full3d:
        key, label = "ours_full3d", "ours, full 3D convs (3x3x3)"
    return ModelSpec(key, label, "ours", {**dataclasses.asdict(unet), "full3d": full3d})


def _widths(cfg: BenchConfig) -> list[int]:
    return [cfg.base_channels * m for m in cfg.channel_mults]


def _diffusers_attention(cfg: BenchConfig, layout: str) -> list[bool]:
    levels = len(cfg.channel_mults)
    if layout == "modelscope":  # cross-attention at every level but the lowest resolution (library default)
        return [level < levels - 1 for level in range(levels)]
    return [2**level in cfg.attention_levels for level in range(levels)]  # the same resolutions as ours


def _diffusers_spec(cfg: BenchConfig, layout: str, last_width: int, layers: int, heads: int) -> ModelSpec:
    widths = [*_widths(cfg)[:-1], last_width]
    attend = _diffusers_attention(cfg, layout)
    key, label = "diffusers", "diffusers UNet3DCondition (our attn levels)"
    if layout == "modelscope":
        key, label = "diffusers_modelscope", "diffusers UNet3DCondition (ModelScope layout)"
    kwargs = {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["CrossAttnDownBlock3D" if a else "DownBlock3D" for a in attend],
        "up_block_types": ["CrossAttnUpBlock3D" if a else "UpBlock3D" for a in reversed(attend)],
        "block_out_channels": widths,
        "layers_per_block": layers,
        "norm_num_groups": norm_groups(cfg.base_channels),
        "cross_attention_dim": 4 * cfg.base_channels,  # = our context-token width (time_dim)
        # diffusers' naming quirk: this is the number of heads of the spatial attention, and the head width of
        # the full-resolution temporal transformer (transformer_in, 8 heads).
        "attention_head_dim": heads,
    }
    return ModelSpec(key, label, "diffusers", kwargs)


def diffusers_candidates(cfg: BenchConfig, layout: str) -> list[ModelSpec]:
    """UNet3DConditionModel configs to match against: deepest width (multiples of the norm groups) x blocks
    per level. Heads: the attention widths' gcd over our head_dim (head width as ours where widths allow)."""
    widths, groups = _widths(cfg), norm_groups(cfg.base_channels)
    attend = _diffusers_attention(cfg, layout)
    low = widths[-2] if len(widths) > 1 else widths[-1]
    specs = []
    for last in range(max(groups, low - low % groups), 2 * widths[-1] + 1, groups):
        attention_widths = [w for w, a in zip([*widths[:-1], last], attend) if a] + [last]  # + middle block
        heads = max(1, math.gcd(*attention_widths) // cfg.head_dim)
        specs += [_diffusers_spec(cfg, layout, last, layers, heads) for layers in (1, 2)]
    return specs


def make_a_video_candidates(cfg: BenchConfig) -> list[ModelSpec]:
    """SpaceTimeUnet configs: our widths (deepest multiplier varied) x resnet depth; no time compression."""
    levels = len(cfg.channel_mults)
    mults = list(cfg.channel_mults)
    low = mults[-2] if levels > 1 else 1
    specs = []
    for depth in (1, 2, 3):
        for last in range(low, 2 * mults[-1] + 1):
            kwargs = {
                "dim": cfg.base_channels,
                "channels": 3,
                "dim_mult": [*mults[:-1], last],
                "self_attns": [2**level in cfg.attention_levels for level in range(levels)],
                "temporal_compression": [False] * levels,  # as ours and the paper: D^t keeps all 16 frames
                "resnet_block_depths": [depth] * levels,
                "attn_dim_head": cfg.head_dim,
                "attn_heads": max(1, cfg.base_channels * mults[-1] // cfg.head_dim),
            }
            label = "make-a-video-pytorch SpaceTimeUnet"
            specs.append(ModelSpec("make_a_video", label, "make_a_video", kwargs))
    return specs


def import_error(module: str) -> str | None:
    """None if ``module`` imports, else the reason it does not (exception type and message)."""
    try:
        importlib.import_module(module)
    except Exception as error:  # any failure to import means the baseline cannot run here
        return f"cannot import {module}: {type(error).__name__}: {error}"
    return None


def build_specs(cfg: BenchConfig) -> tuple[list[ModelSpec], dict[str, str]]:
    """All models to run (baselines matched to our parameter count) and {key: reason} for skipped ones."""
    ours = ours_spec(cfg)
    target = spec_parameters(ours)
    specs = [ours, ours_spec(cfg, checkpointing=True), ours_spec(cfg, full3d=True)]
    skipped: dict[str, str] = {}
    reason = import_error(BASELINE_MODULES["diffusers"])
    for layout, key in (("ours", "diffusers"), ("modelscope", "diffusers_modelscope")):
        if reason:
            skipped[key] = reason
        else:
            specs.append(match_parameters(target, diffusers_candidates(cfg, layout))[0])
    reason = import_error(BASELINE_MODULES["make_a_video"])
    if reason:
        skipped["make_a_video"] = reason
    else:
        specs.append(match_parameters(target, make_a_video_candidates(cfg))[0])
    return specs, skipped


# ---------------------------------------------------------------------------------------------- stepping


def _forward_fn(spec: ModelSpec, model: nn.Module, x: Tensor, gen: torch.Generator) -> Callable[[], Tensor]:
    batch = x.shape[0]
    t = torch.randint(0, 1000, (batch,), generator=gen)
    if spec.family == "ours":
        image_emb = torch.randn(batch, spec.kwargs["cond_dim"], generator=gen)
        fps = torch.full((batch,), 8.0)
        return lambda: model(x, t, image_emb=image_emb, fps=fps)
    if spec.family == "diffusers":
        tokens = torch.randn(batch, 4, spec.kwargs["cross_attention_dim"], generator=gen)
        return lambda: model(x, t, encoder_hidden_states=tokens).sample
    return lambda: model(x, t.float())


def make_step(spec: ModelSpec, model: nn.Module, shape: Sequence[int], seed: int = 0) -> Callable[[], None]:
    """One training step on fixed random data: forward, MSE to a random target, backward, zero_grad."""
    if len(shape) != 5:
        raise ValueError(f"shape must be b c t h w, got {list(shape)}")
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=gen)
    target = torch.randn(*shape, generator=gen)
    forward = _forward_fn(spec, model, x, gen)
    model.train()

    def step() -> None:
        F.mse_loss(forward(), target).backward()
        model.zero_grad(set_to_none=True)

    return step


def time_steps_on_clocks(steps: Mapping[str, Callable[[], None]], warmup: int, repeats: int,
                         clocks: Mapping[str, Callable[[], float]]) -> dict[str, dict[str, list[float]]]:
    """``{clock: {step: seconds per call}}``: ``warmup`` untimed calls of each named step, then ``repeats``
    interleaved rounds, each step timed on every clock (e.g. ``time.perf_counter`` and ``time.process_time``).

    Round ``r`` runs the steps in an order rotated by ``r``; entry ``r`` of every list comes from round ``r``.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = list(steps)
    for name in names:
        for _ in range(warmup):
            steps[name]()
    times: dict[str, dict[str, list[float]]] = {clock: {name: [] for name in names} for clock in clocks}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            starts = {clock: read() for clock, read in clocks.items()}
            steps[name]()
            for clock, read in clocks.items():
                times[clock][name].append(read() - starts[clock])
    return times


def time_steps(steps: Mapping[str, Callable[[], None]], warmup: int, repeats: int) -> dict[str, list[float]]:
    """Wall seconds per call of each named step (:func:`time_steps_on_clocks` on ``time.perf_counter``)."""
    return time_steps_on_clocks(steps, warmup, repeats, {"wall": time.perf_counter})["wall"]


def package_versions(dists: Sequence[str]) -> str:
    """``"torch 2.14.1, dalle2-pytorch not installed"``: the installed version of each distribution."""
    versions = []
    for dist in dists:
        try:
            versions.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{dist} not installed")
    return ", ".join(versions)


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """Median over rounds of ``numerator[r] / denominator[r]``."""
    return statistics.median(n / d for n, d in zip(numerator, denominator, strict=True))


# ---------------------------------------------------------------------------------------------- memory


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{key} not found in /proc/self/status")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def peak_step_memory(step: Callable[[], None], warmup: int = 1) -> float | None:
    """Peak RSS growth (MiB) during one ``step`` after ``warmup`` steps; None if the peak cannot be reset.

    Warm-up first, because first calls import modules and fill caches (the first checkpointed step alone
    imports ~160 MiB of Python modules) that are not part of a training step's cost.
    """
    for _ in range(warmup):
        step()
    gc.collect()
    if not reset_peak_rss():
        return None
    base = _status_kib("VmRSS")
    step()
    return (_status_kib("VmHWM") - base) / 1024


def memory_worker(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Build one model, measure its step's peak memory in this process; returns a JSON-able dict."""
    cfg = BenchConfig(**payload["bench"])
    spec = ModelSpec(**payload["spec"])
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = build_model(spec)
    step = make_step(spec, model, payload["shape"], cfg.seed)
    peak = peak_step_memory(step, max(1, cfg.warmup))
    return {"peak_mib": peak, "base_rss_mib": _status_kib("VmRSS") / 1024}


def memory_in_subprocess(
    spec: ModelSpec, shape: Sequence[int], cfg: BenchConfig, timeout: float = 900
) -> dict[str, Any]:
    """Run ``memory_worker`` in a fresh interpreter (clean peak RSS); returns its dict or {"error": ...}."""
    payload = json.dumps(
        {"spec": dataclasses.asdict(spec), "shape": list(shape), "bench": dataclasses.asdict(cfg)}
    )
    env = {
        **os.environ,
        "MALLOC_MMAP_THRESHOLD_": "65536",
        "MALLOC_TRIM_THRESHOLD_": "65536",
        "OMP_NUM_THREADS": str(cfg.threads),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    cmd = [sys.executable, "-m", "bench.bench_model", "--memory-worker", payload]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": f"worker exit {proc.returncode}: {proc.stderr.strip()[-300:]}"}
    return json.loads(lines[-1])


# ---------------------------------------------------------------------------------------------- running


@dataclass
class ShapeResult:
    """Everything measured for one input shape."""

    shape: list[int]
    params: dict[str, int]
    times: dict[str, list[float]]
    memory: dict[str, float | None]
    skipped: dict[str, str]


def run_shape(
    specs: Sequence[ModelSpec], skipped: Mapping[str, str], shape: Sequence[int], cfg: BenchConfig,
    measure_memory: bool = True,
) -> ShapeResult:
    """Time all ``specs`` (interleaved, this process) and measure each one's peak memory (subprocesses)."""
    skipped = dict(skipped)
    if shape[-1] * shape[-2] > cfg.modelscope_max_pixels and "diffusers_modelscope" not in skipped:
        skipped["diffusers_modelscope"] = (
            f"{shape[-2]}x{shape[-1]} > modelscope_max_pixels {cfg.modelscope_max_pixels}: full-resolution "
            "spatial attention takes minutes per step on CPU"
        )
    active = [s for s in specs if s.key not in skipped]
    torch.manual_seed(cfg.seed)
    models = {s.key: build_model(s) for s in active}
    steps = {s.key: make_step(s, models[s.key], shape, cfg.seed) for s in active}
    times = time_steps(steps, cfg.warmup, cfg.repeats)
    params = {key: count_parameters(model) for key, model in models.items()}
    del steps, models
    gc.collect()
    memory: dict[str, float | None] = {}
    for spec in active if measure_memory else []:
        result = memory_in_subprocess(spec, shape, cfg)
        if "error" in result:
            print(f"  memory of {spec.key} failed: {result['error']}", file=sys.stderr)
        memory[spec.key] = result.get("peak_mib")
    return ShapeResult(list(shape), params, times, memory, skipped)


# ---------------------------------------------------------------------------------------------- report

BASELINES = ("diffusers", "diffusers_modelscope", "make_a_video")


def met(flag: bool) -> str:
    return "MET" if flag else "NOT MET"


def _row(key: str, label: str, r: ShapeResult) -> str:
    ours_params, ours_mem = r.params["ours"], r.memory.get("ours")
    params = r.params[key]
    median = statistics.median(r.times[key])
    time_ratio = paired_ratio(r.times["ours"], r.times[key])
    mem = r.memory.get(key)
    mem_text = f"{mem:9.0f}" if mem is not None else f"{'n/a':>9}"
    mem_ratio = f"{ours_mem / mem:8.2f}" if mem and ours_mem is not None else f"{'n/a':>8}"
    delta = 100 * (params / ours_params - 1)
    return (
        f"{label:<46}{params / 1e6:7.2f}M {delta:+6.1f}% {median:9.2f} {time_ratio:9.2f} "
        f"{mem_text} {mem_ratio}"
    )


def format_shape(r: ShapeResult, labels: Mapping[str, str]) -> list[str]:
    """Table and target checks for one shape."""
    lines = [
        f"== input {tuple(r.shape)} (b c t h w) ==",
        f"{'model':<46}{'params':>8} {'vs ours':>7} {'step s':>9} {'ours/it':>9} "
        f"{'peak MiB':>9} {'ours/it':>8}",
    ]
    for key, label in labels.items():
        if key in r.skipped:
            lines.append(f"{label:<46}skipped: {r.skipped[key]}")
        elif key in r.times:
            lines.append(_row(key, label, r))
    lines += _targets(r)
    return lines


def _targets(r: ShapeResult) -> list[str]:
    lines = []
    present = [k for k in BASELINES if k in r.times]
    if present:
        ratios = {k: paired_ratio(r.times["ours"], r.times[k]) for k in present}
        text = ", ".join(f"{k} {v:.2f}" for k, v in ratios.items())
        faster = max(ratios.values()) < 1
        lines.append(f"target: ours faster than every baseline (ours/it < 1: {text}) -> {met(faster)}")
        mems = [r.memory.get(k) for k in present]
        ours_mem = r.memory.get("ours")
        if ours_mem is not None and all(m is not None for m in mems):
            lowest = min(mems)
            lines.append(
                f"target: ours peak memory {ours_mem:.0f} MiB <= lowest baseline {lowest:.0f} MiB "
                f"-> {met(ours_mem <= lowest)}"
            )
    if "ours_ckpt" in r.times:
        cost = paired_ratio(r.times["ours_ckpt"], r.times["ours"])
        on, off = r.memory.get("ours_ckpt"), r.memory.get("ours")
        if on is not None and off:
            cut = 100 * (1 - on / off)
            lines.append(
                f"checkpointing: peak {off:.0f} -> {on:.0f} MiB ({cut:.1f}% less), time x{cost:.2f}; "
                f"target >= 40% reduction -> {met(cut >= 40)}"
            )
    if "ours_full3d" in r.times:
        ratio = paired_ratio(r.times["ours"], r.times["ours_full3d"])
        lines.append(
            f"pseudo-3D vs full 3D: params {r.params['ours'] / 1e6:.2f}M vs "
            f"{r.params['ours_full3d'] / 1e6:.2f}M, "
            f"step time ours/full3D {ratio:.2f}"
        )
    return lines


def header(cfg: BenchConfig) -> list[str]:
    """Lines describing the environment and the measurement method."""
    versions = package_versions(("torch", "diffusers", "make-a-video-pytorch"))
    return [
        "D^t model benchmark: training step = forward + MSE(output, random target) + backward + zero_grad",
        f"{versions}; torch.set_num_threads({cfg.threads}); cpu count {os.cpu_count()}; "
        f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}",
        f"ours: base {cfg.base_channels}, mults {cfg.channel_mults}, res blocks {cfg.num_res_blocks}, "
        f"attention at {cfg.attention_levels}, head_dim {cfg.head_dim}, cond_dim {cfg.cond_dim} -> "
        f"{cfg.num_cond_tokens} context tokens; fps_cond. Baselines: widths/depth searched for the parameter "
        f"count closest to ours; diffusers gets 4 context tokens of our context width; SpaceTimeUnet has no "
        f"context (timestep only) and no time compression.",
        f"step s = median of {cfg.repeats} interleaved rounds after {cfg.warmup} warm-up step(s); ours/it = "
        f"median over rounds of t_ours / t_it (< 1: ours faster).",
        "peak MiB = peak RSS growth during one step (after warm-up, VmHWM reset via /proc/self/clear_refs), "
        "fresh subprocess per model and shape, glibc mmap threshold pinned so freed tensors leave RSS; it "
        "includes activations, gradients and temporaries, not the weights. ours/it = peak_ours / peak_it.",
    ]


def describe(spec: ModelSpec) -> str:
    """One line naming the constructor arguments that size a baseline (those the parameter search chose)."""
    names = {
        "diffusers": ("block_out_channels", "layers_per_block", "attention_head_dim", "down_block_types"),
        "make_a_video": ("dim", "dim_mult", "resnet_block_depths", "self_attns", "attn_heads"),
    }.get(spec.family, ())
    return f"  {spec.key}: " + ", ".join(f"{n}={spec.kwargs[n]}" for n in names)


def parameter_check(specs: Sequence[ModelSpec]) -> str:
    """Whether every baseline's parameter count is within PARAM_TOLERANCE of ours."""
    target = spec_parameters(specs[0])
    off = {s.key: spec_parameters(s) / target - 1 for s in specs if s.family != "ours"}
    worst = max((abs(v) for v in off.values()), default=0.0)
    text = ", ".join(f"{k} {100 * v:+.1f}%" for k, v in off.items())
    return f"baseline parameters vs ours: {text} -> within {PARAM_TOLERANCE:.0%}: {worst <= PARAM_TOLERANCE}"


def run(cfg: BenchConfig, measure_memory: bool = True) -> list[str]:
    """Run the whole benchmark; returns the report lines (also printed as they come)."""
    torch.set_num_threads(cfg.threads)
    lines = header(cfg)
    print("\n".join(lines), flush=True)
    specs, skipped = build_specs(cfg)
    matched = [parameter_check(specs), *(describe(s) for s in specs if s.family != "ours")]
    print("\n".join(matched), flush=True)
    lines += matched
    labels = {s.key: s.label for s in specs}
    labels.update({k: k for k in skipped if k not in labels})
    for shape in cfg.shapes:
        result = run_shape(specs, skipped, shape, cfg, measure_memory)
        block = ["", *format_shape(result, labels)]
        print("\n".join(block), flush=True)
        lines += block
    tail = f"load average at the end {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    print(tail, flush=True)
    return [*lines, tail]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_model", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small configuration (< 1 min)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default 1)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per shape")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_worker:
        print(json.dumps(memory_worker(json.loads(args.memory_worker))), flush=True)
        return
    cfg = quick_config() if args.quick else BenchConfig()
    if args.threads is not None:
        cfg.threads = args.threads
    if args.repeats is not None:
        cfg.repeats = args.repeats
    run(cfg, measure_memory=not args.no_memory)


if __name__ == "__main__":
    main()
