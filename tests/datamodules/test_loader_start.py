"""Loader workers start from a forkserver, not as forks of the training process (``data.worker_start``).

The training process runs threads (gloo, W&B, the other loader's queue feeders). ``fork`` copies a lock that one
of them holds at that instant, locked, into the worker; a worker that then takes it waits forever and every
rank stalls at a random step. Here a thread of this process holds a lock that the dataset takes per item.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest
from torch.utils.data import IterableDataset

from datamodules.loader import WORKER_STARTS, make_loader, worker_context
from tests.datamodules.helpers import data_config

LOCK = threading.Lock()


class TakesTheLock(IterableDataset):
    """Three items, each read under :data:`LOCK` (as a library's internal lock would be taken)."""

    def __iter__(self) -> Iterator[int]:
        for item in range(3):
            if not LOCK.acquire(timeout=3):
                raise RuntimeError("the worker's copy of the lock is held by a thread that does not exist in it")
            LOCK.release()
            yield item

    def __len__(self) -> int:
        return 3


@pytest.fixture
def lock_held_by_a_thread():
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with LOCK:
            held.set()
            release.wait(60)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert held.wait(10)
    yield
    release.set()
    thread.join()


def test_the_default_worker_start_is_forkserver() -> None:
    assert WORKER_STARTS[0] == "forkserver" and data_config(None).worker_start == "forkserver"
    assert make_loader(TakesTheLock(), 1, None).multiprocessing_context.get_start_method() == "forkserver"
    assert make_loader(TakesTheLock(), 0, None).multiprocessing_context is None  # no workers, nothing to start
    assert worker_context("fork").get_start_method() == "fork"


def test_a_forkserver_worker_reads_while_a_thread_here_holds_a_lock(lock_held_by_a_thread) -> None:
    assert list(make_loader(TakesTheLock(), 1, None)) == [0, 1, 2]


def test_a_forked_worker_inherits_the_held_lock(lock_held_by_a_thread) -> None:
    """What the forkserver avoids (and what makes the test above able to fail)."""
    with pytest.raises(RuntimeError, match="lock is held"):
        list(make_loader(TakesTheLock(), 1, None, worker_start="fork"))


class Slow(IterableDataset):
    """Six items, a little apart, so that signals land while the worker is still reading. With ``stderr``, the
    worker's file descriptor 2 is that file (the dump's destination in a worker is the process's own stderr)."""

    def __init__(self, stderr: str | None = None) -> None:
        self.stderr = stderr

    def __iter__(self) -> Iterator[int]:
        if self.stderr is not None:
            with open(self.stderr, "w") as handle:
                os.dup2(handle.fileno(), 2)
        for item in range(6):
            time.sleep(0.2)
            yield item

    def __len__(self) -> int:
        return 6


def test_workers_and_the_forkserver_survive_the_signals_slurm_sends_every_process(tmp_path) -> None:
    """Under SLURM, USR1 (requeue), USR2 (stack dump) and TERM reach every process of the job step, not just the
    rank: a worker must print its stacks on USR2 and read on after USR1; the forkserver must outlive all three."""
    import multiprocessing.forkserver

    stderr = tmp_path / "worker_stderr.txt"
    iterator = iter(make_loader(Slow(str(stderr)), 1, None))
    assert next(iterator) == 0
    (worker,) = iterator._workers
    for sig in (signal.SIGUSR2, signal.SIGUSR1):
        os.kill(worker.pid, sig)
    server = multiprocessing.forkserver._forkserver._forkserver_pid
    for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM):
        os.kill(server, sig)
    assert list(iterator) == [1, 2, 3, 4, 5] and worker.is_alive()
    dump = stderr.read_text()
    assert "most recent call first" in dump and "test_loader_start.py" in dump, dump
    os.kill(server, 0)  # still there (raises if not) ...
    assert list(make_loader(Slow(), 1, None)) == list(range(6))  # ... and still starts workers


class AliveFd(IterableDataset):
    """The worker's copy of the rank's "forkserver alive" pipe, as the worker sees it once it has started."""

    def __iter__(self) -> Iterator[int]:
        import multiprocessing.forkserver

        yield multiprocessing.forkserver._forkserver._forkserver_alive_fd

    def __len__(self) -> int:
        return 1


def test_a_worker_does_not_keep_the_forkserver_alive() -> None:
    """Python hands each forkserver child the rank's liveness pipe; a worker holding it would keep the forkserver
    (its parent) alive after the rank has gone, so neither would ever notice and both would leak."""
    assert list(make_loader(AliveFd(), 1, None)) == [None]
