"""Smoke tests of the D^t model benchmark at a minuscule size (structure only; no timing assertions)."""

from __future__ import annotations

import subprocess
import sys

import torch

from bench.bench_model import (
    BenchConfig,
    Full3DConv,
    build_model,
    build_specs,
    format_shape,
    import_error,
    match_parameters,
    memory_in_subprocess,
    ours_spec,
    paired_ratio,
    run_shape,
    spec_parameters,
    time_steps,
)
from mav_train.nn.pseudo3d import Pseudo3DConv
from tests.conftest import REPO

SHAPE = [1, 3, 2, 8, 8]


def tiny() -> BenchConfig:
    return BenchConfig(
        shapes=[SHAPE],
        base_channels=8,
        channel_mults=[1, 2],
        attention_levels=[2],
        head_dim=8,
        cond_dim=8,
        warmup=1,
        repeats=2,
        modelscope_max_pixels=0,  # skip the ModelScope-layout row: exercises the skip path, saves time
    )


def test_full_3d_replaces_every_pseudo3d_pair() -> None:
    cfg = tiny()
    pseudo = build_model(ours_spec(cfg))
    full = build_model(ours_spec(cfg, full3d=True))
    pairs = sum(isinstance(m, Pseudo3DConv) for m in pseudo.modules())
    assert pairs > 0
    assert not any(isinstance(m, Pseudo3DConv) for m in full.modules())
    convs = [m for m in full.modules() if isinstance(m, Full3DConv)]
    assert len(convs) == pairs
    assert all(c.conv.kernel_size == (3, 3, 3) for c in convs)
    x = torch.randn(*SHAPE)
    out = full(x, torch.tensor([3]), image_emb=torch.randn(1, 8), fps=torch.tensor([8.0]))
    assert out.shape == x.shape
    assert spec_parameters(ours_spec(cfg, full3d=True)) > spec_parameters(ours_spec(cfg))


def test_match_parameters_picks_the_closest_count() -> None:
    candidates = [
        ours_spec(BenchConfig(base_channels=b, channel_mults=[1, 2], attention_levels=[2], head_dim=8))
        for b in (8, 16, 32)
    ]
    target = spec_parameters(candidates[1]) + 1
    spec, count = match_parameters(target, candidates)
    assert spec.kwargs["base_channels"] == 16
    assert count == target - 1


def test_time_steps_interleaves_rounds() -> None:
    calls: list[str] = []
    steps = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    times = time_steps(steps, warmup=1, repeats=3)
    assert calls[:3] == ["a", "b", "c"]  # warm-up
    assert calls[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]  # rotated rounds
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert all(t >= 0 for v in times.values() for t in v)
    assert paired_ratio([1.0, 2.0, 3.0], [2.0, 2.0, 2.0]) == 1.0


def test_peak_step_memory_sees_a_large_temporary() -> None:
    # In a fresh process, as the benchmark measures (memory_worker): inside the test process, pages that earlier
    # tests freed but the allocator kept can hold the temporary without any growth of the resident set.
    code = ("import torch\nfrom bench.bench_model import peak_step_memory\n"
            "print(peak_step_memory(lambda: torch.ones(16 * 2**20).sum(), warmup=1))")  # 64 MiB, touched
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    peak = out.stdout.strip().splitlines()[-1]
    if peak == "None":  # no /proc/self/clear_refs on this system: the benchmark prints n/a
        return
    assert 48 <= float(peak) < 1024


def test_import_error_names_the_reason() -> None:
    assert import_error("json") is None
    reason = import_error("no_such_module_for_bench")
    assert reason is not None and "ModuleNotFoundError" in reason


def test_run_shape_and_report_structure() -> None:
    cfg = tiny()
    specs, skipped = build_specs(cfg)
    keys = {s.key for s in specs} | set(skipped)
    assert {"ours", "ours_ckpt", "ours_full3d", "diffusers", "diffusers_modelscope", "make_a_video"} <= keys
    result = run_shape(specs, skipped, SHAPE, cfg, measure_memory=False)
    assert "diffusers_modelscope" in result.skipped
    timed = {s.key for s in specs} - set(result.skipped)
    assert set(result.times) == timed == set(result.params)
    assert all(len(v) == cfg.repeats for v in result.times.values())
    assert result.params["ours_ckpt"] == result.params["ours"]
    result.memory = {key: 10.0 for key in timed}
    result.memory["ours_ckpt"] = 5.0
    text = "\n".join(format_shape(result, {s.key: s.label for s in specs} | {k: k for k in skipped}))
    assert "checkpointing: peak 10 -> 5 MiB (50.0% less)" in text
    assert "target >= 40% reduction -> MET" in text
    assert "pseudo-3D vs full 3D" in text
    assert "skipped:" in text


def test_memory_worker_subprocess_reports_a_peak() -> None:
    cfg = tiny()
    result = memory_in_subprocess(ours_spec(cfg), SHAPE, cfg, timeout=120)
    assert "error" not in result, result
    assert result["peak_mib"] is None or result["peak_mib"] >= 0
    assert result["base_rss_mib"] > 0
