"""``python -m mav_train fit`` whose checkpoints carry extra megabytes, so that each save takes long enough to be
caught in the middle (the kill -9 test). usage: python fit_with_ballast.py MEGABYTES recipe=NAME [key=value ...]"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import lightning as L  # noqa: E402
import torch  # noqa: E402


class Ballast(L.Callback):
    def __init__(self, megabytes: int) -> None:
        self.numel = megabytes * 2**20 // 4

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        checkpoint["ballast"] = torch.ones(self.numel)


if __name__ == "__main__":
    from mav_train.cli.fit import run

    sys.exit(run(sys.argv[2:], extra_callbacks=[Ballast(int(sys.argv[1]))]))
