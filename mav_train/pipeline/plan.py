"""What flows between the stages (text, an embedding, an image or a video, at which size and frame count), worked
out from the stage configs before anything samples, so that stages that do not fit together are one line."""

from __future__ import annotations

from dataclasses import dataclass, replace

from mav_train.config.load import ConfigError
from mav_train.pipeline.stages import Stage

DEFAULT_SKIP = 5  # Make-A-Video's frame skip at inference: 16 -> 76 frames
DEFAULT_FPS = 8.0


@dataclass(frozen=True)
class Flow:
    """``kind``: text | embedding | image | video. ``resolution`` None: any (a user's file, resized to fit)."""

    kind: str
    resolution: int | None = None
    frames: int | None = None
    dim: int | None = None

    def __str__(self) -> str:
        if self.kind == "video":
            size = f"{self.resolution}x{self.resolution}" if self.resolution else "any size"
            return f"a video of {self.frames} frames at {size}"
        if self.kind == "image":
            return f"an image at {self.resolution}x{self.resolution}" if self.resolution else "an image"
        return "an embedding" if self.kind == "embedding" else "text"


def skip_of(stage: Stage) -> int:
    """↑F's frame skip: the ``skip`` setting, else the checkpoint's ``model.frame_skip``, else 5."""
    if stage.settings.skip is not None:
        return int(stage.settings.skip)
    return int(stage.config.get("model", {}).get("frame_skip", DEFAULT_SKIP))


def _check_interpolation(stage: Stage, frames: int) -> None:
    """↑F fills windows of its ``data.num_frames`` frames, each holding the keyframes 0, skip, 2 skip, ...: the
    skip must leave two keyframes in a window, and the video must hold a window's keyframes."""
    skip, window = skip_of(stage), int(stage.get("data.num_frames"))
    if not 1 <= skip <= window - 1:
        raise ConfigError(f"interpolation skip {skip} does not fit {stage.path}'s window of {window} frames "
                          f"(1 <= skip <= {window - 1})")
    per_window = (window - 1) // skip + 1
    if skip > 1 and frames < per_window:
        raise ConfigError(f"interpolation at skip {skip} needs at least {per_window} frames (one {window}-frame "
                          f"window's keyframes), but the stage before it gives {frames}")


def _expect(stage: Stage, flow: Flow, kinds: tuple[str, ...], resolution: int | None = None) -> None:
    if flow.kind not in kinds:
        raise ConfigError(f"{stage.name} takes {' or '.join(kinds)}, but the stage before it gives {flow}")
    if resolution is not None and flow.resolution is not None and flow.resolution != resolution:
        raise ConfigError(f"{stage.name}={stage.path} takes {resolution}x{resolution} input, but the stage before "
                          f"it gives {flow}")


def _fits_frames(stage: Stage, frames: int, what: str) -> None:
    if stage.get("unet.temporal") and frames > int(stage.get("unet.max_frames")):
        raise ConfigError(f"{stage.name}={stage.path} handles at most {stage.get('unet.max_frames')} frames "
                          f"(unet.max_frames), but {what} {frames}")


def step(stage: Stage, flow: Flow) -> Flow:
    """The flow out of ``stage`` given the flow into it; ConfigError when it does not fit."""
    res = int(stage.get("data.resolution"))
    name = stage.name
    if name == "prior":
        _expect(stage, flow, ("text",))
        return Flow("embedding", dim=int(stage.get("prior.embed_dim")))
    if name in ("decoder", "temporal_decoder"):
        _expect(stage, flow, ("embedding",))
        cond = int(stage.get("unet.cond_dim"))
        if flow.dim is not None and flow.dim != cond:
            raise ConfigError(f"{name}={stage.path} is conditioned on {cond}-d embeddings, but the stage before "
                              f"it gives {flow.dim}-d ones")
        if name == "decoder":
            return Flow("image", res, dim=flow.dim)
        return Flow("video", res, int(stage.get("data.num_frames")), dim=flow.dim)
    if name == "interpolation":
        _expect(stage, flow, ("video", "image"), res)
        if flow.kind == "image":  # animation: the image is the first frame of a clip of ↑F's window
            return Flow("video", res, int(stage.get("data.num_frames")), dim=flow.dim)
        _check_interpolation(stage, flow.frames)  # ↑F works window by window: no limit on the output's length
        return Flow("video", res, (flow.frames - 1) * skip_of(stage) + 1, dim=flow.dim)
    # super-resolution: SR_l (images), SR_l^t (videos), SR_h (either, video frame by frame)
    low = int(stage.get("model.low_res"))
    kinds = {"sr_low": ("image",), "temporal_sr_low": ("video",), "sr_high": ("image", "video")}[name]
    _expect(stage, flow, kinds, low)
    if name == "temporal_sr_low":
        _fits_frames(stage, flow.frames, "it would get")
    level = stage.settings.noise_level
    if level is not None and not 0.0 <= float(level) <= 1.0:
        raise ConfigError(f"{name}.noise_level must lie in [0, 1], got {level}")
    return replace(flow, resolution=res)


def plan(stages: list[Stage], entry: Flow) -> list[Flow]:
    """The flow out of each stage, in order (the check that they fit together)."""
    flows, flow = [], entry
    for stage in stages:
        steps = stage.settings.steps
        if steps is not None and int(steps) < 1:
            raise ConfigError(f"{stage.name}.steps must be >= 1, got {steps}")
        flow = step(stage, flow)
        flows.append(flow)
    return flows
