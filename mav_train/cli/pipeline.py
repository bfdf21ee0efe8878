"""``pipeline``: train every stage of a cascade recipe in dependency order, then generate and judge."""

from __future__ import annotations

import time
from pathlib import Path

from mav_train.cascade import CascadeRun, load_run
from mav_train.cli.fit import recipe_and_overrides
from mav_train.config.load import ConfigError, is_cascade

HELP = """\
Train a whole cascade (every stage in dependency order), then generate videos and judge them.

usage: python -m mav_train pipeline recipe=CASCADE [key=value ...] [stages.NAME.key=value ...] [run_root=DIR]
                                    [--no-generate]

  python -m mav_train pipeline recipe=demo/cascade      the demo cascade on the built-in toy world (CPU)

A cascade recipe (recipes/demo/cascade.yaml) lists its stages: each a component recipe with overrides, a
`parent` (the stage starts from the parent's last.ckpt as init.checkpoint) and a `clip` stage (whose exported
weights become clip.pretrained). Stage NAME trains in run_root/NAME; a stage trained to its trainer.max_steps is
skipped, an interrupted one resumes from its run directory. key=value applies to every stage,
stages.NAME.key=value to one. Every stage's config is checked before the first one trains. Then `generate` runs
the recipe's generate.stages on its prompts (run_root/generated/: 000.mp4, stages/, generate.json) and
`evaluate toy` judges them (run_root/generated/toy.json). `submit recipe=CASCADE` sends the same stages to SLURM."""


def train_stages(run: CascadeRun) -> list[str]:
    """Fit every unfinished stage in order; returns the stages trained now."""
    from mav_train.cli import fit

    trained = []
    for stage in run.order():
        if run.finished(stage):
            print(f"pipeline: {stage}: finished ({run.run_dir(stage)}), skipped", flush=True)
            continue
        resuming = run.run_dir(stage).is_dir() and any(run.run_dir(stage).glob("*.ckpt"))
        print(f"pipeline: {stage}: {'resuming' if resuming else 'training'} in {run.run_dir(stage)}", flush=True)
        start = time.perf_counter()
        status = fit.run(run.fit_args(stage))
        if status:
            raise ConfigError(f"stage {stage} failed (exit status {status}); rerun to resume it")
        trained.append(stage)
        print(f"pipeline: {stage}: done in {time.perf_counter() - start:.0f} s", flush=True)
    return trained


def prompts_file(run: CascadeRun) -> Path:
    """``run_root/prompts.txt``: the recipe's prompts plus ``heldout_prompts`` of the prior's held-out pairs."""
    g = run.cfg.generate
    prompts = list(g.prompts)
    if g.heldout_prompts > 0:
        if "prior" not in run.cfg.stages:
            raise ConfigError("generate.heldout_prompts needs a stage named prior (its data.holdout_pairs)")
        from datamodules.heldout import heldout_pair_scenes
        from datamodules.toy_world import caption_of

        pairs = list(run.stage_config("prior").data.holdout_pairs)
        if not pairs:
            raise ConfigError("generate.heldout_prompts: the prior stage holds no data.holdout_pairs out")
        prompts += [caption_of(scene) for scene in heldout_pair_scenes(g.heldout_prompts, pairs, seed=1)]
    if not prompts:
        raise ConfigError("generate: the cascade recipe gives no prompts (generate.prompts, generate.heldout_prompts)")
    path = run.root / "prompts.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(prompts) + "\n")
    return path


def generate_and_judge(run: CascadeRun) -> Path:
    from mav_train.cli import evaluate, generate

    g = run.cfg.generate
    out = run.root / "generated"
    args = [f"prompt={prompts_file(run)}", f"out={out}", f"num={g.num}", f"seed={g.seed}"]
    if g.pipeline:
        args.append(f"pipeline={g.pipeline}")
    args += [f"{stage}={run.run_dir(stage) / 'last.ckpt'}" for stage in g.stages] + list(g.arguments)
    print(f"pipeline: generate {' '.join(args)}", flush=True)
    generate.run(args)
    if g.evaluate:
        status = evaluate.run(["toy", f"samples={out}", f"out={out / 'toy.json'}"])
        if status:
            print(f"pipeline: evaluate toy exited {status}", flush=True)
    return out


def run(args: list[str]) -> int:
    no_generate = "--no-generate" in args
    recipe, overrides = recipe_and_overrides([a for a in args if a != "--no-generate"])
    if not is_cascade(recipe):
        raise ConfigError(f"recipe '{recipe}' is not a cascade (no stages:); train one component with "
                          f"`python -m mav_train fit recipe={recipe}`")
    cascade = load_run(recipe, overrides)
    start = time.perf_counter()
    train_stages(cascade)
    print(f"pipeline: every stage trained ({time.perf_counter() - start:.0f} s); runs in {cascade.root}", flush=True)
    if no_generate or not cascade.cfg.generate.enabled:
        return 0
    out = generate_and_judge(cascade)
    print(f"pipeline: videos in {out} (000.mp4, ...; each stage's output in {out / 'stages'}); judge scores in "
          f"{out / 'toy.json'}")
    return 0
