"""Atomic checkpoint writes, as Lightning's checkpoint IO plugin.

Every checkpoint file Lightning writes through the strategy's ``checkpoint_io`` (``last.ckpt``, ``best-*``,
periodic ones, ``preempted.ckpt``, ``hpc_ckpt_*``) goes to a temporary file in the same directory, is flushed
and fsynced, and only then renamed over the target (and the directory fsynced). A crash, ``kill -9`` or a full
disk at any point of a save leaves the previous file as it was; a failed write stops training with a
:class:`~mav_train.checkpoints.CheckpointError` that says so. Reads go through the safe loader
(:func:`mav_train.checkpoints.load_checkpoint`, ``weights_only=True``).

DeepSpeed writes its checkpoint directories itself (not through this plugin); see the README.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from typing_extensions import override

from mav_train.checkpoints import CheckpointError, load_checkpoint

TMP_SUFFIX = ".tmp"


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _os_error(err: BaseException) -> OSError | None:
    """The OSError behind a failed write, if any (torch wraps the file's ``No space left on device``)."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _reason(err: BaseException) -> str:
    """The most telling cause of a failed write: an OSError in the chain, else the error's first line."""
    os_error = _os_error(err)
    if os_error is not None:
        return f"[Errno {os_error.errno}] {os.strerror(os_error.errno)}"
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200] if text else ''}"


def temporary_files(path: Path) -> list[Path]:
    """Leftover temporaries of ``path`` (from a process killed while writing it)."""
    return sorted(path.parent.glob(f".{path.name}.*{TMP_SUFFIX}"))


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` for a temporary file beside ``path``, fsync it, rename it to ``path``.

    On any failure the temporary file is removed, ``path`` is untouched and a :class:`CheckpointError` names
    the path and the reason (``[Errno 28] No space left on device``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}"
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the umask applies, as for open()
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if not isinstance(err, Exception):  # KeyboardInterrupt, SystemExit: not a write failure
            raise
        previous = f"the previous {path.name} is intact" if path.exists() else "no earlier checkpoint was touched"
        os_error = _os_error(err)
        hint = "; free disk space" if os_error is not None and os_error.errno == errno.ENOSPC else ""
        raise CheckpointError(f"could not write checkpoint {path}: {_reason(err)}; {previous}{hint}") from err
    _fsync_dir(path.parent)
    for stale in temporary_files(path):  # left by a writer killed earlier
        stale.unlink(missing_ok=True)
    return path


def _torch_save(obj: Any, tmp: Path) -> None:
    # Through a Python file object: a failed write surfaces as the OSError itself (errno kept).
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj, path)``, atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: _torch_save(obj, tmp))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO with atomic writes and ``weights_only`` reads."""

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        atomic_torch_save(checkpoint, path)

    @override
    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None
                        ) -> dict[str, Any]:
        # Always weights_only: Lightning moves the tensors to the right device afterwards.
        return load_checkpoint(path)
