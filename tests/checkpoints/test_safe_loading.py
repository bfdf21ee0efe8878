"""One safe loader: weights_only reads of every checkpoint; a pickle that would run code is refused and its code
does not run; truncated files fail with the path and reason; consolidated safetensors files load everywhere."""

from __future__ import annotations

import pytest
import torch

from mav_train.checkpoints import (
    CheckpointError,
    UnsafeCheckpointError,
    checkpoint_step,
    consolidate,
    load_checkpoint,
    plain_checkpoint,
)
from mav_train.components.init import initialise_from_checkpoint
from mav_train.components.registry import component_class, load_checkpoint_file, load_component
from tests.checkpoints.payload import write_malicious_checkpoint
from tests.conftest import run_cli


def test_a_pickle_that_runs_code_is_refused_and_the_code_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = write_malicious_checkpoint(tmp_path / "shared.ckpt", marker)
    for load in (load_checkpoint, load_checkpoint_file, plain_checkpoint, load_component):
        with pytest.raises(UnsafeCheckpointError, match=r"refused to load .*shared\.ckpt.*trust_pickle=true"):
            load(path)
    assert checkpoint_step(path) is None
    assert not marker.exists(), "the checkpoint's code ran"
    # The payload is real: reading the file the old way (trusted) runs it.
    load_checkpoint(path, trusted=True)
    assert marker.read_text() == "code from the checkpoint ran"


def test_the_cli_refuses_it_in_one_line_and_trust_pickle_converts_it(tmp_path, demo_cache):
    marker = tmp_path / "pwned"
    path = write_malicious_checkpoint(tmp_path / "shared.ckpt", marker)
    out = run_cli(["sample", f"checkpoint={path}", f"image={path}"], tmp_path, demo_cache)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 1 and len(lines) == 1 and "refused to load" in lines[0], out.stderr[-2000:]
    assert not marker.exists()
    # The explicit opt-in: convert once, the result is safe to read.
    out = run_cli(["consolidate", f"checkpoint={path}", "trust_pickle=true", f"out={tmp_path / 'safe.ckpt'}"],
                  tmp_path, demo_cache)
    assert out.returncode == 0 and marker.exists(), out.stderr[-2000:]
    assert load_checkpoint(tmp_path / "safe.ckpt")["global_step"] == 99  # weights_only reads it now


def test_a_truncated_checkpoint_names_path_and_reason(trained_run, tmp_path):
    data = (trained_run / "last.ckpt").read_bytes()
    cut = tmp_path / "last.ckpt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*last\.ckpt: "):
        load_checkpoint(cut)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.ckpt")


def test_the_projects_own_checkpoints_load_weights_only(trained_run):
    ckpt = load_checkpoint(trained_run / "last.ckpt")
    assert ckpt["global_step"] == 4 and "optimizer_states" in ckpt and "ImageTextDataModule" in ckpt
    assert load_component(trained_run / "last.ckpt").cfg.component == "decoder"


def test_consolidated_safetensors_carries_weights_and_config(trained_run, tmp_path):
    out = consolidate(trained_run / "last.ckpt", tmp_path / "decoder.safetensors")
    assert out.read_bytes()[8:9] == b"{"  # a safetensors header, not a pickle
    loaded = load_checkpoint(out)
    original = load_checkpoint(trained_run / "last.ckpt")
    assert loaded["global_step"] == 4 and loaded["hyper_parameters"] == original["hyper_parameters"]
    assert loaded["state_dict"].keys() == original["state_dict"].keys()
    assert all(torch.equal(loaded["state_dict"][k], v) for k, v in original["state_dict"].items())
    state = load_component(out).state_dict()
    assert all(torch.equal(state[k], v) for k, v in loaded["state_dict"].items())
    # init.checkpoint accepts it too.
    fresh = component_class("decoder")(loaded["hyper_parameters"]["config"])
    assert "loaded" in initialise_from_checkpoint(fresh, out)
    ema = {k[len("ema_network."):]: v for k, v in loaded["state_dict"].items() if k.startswith("ema_network.")}
    assert all(torch.equal(fresh.network.state_dict()[k], v) for k, v in ema.items())


def test_sample_accepts_safetensors(run_copy, tmp_path, demo_cache):
    out = consolidate(run_copy / "last.ckpt", fmt="safetensors")
    assert out == run_copy / "last.consolidated.safetensors"
    image = tmp_path / "image.png"
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 30, 30)).save(image)
    result = run_cli(["sample", f"checkpoint={out}", f"image={image}", "num=2", "steps=2", f"out={tmp_path}"],
                     tmp_path, demo_cache)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "samples.png").is_file()
