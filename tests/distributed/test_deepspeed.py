"""DeepSpeed ZeRO-2 on two CPU processes: fit in the paper recipes' bf16-mixed (DeepSpeed's torch autocast),
checkpoint (a directory), consolidate into one plain .ckpt, then sample from it and initialise a new component
from it."""

from __future__ import annotations

import sys

import pytest
import torch

from mav_train.checkpoints import deepspeed_model_states
from mav_train.cli.main import main
from mav_train.components.base import Conditions
from mav_train.components.init import initialise_from_checkpoint
from mav_train.components.registry import component_class, load_component
from mav_train.config.load import load_config
from tests.distributed.helpers import ROOT, TINY, run

SCRIPT = str(ROOT / "tests" / "distributed" / "fit_script.py")
# data.embeddings=null: the CLIP image tower per batch, not the demo shards' 20,000 embeddings computed first (~3 min)
DECODER = [*TINY, "data.embeddings=null", "data.demo_samples=256",
           "data.num_workers=0", "trainer.max_steps=3", "checkpoint.every_n_steps=3",
           "logger=none"]


@pytest.mark.slow
def test_deepspeed_zero2_fit_consolidate_and_sample(tmp_path, demo_cache):
    pytest.importorskip("deepspeed")
    run_dir = tmp_path / "run"
    run([sys.executable, SCRIPT, "--deepspeed-cpu", "recipe=demo/decoder", *DECODER,
         "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=bf16-mixed", f"run_dir={run_dir}"],
        tmp_path, demo_cache, timeout=400, DS_ACCELERATOR="cpu")
    sharded = run_dir / "last.ckpt"
    assert sharded.is_dir(), "a DeepSpeed checkpoint is a directory"
    assert len(list(sharded.glob("*/*optim_states.pt"))) == 2, "one optimizer partition per rank"

    out = tmp_path / "plain.ckpt"
    assert main(["consolidate", f"checkpoint={sharded}", f"out={out}"]) == 0
    plain = torch.load(out, map_location="cpu", weights_only=False)
    assert plain["global_step"] == 3 and plain["hyper_parameters"]["config"]["component"] == "decoder"
    assert "optimizer_states" not in plain

    # Every tensor of the module, in fp32, equal to the full weights rank 0 held (ZeRO-2 keeps them whole).
    module = load_component(out)
    expected = set(module.state_dict())
    assert set(plain["state_dict"]) == expected and any(k.startswith("ema_network.") for k in expected)
    held = torch.load(deepspeed_model_states(sharded), map_location="cpu", weights_only=False)["module"]
    for key, value in plain["state_dict"].items():
        assert value.dtype == torch.float32  # bf16 compute, fp32 weights and EMA (not DeepSpeed's bf16 module)
        assert torch.equal(value, held[key]), key
    # Training moved the network (the zero-initialised output layer is no longer zero).
    assert plain["state_dict"]["network.out_conv.weight"].abs().max() > 0

    # Sampling from it (EMA weights) and initialising the next run from it both work.
    cfg = module.cfg
    emb = torch.randn(2, cfg.unet.cond_dim, generator=torch.Generator().manual_seed(0))
    shape = (2, 3, cfg.data.resolution, cfg.data.resolution)
    generator = torch.Generator().manual_seed(0)
    images = module.sample(Conditions(image_emb=emb), shape, steps=2, generator=generator)
    assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()
    fresh = component_class("decoder")(load_config("demo/decoder", DECODER))
    report = initialise_from_checkpoint(fresh, out)
    assert "strictly" in report
    assert torch.equal(fresh.network.out_conv.weight, plain["state_dict"]["ema_network.out_conv.weight"])


def test_bf16_mixed_under_deepspeed_is_torch_autocast():
    from mav_train.distributed import build_strategy, deepspeed_precision

    cfg = load_config("decoder", ["trainer.strategy=deepspeed_stage_2"]).trainer
    strategy = build_strategy(cfg)
    assert deepspeed_precision(cfg.precision, strategy) == "32-true"
    assert strategy.config["torch_autocast"] == {"enabled": True, "dtype": "bfloat16"}
    assert deepspeed_precision("bf16-mixed", "ddp") == "bf16-mixed"
    assert deepspeed_precision("32-true", build_strategy(cfg)) == "32-true"
