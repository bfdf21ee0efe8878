"""``submit recipe=CASCADE``: the dry run prints one script per stage with ``afterok`` dependencies on exactly the
stages it needs; on the real local SLURM cluster a 2-stage chain (SR_l → SR_l^t) runs in order and the second
stage starts from the first one's checkpoint."""

from __future__ import annotations

import re
import subprocess
import time

import pytest
import torch

from mav_train.cli.main import main
from tests.distributed.helpers import mav_train, run
from tests.distributed.test_slurm import job_field, slurm_cluster, wait_until  # noqa: F401 (fixture)


def scripts_by_stage(out: str) -> dict[str, str]:
    parts = re.split(r"^# ===== (?:stage )?(\w+): .*=====\n", out, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_dry_run_prints_every_stage_with_its_dependencies(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["submit", "recipe=demo/cascade", "slurm.gpus_per_node=0", "slurm.time=01:00:00",
                 "stages.prior.slurm.time=02:00:00", "--dry-run"]) == 0
    scripts = scripts_by_stage(capsys.readouterr().out)
    stages = ["clip", "decoder", "temporal_decoder", "interpolation", "prior", "sr_low", "temporal_sr_low", "sr_high"]
    assert list(scripts) == [*stages, "generate"]
    # The last job runs `pipeline` with the same arguments after every stage's job: it skips them and generates.
    generate = scripts.pop("generate")
    assert re.findall(r"^#SBATCH --dependency=afterok:(.*)$", generate, flags=re.M) == [
        ":".join(f"<job id of {s}>" for s in stages)]
    assert ("-m mav_train pipeline recipe=demo/cascade slurm.gpus_per_node=0 slurm.time=01:00:00 "
            "stages.prior.slurm.time=02:00:00\n") in generate.replace(" &\n", "\n")
    deps = {stage: re.findall(r"^#SBATCH --dependency=afterok:(.*)$", s, flags=re.M) for stage, s in scripts.items()}
    assert deps["clip"] == [] and deps["sr_low"] == [] and deps["sr_high"] == []  # run at once, in parallel
    assert deps["temporal_decoder"] == ["<job id of decoder>:<job id of clip>"]
    assert deps["interpolation"] == ["<job id of temporal_decoder>:<job id of clip>"]
    assert deps["temporal_sr_low"] == ["<job id of sr_low>"] and deps["prior"] == ["<job id of clip>"]
    # Every script is the ordinary requeueing job of its stage, in its own run directory.
    for stage, script in scripts.items():
        assert "#SBATCH --requeue" in script and 'scontrol requeue "$job"' in script
        assert f"recipe={tmp_path}/runs/demo/cascade/{stage}/submit_config.yaml" in script
        assert f"#SBATCH --job-name=mav-{stage}\n" in script
        assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    assert "#SBATCH --time=02:00:00" in scripts["prior"] and "#SBATCH --time=01:00:00" in scripts["decoder"]
    assert not (tmp_path / "runs").exists(), "--dry-run must not write anything"


CHAIN = """\
description: two stages for the SLURM test
run_root: {root}
stages:
  sr_low: {{recipe: demo/sr_low}}
  temporal_sr_low: {{recipe: demo/temporal_sr_low, parent: sr_low, overrides: [data.num_frames=4]}}
generate: {{enabled: false}}
"""
TINY = ["trainer.max_steps=2", "checkpoint.every_n_steps=2", "sampling.every_n_steps=0", "data.val_samples=4",
        "data.batch_size=2", "data.epoch_samples=4", "data.demo_samples=256", "diffusion.sample_steps=2",
        "trainer.enable_progress_bar=false", "logger=none", "unet.base_channels=8", "unet.head_dim=8",
        "unet.channel_mults=[1,2]", "unet.attention_levels=[2]", "trainer.limit_val_batches=1", "data.num_workers=0"]
SLURM = ["slurm.gpus_per_node=0", "slurm.tasks_per_node=1", "slurm.cpus_per_task=1", "slurm.time=00:10:00"]


@pytest.mark.slow
def test_two_stage_chain_runs_in_order_on_slurm(tmp_path, demo_cache, slurm_cluster):  # noqa: F811
    root = tmp_path / "runs"
    recipe = tmp_path / "chain.yaml"
    recipe.write_text(CHAIN.format(root=root))
    result = run(mav_train("submit", f"recipe={recipe}", *TINY, *SLURM), tmp_path, demo_cache, timeout=120)
    ids = dict(re.findall(r"submitted batch job (\d+) for stage (\w+)", result.stdout))
    first, second = (next(i for i, s in ids.items() if s == stage) for stage in ("sr_low", "temporal_sr_low"))
    assert f"after sr_low ({first})" in result.stdout
    log = root / "temporal_sr_low" / f"slurm-{second}.out"
    try:
        assert job_field(second, "Dependency").startswith(f"afterok:{first}") or \
            job_field(second, "JobState") != "PENDING"
        wait_until(lambda: job_field(second, "JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"),
                   600, "the second stage to finish", log)
    finally:
        for job in (first, second):
            if job_field(job, "JobState") in ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING"):
                subprocess.run(["scancel", job])
    assert job_field(first, "JobState") == "COMPLETED", (root / "sr_low" / f"slurm-{first}.out").read_text()[-3000:]
    assert job_field(second, "JobState") == "COMPLETED", log.read_text()[-3000:]
    # In order: the second started only once the first had ended, from its checkpoint.
    start = time.strptime(job_field(second, "StartTime"), "%Y-%m-%dT%H:%M:%S")
    end = time.strptime(job_field(first, "EndTime"), "%Y-%m-%dT%H:%M:%S")
    assert start >= end, (job_field(first, "EndTime"), job_field(second, "StartTime"))
    assert "initialised temporal_sr_low from" in log.read_text()
    for stage in ("sr_low", "temporal_sr_low"):
        assert torch.load(root / stage / "last.ckpt", weights_only=True)["global_step"] == 2
