"""Save and stop cleanly when the job is told to go: SIGUSR1 (SLURM's requeue signal, or ``kill -USR1``) or
SIGTERM (preemption, ``scancel``, ``kill``). A rerun of the same command (or the requeued job) resumes from
the checkpoint written here, exactly: same step, optimizer, LR schedule, EMA, fps curriculum, data position.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

import lightning as L
from typing_extensions import override

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class Preemption(L.Callback):
    """The signal handler only sets a flag. At the end of the next batch that completed an optimizer step,
    the ranks agree (any rank that got the signal stops them all), every rank takes part in saving ``path``
    (sharded strategies need that), and ``trainer.should_stop`` ends training the normal way (loggers flush).

    The handler is installed at ``setup`` and again wherever Lightning may have replaced it (its SIGTERM
    handler, registered after setup). SLURM signals every process of a job step: loader workers ignore SIGUSR1
    and the forkserver they start from ignores both signals (:mod:`datamodules.loader`), so they survive until
    the rank has saved instead of dying and failing the run.
    After training it hands every signal to the handler that was there before (a stale copy does the same).
    Under SLURM, Lightning's requeue handler is off (see :mod:`mav_train.distributed`); requeueing the job is
    the sbatch script's part (``mav_train/slurm/train.sbatch``), once this process has exited.
    """

    def __init__(self, path: str | Path, signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
        self.path = Path(path)
        self.signals = signals
        self.received: int | None = None
        self.saved_step: int | None = None
        self._original: dict[int, object] = {}
        self._active = False
        self._step_at_batch_start = -1

    def _handle(self, signum: int, frame: object) -> None:
        # The first signal only sets the flag (the step in progress finishes first, on every rank); a second
        # one while training is active, e.g. a hung process, gets the previous behaviour (by default: exit).
        if self._active and self.received is None:
            self.received = signum
            return
        original = self._original.get(signum, signal.SIG_DFL)
        if callable(original):
            original(signum, frame)
        elif original in (signal.SIG_DFL, None):
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in self.signals:
            current = signal.getsignal(sig)
            if current != self._handle:
                self._original.setdefault(sig, current)
                signal.signal(sig, self._handle)
        self._active = True

    def uninstall(self) -> None:
        self._active = False
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, handler in self._original.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self.install()

    @override
    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.install()

    @override
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.install()

    @override
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch,
                             batch_idx: int) -> None:
        self._step_at_batch_start = trainer.global_step

    @override
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch,
                           batch_idx: int) -> None:
        stepped = trainer.global_step != self._step_at_batch_start  # not in the middle of accumulation
        if self.saved_step is not None or not stepped:
            return
        # A collective on every rank at the same step; one rank having seen the signal is enough.
        if not trainer.strategy.reduce_boolean_decision(self.received is not None, all=False):
            return
        trainer.save_checkpoint(self.path)
        self.saved_step = trainer.global_step
        trainer.should_stop = True
        if trainer.is_global_zero:
            name = "a signal on another rank" if self.received is None else signal.Signals(self.received).name
            log.warning("received %s: saved %s at step %d and stopping; rerun the same command (or let the "
                        "requeued job start) to resume", name, self.path, trainer.global_step)

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.uninstall()

    @override
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule,
                     exception: BaseException) -> None:
        self.uninstall()

    @override
    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.uninstall()  # again: Lightning's teardown put back what it found, i.e. this handler
