"""Resume from the newest *readable* checkpoint of the run: truncated, corrupted and unsafe ones are reported in
one warning line and skipped; checkpoints that exist with none readable stop ``fit`` instead of starting over."""

from __future__ import annotations

import hashlib
import logging

import pytest
import torch

from mav_train.checkpoints import CheckpointError
from mav_train.config.load import load_config
from mav_train.training import PREEMPT_CKPT, WANDB_ID_FILE, resume_checkpoint
from tests.checkpoints.conftest import SHORT
from tests.checkpoints.payload import write_malicious_checkpoint
from tests.conftest import run_cli
from tests.distributed.helpers import wandb_history


def fake(path, step: int) -> None:
    torch.save({"global_step": step, "state_dict": {"network.w": torch.randn(4096)}}, path)


def truncate(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_newest_readable_among_all_checkpoints_and_one_warning_line(tmp_path, caplog):
    cfg = load_config("demo/decoder", [f"run_dir={tmp_path}"])
    fake(tmp_path / "best-step=0000300.ckpt", 300)
    fake(tmp_path / "best-step=0000200.ckpt", 200)
    fake(tmp_path / "last.ckpt", 310)
    truncate(tmp_path / "last.ckpt")
    write_malicious_checkpoint(tmp_path / PREEMPT_CKPT, tmp_path / "pwned", step=320)
    fake(tmp_path / "hpc_ckpt_1.ckpt", 330)
    corrupt = bytearray((tmp_path / "hpc_ckpt_1.ckpt").read_bytes())
    corrupt[-3000] ^= 0xFF  # inside the tensor data: the Lightning state still reads, the CRC does not match
    (tmp_path / "hpc_ckpt_1.ckpt").write_bytes(corrupt)
    with caplog.at_level(logging.WARNING, logger="mav_train"):
        assert resume_checkpoint(cfg, tmp_path) == str(tmp_path / "best-step=0000300.ckpt")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    for name, reason in (("last.ckpt", "truncated zip"), (PREEMPT_CKPT, "unsafe"),
                         ("hpc_ckpt_1.ckpt", "CRC")):
        assert f"{tmp_path / name} (" in warnings[0] and reason in warnings[0], (name, warnings[0])
    assert not (tmp_path / "pwned").exists()


def test_checkpoints_without_a_readable_one_stop_instead_of_starting_over(tmp_path):
    cfg = load_config("demo/decoder", [f"run_dir={tmp_path}"])
    assert resume_checkpoint(cfg, tmp_path) is None  # nothing there: a fresh start
    fake(tmp_path / "last.ckpt", 10)
    truncate(tmp_path / "last.ckpt")
    with pytest.raises(CheckpointError, match=r"none is readable .*last\.ckpt.*checkpoint\.resume=never"):
        resume_checkpoint(cfg, tmp_path)
    never = load_config("demo/decoder", [f"run_dir={tmp_path}", "checkpoint.resume=never"])
    assert resume_checkpoint(never, tmp_path) is None


def test_fit_with_a_truncated_last_ckpt_resumes_from_best_and_continues_the_wandb_run(run_copy, tmp_path,
                                                                                        demo_cache):
    """The issue's reproduction: last.ckpt cut in half beside a readable best-*.ckpt of the same step."""
    truncate(run_copy / "last.ckpt")
    best = run_copy / "best-step=0000004.ckpt"
    out = run_cli(["fit", "recipe=demo/decoder", *SHORT, "trainer.max_steps=6", f"run_dir={run_copy}"], tmp_path,
                  demo_cache)
    assert out.returncode == 0, out.stderr[-3000:]
    warnings = [line for line in out.stderr.splitlines() if "unreadable checkpoints" in line]
    assert len(warnings) == 1 and f"{run_copy / 'last.ckpt'} (" in warnings[0], out.stderr[-3000:]
    assert f"resuming from {best}" in out.stderr and "done: step 6" in out.stdout
    assert torch.load(run_copy / "last.ckpt", weights_only=True, mmap=True)["global_step"] == 6
    # One W&B run; its training steps 0..5 each logged once (the first fit 0..3, the resumed one 4..5).
    run_id = (run_copy / WANDB_ID_FILE).read_text().strip()
    rows = wandb_history(run_copy)
    assert {rid for rid, _, _ in rows} == {run_id}
    steps = [(job, row["trainer/global_step"]) for _, job, row in rows if "train/loss" in row]
    assert steps == [(0, s) for s in range(4)] + [(1, s) for s in range(4, 6)], steps


def test_fit_stops_when_no_checkpoint_is_readable(run_copy, tmp_path, demo_cache):
    for path in run_copy.glob("*.ckpt"):
        truncate(path)
    before = {p.name: digest(p) for p in run_copy.glob("*.ckpt")}
    out = run_cli(["fit", "recipe=demo/decoder", *SHORT, f"run_dir={run_copy}"], tmp_path, demo_cache)
    errors = [line for line in out.stderr.splitlines() if "checkpoint error" in line]
    assert out.returncode == 1 and len(errors) == 1 and "none is readable" in errors[0], out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    assert {p.name: digest(p) for p in run_copy.glob("*.ckpt")} == before  # nothing overwritten


def test_the_last_step_is_saved_when_it_is_not_a_checkpoint_step(run_copy, tmp_path, demo_cache):
    """Checkpoints every 2 steps, training to step 7 (resumed from step 4) then to 9: last.ckpt holds step 7, then
    9 (before, the steps after the last multiple of checkpoint.every_n_steps were silently lost)."""
    for max_steps in (7, 9):
        out = run_cli(["fit", "recipe=demo/decoder", *SHORT, f"trainer.max_steps={max_steps}", f"run_dir={run_copy}"],
                      tmp_path, demo_cache)
        assert out.returncode == 0, out.stderr[-3000:]
        assert f"done: step {max_steps}" in out.stdout
        assert torch.load(run_copy / "last.ckpt", weights_only=True, mmap=True)["global_step"] == max_steps
    assert "resuming from " + str(run_copy / "last.ckpt") in out.stderr


def test_final_checkpoint_saves_only_steps_nothing_else_saved():
    """No second save of a step ModelCheckpoint saved (a multiple of every_n_steps) or the preemption callback
    saved; every other final step is saved, and every step when periodic checkpoints are off."""
    from types import SimpleNamespace

    from mav_train.callbacks.final_checkpoint import FinalCheckpoint
    from mav_train.callbacks.preemption import Preemption

    preemption = Preemption("unused.ckpt")
    final = FinalCheckpoint("last.ckpt", every_n_steps=5)

    def trainer(step):
        return SimpleNamespace(global_step=step, callbacks=[preemption, final])

    assert [s for s in range(12) if final.needs_save(trainer(s))] == [1, 2, 3, 4, 6, 7, 8, 9, 11]
    preemption.saved_step = 7
    assert not final.needs_save(trainer(7)) and final.needs_save(trainer(8))
    assert FinalCheckpoint("last.ckpt", every_n_steps=0).needs_save(trainer(10))
