"""A DataLoader over a :class:`~datamodules.stream.ShardStream` that knows how far training has read.

Resume guarantee: the datamodule's ``state_dict`` records ``batches_consumed``, the number of batches this
rank's training dataloader has handed to the training loop (every rank consumes the same number, so the value
saved by rank 0 holds for all). A resumed run starts its stream at that position: the epoch in progress is
finished with ``batches_per_epoch - consumed % batches_per_epoch`` batches, and every seed (shard order,
shuffle buffer, fps draws) derives from the position, so the resumed run *continues* with fresh samples
instead of replaying the ones the epoch began with. It is a seeded new permutation, not an exact
continuation of the interrupted one; a run resumed at an epoch boundary reproduces the uninterrupted run.
The count is exact: Lightning fetches no batch ahead from a loader with a length (ours have one). The same
position is also exposed as the loader's own ``state_dict`` (Lightning stores it with the fit loop), so
Lightning treats the loader as resumable mid-epoch; both copies hold the same value.
"""

from __future__ import annotations

import faulthandler
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from mav_train.stacks import dump_stacks_on_sigusr2

WORKER_STARTS = ("forkserver", "fork", "spawn")
# What a loader worker imports before the first batch: the server preloads them once, each worker forks from it.
WORKER_PRELOAD = ["torch", "datamodules.loader", "datamodules.stream", "datamodules.video", "datamodules.image_text",
                  "datamodules.embeddings"]


class StreamPosition:
    """Batches consumed (main process) and, shared with the workers, the count the iteration began at."""

    def __init__(self) -> None:
        self.consumed = 0
        self.start = torch.zeros((), dtype=torch.long).share_memory_()

    def begin_iteration(self) -> None:
        self.start.fill_(self.consumed)

    def state_dict(self) -> dict[str, int]:
        return {"batches_consumed": self.consumed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.consumed = int(state.get("batches_consumed", 0))
        self.start.fill_(self.consumed)


class StreamLoader(DataLoader):
    """``DataLoader(dataset, batch_size=None)`` (the stream yields batches) that counts what it hands out.

    With ``position=None`` it counts nothing and each iteration starts at the stream's beginning (validation).
    """

    def __init__(self, dataset: Dataset, position: StreamPosition | None = None, **kwargs: Any) -> None:
        super().__init__(dataset, batch_size=None, **kwargs)
        self.position = position

    def state_dict(self) -> dict[str, int]:
        """Lightning saves this with the fit loop (it makes the loader count as resumable mid-epoch)."""
        return {} if self.position is None else self.position.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.position is not None and state_dict:
            self.position.load_state_dict(state_dict)

    def __iter__(self) -> Iterator[Any]:
        if self.position is None:
            return super().__iter__()
        return self._counted()

    def _counted(self) -> Iterator[Any]:
        assert self.position is not None
        self.position.begin_iteration()
        for batch in super().__iter__():
            self.position.consumed += 1
            yield batch


def prepare_worker(worker_id: int = 0) -> None:
    """A loader worker's first act (``worker_init_fn``). It ignores SIGUSR1: SLURM signals every process of a job
    step, SIGUSR1 asks the *rank* to save and stop at a step boundary (:mod:`mav_train.callbacks.preemption`),
    and a worker killed by it would take the batch in flight with it (SIGTERM stays torch's: a worker ends when
    its rank tells it to). SIGUSR2 prints its stacks, as in the rank (:mod:`mav_train.stacks`)."""
    if hasattr(signal, "SIGUSR1"):
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    dump_stacks_on_sigusr2()
    release_forkserver()


def release_forkserver() -> None:
    """In a worker started by the forkserver: close the copy of the rank's "forkserver alive" pipe that Python
    hands every such child. Held open, it keeps the forkserver alive after the rank has gone, and a worker only
    notices that its parent is gone when that parent, the forkserver, exits: so a rank that ended without shutting
    its workers down (a signal, a crash) would leave both running, holding the job's output open."""
    server = multiprocessing.forkserver._forkserver
    if server._forkserver_pid is None and server._forkserver_alive_fd is not None:  # a forkserver child
        os.close(server._forkserver_alive_fd)
        server._forkserver_alive_fd = None


def start_forkserver() -> None:
    """Start the forkserver and its resource tracker now, with SIGUSR1, SIGUSR2 and SIGTERM ignored: both are
    helpers that end with the rank, and a signal meant for the rank (SLURM's requeue signal, ``scancel``, a stack
    dump request) must not take them down while the rank is still working. Both start by exec, which keeps
    ignored signals ignored. A no-op once running; outside the main thread (no signal handling there) they start
    later, on first use."""
    if threading.current_thread() is not threading.main_thread():
        return
    names = [name for name in ("SIGUSR1", "SIGUSR2", "SIGTERM") if hasattr(signal, name)]
    # The stack dump lives below Python's signal module (faulthandler): take it off and put it back explicitly.
    dumping = hasattr(signal, "SIGUSR2") and faulthandler.unregister(signal.SIGUSR2)
    previous = {name: signal.signal(getattr(signal, name), signal.SIG_IGN) for name in names}
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)
        if dumping:
            dump_stacks_on_sigusr2()


def worker_context(start: str = "forkserver") -> multiprocessing.context.BaseContext | None:
    """How loader workers start (``data.worker_start``). The default, ``forkserver``, never forks the training
    process itself: that process runs threads (gloo, W&B, CUDA, the other loader's queue feeders), a fork copies
    whatever lock one of them held at that instant, and a worker that then needs it waits forever (every rank
    then stalls at a random step: the known hazard of forking a threaded process). The forkserver is a clean
    single-threaded process that preloads :data:`WORKER_PRELOAD` once (a few seconds per training process); each
    worker is a fork of it. Where the platform has no forkserver, its default start method."""
    if start not in multiprocessing.get_all_start_methods():  # (the value was checked with the config)
        return None
    context = multiprocessing.get_context(start)
    if start == "forkserver":
        context.set_forkserver_preload(WORKER_PRELOAD)
        start_forkserver()
    return context


def make_loader(dataset: Dataset, num_workers: int, position: StreamPosition | None,
                worker_start: str = "forkserver") -> StreamLoader:
    """Persistent workers when there are any, started as ``worker_start`` says (see :func:`worker_context`);
    pinned memory only when CUDA is there to use it."""
    return StreamLoader(
        dataset,
        position=position,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        multiprocessing_context=worker_context(worker_start) if num_workers > 0 else None,
        worker_init_fn=prepare_worker if num_workers > 0 else None,
        pin_memory=torch.cuda.is_available(),
    )
