"""SR_h memory: one training step on random crops (``model.crop_size``) against one on the full frame, at the
same batch, each in a fresh process (peak-RSS growth of one step, as ``bench_model`` measures it).

    python -m bench.bench_super_res                     # demo/sr_high sizes: 128 px target, 64 px crops
    python -m bench.bench_super_res --resolution 256 --crop 128 --batch 4

The step is the component's own ``training_step`` (low-res input made on the device, noise augmentation, the
diffusion loss) + backward, so it measures what ``fit`` runs.

The SR UNet's step time against imagen-pytorch's ``Unet(lowres_cond=True)`` is ``bench.bench_sr_model``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys

import torch

from bench.bench_model import REPO_ROOT, _status_kib, reset_peak_rss


def worker(args: argparse.Namespace) -> dict:
    from mav_train.components.registry import component_class
    from mav_train.config.load import load_config

    torch.set_num_threads(1)
    torch.manual_seed(0)
    overrides = [f"data.resolution={args.resolution}", f"model.low_res={args.resolution // 2}", "logger=none",
                 f"model.crop_size={args.crop if args.crop else 'null'}"]
    module = component_class("sr_high")(load_config("demo/sr_high", overrides)).train()
    batch = {"image": torch.rand(args.batch, 3, args.resolution, args.resolution) * 2 - 1}

    def step() -> None:
        x0, cond = module.prepare_batch(batch)
        module.diffusion_loss(x0, cond).backward()
        module.network.zero_grad(set_to_none=True)

    step()
    gc.collect()
    if not reset_peak_rss():
        return {"peak_mib": None}
    base = _status_kib("VmRSS")
    step()
    return {"peak_mib": (_status_kib("VmHWM") - base) / 1024}


def measure(args: argparse.Namespace, crop: int | None) -> float | None:
    cmd = [sys.executable, "-m", "bench.bench_super_res", "--worker", "--resolution", str(args.resolution),
           "--batch", str(args.batch), "--crop", str(crop or 0)]
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536",
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"worker exit {proc.returncode}: {proc.stderr[-500:]}")
    return json.loads(lines[-1])["peak_mib"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    full, crop = measure(args, None), measure(args, args.crop)
    print(f"sr_high (demo UNet), batch {args.batch}, target {args.resolution} px: one training step's peak memory "
          f"growth: full frame {full:.0f} MiB, {args.crop} px crops {crop:.0f} MiB, ratio {crop / full:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
