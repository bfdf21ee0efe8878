"""Recipe ``component:`` names → LightningModule classes, and checkpoint loading by name."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mav_train.components.base import DiffusionComponent

# name -> (module, class). Imported on demand, so validating a config or printing --help stays light.
COMPONENTS: dict[str, tuple[str, str]] = {
    "decoder": ("mav_train.components.decoder", "Decoder"),
    "temporal_decoder": ("mav_train.components.temporal_decoder", "TemporalDecoder"),
    "clip": ("mav_train.components.clip", "ClipComponent"),
    "prior": ("mav_train.components.prior", "Prior"),
    "sr_low": ("mav_train.components.sr_low", "SrLow"),
    "sr_high": ("mav_train.components.sr_high", "SrHigh"),
    "temporal_sr_low": ("mav_train.components.temporal_sr_low", "TemporalSrLow"),
    "interpolation": ("mav_train.components.interpolation", "Interpolation"),
}


def component_class(name: str) -> type[DiffusionComponent]:
    if name not in COMPONENTS:
        raise ValueError(f"unknown component '{name}'; known components: {', '.join(COMPONENTS)}")
    module, cls = COMPONENTS[name]
    return getattr(importlib.import_module(module), cls)


def load_checkpoint_file(path: str | Path) -> dict:
    """A Lightning checkpoint (or a consolidated ``.ckpt`` / ``.safetensors`` written by ``consolidate``) as a
    dict on the CPU, read safely (:func:`mav_train.checkpoints.load_checkpoint`)."""
    from mav_train.checkpoints import load_checkpoint

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise ValueError(
            f"{path} is a sharded (DeepSpeed/FSDP) checkpoint directory: turn it into one file first with "
            f"`python -m mav_train consolidate checkpoint={path}`"
        )
    return load_checkpoint(path)


def load_component(path: str | Path, map_location: str = "cpu") -> DiffusionComponent:
    """Rebuild the component saved in a checkpoint (its config travels in the hyperparameters)."""
    return component_from_checkpoint(load_checkpoint_file(path), path).to(map_location).eval()


def component_from_checkpoint(ckpt: dict, path: str | Path, config_updates: dict | None = None) -> DiffusionComponent:
    """The component of an already read checkpoint ``ckpt`` (read from ``path``), in eval mode on the CPU.
    ``config_updates`` (``{"diffusion": {"sampler": "ddpm"}}``) change how it samples, never its weights."""
    from omegaconf import OmegaConf

    config = ckpt["hyper_parameters"]["config"]
    if config_updates:
        config = OmegaConf.to_container(OmegaConf.merge(config, config_updates))
    module = component_class(config["component"])(config)
    module.load_state_dict(ckpt["state_dict"])
    from mav_train.components.clip_source import check_clip_fingerprint

    # The CLIP is rebuilt from the saved config: it must be the very one the checkpoint was trained with.
    check_clip_fingerprint(ckpt, module.clip_fingerprint(), f"checkpoint {path}")
    return module.eval()
