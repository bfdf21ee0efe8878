"""``submit recipe=CASCADE``: one sbatch job per unfinished stage, each held until the stages it needs have
completed (``--dependency=afterok``), so that independent branches run in parallel. Every job is the ordinary
``submit`` job of its stage (same template, same requeue on SIGUSR1). A last job, after all of them, runs
``pipeline`` with the same arguments: every stage is then trained and skipped, and it generates and judges."""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

from mav_train.cascade import CascadeRun, load_run
from mav_train.cli.submit import (
    CONFIG_NAME,
    SCRIPT_NAME,
    TEMPLATE,
    job_config,
    render,
    render_script,
    sbatch,
    sbatch_lines,
    slurm_dir,
)
from mav_train.config.cascade import needs
from mav_train.config.load import save_config


def with_dependency(script: str, job_ids: list[str]) -> str:
    """``script`` with ``#SBATCH --dependency=afterok:ID:ID`` after its job-name line (nothing when no ids);
    ``--kill-on-invalid-dep`` drops the job when a parent failed instead of leaving it pending for ever."""
    if not job_ids:
        return script
    lines = f"#SBATCH --dependency=afterok:{':'.join(job_ids)}\n#SBATCH --kill-on-invalid-dep=yes\n"
    return re.sub(r"^(#SBATCH --job-name=.*\n)", lambda m: m.group(1) + lines, script, count=1, flags=re.M)


def stage_job_args(run: CascadeRun, stage: str) -> tuple[str, list[str]]:
    """The stage's recipe and overrides for :func:`job_config`; the job is named after the stage unless
    ``slurm.job_name`` is given."""
    args = run.fit_args(stage)
    recipe, overrides = args[0].split("=", 1)[1], args[1:]
    if not any(a.startswith("slurm.job_name=") for a in overrides):
        overrides.append(f"slurm.job_name=mav-{stage}")
    return recipe, overrides


def generate_script(run: CascadeRun, name: str, overrides: list[str], workdir: Path, stage_cfg) -> str:
    """The last job: ``pipeline recipe=NAME`` with the same overrides, which finds every stage trained, skips
    them, then generates and judges. One task, with the SLURM settings of the last generate stage's job."""
    s = stage_cfg.slurm
    recipe = str(Path(name).resolve()) if Path(name).suffix in (".yaml", ".yml") else name
    python = s.python or sys.executable
    command = shlex.join([python, "-m", "mav_train", "pipeline", f"recipe={recipe}", *overrides])
    return render((slurm_dir() / TEMPLATE).read_text(), {
        "job_name": "mav-generate", "run_dir": run.root.resolve(), "nodes": 1, "tasks_per_node": 1,
        "cpus_per_task": s.cpus_per_task, "time": s.time, "signal_seconds": s.requeue_signal_seconds,
        "sbatch_lines": sbatch_lines(stage_cfg), "setup": "\n".join(str(line) for line in s.setup) or "# (none)",
        "workdir": shlex.quote(str(workdir)), "command": command,
    })


def submit_cascade(name: str, overrides: list[str], dry_run: bool) -> int:
    run = load_run(name, overrides)
    workdir = Path(os.getcwd()).resolve()
    jobs: dict[str, str] = {}
    last_cfg = None
    for stage in run.order():
        if run.finished(stage):
            print(f"# {stage}: finished ({run.run_dir(stage)}), not submitted")
            continue
        cfg = job_config(*stage_job_args(run, stage))
        if stage in run.cfg.generate.stages:
            last_cfg = cfg
        parents = [p for p in needs(run.cfg.stages[stage]) if p in jobs]
        script = with_dependency(render_script(cfg, workdir), [jobs[p] for p in parents])
        if dry_run:
            jobs[stage] = f"<job id of {stage}>"
            print(f"# ===== stage {stage}: {cfg.run_dir}/{SCRIPT_NAME} =====")
            print(script, end="")
            continue
        run_dir = Path(cfg.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / CONFIG_NAME)
        (run_dir / SCRIPT_NAME).write_text(script)
        jobs[stage] = sbatch(run_dir / SCRIPT_NAME)
        after = f" after {', '.join(f'{p} ({jobs[p]})' for p in parents)}" if parents else ""
        print(f"submitted batch job {jobs[stage]} for stage {stage}{after}: {run_dir / SCRIPT_NAME}; "
              f"log {run_dir}/slurm-{jobs[stage]}.out")
    if run.cfg.generate.enabled and jobs:
        cfg = last_cfg or job_config(*stage_job_args(run, run.order()[-1]))
        script = with_dependency(generate_script(run, name, overrides, workdir, cfg), list(jobs.values()))
        if dry_run:
            print(f"# ===== generate: {run.root.resolve()}/generate.sbatch =====")
            print(script, end="")
        else:
            path = run.root.resolve() / "generate.sbatch"
            path.write_text(script)
            job = sbatch(path)
            print(f"submitted batch job {job} for generate + evaluate after every stage: {path}; "
                  f"log {run.root.resolve()}/slurm-{job}.out")
    return 0
