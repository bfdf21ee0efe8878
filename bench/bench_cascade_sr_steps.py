"""Sampling steps of the cascade's two SR stages (SR_l^t, then SR_h on every frame), judged on the final videos.

    python -m bench.bench_cascade_sr_steps --clips runs/demo/cascade/generated/stages/interpolation \\
        --temporal-sr-low runs/demo/cascade/temporal_sr_low/last.ckpt --sr-high runs/demo/cascade/sr_high/last.ckpt \\
        --steps 25/25,10/10,5/5 --num 4

The input is what ↑F wrote for ``generate`` (``NNN.mp4`` with the prompt in ``NNN.txt``). Each ``LOW/HIGH`` cell
runs SR_l^t with LOW steps and SR_h with HIGH steps from the same seed, with the pipeline's settings otherwise
(``--noise-level``, shared noise across frames), and prints the toy judge's scores of the final videos, the seconds
per stage, and the PSNR of the cell's videos against the first cell's (the reference, normally the most steps).
Both SR stages sample deterministically (DDIM, eta 0), so a high PSNR means the fewer steps reach the same video.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from mav_train.config.pipeline_file import StageSettings
from mav_train.evaluation.sample_files import decode_mp4
from mav_train.evaluation.toy_judge import score_videos
from mav_train.pipeline.run import ChainState, run_stage
from mav_train.pipeline.stages import build, read_stage

COLUMNS = ("background", "color", "shape", "identity", "displacement_px", "flicker")


def read_clips(folder: Path, num: int) -> tuple[torch.Tensor, list[str]]:
    """The first ``num`` clips of ``folder`` as ``b 3 t h w`` in [-1, 1], and their prompts."""
    paths = sorted(folder.glob("*.mp4"))[:num]
    if not paths:
        raise SystemExit(f"bench_cascade_sr_steps: no .mp4 clips in {folder}")
    clips = [torch.from_numpy(decode_mp4(path)) for path in paths]
    prompts = [path.with_suffix(".txt").read_text().strip() for path in paths]
    return torch.stack(clips).permute(0, 4, 1, 2, 3).float() / 127.5 - 1, prompts


def stage(name: str, checkpoint: str, **settings):
    s = read_stage(name, checkpoint, OmegaConf.structured(StageSettings(checkpoint=checkpoint, **settings)))
    build(s)
    return s


@torch.no_grad()
def steps_table(clips: torch.Tensor, prompts: list[str], low: str, high: str, cells: list[tuple[int, int]],
                fps: float = 30.0, noise_level: float = 0.05, seed: int = 0) -> list[dict]:
    rows, reference = [], None
    for low_steps, high_steps in cells:
        # Built (checkpoint read) before the clock starts: the seconds are sampling only.
        low_stage = stage("temporal_sr_low", low, steps=low_steps, noise_level=noise_level, shared_noise=True)
        high_stage = stage("sr_high", high, steps=high_steps, noise_level=noise_level)
        generator = torch.Generator().manual_seed(seed)
        state = ChainState(prompts=prompts, pixels=clips.clone(), fps=fps)
        start = time.perf_counter()
        run_stage(low_stage, state, generator)
        middle = time.perf_counter()
        run_stage(high_stage, state, generator)
        end = time.perf_counter()
        scores = score_videos(state.pixels, prompts)
        row = {"steps": f"{low_steps}/{high_steps}", **{k: getattr(scores, k) for k in COLUMNS},
               "seconds_temporal_sr_low": middle - start, "seconds_sr_high": end - middle}
        if reference is None:
            reference, row["psnr_db"] = state.pixels, None
        else:  # pixels in [-1, 1]: peak-to-peak 2
            row["psnr_db"] = float(10 * torch.log10(4 / ((state.pixels - reference) ** 2).mean()))
        rows.append(row)
        print(format_row(row), flush=True)
    return rows


def format_row(row: dict) -> str:
    cells = [f"{row['steps']:>7}"] + [f"{row[k]:.1%}" if k not in ("displacement_px", "flicker") else
                                      f"{row[k]:.2f}" for k in COLUMNS]
    cells += [f"{row['seconds_temporal_sr_low']:.0f} s", f"{row['seconds_sr_high']:.0f} s",
              "ref" if row["psnr_db"] is None else f"{row['psnr_db']:.1f} dB"]
    return " | ".join(cells)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", default="runs/demo/cascade/generated/stages/interpolation")
    parser.add_argument("--temporal-sr-low", default="runs/demo/cascade/temporal_sr_low/last.ckpt")
    parser.add_argument("--sr-high", default="runs/demo/cascade/sr_high/last.ckpt")
    parser.add_argument("--steps", default="25/25,10/10,5/5", help="LOW/HIGH cells; the first is the reference")
    parser.add_argument("--num", type=int, default=4)
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate of the clips (↑F's output)")
    parser.add_argument("--noise-level", type=float, default=0.05)
    parser.add_argument("--out", help="write the rows as JSON")
    args = parser.parse_args(argv)
    cells = [tuple(int(x) for x in cell.split("/")) for cell in args.steps.split(",")]
    clips, prompts = read_clips(Path(args.clips), args.num)
    print("steps (SR_l^t/SR_h) | " + " | ".join(COLUMNS) + " | SR_l^t | SR_h | PSNR vs first")
    rows = steps_table(clips, prompts, args.temporal_sr_low, args.sr_high, cells, fps=args.fps,
                       noise_level=args.noise_level)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
