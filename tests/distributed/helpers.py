"""Shared pieces of the scale-out tests: tiny overrides, the subprocess environment, W&B offline records."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]

# A tiny temporal decoder: 16 px, 4 frames, 2 clips a batch, a 2-step sampler, one validation batch.
TINY = [
    "unet.base_channels=32", "unet.channel_mults=[1,2]", "unet.attention_levels=[2]", "data.resolution=16",
    "data.num_frames=4", "data.batch_size=2", "data.val_samples=2", "data.num_workers=1",
    "sampling.every_n_steps=0", "diffusion.sample_steps=2", "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1", "checkpoint.every_n_steps=100", "optim.warmup_steps=2",
]


def subprocess_env(cache: Path, **extra: str) -> dict[str, str]:
    """The environment of a ``python -m mav_train`` child: demo data in ``cache``, W&B offline, no SLURM."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "WANDB_"))}
    env.update({
        "MAV_TRAIN_CACHE": str(cache),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        "OMP_NUM_THREADS": "1",
        # DeepSpeed compiles a CPU communication op on first use; keep it between runs.
        "TORCH_EXTENSIONS_DIR": os.environ.get(
            "TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "mav_train" / "torch_extensions")),
    })
    env.update(extra)
    return env


def mav_train(*args: str) -> list[str]:
    return [sys.executable, "-m", "mav_train", *args]


def run(cmd: list[str], cwd: Path, cache: Path, timeout: float, **env: str) -> subprocess.CompletedProcess:
    """Run ``cmd`` in ``cwd``; on failure the assertion message carries the tail of its output."""
    result = subprocess.run(cmd, cwd=cwd, env=subprocess_env(cache, **env), capture_output=True, text=True,
                            timeout=timeout)
    output = (result.stdout + result.stderr)[-4000:]
    assert result.returncode == 0, f"{cmd} exited {result.returncode}:\n{output}"
    return result


def global_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=False, mmap=True)["global_step"])


WANDB_HEADER = b":W&B\xe1\xbe\x00"  # the transaction log's ident, magic 0xBEE1 (little endian), version 0
BLOCK = 32768


def wandb_records(path: Path) -> list[bytes]:
    """The serialized records of a ``.wandb`` transaction log (a LevelDB-style log: 32 KiB blocks of
    ``crc32 | length | type`` chunks, type 1 = whole record, 2/3/4 = first/middle/last piece)."""
    import struct
    import zlib

    data = path.read_bytes()
    assert data.startswith(WANDB_HEADER), f"{path} is not a W&B transaction log"
    records, pieces, pos = [], [], len(WANDB_HEADER)
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        if kind == 0 or len(chunk) < length:  # zero padding at the end, or a record cut short
            break
        assert zlib.crc32(bytes([kind]) + chunk) & 0xFFFFFFFF == crc, f"{path}: bad checksum at byte {pos}"
        pieces.append(chunk)
        if kind in (1, 4):
            records.append(b"".join(pieces))
            pieces = []
        pos += 7 + length
    return records


def wandb_history(run_dir: Path) -> list[tuple[str, int, dict]]:
    """``(run id, process index, logged row)`` for every history row of every offline W&B run directory under
    ``run_dir/wandb`` (one per process that logged; index 0 = the first), read from the ``.wandb`` transaction
    logs themselves (what ``wandb sync`` would upload), in order."""
    import json

    from wandb.proto import wandb_internal_pb2

    rows: list[tuple[str, int, dict]] = []
    for index, path in enumerate(sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))):
        run_id = None
        for data in wandb_records(path):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(data)
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run_id = record.run.run_id
            elif kind == "history":
                row = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                       for item in record.history.item}
                rows.append((run_id, index, row))
    return rows
