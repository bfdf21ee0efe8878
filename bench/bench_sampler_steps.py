"""The toy judge's scores against the number of sampling steps, DDIM vs DPM-Solver++(2M), for one component.

    python -m bench.bench_sampler_steps --checkpoint runs/demo/decoder/last.ckpt
    python -m bench.bench_sampler_steps --checkpoint runs/demo/temporal_decoder/last.ckpt --steps 5,10,25,50 \\
        --samplers ddim,dpmpp --num 32 --fps 8 --out steps.json

The component (decoder D or temporal decoder D^t) is conditioned on the CLIP image embeddings of ``--num``
held-out toy images (seed 1; for D^t the first frames of held-out clips, at ``--fps``). Every (sampler, steps)
cell starts from the same x_T (``--seed``), so the cells differ only by the sampler and its step count; each is
judged against the held-out captions (``mav_train.evaluation.toy_judge``). Prints one row per cell with the
wall time per sample, and writes the rows as JSON with ``--out``. The guidance scale is the recipe's unless
``--guidance`` is given.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from datamodules.heldout import heldout_clips, heldout_images
from mav_train.components.base import Conditions
from mav_train.components.registry import load_component
from mav_train.evaluation.toy_judge import score_images, score_videos

IMAGE_COLUMNS = ("background", "color", "shape", "position", "size", "readable")
VIDEO_COLUMNS = ("background", "color", "shape", "identity", "displacement_px", "readable")


def conditions(module, num: int, fps: float) -> tuple[Conditions, tuple[int, ...], list[str]]:
    """(conditions, sample shape, captions) from ``num`` held-out toy items at the component's resolution."""
    cfg = module.cfg
    if cfg.component == "decoder":
        images, captions = heldout_images(num, seed=1, resolution=cfg.data.resolution)
        return Conditions(image_emb=module.clip.encode_image(images)), tuple(images.shape), captions
    if cfg.component == "temporal_decoder":
        clips, captions = heldout_clips(num, seed=1, resolution=cfg.data.resolution, frames=cfg.data.num_frames)
        return module.video_conditions(clips[:, :, 0], fps), module.sample_shape(num), captions
    raise ValueError(f"bench_sampler_steps judges decoder and temporal_decoder checkpoints (conditioned on CLIP "
                     f"image embeddings); got {cfg.component}")


@torch.no_grad()
def steps_table(module, steps: list[int], samplers: list[str], num: int, fps: float = 8.0, seed: int = 0,
                guidance: float | None = None) -> list[dict]:
    """One row per (sampler, steps): ``{"sampler", "steps", "seconds_per_sample", <judge scores>}``."""
    cond, shape, captions = conditions(module, num, fps)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(module.device)
    rows = []
    for sampler in samplers:
        for n in steps:
            start = time.perf_counter()
            samples = module.sample(cond, shape, steps=n, sampler=sampler, noise=noise, guidance_scale=guidance,
                                    generator=torch.Generator().manual_seed(seed + 1))
            seconds = (time.perf_counter() - start) / num
            score = score_videos if samples.ndim == 5 else score_images
            rows.append({"sampler": sampler, "steps": n, "seconds_per_sample": seconds,
                         **score(samples.float().cpu(), captions).as_dict()})
    return rows


def format_table(rows: list[dict]) -> str:
    columns = VIDEO_COLUMNS if rows and rows[0].get("kind") == "video" else IMAGE_COLUMNS
    header = f"{'sampler':<8} {'steps':>5} {'s/sample':>9} " + " ".join(f"{c:>15}" for c in columns)
    lines = [header]
    for row in rows:
        cells = " ".join(f"{row[c]:>15.3f}" if isinstance(row.get(c), float) else f"{'-':>15}" for c in columns)
        lines.append(f"{row['sampler']:<8} {row['steps']:>5} {row['seconds_per_sample']:>9.3f} {cells}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--steps", default="5,10,20,50", help="comma-separated step counts")
    parser.add_argument("--samplers", default="ddim,dpmpp")
    parser.add_argument("--num", type=int, default=32, help="held-out conditions")
    parser.add_argument("--fps", type=float, default=8.0, help="fps the temporal decoder is conditioned on")
    parser.add_argument("--guidance", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    module = load_component(args.checkpoint)
    rows = steps_table(module, [int(s) for s in args.steps.split(",")], args.samplers.split(","), args.num,
                       args.fps, args.seed, args.guidance)
    print(f"{args.checkpoint} ({module.cfg.component}), {args.num} held-out conditions, seed {args.seed}")
    print(format_table(rows))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"checkpoint": str(args.checkpoint), "num": args.num, "rows": rows},
                                       indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
