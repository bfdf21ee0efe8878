"""Running the checked, built stages one after another, one progress bar each."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import Tensor
from tqdm import tqdm

from mav_train.components.base import Conditions
from mav_train.diffusion.samplers import run_timesteps
from mav_train.pipeline.plan import DEFAULT_FPS, skip_of
from mav_train.pipeline.sr_video import sr_high_on_video
from mav_train.pipeline.stages import Stage, effective_settings


@dataclass
class ChainState:
    """What the next stage reads: the prompts (one per sample), the CLIP image embeddings ``b d``, the pixels
    (``b 3 h w`` image or ``b 3 t h w`` video, in [-1, 1]) and their frame rate."""

    prompts: list[str] | None = None
    image_emb: Tensor | None = None
    pixels: Tensor | None = None
    fps: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def default_steps(stage: Stage) -> int:
    s = stage.settings.steps
    return int(s) if s is not None else int(stage.get("diffusion.sample_steps"))


@contextmanager
def progress(stage: Stage, total: int, enabled: bool = True) -> Iterator[tqdm]:
    """A progress bar for ``stage`` that advances once per network evaluation (one per sampling step of one
    batch), counted by forward hooks on the component's networks."""
    bar = tqdm(total=total, desc=f"{stage.name:<16}", unit="step", disable=not enabled, leave=True)
    def count(*_) -> None:  # a forward hook that returns something would replace the network's output
        bar.update(1)

    hooks = []
    for name in ("network", "ema_network"):
        net = getattr(stage.module, name, None)
        if isinstance(net, torch.nn.Module):
            hooks.append(net.register_forward_hook(count))
    try:
        yield bar
    finally:
        for hook in hooks:
            hook.remove()
        bar.close()


def _float(value) -> float | None:
    return None if value is None else float(value)


def run_stage(stage: Stage, state: ChainState, generator: torch.Generator) -> None:
    """Run one stage on ``state`` in place."""
    m, s = stage.module, stage.settings
    steps, guidance = default_steps(stage), _float(s.guidance)
    name = stage.name
    if name == "prior":
        state.image_emb = m.generate(state.prompts, num_candidates=None if s.candidates is None else int(s.candidates),
                                     steps=steps, guidance_scale=guidance, generator=generator)
    elif name == "decoder":
        b, res = state.image_emb.shape[0], int(stage.get("data.resolution"))
        shape = (b, int(stage.get("unet.out_channels")), res, res)
        state.pixels = m.sample(Conditions(image_emb=state.image_emb.to(m.device)), shape, steps=steps,
                                guidance_scale=guidance, generator=generator)
    elif name == "temporal_decoder":
        state.fps = _float(s.fps) or DEFAULT_FPS
        cond = Conditions(image_emb=state.image_emb.to(m.device), fps=m.fps_tensor(state.fps, len(state.image_emb)),
                          always_drop_text=True)
        state.pixels = m.sample(cond, m.sample_shape(len(state.image_emb)), steps=steps, guidance_scale=guidance,
                                generator=generator)
    elif name == "interpolation":
        state.fps = state.fps or DEFAULT_FPS  # an image to animate has none
        kwargs = {"generator": generator, "steps": steps, "guidance_scale": guidance, "strength": _float(s.strength)}
        if state.pixels.ndim == 4:  # image animation: the image is the first frame; fps: the clip's rate
            state.pixels = m.animate(state.pixels, int(stage.get("data.num_frames")), fps=state.fps, **kwargs)
        else:  # fps: the rate of ↑F's output
            state.fps = state.fps * skip_of(stage)
            state.pixels = m.interpolate(state.pixels, skip_of(stage), fps=state.fps, **kwargs)
    elif name == "sr_high" and state.pixels.ndim == 5:
        state.pixels = sr_high_on_video(m, state.pixels, generator=generator, steps=steps,
                                        noise_level=_float(s.noise_level), guidance_scale=guidance,
                                        image_emb=_emb_if_needed(stage, state))
    else:  # sr_low, temporal_sr_low, sr_high on images
        if name == "temporal_sr_low":
            state.fps = state.fps or DEFAULT_FPS
        video = {"fps": state.fps, "shared_noise": bool(s.shared_noise)} if name == "temporal_sr_low" else {}
        state.pixels = m.upsample(state.pixels, image_emb=_emb_if_needed(stage, state),
                                  noise_level=_float(s.noise_level), steps=steps, guidance_scale=guidance,
                                  generator=generator, **video)


def _emb_if_needed(stage: Stage, state: ChainState) -> Tensor | None:
    if int(stage.get("unet.cond_dim")) == 0:
        return None
    if state.image_emb is None:
        raise ValueError(f"{stage.name} is conditioned on the CLIP image embedding, and none came before it")
    return state.image_emb.to(stage.module.device)


def network_calls(stage: Stage, state: ChainState) -> int:
    """Network evaluations the stage will make (the progress bar's total)."""
    if stage.name == "sr_high" and state.pixels is not None and state.pixels.ndim == 5:
        return default_steps(stage) * state.pixels.shape[0]  # one clip at a time
    if stage.name == "interpolation":  # interpolation (one batch of windows) or animation (one window)
        strength = effective_settings(stage)["strength"]  # from the noised known-frame blend: the last steps only
        return len(run_timesteps(int(stage.get("diffusion.timesteps")), default_steps(stage), float(strength)))
    return default_steps(stage)


@torch.no_grad()
def run_chain(stages: list[Stage], state: ChainState, seed: int, show_progress: bool = True,
              on_stage=None) -> ChainState:
    """Run every stage in order from one seeded generator; ``on_stage(stage, state)`` after each (to save its
    output)."""
    generator = torch.Generator().manual_seed(seed)
    for stage in stages:
        start = time.perf_counter()
        with progress(stage, network_calls(stage, state), enabled=show_progress):
            run_stage(stage, state, generator)
        state.seconds[stage.name] = round(time.perf_counter() - start, 3)
        if on_stage is not None:
            on_stage(stage, state)
    return state
