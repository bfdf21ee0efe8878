"""Initialising a component from an earlier component's checkpoint (``init.checkpoint``).

Image → image (e.g. resuming a decoder's weights in a new run) loads strictly. Image → video (decoder → D^t)
inflates: the spatial weights load into the video UNet, every new temporal layer starts at the identity, and any
other missing or unexpected key is an error. A source with fewer input channels (D^t → ↑F) is inflated too: its
input convolution gains zero weights for the new channels. The source's EMA weights are used when it has them.

A self-conditioned source (``diffusion.self_condition``) into a component that does not self-condition (a
self-conditioned D^t → ↑F): the input convolution's weights on the x0-estimate channels are dropped, so the new
component starts as the source fed a zero estimate, which is how the source ran in half of its training steps.
When both self-condition, the estimate's weights load as they are: the UNet reads [x, estimate, own extra
channels], so ↑F's known-frame and mask channels are the new, zero-initialised ones after the estimate's.
"""

from __future__ import annotations

from pathlib import Path

from mav_train.components.base import DiffusionComponent
from mav_train.components.clip_source import CLIP_FINGERPRINT_KEY, check_clip_fingerprint
from mav_train.components.registry import load_checkpoint_file
from mav_train.inflate import inflate


def source_prefix(state_dict: dict) -> str:
    """Which copy of the network to start from: the EMA weights when the checkpoint has them."""
    if any(k.startswith("ema_network.") for k in state_dict):
        return "ema_network."
    if any(k.startswith("network.") for k in state_dict):
        return "network."
    raise ValueError("checkpoint holds no 'network.' or 'ema_network.' weights: is it a mav_train checkpoint?")


def initialise_from_checkpoint(module: DiffusionComponent, path: str | Path) -> str:
    """Load ``path`` into ``module.network`` (inflating image → video); returns a one-paragraph report."""
    ckpt = load_checkpoint_file(path)
    state = ckpt.get("state_dict", ckpt)
    source_cfg = ckpt.get("hyper_parameters", {}).get("config", {})
    if CLIP_FINGERPRINT_KEY in ckpt:
        check_clip_fingerprint(ckpt, module.clip_fingerprint(), f"init.checkpoint {path}")
    else:  # written before fingerprints existed: compare what the configs say
        _check_same_clip(module, source_cfg, path)
    prefix = source_prefix(state)
    source_unet = source_cfg.get("unet", {})
    dropped = ""
    if source_cfg.get("diffusion", {}).get("self_condition", False) and not module.cfg.diffusion.self_condition:
        state, dropped = drop_self_condition_inputs(state, prefix, source_unet)
        source_unet = {**source_unet, "extra_in_channels": 0}
    image_to_video = module.network.cfg.temporal and not source_unet.get("temporal", False)
    # D^t -> ↑F: the input conv gains the masked-frame channels (zero weights), everything else loads.
    more_inputs = module.network.cfg.extra_in_channels > source_unet.get("extra_in_channels", 0)
    if image_to_video or more_inputs:
        report = str(inflate(module.network, state, prefix=prefix))
    else:
        sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        module.network.load_state_dict(sub, strict=True)
        report = f"loaded {len(sub)} tensors from {prefix}* strictly"
    changed = module.after_initialisation()
    module.reset_ema()
    report = "; ".join(part for part in (dropped, report, changed) if part)
    return f"initialised {module.cfg.component} from {path} ({source_cfg.get('component', '?')}): {report}"


def drop_self_condition_inputs(state: dict, prefix: str, source_unet: dict) -> tuple[dict, str]:
    """``state`` with the input convolution of ``prefix`` cut to the noisy input's channels (the UNet reads
    ``cat([x, extra])`` patchified, so x's ``in_channels * patch**2`` channels come first), and what was dropped."""
    key = f"{prefix}input_conv.weight"
    weight = state[key]
    keep = source_unet.get("in_channels", 3) * source_unet.get("patch_size", 1) ** 2
    if weight.shape[1] <= keep:
        raise ValueError(f"{key} has {weight.shape[1]} input channels; a self-conditioned source has more than {keep}")
    state = {**state, key: weight[:, :keep].clone()}
    return state, (f"dropped the self-conditioning input weights ({key}: {list(weight.shape)} -> "
                   f"{list(state[key].shape)}; this component starts as its source fed a zero x0 estimate)")


def _check_same_clip(module: DiffusionComponent, source_cfg: dict, path: str | Path) -> None:
    source_clip = source_cfg.get("clip")
    if not source_clip:
        return
    mine = {k: module.cfg.clip[k] for k in ("model", "pretrained")}
    theirs = {k: source_clip.get(k) for k in ("model", "pretrained")}
    if mine != theirs:
        raise ValueError(f"init.checkpoint {path} was trained with CLIP {theirs}, this recipe uses {mine}: "
                         "the conditioning embeddings would not match")
