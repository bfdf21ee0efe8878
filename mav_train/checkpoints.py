"""Checkpoints on disk: the one safe way to read them, which one is newest, and turning sharded ones into one
plain file (``.ckpt``) or a safetensors file for sharing.

Three shapes occur: a Lightning ``.ckpt`` file (single device, DDP, FSDP with full state dicts), a DeepSpeed
directory (``latest`` + ``<tag>/mp_rank_00_model_states.pt`` + per-rank optimizer partitions), and an FSDP
sharded directory (torch.distributed.checkpoint ``.metadata`` + ``*.distcp`` + Lightning's ``meta.pt``).
A consolidated checkpoint may also be a ``.safetensors`` file: the tensors of ``state_dict`` plus, in its
metadata under ``mav_train``, the JSON of every other top-level value (``hyper_parameters``, ``global_step``...).

Every read goes through :func:`load_checkpoint`, which unpickles with ``weights_only=True``: a file that needs
more than tensors and plain values is refused (unpickling it could run code from the file), unless the caller
says it trusts the file (``trusted=True``; on the command line ``consolidate ... trust_pickle=true`` converts
such a file once into a safe one).
"""

from __future__ import annotations

import json
import pickle
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

FSDP_META = "meta.pt"  # Lightning's FSDPStrategy: the non-tensor part of a sharded checkpoint
DROP = ("optimizer_states", "lr_schedulers")  # training-only state a consolidated checkpoint leaves out
SAFETENSORS_SUFFIX = ".safetensors"
SAFETENSORS_KEY = "mav_train"  # the safetensors metadata entry holding the JSON of the non-tensor values


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or written; the message is one line naming the path and the reason."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint whose unpickling needs more than tensors and plain values (it could run code)."""


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def load_checkpoint(path: str | Path, trusted: bool = False, mmap: bool = False) -> dict[str, Any]:
    """Read one checkpoint file on the CPU: a torch pickle (``.ckpt``, ``.pt``) or a ``.safetensors`` file.

    Pickles are read with ``weights_only=True``. One that needs other objects raises
    :class:`UnsafeCheckpointError` and nothing in it runs; ``trusted=True`` reads it the old way (only for a
    file whose author you trust). An unreadable file (truncated, not a checkpoint) raises
    :class:`CheckpointError`; a missing one FileNotFoundError. ``mmap``: map tensors instead of reading them.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    if path.suffix == SAFETENSORS_SUFFIX:
        return load_safetensors(path)
    try:
        return _torch_load(path, weights_only=not trusted, mmap=mmap)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f"refused to load {path}: it holds objects other than tensors and plain values, and unpickling it "
            f"could run code from the file ({_first_line(err)[:200]}). If you trust its author, convert it once "
            f"with `python -m mav_train consolidate checkpoint={path} trust_pickle=true`") from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        reason = _truncation(path) or _first_line(err)[:200]
        raise CheckpointError(f"cannot read checkpoint {path}: {reason}") from err


def _truncation(path: Path) -> str | None:
    """``truncated ...`` for a torch zip file whose end-of-archive record is missing (a cut-off write)."""
    with open(path, "rb") as f:
        starts_like_zip = f.read(4) == b"PK\x03\x04"
    if starts_like_zip and not zipfile.is_zipfile(path):
        return f"truncated zip archive ({path.stat().st_size} bytes, no end-of-archive record)"
    return None


def _torch_load(path: Path, weights_only: bool, mmap: bool) -> Any:
    if mmap:
        try:
            return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
        except RuntimeError as err:
            if "zip" not in str(err):  # only the legacy (non-zip) format cannot be mapped
                raise
    return torch.load(path, map_location="cpu", weights_only=weights_only)


def _load(path: Path) -> dict[str, Any]:
    """A checkpoint file, memory-mapped where possible (reading ``global_step`` must not load all tensors)."""
    return load_checkpoint(path, mmap=True)


def save_safetensors(checkpoint: dict[str, Any], path: str | Path) -> Path:
    """``checkpoint["state_dict"]`` as safetensors tensors; every other top-level value that JSON can hold goes
    into the metadata (``mav_train``); the rest (tensors outside the state dict, loop state) is left out."""
    from safetensors.torch import save_file

    path = Path(path)
    extra = {}
    for key, value in checkpoint.items():
        if key == "state_dict":
            continue
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue
        extra[key] = value
    tensors = {k: v.detach().cpu().contiguous() for k, v in checkpoint["state_dict"].items()}
    save_file(tensors, str(path), metadata={SAFETENSORS_KEY: json.dumps(extra)})
    return path


def load_safetensors(path: str | Path) -> dict[str, Any]:
    """A file written by :func:`save_safetensors` as a checkpoint dict (``state_dict`` + the JSON values)."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            state = {key: f.get_tensor(key) for key in f.keys()}
        extra = json.loads(meta.get(SAFETENSORS_KEY, "{}"))
    except Exception as err:  # safetensors raises its own SafetensorError for a bad header or a short file
        raise CheckpointError(f"cannot read safetensors checkpoint {path}: {_first_line(err)[:200]}") from err
    return {**extra, "state_dict": state}


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
    step, _ = _step_or_reason(path)
    return step


def _step_or_reason(path: Path) -> tuple[int | None, str | None]:
    """``(global step, None)`` for a checkpoint whose Lightning state reads safely, else ``(None, why)``."""
    try:
        meta = checkpoint_meta(path)
        return int(meta["global_step"]), None
    except KeyError as err:
        return None, f"no {err} in it"
    except FileNotFoundError as err:
        return None, str(err)
    except CheckpointError as err:  # unsafe or unreadable: the message names the path, keep the reason
        return None, str(err).split(": ", 1)[-1] if not isinstance(err, UnsafeCheckpointError) else \
            "needs unsafe unpickling (not weights_only)"
    except Exception as err:  # a directory that is not a checkpoint, a bad 'latest' file, ...
        return None, _first_line(err)


def verify_file(path: Path) -> str | None:
    """Why a checkpoint file's bytes are damaged (a CRC or zip structure error), or None when they are whole.

    Reads the whole file (not into memory), so a checkpoint cut or corrupted anywhere is caught before
    Lightning loads it; a directory (DeepSpeed, FSDP) or a legacy non-zip file is not checked.
    """
    if not path.is_file() or not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        return _first_line(err)
    return f"bad CRC in record {bad}" if bad is not None else None


def resume_candidates(run_dir: Path) -> list[Path]:
    """Every checkpoint a run directory may resume from: ``best-*``/periodic, ``last``, ``preempted``,
    ``hpc_ckpt_*`` (all ``*.ckpt``, files or DeepSpeed/FSDP directories); consolidated ones are left out."""
    return sorted(p for p in run_dir.glob("*.ckpt") if not p.name.endswith(".consolidated.ckpt"))


def newest_readable(candidates: Iterable[Path]) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The readable checkpoint with the highest global step (the most recently written on a tie), and
    ``(path, reason)`` for every unreadable one met on the way (unsafe, truncated, bad CRC, ...)."""
    scored, unreadable = [], []
    for path in candidates:
        if not path.exists():
            continue
        step, reason = _step_or_reason(path)
        if step is None:
            unreadable.append((path, reason or "unreadable"))
        else:
            scored.append((step, path.stat().st_mtime, path))
    for _, _, path in sorted(scored, key=lambda item: item[:2], reverse=True):
        damage = verify_file(path)
        if damage is None:
            return path, unreadable
        unreadable.append((path, damage))
    return None, unreadable


def newest_checkpoint(candidates: Iterable[Path]) -> Path | None:
    """The readable checkpoint with the highest global step; the most recently written one on a tie."""
    return newest_readable(candidates)[0]


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
        full = load_checkpoint(Path(tmp) / "full.pt")
    meta = load_checkpoint(path / FSDP_META)
    return {**meta, "state_dict": full["model"]}


def plain_checkpoint(path: str | Path, trusted: bool = False) -> dict[str, Any]:
    """Any checkpoint as one dict: ``state_dict`` (full tensors on the CPU, fp32 from DeepSpeed) and
    Lightning's ``hyper_parameters``, ``global_step``, ...; optimizer and scheduler state are left out.
    ``trusted``: see :func:`load_checkpoint` (a plain file only)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    kind = checkpoint_kind(path)
    if kind == "deepspeed":
        ckpt = _deepspeed_to_plain(path)
    elif kind == "fsdp":
        ckpt = _fsdp_to_plain(path)
    else:
        ckpt = load_checkpoint(path, trusted=trusted)
    if "state_dict" not in ckpt:
        raise ValueError(f"{path} holds no 'state_dict': is it a Lightning checkpoint?")
    plain = {k: v for k, v in ckpt.items() if k not in DROP}
    plain["state_dict"] = {k: v.detach().clone().contiguous() for k, v in ckpt["state_dict"].items()}
    return plain


def default_consolidated_path(path: str | Path, fmt: str = "ckpt") -> Path:
    """``runs/x/last.ckpt`` (a directory) → ``runs/x/last.consolidated.ckpt`` (or ``.safetensors``)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.consolidated.{fmt}")


def consolidate(path: str | Path, out: str | Path | None = None, fmt: str | None = None,
                trusted: bool = False) -> Path:
    """Write :func:`plain_checkpoint` of ``path`` to ``out`` (default :func:`default_consolidated_path`).

    ``fmt``: ``ckpt`` (a torch file) or ``safetensors``; by default the suffix of ``out`` decides (``ckpt``
    when there is no ``out``). The file is written atomically (a temporary file, then a rename).
    """
    from mav_train.checkpoint_io import atomic_torch_save, atomic_write

    if fmt is None:
        fmt = "safetensors" if out is not None and Path(out).suffix == SAFETENSORS_SUFFIX else "ckpt"
    if fmt not in ("ckpt", "safetensors"):
        raise ValueError(f"format '{fmt}' is not one of ckpt, safetensors")
    out = Path(out) if out is not None else default_consolidated_path(path, fmt)
    plain = plain_checkpoint(path, trusted=trusted)
    if fmt == "safetensors":
        atomic_write(out, lambda tmp: save_safetensors(plain, tmp))
    else:
        atomic_torch_save(plain, out)
    return out
