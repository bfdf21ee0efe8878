"""``submit``: render the sbatch script for a recipe, save it with the resolved config, and ``sbatch`` it."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from omegaconf import DictConfig

from mav_train.cli.fit import recipe_and_overrides
from mav_train.components.registry import COMPONENTS
from mav_train.config.load import ConfigError, is_cascade, load_config, save_config
from mav_train.config.run_dir import with_run_dir
from mav_train.config.validate import validate

HELP = """\
Submit a training run to SLURM: render mav_train/slurm/train.sbatch, save it and the resolved config, sbatch it.

usage: python -m mav_train submit recipe=NAME [key=value ...] [slurm.KEY=VALUE ...] [--dry-run]

  python -m mav_train submit recipe=temporal_decoder slurm.nodes=4 slurm.gpus_per_node=8 \\
      slurm.partition=gpu slurm.time=48:00:00 trainer.strategy=deepspeed_stage_2
  python -m mav_train submit recipe=demo/decoder slurm.gpus_per_node=0 slurm.tasks_per_node=2 --dry-run

The job runs `srun python -m mav_train fit recipe=RUN_DIR/submit_config.yaml` with one task per GPU
(slurm.gpus_per_node=0: slurm.tasks_per_node CPU tasks); trainer.num_nodes and trainer.devices are set to
match. RUN_DIR receives submit.sbatch, submit_config.yaml and slurm-JOBID.out. slurm.requeue_signal_seconds
before the time limit (or on `scancel --signal=USR1 --batch JOB`) every rank saves a checkpoint and stops, and
the job requeues itself; the requeued job resumes from that checkpoint and logs to the same W&B run.
slurm.*: nodes, gpus_per_node, tasks_per_node, cpus_per_task, partition, account, qos, time, mem,
requeue_signal_seconds, extra_sbatch (list of #SBATCH lines), setup (list of shell lines run first),
python (default: this interpreter), job_name.
--dry-run prints the script and changes nothing.

A cascade recipe (recipe=demo/cascade): one job per stage not yet finished, each run in run_root/STAGE and held
with --dependency=afterok until the stages it needs (parent, clip) have completed; independent branches run in
parallel. key=value applies to every stage, stages.NAME.key=value to one (e.g. stages.prior.slurm.time=2:00:00).
A last job after all of them runs `pipeline` with the same arguments (skips the trained stages, generates).
--dry-run prints every script."""

TEMPLATE = "train.sbatch"
SCRIPT_NAME = "submit.sbatch"
CONFIG_NAME = "submit_config.yaml"
PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def slurm_dir() -> Path:
    """The ``slurm/`` folder inside the ``mav_train`` package (package data, like ``recipes/``)."""
    return Path(__file__).resolve().parents[1] / "slurm"


def render(template: str, values: dict[str, object]) -> str:
    """Replace every ``{{name}}``; a placeholder without a value is an error naming it."""
    missing = sorted({name for name in PLACEHOLDER.findall(template) if name not in values})
    if missing:
        raise ValueError(f"sbatch template placeholders without a value: {', '.join(missing)}")
    return PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), template)


def tasks_per_node(cfg: DictConfig) -> int:
    s = cfg.slurm
    return s.gpus_per_node if s.gpus_per_node > 0 else s.tasks_per_node


def check_slurm(cfg: DictConfig) -> None:
    s = cfg.slurm
    for key in ("nodes", "tasks_per_node", "cpus_per_task"):
        if s[key] < 1:
            raise ConfigError(f"invalid value for 'slurm.{key}': {s[key]} must be >= 1")
    if s.gpus_per_node < 0:
        raise ConfigError(f"invalid value for 'slurm.gpus_per_node': {s.gpus_per_node} must be >= 0")
    if s.requeue_signal_seconds < 1:
        raise ConfigError(f"invalid value for 'slurm.requeue_signal_seconds': {s.requeue_signal_seconds} "
                          "must be >= 1")
    if not re.fullmatch(r"[0-9:-]+|UNLIMITED|INFINITE", s.time):
        raise ConfigError(f"invalid value for 'slurm.time': '{s.time}' (e.g. 48:00:00 or 2-00:00:00)")
    if s.gpus_per_node > 0 and cfg.trainer.accelerator == "cpu":
        raise ConfigError(f"slurm.gpus_per_node={s.gpus_per_node} but trainer.accelerator=cpu: use "
                          "slurm.gpus_per_node=0 (with slurm.tasks_per_node) for CPU tasks")


def job_config(recipe: str, overrides: list[str]) -> DictConfig:
    """The resolved config the job trains with: trainer.num_nodes/devices from slurm.*, run_dir absolute."""
    cfg = load_config(recipe, overrides)
    check_slurm(cfg)
    s = cfg.slurm
    accelerator = cfg.trainer.accelerator
    if accelerator == "auto":
        accelerator = "gpu" if s.gpus_per_node > 0 else "cpu"
    run_dir = Path(with_run_dir(cfg).run_dir).resolve()
    derived = [f"trainer.num_nodes={s.nodes}", f"trainer.devices={tasks_per_node(cfg)}",
               f"trainer.accelerator={accelerator}", f"run_dir={run_dir}"]
    cfg = load_config(recipe, [*overrides, *derived])
    validate(cfg, COMPONENTS)
    return cfg


def sbatch_lines(cfg: DictConfig) -> str:
    s = cfg.slurm
    lines = [f"--gpus-per-node={s.gpus_per_node}"] if s.gpus_per_node > 0 else []
    lines += [f"--{key}={s[key]}" for key in ("partition", "account", "qos", "mem") if s[key]]
    lines += [str(line) for line in s.extra_sbatch]
    return "\n".join(line if line.startswith("#SBATCH") else f"#SBATCH {line}" for line in lines)


def render_script(cfg: DictConfig, workdir: Path) -> str:
    s = cfg.slurm
    run_dir = Path(cfg.run_dir)
    python = s.python or sys.executable
    command = f"{shlex.quote(python)} -m mav_train fit recipe={shlex.quote(str(run_dir / CONFIG_NAME))}"
    template = (slurm_dir() / TEMPLATE).read_text()
    return render(template, {
        "job_name": s.job_name or "mav-" + str(cfg.recipe).replace("/", "-"),
        "run_dir": run_dir,
        "nodes": s.nodes,
        "tasks_per_node": tasks_per_node(cfg),
        "cpus_per_task": s.cpus_per_task,
        "time": s.time,
        "signal_seconds": s.requeue_signal_seconds,
        "sbatch_lines": sbatch_lines(cfg),
        "setup": "\n".join(str(line) for line in s.setup) or "# (none)",
        "workdir": shlex.quote(str(workdir)),
        "command": command,
    })


def sbatch(script: Path) -> str:
    """Submit ``script``; returns the job id."""
    if shutil.which("sbatch") is None:
        raise ConfigError("sbatch not found on PATH: submit from a SLURM login node (or use --dry-run)")
    result = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True)
    if result.returncode != 0:
        raise ConfigError(f"sbatch {script} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout.strip().split(";")[0]


def run(args: list[str]) -> int:
    dry_run = "--dry-run" in args
    recipe, overrides = recipe_and_overrides([a for a in args if a != "--dry-run"])
    if is_cascade(recipe):
        from mav_train.cli.submit_cascade import submit_cascade

        return submit_cascade(recipe, overrides, dry_run)
    cfg = job_config(recipe, overrides)
    script = render_script(cfg, Path(os.getcwd()).resolve())
    if dry_run:
        print(script, end="")
        return 0
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / CONFIG_NAME)
    (run_dir / SCRIPT_NAME).write_text(script)
    job_id = sbatch(run_dir / SCRIPT_NAME)
    print(f"submitted batch job {job_id}: {run_dir / SCRIPT_NAME}; log {run_dir}/slurm-{job_id}.out")
    return 0
