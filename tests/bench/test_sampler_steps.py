"""bench_sampler_steps on a tiny decoder checkpoint made here: one judged row per (sampler, steps)."""

from __future__ import annotations

import json

import lightning as L
import pytest
from torch.utils.data import DataLoader

from bench.bench_sampler_steps import main, steps_table
from datamodules.heldout import heldout_images
from mav_train.components.registry import component_class, load_component
from mav_train.config.load import load_config


@pytest.fixture(scope="module")
def tiny_decoder(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("steps")
    cfg = load_config("demo/decoder", ["logger=none", "unet.base_channels=16", "unet.channel_mults=[1,2]",
                                       "unet.attention_levels=[2]", "data.resolution=16"])
    module = component_class("decoder")(cfg)
    image, captions = heldout_images(4, seed=1, resolution=16)
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, default_root_dir=tmp)
    trainer.fit(module, train_dataloaders=DataLoader([{"image": image, "clip_image": image,
                                                       "caption": captions}] * 2, batch_size=None))
    path = tmp / "decoder.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_steps_table_rows_and_cli(tiny_decoder, tmp_path, capsys):
    module = load_component(tiny_decoder)
    rows = steps_table(module, [1, 3], ["ddim", "dpmpp"], num=3)
    assert [(r["sampler"], r["steps"]) for r in rows] == [("ddim", 1), ("ddim", 3), ("dpmpp", 1), ("dpmpp", 3)]
    assert all(r["n"] == 3 and 0.0 <= r["background"] <= 1.0 and r["seconds_per_sample"] > 0 for r in rows)
    assert main(["--checkpoint", str(tiny_decoder), "--steps", "2", "--num", "2", "--out",
                 str(tmp_path / "s.json")]) == 0
    table = capsys.readouterr().out
    assert "dpmpp" in table and "ddim" in table and "background" in table
    assert len(json.loads((tmp_path / "s.json").read_text())["rows"]) == 2
