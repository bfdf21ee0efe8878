"""Checkpoints on disk: which one is newest, and turning sharded ones into one plain file.

Three shapes occur: a Lightning ``.ckpt`` file (single device, DDP, FSDP with full state dicts), a DeepSpeed
directory (``latest`` + ``<tag>/mp_rank_00_model_states.pt`` + per-rank optimizer partitions), and an FSDP
sharded directory (torch.distributed.checkpoint ``.metadata`` + ``*.distcp`` + Lightning's ``meta.pt``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

FSDP_META = "meta.pt"  # Lightning's FSDPStrategy: the non-tensor part of a sharded checkpoint
DROP = ("optimizer_states", "lr_schedulers")  # training-only state a consolidated checkpoint leaves out


def _load(path: Path) -> dict[str, Any]:
    """A checkpoint file, memory-mapped where possible (reading ``global_step`` must not load all tensors)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except RuntimeError:  # not a zip-format file: mmap is unsupported
        return torch.load(path, map_location="cpu", weights_only=False)


def deepspeed_model_states(path: Path) -> Path | None:
    """The file of a DeepSpeed checkpoint directory holding Lightning's state (global step, hparams, ...)."""
    latest = path / "latest"
    tag = latest.read_text().strip() if latest.is_file() else None
    folders = [path / tag] if tag else sorted(p for p in path.iterdir() if p.is_dir())
    for folder in folders:
        for name in ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_model_states.pt"):
            if (folder / name).is_file():
                return folder / name
    return None


def checkpoint_kind(path: Path) -> str:
    """``file``, ``deepspeed`` or ``fsdp`` (raises ValueError for a directory that is neither)."""
    if path.is_file():
        return "file"
    if path.is_dir() and deepspeed_model_states(path) is not None:
        return "deepspeed"
    if path.is_dir() and (path / FSDP_META).is_file():
        return "fsdp"
    raise ValueError(f"{path} is neither a checkpoint file nor a DeepSpeed or FSDP checkpoint directory")


def checkpoint_meta(path: Path) -> dict[str, Any]:
    """The Lightning state of a checkpoint (global step, hyperparameters, loops, ...), tensors mmapped."""
    kind = checkpoint_kind(path)
    if kind == "file":
        return _load(path)
    if kind == "deepspeed":
        return _load(deepspeed_model_states(path))
    return _load(path / FSDP_META)


def checkpoint_step(path: Path) -> int | None:
    """The global step stored in a checkpoint, or None when it cannot be read (a half-written file)."""
    try:
        return int(checkpoint_meta(path)["global_step"])
    except Exception:  # truncated zip, bad pickle, missing key, ...: not a checkpoint to resume from
        return None


def newest_checkpoint(candidates: Iterable[Path]) -> Path | None:
    """The readable checkpoint with the highest global step; the most recently written one on a tie."""
    scored = []
    for path in candidates:
        if not path.exists():
            continue
        step = checkpoint_step(path)
        if step is not None:
            scored.append((step, path.stat().st_mtime, path))
    return max(scored, key=lambda item: item[:2])[2] if scored else None


def _deepspeed_to_plain(path: Path) -> dict[str, Any]:
    from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict

    with tempfile.TemporaryDirectory() as tmp:
        # Lightning's converter: fp32 weights rebuilt from the ZeRO partitions (frozen ones included) plus
        # Lightning's state (hyperparameters, loops) from rank 0's model-states file.
        return convert_zero_checkpoint_to_fp32_state_dict(path, Path(tmp) / "plain.ckpt")


def _fsdp_to_plain(path: Path) -> dict[str, Any]:
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    with tempfile.TemporaryDirectory() as tmp:
        dcp_to_torch_save(path, Path(tmp) / "full.pt")
        full = torch.load(Path(tmp) / "full.pt", map_location="cpu", weights_only=False)
    meta = torch.load(path / FSDP_META, map_location="cpu", weights_only=False)
    return {**meta, "state_dict": full["model"]}


def plain_checkpoint(path: str | Path) -> dict[str, Any]:
    """Any checkpoint as one dict: ``state_dict`` (full tensors on the CPU, fp32 from DeepSpeed) and
    Lightning's ``hyper_parameters``, ``global_step``, ...; optimizer and scheduler state are left out."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    kind = checkpoint_kind(path)
    if kind == "deepspeed":
        ckpt = _deepspeed_to_plain(path)
    elif kind == "fsdp":
        ckpt = _fsdp_to_plain(path)
    else:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if "state_dict" not in ckpt:
        raise ValueError(f"{path} holds no 'state_dict': is it a Lightning checkpoint?")
    plain = {k: v for k, v in ckpt.items() if k not in DROP}
    plain["state_dict"] = {k: v.detach().clone().contiguous() for k, v in ckpt["state_dict"].items()}
    return plain


def default_consolidated_path(path: str | Path) -> Path:
    """``runs/x/last.ckpt`` (a directory) → ``runs/x/last.consolidated.ckpt``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.consolidated.ckpt")


def consolidate(path: str | Path, out: str | Path | None = None) -> Path:
    """Write :func:`plain_checkpoint` of ``path`` to ``out`` (default :func:`default_consolidated_path`)."""
    out = Path(out) if out is not None else default_consolidated_path(path)
    plain = plain_checkpoint(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(plain, out)
    return out
