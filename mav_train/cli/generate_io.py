"""The files of ``generate``: the input image or video a chain starts from, each stage's output, the final
samples and ``generate.json``."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from omegaconf import OmegaConf
from PIL import Image

from mav_train.config.load import ConfigError
from mav_train.media import frame_strip, read_image, read_video, save_image_grid, square, to_uint8, write_mp4
from mav_train.pipeline.plan import DEFAULT_FPS, Flow
from mav_train.pipeline.stages import Stage, describe

RECORD = "generate.json"
STRIPS = "strips"  # frame strips of the final videos, one PNG per sample


def entry_input(first: Stage, values: dict) -> tuple[Flow, torch.Tensor | None, float | None]:
    """What enters the chain at its first stage: text (the prior), an embedding of ``image=`` / ``video=``'s
    first frame (the decoders), or the image / video itself resized to the stage's input (↑F, SR). Returns the
    flow, the pixels (``1 3 h w`` or ``1 3 t h w``; None for text) and the input's frame rate."""
    name, image, video = first.name, values["image"], values["video"]
    if name == "prior":
        if image or video:
            raise ConfigError("generate: the prior starts from text; with image= or video= leave it out "
                              "(stages=...)")
        return Flow("text"), None, None
    if not (image or video):
        what = "a CLIP image embedding" if name in ("decoder", "temporal_decoder") else "an input"
        raise ConfigError(f"generate: the chain starts at {name}, which needs {what}: give prior= with a prompt, "
                          "or image=PATH / video=PATH")
    try:
        if image:
            pixels, fps = read_image(Path(image))[None], None
        else:
            frames, rate = read_video(Path(video))
            pixels, fps = rearrange(frames, "t c h w -> 1 c t h w"), rate or DEFAULT_FPS
    except (ValueError, FileNotFoundError) as err:
        raise ConfigError(f"generate: {err}") from err
    if name in ("decoder", "temporal_decoder"):
        first_frame = pixels if pixels.ndim == 4 else pixels[:, :, 0]
        return Flow("embedding"), first_frame, fps
    size = int(first.get("data.resolution" if name == "interpolation" else "model.low_res"))
    if pixels.ndim == 4:
        return Flow("image", size), square(pixels, size), fps
    frames = _frame_count(first, values, pixels.shape[2])
    clip = square(rearrange(pixels[:, :, :frames], "1 c t h w -> t c h w"), size)
    return Flow("video", size, frames), rearrange(clip, "t c h w -> 1 c t h w"), fps


def _frame_count(first: Stage, values: dict, available: int) -> int:
    """``frames=`` or the stage's training clip length (all frames for SR_h), at most what the video has."""
    if values["frames"]:
        want = int(values["frames"])
        if want < 1:
            raise ConfigError(f"generate: frames must be >= 1, got {want}")
        if want > available:
            raise ConfigError(f"generate: frames={want}, but {values['video']} has only {available} frames")
        return want
    if first.name == "sr_high":
        return available
    return min(available, int(first.get("data.num_frames")))


def _save(x: torch.Tensor, path: Path, fps: float | None) -> Path:
    """``3 h w`` → PNG, ``3 t h w`` → mp4 at ``fps``, anything else (an embedding) → .npy."""
    if x.ndim == 4:
        path = path.with_suffix(".mp4")
        write_mp4(list(to_uint8(rearrange(x, "c t h w -> t h w c"))), path, fps or DEFAULT_FPS)
    elif x.ndim == 3:
        path = path.with_suffix(".png")
        Image.fromarray(to_uint8(rearrange(x, "c h w -> h w c"))).save(path)
    else:
        path = path.with_suffix(".npy")
        np.save(path, x.detach().cpu().numpy())
    return path


class StageWriter:
    """After each stage: ``out/stages/STAGE/000.{npy,png,mp4}`` and ``000.txt`` (so that every stage's folder
    can be judged on its own with ``evaluate toy``)."""

    def __init__(self, out: Path, captions: list[str]) -> None:
        self.out, self.captions = out, captions

    def __call__(self, stage: Stage, state) -> None:
        folder = self.out / "stages" / stage.name
        folder.mkdir(parents=True, exist_ok=True)
        outputs = state.image_emb if stage.name == "prior" else state.pixels
        for i, (x, caption) in enumerate(zip(outputs, self.captions, strict=True)):
            _save(x, folder / f"{i:03d}", state.fps)
            (folder / f"{i:03d}.txt").write_text(caption + "\n")


def write_final(out: Path, state, captions: list[str]) -> Path:
    """The final samples ``out/000.mp4`` (or ``.png``; ``.npy`` when the chain stops at the prior) with
    ``000.txt``; images also as ``grid.png``, videos also as frame strips ``strips/000.png`` (8 frames from first
    to last; in a folder of their own so that ``evaluate toy samples=out`` sees only the videos). Returns the first
    file."""
    outputs = state.pixels if state.pixels is not None else state.image_emb
    paths = []
    for i, (x, caption) in enumerate(zip(outputs, captions, strict=True)):
        paths.append(_save(x, out / f"{i:03d}", state.fps))
        (out / f"{i:03d}.txt").write_text(caption + "\n")
    if outputs.ndim == 4:
        save_image_grid(outputs, out / "grid.png")
    if outputs.ndim == 5:
        (out / STRIPS).mkdir(exist_ok=True)
        for i, video in enumerate(outputs):
            Image.fromarray(frame_strip(video)).save(out / STRIPS / f"{i:03d}.png")
    return paths[0]


def write_record(out: Path, values: dict, stages: list[Stage], flows: list[Flow], state, fingerprint: str | None,
                 captions: list[str]) -> Path:
    """``generate.json``: the command's values, every stage's settings, checkpoint and CLIP fingerprint, what
    came out of it and how long it took."""
    final = state.pixels if state.pixels is not None else state.image_emb
    record = {
        "arguments": {k: v for k, v in values.items() if v is not None},
        "clip_fingerprint": fingerprint,
        "stages": [{"stage": s.name, **describe(s), "settings": OmegaConf.to_container(s.settings),
                    "output": str(flow), "seconds": state.seconds.get(s.name)} for s, flow in zip(stages, flows)],
        "output": {"shape": list(final.shape[1:]), "fps": state.fps, "samples": len(captions)},
        "prompts": captions,
        "torch": torch.__version__, "python": platform.python_version(),
    }
    path = out / RECORD
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path
