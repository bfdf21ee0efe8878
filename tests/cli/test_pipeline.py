"""``pipeline``: a small cascade (toy CLIP → D → D^t; P) trained stage by stage with the wiring the recipe names,
then generate + evaluate toy; a rerun skips finished stages and resumes an unfinished one; the cascade schema
refuses typos and bad references; the demo cascade and its pipeline file load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mav_train.cli.main import main
from mav_train.config.load import ConfigError

# Every stage: two steps, tiny nets, the session's small demo sets.
COMMON = ["trainer.max_steps=2", "checkpoint.every_n_steps=2", "sampling.every_n_steps=0", "data.val_samples=4",
          "data.batch_size=4", "data.epoch_samples=8", "data.demo_samples=256", "diffusion.sample_steps=2",
          "trainer.enable_progress_bar=false", "logger=none", "unet.base_channels=8", "unet.head_dim=8",
          "unet.channel_mults=[1,2]", "unet.attention_levels=[2]", "prior.dim=32", "prior.depth=1",
          "prior.stats_samples=8", "trainer.limit_val_batches=1"]

CASCADE = """\
description: a tiny cascade for the tests
run_root: unused
stages:
  clip: {recipe: demo/clip}
  decoder: {recipe: demo/decoder, clip: clip, overrides: [data.resolution=16]}
  temporal_decoder:
    recipe: demo/temporal_decoder
    parent: decoder
    clip: clip
    overrides: [data.resolution=16, data.num_frames=4]
  prior: {recipe: demo/prior, clip: clip}
generate:
  stages: [prior, temporal_decoder]
  prompts: [a red circle at the top left on a blue background]
  heldout_prompts: 1
  arguments: [progress=false, temporal_decoder.fps=4]
"""


def write_cascade(tmp_path: Path, text: str = CASCADE) -> Path:
    path = tmp_path / "cascade.yaml"
    path.write_text(text)
    return path


def test_pipeline_trains_in_order_generates_judges_and_resumes(tmp_path, capsys, demo_cache, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe, root = write_cascade(tmp_path), tmp_path / "runs"
    args = ["pipeline", f"recipe={recipe}", *COMMON, f"run_root={root}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    order = [line.split(":")[1].strip() for line in out.splitlines() if line.startswith("pipeline: ")
             and ("training in" in line)]
    assert order == ["clip", "decoder", "temporal_decoder", "prior"], out
    # The wiring: D^t starts from D's checkpoint; every CLIP-reading stage uses the CLIP stage's export.
    clip_file = root / "clip" / "open_clip_weights.pt"
    assert clip_file.is_file()
    for stage in ("decoder", "temporal_decoder", "prior"):
        config = (root / stage / "config.yaml").read_text()
        assert f"pretrained: {clip_file}" in config, stage
        assert torch.load(root / stage / "last.ckpt", weights_only=True)["global_step"] == 2
    assert f"checkpoint: {root / 'decoder' / 'last.ckpt'}" in (root / "temporal_decoder" / "config.yaml").read_text()
    # P trained from the demo shards' embeddings (data.embeddings: demo): a folder of its own, without its held-out
    # colour x shape pairs, which the decoder's folder has.
    import pyarrow.parquet as pq
    from omegaconf import OmegaConf

    def folder_captions(stage: str) -> list[str]:
        folder = Path(OmegaConf.load(root / stage / "config.yaml").data.embeddings)
        return [c for f in sorted((folder / "metadata").glob("*.parquet"))
                for c in pq.read_table(f).column("caption").to_pylist()]

    held_out = OmegaConf.load(root / "prior" / "config.yaml").data.holdout_pairs
    prior_captions, decoder_captions = folder_captions("prior"), folder_captions("decoder")
    def has_pair(c: str) -> bool:
        return any(f" {pair} " in f" {c} " for pair in held_out)

    assert prior_captions and not any(has_pair(c) for c in prior_captions)
    assert sum(map(has_pair, decoder_captions)) == len(decoder_captions) - len(prior_captions) > 0
    # generate ran on the two prompts (one of a held-out pair) and the judge scored both clips.
    gen = root / "generated"
    assert sorted(p.name for p in gen.glob("*.mp4")) == ["000.mp4", "001.mp4"]
    record = json.loads((gen / "generate.json").read_text())
    assert [s["stage"] for s in record["stages"]] == ["prior", "temporal_decoder"]
    assert record["stages"][0]["clip_fingerprint"] == record["stages"][1]["clip_fingerprint"]
    assert json.loads((gen / "toy.json").read_text())["scored"] == 2
    assert f"videos in {gen}" in out

    # A rerun skips every finished stage; a stage asked for more steps resumes from its checkpoint.
    assert main([*args, "stages.temporal_decoder.trainer.max_steps=3", "--no-generate"]) == 0
    out = capsys.readouterr().out
    for stage in ("clip", "decoder", "prior"):
        assert f"pipeline: {stage}: finished" in out
    assert "pipeline: temporal_decoder: resuming" in out
    assert torch.load(root / "temporal_decoder" / "last.ckpt", weights_only=True)["global_step"] == 3


@pytest.mark.parametrize(("edit", "expected"), [
    (("parent: decoder", "parnet: decoder"), "unknown config key 'stages.temporal_decoder.parnet' (did you mean"),
    (("parent: decoder", "parent: decodr"), "stages.temporal_decoder.parent names 'decodr'"),
    (("clip: {recipe: demo/clip}", "clip: {recipe: demo/clip, parent: prior}\n  x: {recipe: demo/sr_low}"),
     "cycle"),
    (("stages: [prior, temporal_decoder]", "stages: [prior, sr]"), "generate.stages names 'sr'"),
    (("recipe: demo/temporal_decoder", "recipe: demo/temporal_decodr"), "recipe 'demo/temporal_decodr' not found"),
])
def test_cascade_mistakes_are_one_line(tmp_path, capsys, edit, expected):
    recipe = write_cascade(tmp_path, CASCADE.replace(*edit))
    assert main(["pipeline", f"recipe={recipe}", *COMMON, f"run_root={tmp_path / 'r'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "r").exists(), "nothing may train before every stage's config is valid"


def test_stage_config_typo_and_unknown_stage_fail_before_training(tmp_path, capsys):
    recipe = write_cascade(tmp_path)
    assert main(["pipeline", f"recipe={recipe}", "stages.decoder.trainer.max_step=3", f"run_root={tmp_path}/r"]) == 2
    assert "stage decoder" in (err := capsys.readouterr().err) and "trainer.max_steps" in err
    assert main(["pipeline", f"recipe={recipe}", "stages.decodr.trainer.max_steps=3", f"run_root={tmp_path}/r"]) == 2
    assert "no stage 'decodr'" in capsys.readouterr().err
    assert main(["pipeline", "recipe=demo/decoder"]) == 2
    assert "is not a cascade" in capsys.readouterr().err
    assert main(["fit", "recipe=demo/cascade"]) == 2
    assert "pipeline recipe=demo/cascade" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_demo_cascade_and_demo_pipeline_file_load():
    from mav_train.cascade import load_run
    from mav_train.config.pipeline_file import given_stages, load_pipeline

    run = load_run("demo/cascade", [])
    order = run.order()
    assert order.index("decoder") < order.index("temporal_decoder") and order[0] == "clip"
    assert order.index("sr_low") < order.index("temporal_sr_low")
    assert "init.checkpoint=runs/demo/cascade/sr_low/last.ckpt" in run.fit_args("temporal_sr_low")
    pipeline = load_pipeline("demo", {})
    # The pipeline file points at the run directories the cascade writes.
    for stage in given_stages(pipeline):
        assert pipeline[stage].checkpoint == f"{run.run_dir(stage)}/last.ckpt"
    assert set(run.cfg.generate.stages) == set(given_stages(pipeline))
    with pytest.raises(ConfigError, match="pipeline 'nope' not found"):
        load_pipeline("nope", {})
