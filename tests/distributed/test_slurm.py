"""A real SLURM job: ``submit`` a 2-task CPU job, send the requeue signal, and check that it saved, requeued
itself, resumed from a step > 0 and finished at ``max_steps`` with one continuous W&B run.

The local single-node cluster is started by the project's own ``slurm/local_cluster.sh start`` (root;
idempotent; installs the Debian SLURM packages with apt when missing). Skipped only where it cannot run: not
root, or SLURM missing with no apt-get to install it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from mav_train.checkpoints import checkpoint_step
from mav_train.training import PREEMPT_CKPT, WANDB_ID_FILE
from tests.distributed.helpers import ROOT, TINY, mav_train, run, wandb_history

LOCAL_CLUSTER = ROOT / "slurm" / "local_cluster.sh"
MAX_STEPS = 24  # long enough that the signal always lands mid-training, even on an idle machine


@pytest.fixture(scope="module")
def slurm_cluster() -> None:
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster needs root (slurm/local_cluster.sh installs and starts munge, "
                    "slurmctld, slurmd)")
    if shutil.which("sbatch") is None and shutil.which("apt-get") is None:
        pytest.skip("SLURM is not installed and there is no apt-get to install it (slurm/local_cluster.sh)")
    result = subprocess.run(["bash", str(LOCAL_CLUSTER), "start"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"local_cluster.sh failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"


def job_field(job_id: str, field: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    match = re.search(rf"\b{field}=(\S+)", out)
    return match.group(1) if match else ""


def wait_until(predicate, timeout: float, what: str, log: Path, job_id: str | None = None) -> None:
    """Poll ``predicate``; on timeout fail with the job log's tail. With ``job_id``, a job still running is
    first sent SIGUSR2 (every rank and loader worker prints its Python stacks into the log: see
    ``mav_train.cli.main``), so a hang names the line it hangs on."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            if job_id is not None and job_field(job_id, "JobState") == "RUNNING":
                subprocess.run(["scancel", "--signal=USR2", job_id])
                time.sleep(5)
            text = log.read_text()[-12000:] if log.exists() else "(no job log)"
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; job log:\n{text}")
        time.sleep(0.5)


@pytest.mark.slow
def test_submitted_job_requeues_on_usr1_and_resumes_exactly(tmp_path, demo_cache, slurm_cluster):
    run_dir = tmp_path / "run"
    result = run(mav_train("submit", "recipe=demo/temporal_decoder", *TINY, "checkpoint.every_n_steps=2",
                           f"trainer.max_steps={MAX_STEPS}", "logger=wandb", "slurm.gpus_per_node=0",
                           "slurm.tasks_per_node=2", "slurm.cpus_per_task=1", "slurm.time=00:15:00",
                           "slurm.requeue_signal_seconds=60", f"run_dir={run_dir}"), tmp_path, demo_cache,
                 timeout=120)
    job_id = re.search(r"submitted batch job (\d+)", result.stdout).group(1)
    log = run_dir / f"slurm-{job_id}.out"
    try:
        # Training is under way (a checkpoint at step 2 exists): send the requeue signal to the batch shell.
        last = run_dir / "last.ckpt"
        wait_until(lambda: last.exists() and (checkpoint_step(last) or 0) > 0, 480, "a first checkpoint", log, job_id)
        subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], check=True)
        wait_until(lambda: job_field(job_id, "Restarts") == "1", 120, "the job to requeue", log, job_id)
        wait_until(lambda: job_field(job_id, "JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"),
                   300, "the requeued job to finish", log, job_id)
    finally:
        if job_field(job_id, "JobState") in ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING"):
            subprocess.run(["scancel", job_id])
    text = log.read_text()
    assert job_field(job_id, "JobState") == "COMPLETED", text[-4000:]

    # The first run saved at a step boundary and stopped; the requeued one resumed from exactly there.
    saved = checkpoint_step(run_dir / PREEMPT_CKPT)
    assert saved is not None and 0 < saved < MAX_STEPS, (saved, text[-3000:])
    assert "received SIGUSR1" in text and "requeueing job" in text, text[-4000:]
    assert "(restart 1)" in text, text[-4000:]
    second_job = text[text.index("(restart 1)"):]
    assert "resuming from" in second_job and "from scratch" not in second_job, text[-4000:]
    assert f"done: step {MAX_STEPS}" in text and checkpoint_step(run_dir / "last.ckpt") == MAX_STEPS

    # One W&B run across both jobs, and its training steps cover 0 .. max_steps-1 once each.
    run_id = (run_dir / WANDB_ID_FILE).read_text().strip()
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 2
    rows = wandb_history(run_dir)
    assert {rid for rid, _, _ in rows} == {run_id}
    steps = [(job, row["trainer/global_step"]) for _, job, row in rows if "train/loss" in row]
    # The first job logged 0 .. saved-1, the requeued one saved .. max_steps-1: no step lost or repeated.
    assert steps == [(0, s) for s in range(saved)] + [(1, s) for s in range(saved, MAX_STEPS)], steps
