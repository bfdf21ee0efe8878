"""Loader workers start from a forkserver, not as forks of the training process (``data.worker_start``).

The training process runs threads (gloo, W&B, the other loader's queue feeders). ``fork`` copies a lock that one
of them holds at that instant, locked, into the worker; a worker that then takes it waits forever and every
rank stalls at a random step. Here a thread of this process holds a lock that the dataset takes per item.
"""

from __future__ import annotations

import threading
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
    with pytest.raises(ValueError, match="data.worker_start"):
        worker_context("forkservr")


def test_a_forkserver_worker_reads_while_a_thread_here_holds_a_lock(lock_held_by_a_thread) -> None:
    assert list(make_loader(TakesTheLock(), 1, None)) == [0, 1, 2]


def test_a_forked_worker_inherits_the_held_lock(lock_held_by_a_thread) -> None:
    """What the forkserver avoids (and what makes the test above able to fail)."""
    with pytest.raises(RuntimeError, match="lock is held"):
        list(make_loader(TakesTheLock(), 1, None, worker_start="fork"))
