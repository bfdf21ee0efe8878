"""Atomic checkpoint writes: a process killed with SIGKILL in the middle of a save, and a full disk, leave the
previous checkpoint whole; a full disk stops ``fit`` with one clear line."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mav_train.checkpoint_io import atomic_torch_save, atomic_write, temporary_files
from mav_train.checkpoints import CheckpointError, load_checkpoint, newest_readable, resume_candidates
from tests.checkpoints.conftest import SHORT
from tests.conftest import cli_env, run_cli

HERE = Path(__file__).resolve().parent


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_bytes(data: bytes):
    return lambda tmp: tmp.write_bytes(data)


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs: a real file system that runs full (root only)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_atomic_write_replaces_and_cleans_up_a_killed_writers_leftovers(tmp_path):
    target = tmp_path / "last.ckpt"
    stale = tmp_path / ".last.ckpt.deadbeef.tmp"
    stale.write_bytes(b"half")
    atomic_write(target, write_bytes(b"new"))
    assert target.read_bytes() == b"new" and temporary_files(target) == []
    with pytest.raises(CheckpointError, match=r"could not write checkpoint .*last\.ckpt: ValueError: boom; the "
                                              r"previous last\.ckpt is intact"):
        atomic_write(target, lambda tmp: (tmp.write_bytes(b"partial"), (_ for _ in ()).throw(ValueError("boom"))))
    assert target.read_bytes() == b"new" and temporary_files(target) == []


def test_a_full_disk_keeps_the_previous_checkpoint(small_disk):
    target = small_disk / "last.ckpt"
    atomic_write(target, write_bytes(b"good" * 1000))
    with pytest.raises(CheckpointError, match=r"\[Errno 28\] No space left on device; the previous last\.ckpt is "
                                              r"intact; "
                                              r"free disk space"):
        atomic_torch_save({"w": torch.zeros(2**21)}, target)  # 8 MiB > 4 MiB
    assert target.read_bytes() == b"good" * 1000 and temporary_files(target) == []


def test_fit_stops_on_a_full_disk_with_one_line_and_the_previous_checkpoint_intact(trained_run, tmp_path,
                                                                                    demo_cache):
    disk = tmp_path / "disk"
    disk.mkdir()
    size = sum(p.stat().st_size for p in trained_run.rglob("*") if p.is_file()) + 12 * 2**20
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        run_dir = Path(shutil.copytree(trained_run, disk / "run"))
        free = shutil.disk_usage(disk).free
        (disk / "filler").write_bytes(b"\0" * (free - 6 * 2**20))  # 6 MiB left: less than one checkpoint
        before = digest(run_dir / "last.ckpt")
        out = run_cli(["fit", "recipe=demo/decoder", *SHORT, "logger=csv", "trainer.max_steps=6",
                       f"run_dir={run_dir}"], tmp_path, demo_cache)
        errors = [line for line in out.stderr.splitlines() if "checkpoint error" in line]
        assert out.returncode == 1 and len(errors) == 1, out.stderr[-3000:]
        assert "No space left on device; no earlier checkpoint was touched; free disk space" in errors[0], errors[0]
        assert "Traceback" not in out.stderr
        assert digest(run_dir / "last.ckpt") == before and list(run_dir.glob(".*.tmp")) == []
        assert load_checkpoint(run_dir / "last.ckpt")["global_step"] == 4
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_kill_9_in_the_middle_of_a_save_leaves_every_checkpoint_readable(run_copy, tmp_path, demo_cache):
    """A real fit writes a checkpoint at every step; it is frozen (SIGSTOP) while a temporary checkpoint file
    exists and has bytes in it (the save is under way, the rename not done), then killed with SIGKILL."""
    cmd = [sys.executable, str(HERE / "fit_with_ballast.py"), "64", "recipe=demo/decoder", *SHORT, "logger=none",
           "checkpoint.every_n_steps=1", "trainer.max_steps=200", f"run_dir={run_copy}"]
    child = subprocess.Popen(cmd, cwd=tmp_path, env=cli_env(demo_cache), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    caught = None
    try:
        deadline = time.monotonic() + 300
        while caught is None and child.poll() is None and time.monotonic() < deadline:
            partial = [p for p in temporary_files(run_copy / "last.ckpt") if p.exists() and p.stat().st_size > 0]
            if not partial:
                time.sleep(0.002)
                continue
            os.kill(child.pid, signal.SIGSTOP)
            still = [p for p in partial if p.exists()]  # not yet renamed: frozen mid-save
            if still:
                caught = still[0]
                os.kill(child.pid, signal.SIGKILL)
            else:
                os.kill(child.pid, signal.SIGCONT)
    finally:
        if child.poll() is None:
            child.kill()
        _, err = child.communicate(timeout=60)
    assert caught is not None, f"never caught a save in progress; child stderr:\n{err[-3000:]}"
    assert child.returncode == -signal.SIGKILL
    assert caught.exists()  # the killed writer's partial file is left aside, never in last.ckpt's place
    assert load_checkpoint(run_copy / "last.ckpt")["global_step"] >= 4  # the previous last.ckpt, whole
    newest, unreadable = newest_readable(resume_candidates(run_copy))
    assert unreadable == [] and newest is not None
