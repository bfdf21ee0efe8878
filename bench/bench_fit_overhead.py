"""Lightning ``fit`` step time against a bare PyTorch loop doing the same work on the same model and batch.

``python -m bench.bench_fit_overhead [--quick]``

Every variant trains a fresh component (same seed) from the same recipe on one fixed in-memory batch repeated
(a real batch of the image datamodule, read once: data loading is excluded), with the component's own AdamW
and warm-up/cosine schedule (``configure_optimizers``), the recipe's gradient clipping and the EMA update:

- ``bare``: a plain loop calling the component's ``prepare_batch``, ``diffusion_loss``, ``extra_losses``, then
  ``zero_grad``, ``backward``, ``clip_grad_norm_``, optimizer and scheduler step, ``update_ema``.
- ``lightning``: ``L.Trainer(max_steps, accelerator="cpu", logger=False, enable_checkpointing=False,
  enable_progress_bar=False, gradient_clip_val)``: Lightning's loop running the component's own hooks
  (``training_step`` with its ``self.log`` calls, the gradient-norm hook, the EMA hook).
- ``lightning-quiet``: the same plain Trainer on the component with its per-step logging removed (a
  ``training_step`` without ``self.log`` calls, no gradient-norm hook): Lightning's own overhead alone.
- ``lightning+ours``: the Trainer ``mav_train.training.build_trainer`` builds (checkpoint, sample logger,
  throughput and LR-monitor callbacks, CSV logger, progress bar off); periodic checkpoints and samples are
  pushed past the measured steps (they are every-N-steps costs, not per-step overhead).

A step's time is the interval between consecutive step-end timestamps, on two clocks: wall time
(``perf_counter``) and this process's CPU time (``process_time``; with one torch thread it equals the wall
time of an unloaded machine and ignores other processes' load on a shared one). The median over the steps
after the warm-up is reported, short repeats interleaved with the order rotating each repeat to cancel drift.
The target (the issue's): plain Lightning within 5% of the bare loop.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import grad_norm
from omegaconf import DictConfig, OmegaConf
from typing_extensions import override

from datamodules.demo import write_image_shards
from datamodules.factory import build_datamodule
from mav_train.components.base import DiffusionComponent
from mav_train.components.registry import component_class
from mav_train.config.load import load_config
from mav_train.training import build_trainer

BARE, QUIET, LIGHTNING, OURS = "bare", "lightning-quiet", "lightning", "lightning+ours"
VARIANTS = (BARE, QUIET, LIGHTNING, OURS)
TARGET_RATIO = 1.05  # the target: Lightning's step within 5% of the bare loop


@dataclass(frozen=True)
class FitBenchSettings:
    """What to train and how long to time it."""

    recipe: str = "demo/decoder"  # an image recipe (its datamodule gives the fixed batch)
    overrides: tuple[str, ...] = ()  # extra key=value config overrides (e.g. unet.base_channels=16)
    batch_size: int = 8
    steps: int = 24  # timed steps per run
    warmup: int = 3  # steps dropped at the start of every run
    repeats: int = 8  # runs per variant, interleaved
    grad_norm_calls: int = 20  # calls timed to attribute the component's gradient-norm hook
    threads: int | None = 1  # torch intra-op threads while timing (restored after); None: leave as is

    @property
    def total_steps(self) -> int:
        return self.warmup + self.steps


QUICK = FitBenchSettings(batch_size=4, steps=8, warmup=2, repeats=2, grad_norm_calls=5)
CLOCKS = ("wall", "cpu")
Stamp = tuple[float, float]  # (wall, cpu) seconds


def now() -> Stamp:
    return time.perf_counter(), time.process_time()


@dataclass
class FitBenchResult:
    """Step periods in seconds per clock and variant (all repeats pooled), and each repeat's median."""

    settings: FitBenchSettings
    config: DictConfig
    periods: dict[str, dict[str, list[float]]] = field(default_factory=lambda: {c: {} for c in CLOCKS})
    repeat_medians: dict[str, dict[str, list[float]]] = field(default_factory=lambda: {c: {} for c in CLOCKS})
    grad_norm_s: float = 0.0  # median time of one grad_norm(network) call, the component's logging hook

    def add(self, variant: str, stamps: list[Stamp]) -> None:
        for index, clock in enumerate(CLOCKS):
            periods = step_periods([stamp[index] for stamp in stamps], self.settings.warmup)
            self.periods[clock].setdefault(variant, []).extend(periods)
            self.repeat_medians[clock].setdefault(variant, []).append(statistics.median(periods))

    def median(self, variant: str, clock: str = "wall") -> float:
        return statistics.median(self.periods[clock][variant])

    def ratio(self, variant: str, clock: str = "wall") -> float:
        """Median step time of ``variant`` over the bare loop's."""
        return self.median(variant, clock) / self.median(BARE, clock)

    def meets_target(self, variant: str = LIGHTNING, clock: str = "wall") -> bool:
        return self.ratio(variant, clock) <= TARGET_RATIO


class StepClock(L.Callback):
    """Records (wall, CPU) time at the end of every training step."""

    def __init__(self) -> None:
        self.stamps: list[Stamp] = []

    @override
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.stamps.append(now())


class RepeatedBatch:
    """An iterable with a length yielding the same batch ``length`` times (no loading, no collation)."""

    def __init__(self, batch: dict[str, Any], length: int) -> None:
        self.batch = batch
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for _ in range(self.length):
            yield self.batch


def bench_config(settings: FitBenchSettings, work_dir: Path) -> DictConfig:
    """The recipe on CPU with the benchmark's batch size and step count, CSV logger, no progress bar."""
    total = settings.total_steps
    return load_config(settings.recipe, [
        f"data.batch_size={settings.batch_size}",
        f"data.shards={work_dir / 'images'}",
        "data.num_workers=0",
        f"data.epoch_samples={settings.batch_size}",
        "data.val_samples=0",
        f"trainer.max_steps={total}",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        "trainer.strategy=auto",
        "trainer.enable_progress_bar=false",
        "logger.kind=csv",
        f"checkpoint.every_n_steps={total + 1}",
        f"sampling.every_n_steps={total + 1}",
        f"sampling.num_samples={min(2, settings.batch_size)}",
        f"run_dir={work_dir / 'run'}",
        *settings.overrides,
    ])


def fixed_batch(cfg: DictConfig, work_dir: Path) -> dict[str, Any]:
    """One real training batch of the recipe's image datamodule, from toy-world shards in ``work_dir``, as
    ``training_step`` receives it (pixels float32 in [-1, 1])."""
    if cfg.data.kind != "image_text":
        raise ValueError(f"bench_fit_overhead needs an image recipe (data.kind image_text), got "
                         f"{cfg.data.kind!r}")
    size = cfg.data.batch_size
    write_image_shards(work_dir / "images", num_samples=size, samples_per_shard=size,
                       resolution=max(64, cfg.data.resolution))
    datamodule = build_datamodule(OmegaConf.merge(cfg.data, {"embeddings": None}))  # the CLIP runs per batch
    # The loader ships uint8 pixels; the datamodule's hook (which fit runs after the device transfer, and
    # which RepeatedBatch without the datamodule would skip) makes them the float [-1, 1] training sees.
    return datamodule.on_after_batch_transfer(next(iter(datamodule.train_dataloader())), 0)


def new_component(cfg: DictConfig, quiet: bool = False) -> DiffusionComponent:
    """A fresh component (seed 0); ``quiet``: without its per-step ``self.log`` calls and grad-norm hook."""
    torch.manual_seed(0)
    cls = component_class(cfg.component)
    return (quiet_subclass(cls) if quiet else cls)(cfg)


def quiet_subclass(cls: type[DiffusionComponent]) -> type[DiffusionComponent]:
    """``cls`` whose training step does the bare loop's work and logs nothing."""

    class Quiet(cls):
        @override
        def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
            x0, cond = self.prepare_batch(batch)
            return self.diffusion_loss(x0, cond) + self.extra_losses(batch)

        @override
        def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
            pass

    Quiet.__name__ = f"Quiet{cls.__name__}"
    return Quiet


def run_bare(cfg: DictConfig, batch: dict[str, Any]) -> list[Stamp]:
    """Step-end timestamps of the bare loop (the same work as Lightning's step, without Lightning)."""
    module = new_component(cfg).train()
    configured = module.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    params = [p for group in optimizer.param_groups for p in group["params"]]
    clip = cfg.trainer.gradient_clip_val
    stamps = []
    for step in range(cfg.trainer.max_steps):
        x0, cond = module.prepare_batch(batch)
        loss = module.diffusion_loss(x0, cond) + module.extra_losses(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.step()
        scheduler.step()
        if module.ema_network is not None and step >= cfg.ema.start_step:
            module.update_ema(step)
        stamps.append(now())
    return stamps


def run_lightning(cfg: DictConfig, batch: dict[str, Any], ours: bool, quiet: bool = False) -> list[Stamp]:
    """Step-end timestamps of ``Trainer.fit``: plain Lightning, or our Trainer from ``build_trainer``."""
    module = new_component(cfg, quiet=quiet)
    clock = StepClock()
    if ours:
        trainer = build_trainer(cfg, Path(cfg.run_dir), extra_callbacks=[clock])
    else:
        trainer = L.Trainer(max_steps=cfg.trainer.max_steps, accelerator="cpu", logger=False,
                            enable_checkpointing=False, enable_progress_bar=False,
                            gradient_clip_val=cfg.trainer.gradient_clip_val, callbacks=[clock])
    with contextlib.redirect_stdout(io.StringIO()):  # the (rich) model summary
        trainer.fit(module, train_dataloaders=RepeatedBatch(batch, cfg.trainer.max_steps))
    if len(clock.stamps) != cfg.trainer.max_steps:
        raise RuntimeError(f"Lightning ran {len(clock.stamps)} steps, expected {cfg.trainer.max_steps}")
    return clock.stamps


def step_periods(stamps: list[float], warmup: int) -> list[float]:
    """Intervals between consecutive step ends, dropping the first ``warmup`` steps."""
    if warmup < 1:
        raise ValueError(f"warmup {warmup} must be >= 1 (the first step has no previous timestamp)")
    return [b - a for a, b in zip(stamps[warmup - 1 : -1], stamps[warmup:], strict=True)]


def grad_norm_seconds(cfg: DictConfig, batch: dict[str, Any], calls: int) -> float:
    """Median time of the component's ``on_before_optimizer_step`` work (``grad_norm`` over the network)."""
    module = new_component(cfg).train()
    x0, cond = module.prepare_batch(batch)
    module.diffusion_loss(x0, cond).backward()
    times = []
    for _ in range(max(1, calls)):
        start = time.perf_counter()
        grad_norm(module.network, norm_type=2)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run with ``count`` torch intra-op threads, then restore the previous count. One thread keeps CPU
    timings steady on a shared machine (with two, a descheduled OpenMP thread stalls every op)."""
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_fit_benchmark(settings: FitBenchSettings, work_dir: Path | None = None) -> FitBenchResult:
    """Time every variant ``settings.repeats`` times, interleaved with a rotating order."""
    with tempfile.TemporaryDirectory(prefix="bench_fit_") as scratch, torch_threads(settings.threads):
        root = Path(work_dir) if work_dir is not None else Path(scratch)
        cfg = bench_config(settings, root)
        batch = fixed_batch(cfg, root)
        result = FitBenchResult(settings=settings, config=cfg)
        runners = {
            BARE: lambda: run_bare(cfg, batch),
            QUIET: lambda: run_lightning(cfg, batch, ours=False, quiet=True),
            LIGHTNING: lambda: run_lightning(cfg, batch, ours=False),
            OURS: lambda: run_lightning(cfg, batch, ours=True),
        }
        for repeat in range(settings.repeats):
            shift = repeat % len(VARIANTS)
            for variant in VARIANTS[shift:] + VARIANTS[:shift]:
                result.add(variant, runners[variant]())
        result.grad_norm_s = grad_norm_seconds(cfg, batch, settings.grad_norm_calls)
    return result


def format_fit_report(result: FitBenchResult) -> str:
    s, cfg = result.settings, result.config
    lines = [
        f"fit step time: recipe {s.recipe} ({cfg.component}, batch {s.batch_size}, {cfg.data.resolution}px, "
        f"base_channels {cfg.unet.base_channels}), {s.steps} timed steps x {s.repeats} interleaved repeats "
        f"after {s.warmup} warm-up steps each, torch threads {s.threads or torch.get_num_threads()}",
        f"{'variant':<16}{'wall ms':>9}{'ratio':>7}{'cpu ms':>9}{'ratio':>7}  wall medians of repeats (ms)",
    ]
    for variant in VARIANTS:
        repeats = " ".join(f"{m * 1e3:.0f}" for m in result.repeat_medians["wall"][variant])
        cpu = f"{result.median(variant, 'cpu') * 1e3:>9.1f}{result.ratio(variant, 'cpu'):>7.3f}"
        lines.append(f"{variant:<16}{result.median(variant) * 1e3:>9.1f}{result.ratio(variant):>7.3f}{cpu}  "
                     f"{repeats}")

    def delta_ms(a: str, b: str) -> str:
        return " / ".join(f"{(result.median(a, c) - result.median(b, c)) * 1e3:+.1f}" for c in CLOCKS)

    def verdict(variant: str) -> str:
        met = [("MET" if result.meets_target(variant, c) else "NOT MET") for c in CLOCKS]
        return f"{variant} wall {met[0]}, cpu {met[1]}"

    lines += [
        f"target ratio <= {TARGET_RATIO:.2f}: {verdict(LIGHTNING)}; {verdict(QUIET)}; {verdict(OURS)}",
        f"component's per-step logging (self.log calls + grad-norm hook) = lightning - lightning-quiet: "
        f"{delta_ms(LIGHTNING, QUIET)} ms/step (wall / cpu); grad_norm(network) alone "
        f"{result.grad_norm_s * 1e3:.2f} ms",
        f"our callbacks + CSV logger = lightning+ours - lightning: {delta_ms(OURS, LIGHTNING)} ms/step "
        f"(wall / cpu)",
    ]
    return "\n".join(lines)


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_fit_overhead",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few steps and repeats at batch 4 (seconds)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: steadier on a shared machine)")
    parser.add_argument("--steps", type=int, help="timed steps per run")
    parser.add_argument("--repeats", type=int, help="runs per variant")
    parser.add_argument("--batch-size", type=int, help="batch size")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value (unet.base_channels=16)")
    args = parser.parse_args(argv)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    settings = QUICK if args.quick else FitBenchSettings()
    changes = {"steps": args.steps, "repeats": args.repeats, "batch_size": args.batch_size,
               "threads": args.threads}
    settings = replace(settings, overrides=tuple(args.overrides),
                       **{name: value for name, value in changes.items() if value is not None})
    print(f"load average (1/5/15 min) before: {load_average()}  (cpus: {os.cpu_count()})", flush=True)
    started = time.perf_counter()
    result = run_fit_benchmark(settings)
    print(format_fit_report(result))
    print(f"load average after: {load_average()}; wall {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
