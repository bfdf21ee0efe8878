"""Named evaluation protocols: the settings behind a number, printed with it.

FVD in particular changes several-fold with the protocol (resize or crop, frame count, sample count, which I3D
file), so every result carries the protocol it was computed under and the settings that differed from it.
A preset only sets defaults: ``num_fake=64`` on the command line wins and is shown as changed.

What the paper states is marked as such; where it is silent the choice is ours and says so. The Make-A-Video
evaluation setup (arXiv 2209.14792, section 4.1) is quoted as we read it; check it against the paper before
comparing numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

I3D_LINES = (
    "I3D: the TorchScript port of the TF-Hub FVD network (Kinetics-400; StyleGAN-V's i3d_torchscript.pt), "
    "400-d features before the softmax",
    "input uint8 b 3 16 h w; the network scales to [-1, 1] and resizes frames to 224 x 224 itself "
    "(rescale=True, resize=True, as StyleGAN-V calls it)",
    "16 consecutive frames: generated clips from their first frame, real clips from a random offset (seed); "
    "shorter clips are skipped and counted",
    "Fréchet distance of the two feature Gaussians (torchmetrics, float64)",
)
C3D_LINES = (
    "C3D fine-tuned on UCF-101 (TGANv2's network; StyleGAN-V's c3d_ucf101.pt): 101 class probabilities",
    "input uint8 b 3 16 h w, the first 16 frames of each generated clip; the network resizes and crops itself",
    "splits: shuffled by torch.randperm from the seed, cut by Tensor.chunk (torchmetrics; StyleGAN-V shuffles "
    "with numpy RandomState(42))",
)


@dataclass(frozen=True)
class Protocol:
    """A metric's named setup: ``defaults`` for the command's keys, and ``lines`` saying how the number is made."""

    name: str
    metric: str
    title: str
    defaults: dict[str, Any] = field(default_factory=dict)
    lines: tuple[str, ...] = ()


PROTOCOLS = (
    Protocol("stylegan_v", "fvd", "StyleGAN-V fvd2048_16f: 2048 real vs 2048 generated clips of 16 frames",
             {"frames": 16, "num_real": 2048, "num_fake": 2048}, I3D_LINES),
    Protocol("ucf101", "fvd", "Make-A-Video UCF-101 FVD (paper: zero-shot 367.23, fine-tuned 81.25)",
             {"frames": 16, "num_real": 10000, "num_fake": 10000},
             ("paper: 10,000 generated clips, prompts following the class distribution of the training set, one "
              "template prompt per class; real: 10,000 UCF-101 clips (our choice, the paper does not say)",
              *I3D_LINES)),
    Protocol("stylegan_v", "is", "StyleGAN-V isv2048_ucf: C3D Inception Score of 2048 generated clips, 10 splits",
             {"frames": 16, "num_fake": 2048, "splits": 10}, C3D_LINES),
    Protocol("ucf101", "is", "Make-A-Video UCF-101 IS (paper: zero-shot 33.00, fine-tuned 82.55)",
             {"frames": 16, "num_fake": 10000, "splits": 10},
             ("paper: 10,000 generated clips, prompts following the class distribution of the training set",
              *C3D_LINES)),
    Protocol("msrvtt", "fid", "Make-A-Video MSR-VTT FID on frames (paper: zero-shot 13.17)",
             {"num_real": None, "num_fake": None, "frames_per_video": None},
             ("paper: one generated video per MSR-VTT test caption (59,794 captions)",
              "Inception-v3: StyleGAN2-ADA's inception-2015-12-05.pt, 2048-d pool features; input uint8 b 3 h w, "
              "the network resizes to 299 itself",
              "frames: every frame of every clip (our choice; the paper does not say which), or frames_per_video "
              "evenly spaced; num_real / num_fake cap the frame counts (default: all)",
              "Fréchet distance of the two feature Gaussians (torchmetrics, float64)")),
    Protocol("msrvtt", "clipsim", "Make-A-Video MSR-VTT CLIPSIM (paper: zero-shot 0.3049)",
             {"clip.model": "ViT-B-32-quickgelu", "clip.pretrained": None, "frames_per_video": None},
             ("paper: one generated video per MSR-VTT test caption (59,794 captions); CLIP ViT-B/32 (OpenAI's "
              "weights: open_clip ViT-B-32-quickgelu, from a local file)",
              "per clip: the mean over its frames of cos(CLIP image embedding, CLIP text embedding of its caption); "
              "the number is the mean over clips (raw cosine; torchmetrics' CLIPScore reports 100 max(cos, 0))",
              "frames: all (our choice), or frames_per_video evenly spaced")),
    Protocol("toy", "clipsim", "CLIPSIM under the toy world's CLIP (clip.pretrained=demo)",
             {"clip.model": "toy", "clip.pretrained": "demo", "frames_per_video": None},
             ("the demo toy CLIP (recipes/demo/clip.yaml), trained into the cache on first use",
              "per clip: the mean over its frames of cos(image embedding, caption embedding); mean over clips")),
)
DEFAULT_PROTOCOL = {"fvd": "stylegan_v", "is": "stylegan_v", "fid": "msrvtt", "clipsim": "msrvtt"}


def protocol_names(metric: str) -> list[str]:
    return [p.name for p in PROTOCOLS if p.metric == metric]


def find_protocol(metric: str, name: str | None) -> Protocol:
    """The protocol ``name`` of ``metric`` (its default when None); ValueError naming the known ones."""
    name = name or DEFAULT_PROTOCOL[metric]
    for protocol in PROTOCOLS:
        if protocol.metric == metric and protocol.name == name:
            return protocol
    raise ValueError(f"unknown protocol '{name}' for {metric}; known: {', '.join(protocol_names(metric))}")
