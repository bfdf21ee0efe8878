"""embed → fit → generate on fixture shards, with the tiny random CLIP (no toy CLIP to train)."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from datamodules.demo import write_image_shards
from datamodules.embeddings import scan_embedding_folder
from mav_train.checkpoints import load_checkpoint
from mav_train.cli.main import main
from mav_train.components.registry import component_class
from mav_train.config.load import load_config
from tests.components.test_decoder import Repeat, toy_batch
from tests.components.test_prior import TINY

CLIP = ["clip.model=custom", "clip.pretrained=null"]


def tiny_decoder_checkpoint(path, clip_seed: int = 0) -> None:
    """A decoder on the tiny random CLIP, one training step, saved by a real Trainer."""
    unet = ["unet.cond_dim=32", "unet.base_channels=8", "unet.head_dim=8", "unet.channel_mults=[1,2]",
            "unet.attention_levels=[2]"]
    cfg = load_config("demo/decoder", [*CLIP, f"clip.seed={clip_seed}", *unet, "data.resolution=16",
                                       "diffusion.sample_steps=4", "logger=none"])
    module = component_class("decoder")(cfg)
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, default_root_dir=path.parent)
    trainer.fit(module, train_dataloaders=DataLoader(Repeat(toy_batch(2), 4), batch_size=None))
    trainer.save_checkpoint(path)


def test_embed_fit_generate_round_trip(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MAV_TRAIN_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    shards = write_image_shards(tmp_path / "shards", num_samples=96, samples_per_shard=32, resolution=32)
    spec = str(tmp_path / "shards" / "{00000..00002}.tar")
    emb = tmp_path / "emb"
    common = ["recipe=demo/prior", *TINY, f"data.shards={spec}", "data.batch_size=16", "data.num_workers=0"]
    # Two parts of a SLURM-array-like split, then a rerun that finds everything done.
    assert main(["embed", *common, f"out={emb}", "--part", "0/2"]) == 0
    assert [p.index for p in scan_embedding_folder(emb)] == [0, 2]
    assert main(["embed", *common, f"out={emb}"]) == 0
    assert "2 already done" in capsys.readouterr().out
    parts = scan_embedding_folder(emb)
    assert [p.index for p in parts] == [0, 1, 2] and parts[0].dim == 32
    # Rows are held-out-filtered toy samples: fewer than 32 per shard, captions aligned with the embeddings.
    assert all(0 < p.rows <= len(shards) * 32 for p in parts)
    img0 = np.load(parts[0].img)
    assert np.isfinite(img0).all() and img0.dtype == np.float32

    # The decoder reads the same folder joined to its shards by key, instead of running the CLIP image tower.
    from datamodules.factory import build_datamodule
    from datamodules.transforms import batch_pixels_to_float
    from tests.datamodules.helpers import data_config

    dm = build_datamodule(data_config(spec, embeddings=str(emb), resolution=32, clip_resolution=32, batch_size=8,
                                      shuffle_buffer=1), component="decoder")
    batch = batch_pixels_to_float(next(iter(dm.train_dataloader())))
    clip = component_class("prior")(load_config("demo/prior", TINY)).clip
    assert torch.allclose(batch["image_emb"], clip.encode_image(batch["clip_image"]), atol=1e-4)

    run_dir = tmp_path / "run"
    fit = ["fit", "recipe=demo/prior", *TINY, f"data.embeddings={emb}", "data.batch_size=8", "data.epoch_samples=32",
           "data.val_samples=8", "data.num_workers=0", "trainer.max_steps=6", "checkpoint.every_n_steps=3",
           "prior.stats_samples=32", "trainer.enable_progress_bar=false", f"run_dir={run_dir}"]
    assert main(fit) == 0
    ckpt = load_checkpoint(run_dir / "last.ckpt")
    assert int(ckpt["state_dict"]["stats_count"]) >= 32
    assert float(ckpt["state_dict"]["emb_norm"]) > 0
    # The datamodule's resume position travels in the checkpoint.
    assert ckpt["EmbeddingDataModule"]["batches_consumed"] == 6

    decoder = tmp_path / "decoder.ckpt"
    tiny_decoder_checkpoint(decoder)
    out = tmp_path / "gen"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle at the top left on a blue background\n\na small green square in the middle "
                       "on a white background\n")
    assert main(["generate", f"prompt={prompts}", f"prior={run_dir / 'last.ckpt'}", f"decoder={decoder}", "num=2",
                 f"out={out}", "prior_steps=4", "steps=4"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["000.png", "000.txt", "001.png", "001.txt", "002.png", "002.txt", "003.png", "003.txt",
                     "generate.json", "grid.png", "stages"]
    assert sorted(p.name for p in (out / "stages").iterdir()) == ["decoder", "prior"]
    assert (out / "002.txt").read_text().strip().startswith("a small green square")


def test_generate_bad_input(tmp_path, capsys):
    decoder, other = tmp_path / "decoder.ckpt", tmp_path / "other.ckpt"
    tiny_decoder_checkpoint(decoder)
    tiny_decoder_checkpoint(other, clip_seed=1)
    # A prior checkpoint of the same CLIP as `decoder`: written from a fresh module, no training needed.
    prior = component_class("prior")(load_config("demo/prior", TINY))
    trainer = L.Trainer(max_steps=0, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, default_root_dir=tmp_path)
    trainer.strategy.connect(prior)
    prior_path = tmp_path / "prior.ckpt"
    torch.save({"state_dict": prior.state_dict(), "hyper_parameters": dict(prior.hparams),
                "clip_fingerprint": prior.clip_fingerprint()}, prior_path)
    assert main(["generate", "prompt=  ", f"prior={prior_path}", f"decoder={decoder}"]) == 2
    assert "the prompt is empty" in capsys.readouterr().err
    assert main(["generate", "prompt=a red circle", f"prior={prior_path}", f"decoder={other}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "trained with CLIP" in err
    assert main(["generate", "prompt=a red circle", f"prior={decoder}", f"decoder={decoder}"]) == 2
    assert "not a prior" in capsys.readouterr().err
