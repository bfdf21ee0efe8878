"""``submit --dry-run``: the sbatch script rendered from slurm/train.sbatch (1 and 4 nodes, GPUs, CPUs)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from mav_train.cli.main import main


def dry_run(capsys, tmp_path, monkeypatch, *args: str) -> str:
    monkeypatch.chdir(tmp_path)
    assert main(["submit", *args, "--dry-run"]) == 0
    return capsys.readouterr().out


def directives(script: str) -> dict[str, str]:
    found = dict(re.findall(r"^#SBATCH --([\w-]+)(?:=(.*))?$", script, flags=re.M))
    return {k: v for k, v in found.items()}


def test_four_gpu_nodes(capsys, tmp_path, monkeypatch):
    script = dry_run(capsys, tmp_path, monkeypatch, "recipe=temporal_decoder",
                     "data.shards=/data/{00000..00009}.tar", "slurm.nodes=4", "slurm.gpus_per_node=8",
                     "slurm.partition=gpu", "slurm.time=48:00:00", "trainer.strategy=deepspeed_stage_2",
                     "slurm.extra_sbatch=[--constraint=h100,--exclusive]",
                     "slurm.setup=[source /opt/venv/bin/activate,export NCCL_DEBUG=WARN]")
    d = directives(script)
    assert d["nodes"] == "4" and d["ntasks-per-node"] == "8" and d["gpus-per-node"] == "8"
    assert d["partition"] == "gpu" and d["time"] == "48:00:00" and d["constraint"] == "h100"
    assert "exclusive" in d and "requeue" in d and d["signal"] == "B:USR1@120"
    assert "source /opt/venv/bin/activate\nexport NCCL_DEBUG=WARN" in script
    run_dir = tmp_path / "runs" / "temporal_decoder"
    assert d["output"] == f"{run_dir}/slurm-%j.out"
    srun = next(line for line in script.splitlines() if line.startswith("srun "))
    assert f"{sys.executable} -m mav_train fit recipe={run_dir}/submit_config.yaml" in srun
    # The requeue signal is forwarded to srun (hence every rank), and the job requeues itself afterwards.
    assert "trap forward_usr1 USR1" in script and 'kill -USR1 "$srun_pid"' in script
    assert 'scontrol requeue "$job"' in script
    assert not run_dir.exists(), "--dry-run must not write anything"
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_one_node_cpu_tasks(capsys, tmp_path, monkeypatch):
    script = dry_run(capsys, tmp_path, monkeypatch, "recipe=demo/decoder", "slurm.gpus_per_node=0",
                     "slurm.tasks_per_node=2", "slurm.cpus_per_task=1", "slurm.time=00:30:00",
                     "slurm.requeue_signal_seconds=30", "run_dir=out/run", "slurm.python=/opt/py/bin/python")
    d = directives(script)
    assert d["nodes"] == "1" and d["ntasks-per-node"] == "2" and d["cpus-per-task"] == "1"
    assert "gpus-per-node" not in d and "partition" not in d and d["signal"] == "B:USR1@30"
    assert d["job-name"] == "mav-demo-decoder" and d["time"] == "00:30:00"
    assert f"/opt/py/bin/python -m mav_train fit recipe={tmp_path}/out/run/submit_config.yaml" in script
    assert f"cd {tmp_path}\n" in script


def test_submit_config_errors(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["submit", "recipe=demo/decoder", "slurm.gpus_per_node=8", "--dry-run"]) == 2
    assert "trainer.accelerator=cpu" in capsys.readouterr().err
    assert main(["submit", "recipe=demo/decoder", "slurm.gpus_per_node=0", "slurm.nodez=2", "--dry-run"]) == 2
    assert "did you mean 'slurm.nodes'" in capsys.readouterr().err
    assert main(["submit", "recipe=demo/decoder", "slurm.gpus_per_node=0", "slurm.time=soon",
                 "--dry-run"]) == 2
    assert "slurm.time" in capsys.readouterr().err


@pytest.mark.parametrize("nodes", [1, 4])
def test_devices_and_nodes_go_into_the_job_config(tmp_path, nodes):
    from mav_train.cli.submit import job_config

    cfg = job_config("temporal_decoder", ["data.shards=/d/{00000..00001}.tar", f"slurm.nodes={nodes}",
                                          "slurm.gpus_per_node=4", f"run_dir={tmp_path}/r"])
    assert cfg.trainer.num_nodes == nodes and cfg.trainer.devices == 4 and cfg.trainer.accelerator == "gpu"
    assert cfg.run_dir == f"{tmp_path}/r"
