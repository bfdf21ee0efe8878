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

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset


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


def make_loader(dataset: Dataset, num_workers: int, position: StreamPosition | None) -> StreamLoader:
    """Persistent workers when there are any; pinned memory only when CUDA is there to use it."""
    return StreamLoader(
        dataset,
        position=position,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
    )
