"""A pickle that runs code when it is unpickled unsafely: it writes a marker file (proof that it ran)."""

from __future__ import annotations

from pathlib import Path

import torch


class WritesMarker:
    """Unpickling calls ``exec`` (any pickle may name any callable): the marker file appears if it ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('code from the checkpoint ran')",)


def write_malicious_checkpoint(path: Path, marker: Path, step: int = 99) -> Path:
    """A Lightning-looking checkpoint (global_step, state_dict, hyper_parameters) carrying the payload."""
    torch.save({"global_step": step, "state_dict": {"network.w": torch.zeros(2)},
                "hyper_parameters": {"config": {"component": "decoder"}}, "payload": WritesMarker(marker)}, path)
    return path
