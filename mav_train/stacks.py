"""SIGUSR2 prints the Python stack of every thread of a process to its stderr, and the process carries on.

Registered by every verb (:mod:`mav_train.cli.main`) and by every data loader worker
(:func:`datamodules.loader.prepare_worker`), so ``kill -USR2 PID`` locally or ``scancel --signal=USR2 JOB`` under
SLURM shows where each rank and worker of a job that seems stuck is.
"""

from __future__ import annotations

import faulthandler
import signal
import sys


def dump_stacks_on_sigusr2() -> None:
    """Register the dump, written to the process's own stderr (``sys.__stderr__``; under a test's output capture
    ``sys.stderr`` has no file descriptor). Where even that has none, nothing is registered and nothing else
    changes."""
    if not hasattr(signal, "SIGUSR2") or sys.__stderr__ is None:
        return
    try:
        faulthandler.register(signal.SIGUSR2, file=sys.__stderr__, all_threads=True)
    except (OSError, ValueError):
        pass
