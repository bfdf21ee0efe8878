"""D^t must learn time: a small temporal decoder trained inside the test on toy clips whose shape always moves
left to right, sampled with the project's sampler, judged frame by frame (the toy judge's shape centroid). Every
frame of a clip gets the same condition, so only the temporal layers (pseudo-3D convolution and attention) can
place the shape further right in later frames: a per-frame network puts it at the same place on average, and this
test turns red.

As in ``test_decoder_learns.py`` the condition is an exact code of the scene (background and shape colour,
one-hot, and the shape's height) through the same ``image_emb`` path, not a CLIP embedding: the point here is the
temporal layers, and a one-minute network cannot also learn to read a random CLIP.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from datamodules.toy_world import COLORS, Scene, draw_scene
from mav_train.components.base import Conditions
from mav_train.components.registry import component_class
from mav_train.config.load import load_config
from mav_train.evaluation.learned_motion import frame_change, same_noise_sample
from mav_train.evaluation.toy_judge import to_uint8
from mav_train.evaluation.toy_reader import read_image

RES, FRAMES, FPS = 16, 4, 8.0
X_START, X_END = 0.28, 0.72  # the shape's centre moves 7 px at 16 px over the clip
CODE_DIM = 2 * len(COLORS) + 1
OVERRIDES = ["logger=none", "clip.pretrained=null", f"unet.cond_dim={CODE_DIM}", "unet.base_channels=16",
             "unet.channel_mults=[1,2]", "unet.attention_levels=[2]", f"data.resolution={RES}",
             f"data.num_frames={FRAMES}", "unet.max_frames=8", "model.freeze_spatial=false", "optim.lr=2e-3",
             "optim.warmup_steps=20", "ema.decay=0.98", "diffusion.sample_steps=25", "diffusion.guidance_scale=1.0",
             # every temporal layer at the base rate (demo/temporal_decoder keeps its convolutions fixed)
             "optim.lr_scales={conv_\\d\\.temporal\\.: 1.0, fps_embed: 1.0}",
             # without self-conditioning (the recipe's, inherited from demo/decoder): this net trains from scratch,
             # and self-conditioned it draws readable squares in only a third of the clips after 300 steps
             "diffusion.self_condition=false", "unet.extra_in_channels=0"]


def random_clip_scene(rng: np.random.Generator) -> Scene:
    color, background = rng.choice(len(COLORS), size=2, replace=False)
    return Scene(shape="square", color=int(color), background=int(background), size=0.36, x=X_START,
                 y=float(rng.uniform(0.3, 0.7)))


def render(scenes: list[Scene]) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips ``b 3 t h w`` in [-1, 1] with the shape at evenly spaced x from X_START to X_END, and their codes."""
    xs = np.linspace(X_START, X_END, FRAMES)
    clips = np.stack([np.stack([np.asarray(draw_scene(Scene(**{**vars(s), "x": float(x)}), RES)) for x in xs])
                      for s in scenes])  # b t h w c
    video = torch.from_numpy(clips).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0
    codes = np.zeros((len(scenes), CODE_DIM), np.float32)
    for i, s in enumerate(scenes):
        codes[i, s.background] = codes[i, len(COLORS) + s.color] = 1.0
        codes[i, -1] = 2 * s.y - 1
    return video, torch.from_numpy(codes)


class MovingSquares(IterableDataset):
    def __init__(self, batch: int):
        self.batch = batch

    def __iter__(self):
        rng = np.random.default_rng(0)
        while True:
            video, code = render([random_clip_scene(rng) for _ in range(self.batch)])
            yield {"video": video, "image_emb": code, "fps": torch.full((self.batch,), FPS)}


def travel(video: torch.Tensor) -> tuple[list[float], float]:
    """Per clip, how far right (px) the judge's shape centroid went from the first to the last frame (nan when the
    judge reads no shape in a frame), and the share of clips whose centroid moves right at every step."""
    frames = to_uint8(video.permute(0, 2, 1, 3, 4).flatten(0, 1))
    readings = [read_image(frame) for frame in frames]
    xs = np.array([r.centroid[0] if r.centroid is not None else np.nan for r in readings]).reshape(-1, FRAMES)
    monotone = np.all(np.diff(xs, axis=1) > 0, axis=1)
    return list(xs[:, -1] - xs[:, 0]), float(monotone.mean())


def test_a_small_temporal_decoder_learns_to_move_the_shape(tmp_path):
    truth_video, _ = render([random_clip_scene(np.random.default_rng(5)) for _ in range(4)])
    truth_travel, truth_monotone = travel(truth_video)
    assert truth_monotone == 1.0 and min(truth_travel) > 6.0, truth_travel  # the measure reads the truth

    torch.manual_seed(0)
    steps = 300
    module = component_class("temporal_decoder")(
        load_config("demo/temporal_decoder", [*OVERRIDES, f"trainer.max_steps={steps}"]))
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, default_root_dir=tmp_path, gradient_clip_val=1.0)
    trainer.fit(module, train_dataloaders=DataLoader(MovingSquares(16), batch_size=None))
    module.eval()
    _, codes = render([random_clip_scene(np.random.default_rng(1)) for _ in range(16)])
    with torch.no_grad():
        samples = module.sample(Conditions(image_emb=codes, fps=module.fps_tensor(FPS, 16), always_drop_text=True),
                                module.sample_shape(16), generator=torch.Generator().manual_seed(0))
    moved, monotone = travel(samples)
    # Without working temporal layers every frame is the same draw: travel ~0 px, 1 clip in 24 monotone by chance.
    assert np.nanmean(moved) > 3.5 and monotone >= 0.6, (moved, monotone)

    # Sampled with one noise draw for every frame, frames differ only by what the temporal layers learned: the
    # square still travels right (bench_quality's same_noise reading of D^t rests on this).
    with torch.no_grad():
        same = same_noise_sample(module, Conditions(image_emb=codes, fps=module.fps_tensor(FPS, 16),
                                                    always_drop_text=True), 16, torch.Generator().manual_seed(0))
    moved_same, monotone_same = travel(same)
    assert np.nanmean(moved_same) > 3.5 and monotone_same >= 0.6, (moved_same, monotone_same)


def test_an_untrained_temporal_decoder_repeats_one_frame_under_one_noise_draw():
    """With its temporal layers at their identity initialisation, D^t sampled with the same noise in every frame
    returns one picture repeated (and with independent noise it does not). The spatial network gets random
    weights where a fresh one has zeros, so that it draws something frame by frame."""
    torch.manual_seed(0)
    module = component_class("temporal_decoder")(
        load_config("demo/temporal_decoder", [*OVERRIDES, "diffusion.sample_steps=3"])).eval()
    with torch.no_grad():
        for name, param in module.network.named_parameters():
            if not module.network.is_temporal_parameter(name) and param.ndim > 1 and not param.any():
                param.normal_(0.0, 0.05)  # the zero-initialised output and residual convolutions
    module.reset_ema()
    _, codes = render([random_clip_scene(np.random.default_rng(1)) for _ in range(2)])
    cond = Conditions(image_emb=codes, fps=module.fps_tensor(FPS, 2), always_drop_text=True)
    with torch.no_grad():
        same = same_noise_sample(module, cond, 2, torch.Generator().manual_seed(0))
        independent = module.sample(cond, module.sample_shape(2), generator=torch.Generator().manual_seed(0))
    assert frame_change(same) < 1e-3, frame_change(same)
    assert frame_change(independent) > 1.0, frame_change(independent)
