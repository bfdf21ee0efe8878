"""``generate``: the inference chain C_x → P → D^t → ↑F → SR_l^t → SR_h → mp4 (or text → image via P → D → SR_l
→ SR_h), from a pipeline file and/or stage checkpoints on the command line."""

from __future__ import annotations

from pathlib import Path

import torch

from mav_train.cli.generate_io import StageWriter, entry_input, write_final, write_record
from mav_train.components.base import Conditions
from mav_train.config.load import ConfigError
from mav_train.config.pipeline_file import STAGES, given_stages, load_pipeline

HELP = """\
Generate videos (or images) from text through the cascade: C_x -> P -> D^t -> ^F -> SR_l^t -> SR_h.

usage: python -m mav_train generate prompt=TEXT|FILE [pipeline=NAME|FILE] [STAGE=CHECKPOINT ...]
                                    [STAGE.KEY=VALUE ...] [num=4] [seed=0] [out=generated]
                                    [image=PATH] [video=PATH] [stages=A,B,...] [frames=N] [progress=true]

  pipeline   a YAML file naming each stage's checkpoint and sampling settings; a bare name is
             recipes/pipelines/NAME.yaml (pipeline=demo: the runs `pipeline recipe=demo/cascade` writes)
  STAGE      prior, decoder, temporal_decoder, interpolation, sr_low, temporal_sr_low, sr_high: a checkpoint
             (overrides the file; STAGE=none leaves it out). The chain runs the given stages in that order and
             stops at the last one: prior + temporal_decoder alone give D^t's clips. decoder (+ sr_low) instead
             of temporal_decoder (+ interpolation, temporal_sr_low) makes images.
  STAGE.KEY  steps, guidance, sampler (ddim, ddpm, dpmpp), eta (every stage); candidates (prior);
             fps (temporal_decoder, default 8); skip (interpolation, default 5);
             noise_level (sr_low, temporal_sr_low, sr_high); shared_noise (temporal_sr_low: one noise
             draw for all frames of a clip, as SR_h always does on video; default false);
             frame_noise_share (temporal_decoder, interpolation, temporal_sr_low: the share of each frame's
             noise drawn once per clip, default the checkpoint's diffusion.frame_noise_share)
  prompt     a prompt, or a text file with one prompt per line (blank lines ignored); num samples per prompt
  image      animate an image: its CLIP embedding replaces P, and ^F animates it (the image is the first
             frame); without ^F, D^t is conditioned on its embedding
  video      a video variation (D^t from the CLIP embedding of its first frame), or with stages=interpolation,...
             raise the video's frame rate (its first `frames` frames go into ^F; default ^F's clip length)
  stages     the stages to run, in chain order (default: every stage given)
  out        000.mp4 (000.png for images): the final sample; 000.txt: its prompt; stages/STAGE/000.*: every
             stage's output (the prior's embedding as .npy); generate.json: every setting, checkpoint, CLIP
             fingerprint and stage time

Every stage is checked before anything samples: a missing or unreadable checkpoint, a checkpoint of another
component in a slot, stages trained with different CLIPs, sizes or frame counts that do not chain, and an empty
prompt are each one line. Judge toy-world prompts: `generate ... out=S` then `evaluate toy samples=S`."""

KEYS = {"prompt": None, "pipeline": None, "num": "4", "out": "generated", "seed": "0", "image": None,
        "video": None, "stages": None, "frames": None, "progress": "true"}
# The flat keys of the first `generate` (prior + decoder) keep working.
LEGACY = {"candidates": "prior.candidates", "prior_steps": "prior.steps", "prior_guidance": "prior.guidance",
          "steps": "decoder.steps", "guidance": "decoder.guidance"}


def parse(args: list[str]) -> tuple[dict[str, str | None], dict[str, str]]:
    """``key=value`` arguments → (the verb's own values, the stage overrides ``STAGE[.KEY] → VALUE``)."""
    values, stage_items = dict(KEYS), {}
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ConfigError(f"generate: argument '{arg}' is not key=value")
        if key in KEYS:
            values[key] = value
        elif key in LEGACY:
            stage_items[LEGACY[key]] = value
        elif key.split(".", 1)[0] in STAGES:
            stage_items[key] = value
        else:
            raise ConfigError(f"generate: unknown argument '{arg}'; expected one of {', '.join(KEYS)}, a stage "
                              f"({', '.join(STAGES)}) or STAGE.KEY")
    return values, stage_items


def read_prompts(prompt: str) -> list[str]:
    """``prompt`` itself, or the non-blank lines of the file it names; an empty prompt is an error."""
    path = Path(prompt)
    if prompt.strip() and path.is_file():
        prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not prompts:
            raise ConfigError(f"generate: prompt file {path} holds no prompt")
        return prompts
    if not prompt.strip():
        raise ConfigError("generate: the prompt is empty")
    return [prompt.strip()]


def chain_stages(cfg, values: dict[str, str | None]) -> list[str]:
    """The stages to run, in chain order: ``stages=`` or every stage given (without the prior when an image or
    video is the input; an image starts at ↑F when there is one)."""
    given = given_stages(cfg)
    if values["stages"]:
        names = [s.strip() for s in values["stages"].split(",") if s.strip()]
        for name in names:
            if name not in STAGES:
                raise ConfigError(f"generate: unknown stage '{name}' in stages=; stages: {', '.join(STAGES)}")
            if name not in given:
                raise ConfigError(f"generate: stages= names {name}, but no {name} checkpoint is given "
                                  f"({name}=PATH or a pipeline file naming it)")
        if names != sorted(names, key=STAGES.index):
            raise ConfigError(f"generate: stages= must follow the chain's order ({' -> '.join(STAGES)})")
        return names
    if values["image"] or values["video"]:
        given = [s for s in given if s != "prior"]
        if values["image"] and "interpolation" in given:
            given = given[given.index("interpolation"):]
    if not given:
        raise ConfigError("generate: no stage to run: give pipeline=NAME|FILE or stage checkpoints "
                          "(prior=... temporal_decoder=...)")
    return given


def run(args: list[str]) -> int:
    from mav_train.pipeline.plan import plan
    from mav_train.pipeline.run import ChainState, run_chain
    from mav_train.pipeline.stages import build, check_one_clip, read_stage

    values, stage_items = parse(args)
    if values["image"] and values["video"]:
        raise ConfigError("generate: give image= or video=, not both")
    cfg = load_pipeline(values["pipeline"], stage_items)
    names = chain_stages(cfg, values)
    num = _int(values, "num")
    _int(values, "seed")
    if values["frames"] is not None:
        _int(values, "frames")
    if num < 1:
        raise ConfigError(f"generate: num must be >= 1, got {num}")
    if names[0] == "prior" and values["prompt"] is None:
        raise ConfigError("generate: missing required value 'prompt' (the prior turns text into embeddings)")
    prompts = read_prompts(values["prompt"]) if values["prompt"] is not None else None
    if "decoder" in names and "temporal_decoder" in names:
        raise ConfigError("generate: give decoder (text -> image) or temporal_decoder (text -> video), not both")
    stages = [read_stage(name, cfg[name].checkpoint, cfg[name]) for name in names]
    fingerprint = check_one_clip(stages)
    entry, pixels, fps = entry_input(stages[0], values)
    flows = plan(stages, entry)

    # Everything is checked: build the components and sample.
    for stage in stages:
        build(stage)
    each = [p for p in prompts for _ in range(num)] if prompts else None
    if pixels is None:
        state = ChainState(prompts=each)
    else:
        state = _state_from_file(stages, pixels, entry.kind, num, fps)
    out = Path(values["out"])
    out.mkdir(parents=True, exist_ok=True)
    if pixels is None:
        captions = each
    else:  # one input file, num samples: captioned by the (first) prompt, else by the file's name
        captions = [prompts[0] if prompts else Path(values["image"] or values["video"]).stem] * num
    writer = StageWriter(out, captions)
    run_chain(stages, state, seed=int(values["seed"]), show_progress=values["progress"] != "false",
              on_stage=writer)
    final = write_final(out, state, captions)
    record = write_record(out, values, stages, flows, state, fingerprint, captions)
    print(f"wrote {len(captions)} sample(s) in {out}: {final} (final), stages/ (each stage's output), "
          f"{record.name}")
    return 0


def _int(values: dict, key: str) -> int:
    try:
        return int(values[key])
    except ValueError:
        raise ConfigError(f"generate: {key} must be an integer, got '{values[key]}'") from None


def _state_from_file(stages, pixels: torch.Tensor, kind: str, num: int, fps: float | None):
    """The chain's start for an image or video input: as pixels (↑F, SR) or as the CLIP embedding of the image /
    the video's first frame (decoders), repeated ``num`` times; the embedding also conditions SR stages that take
    one."""
    from mav_train.pipeline.run import ChainState

    state = ChainState(fps=fps)
    clip_stage = next((s for s in stages if s.uses_clip()), None)
    if kind == "embedding" or clip_stage is not None:  # an SR-only chain of a user video needs no CLIP
        first = pixels if pixels.ndim == 4 else pixels[:, :, 0]
        with torch.no_grad():
            state.image_emb = (clip_stage or stages[0]).module.clip.encode_image(first).expand(num, -1)
    if kind != "embedding":
        state.pixels = pixels.expand(num, *pixels.shape[1:]).clone()
    return state


@torch.no_grad()
def generate_images(prior, decoder, prompts: list[str], *, seed: int = 0, candidates: int | None = None,
                    prior_steps: int | None = None, prior_guidance: float | None = None, steps: int | None = None,
                    guidance: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(b, 3, R, R)`` in [-1, 1] for ``prompts`` through P and D (built components), and the image
    embeddings ``(b, d)`` they came from (the benchmarks' shortcut past the files of ``run``)."""
    generator = torch.Generator().manual_seed(seed)
    image_emb = prior.generate(prompts, num_candidates=candidates, steps=prior_steps,
                               guidance_scale=prior_guidance, generator=generator)
    cfg = decoder.cfg
    shape = (len(prompts), cfg.unet.out_channels, cfg.data.resolution, cfg.data.resolution)
    images = decoder.sample(Conditions(image_emb=image_emb.to(decoder.device)), shape, generator=generator,
                            steps=steps, guidance_scale=guidance)
    return images, image_emb
