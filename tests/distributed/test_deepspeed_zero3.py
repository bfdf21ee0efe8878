"""DeepSpeed ZeRO-3 on two CPU processes with EMA and sample logging: each rank updates the EMA on its own
parameter shards, every rank takes part in sampling (the forward gathers the shards), rank zero writes it."""

from __future__ import annotations

import sys

import lightning as L
import pytest
import torch

from mav_train.cli.main import main
from mav_train.components.registry import load_component
from tests.distributed.helpers import ROOT, TINY, run

SCRIPT = str(ROOT / "tests" / "distributed" / "fit_script.py")
# The EMA moves once, at the last step (index 1, counted before it), half-way: ema = (initial + final) / 2.
ZERO3 = [*TINY, "data.embeddings=null", "data.demo_samples=256",
         "data.num_workers=0", "trainer.max_steps=2", "checkpoint.every_n_steps=2",
         "logger=none", "sampling.every_n_steps=1", "sampling.num_samples=2", "ema.enabled=true", "ema.decay=0.5",
         "ema.warmup=false", "ema.start_step=1"]


@pytest.mark.slow
def test_deepspeed_zero3_ema_and_sampling(tmp_path, demo_cache):
    pytest.importorskip("deepspeed")
    run_dir = tmp_path / "run"
    run([sys.executable, SCRIPT, "--deepspeed-cpu", "--zero3", "recipe=demo/decoder", *ZERO3,
         "trainer.accelerator=cpu", "trainer.devices=2", f"run_dir={run_dir}"],
        tmp_path, demo_cache, timeout=400, DS_ACCELERATOR="cpu")

    # Samples after step 1 (during training) and step 2 (end of training), written by rank zero.
    samples = sorted(p.name for p in (run_dir / "samples").iterdir())
    assert samples == ["step0000001.png", "step0000002.png"], samples

    sharded = run_dir / "last.ckpt"
    assert len(list(sharded.glob("*/*optim_states.pt"))) == 2, "one partition per rank"
    out = tmp_path / "plain.ckpt"
    assert main(["consolidate", f"checkpoint={sharded}", f"out={out}"]) == 0
    state = torch.load(out, map_location="cpu", weights_only=False)["state_dict"]
    module = load_component(out)
    assert state and set(state) == set(module.state_dict())

    # The zero-initialised output layer: its EMA is exactly half its trained value.
    live, ema = state["network.out_conv.weight"], state["ema_network.out_conv.weight"]
    assert live.abs().max() > 0
    torch.testing.assert_close(ema, 0.5 * live)
    # For every weight, 2 * ema - live is the initialisation an unsharded component with the same seed starts
    # from: the shard-wise update computed exactly what a whole-tensor update would have.
    L.seed_everything(module.cfg.trainer.seed)
    init = type(module)(module.cfg).network.state_dict()
    moved = 0
    for name, start in init.items():
        w, e = state[f"network.{name}"], state[f"ema_network.{name}"]
        torch.testing.assert_close(2 * e - w, start, atol=1e-5, rtol=1e-4, msg=name)
        moved += not torch.equal(w, e)
    assert moved > 0, "the EMA lags the live weights"
