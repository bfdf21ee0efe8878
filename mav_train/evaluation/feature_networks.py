"""The metrics' feature networks: TorchScript files from a local path (nothing is downloaded), called the way
StyleGAN-V's metrics call them, and batched feature extraction with a progress bar.

Calling conventions (those of the files StyleGAN-V and StyleGAN2-ADA publish; a network of your own must follow
them):

- I3D for FVD (``i3d_torchscript.pt``): ``net(videos, rescale=True, resize=True, return_features=True)`` on uint8
  ``b 3 t h w``; the network scales to [-1, 1] and resizes to 224 x 224 itself; returns ``(b, 400)`` features.
- Inception for FID (``inception-2015-12-05.pt``): ``net(images, return_features=True)`` on uint8 ``b 3 h w``;
  the network resizes to 299 itself; returns ``(b, 2048)`` pool features.
- C3D for IS (``c3d_ucf101.pt``, TGANv2's UCF-101 C3D): ``net(videos)`` on uint8 ``b 3 t h w``; returns class
  probabilities ``(b, 101)``.

A TorchScript file runs its own (TorchScript) code when called: use files from sources you trust.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from torch import Tensor
from tqdm import tqdm

I3D_KWARGS = {"rescale": True, "resize": True, "return_features": True}
INCEPTION_KWARGS = {"return_features": True}
C3D_KWARGS: dict[str, bool] = {}


def load_torchscript(path: str | None, what: str, device: torch.device) -> torch.jit.ScriptModule:
    """The TorchScript network in ``path`` in eval mode on ``device``; ValueError (one line) when ``path`` is
    missing, not a file, or not TorchScript."""
    if not path:
        raise ValueError(f"{what}: network=PATH is required (a local TorchScript file; nothing is downloaded)")
    file = Path(path).expanduser()
    if not file.is_file():
        raise ValueError(f"{what} network file {path} does not exist")
    try:
        with warnings.catch_warnings():  # torch marks TorchScript deprecated; these published networks are in it
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(file), map_location=device).eval()
    except (RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{what} network file {path} is not a TorchScript file ({first[:160]})") from err


def to_tensor(batch: list[np.ndarray]) -> Tensor:
    """Items of one shape (``h w 3`` images or ``t h w 3`` clips, uint8) → ``b 3 h w`` / ``b 3 t h w`` uint8."""
    stacked = torch.from_numpy(np.stack(batch))
    if stacked.ndim == 4:
        return rearrange(stacked, "b h w c -> b c h w")
    return rearrange(stacked, "b t h w c -> b c t h w")


def same_shape_batches(arrays: Iterable[np.ndarray], batch_size: int) -> Iterator[list[np.ndarray]]:
    """Consecutive arrays in lists of at most ``batch_size``; a list ends early where the shape changes (sizes
    are left to the network, which resizes by itself)."""
    batch: list[np.ndarray] = []
    for array in arrays:
        if batch and (len(batch) == batch_size or array.shape != batch[0].shape):
            yield batch
            batch = []
        batch.append(array)
    if batch:
        yield batch


@torch.no_grad()
def extract_features(net: Callable[..., Tensor], arrays: Iterable[np.ndarray], kwargs: dict[str, bool],
                     batch_size: int, device: torch.device, total: int | None, desc: str) -> Tensor:
    """``net(batch, **kwargs)`` over ``arrays`` in batches (progress bar on stderr) → float64 ``(n, d)`` on the
    CPU. ValueError when the network does not return one vector per item."""
    features, done = [], 0
    with tqdm(total=total, desc=desc, unit="item", leave=False, dynamic_ncols=True) as bar:
        for batch in same_shape_batches(arrays, batch_size):
            out = net(to_tensor(batch).to(device), **kwargs)
            if not isinstance(out, Tensor) or out.ndim != 2 or out.shape[0] != len(batch):
                shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ValueError(f"{desc}: the network returned {shape} for a batch of {len(batch)}; expected "
                                 f"({len(batch)}, features)")
            features.append(out.detach().to("cpu", torch.float64))
            done += len(batch)
            bar.update(len(batch))
    if not features:
        return torch.zeros(0, 0, dtype=torch.float64)
    return torch.cat(features)
