"""The command line as a user meets it: help, recipes, one-line config errors, and a smoke `fit` of every
demo recipe (decoder, then the temporal decoder inflated from it), `sample` and `prepare`."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import decord
import pytest
import torch

from datamodules.heldout import write_heldout
from mav_train.components.registry import COMPONENTS
from mav_train.config.load import list_cascade_names, list_recipe_names, load_config
from mav_train.config.validate import validate
from tests.conftest import REPO, run_cli

SMOKE = ["trainer.max_steps=4", "checkpoint.every_n_steps=2", "sampling.every_n_steps=2", "data.val_samples=4",
         "sampling.num_samples=2", "diffusion.sample_steps=3", "trainer.enable_progress_bar=false"]


def test_help_lists_verbs_and_override_syntax(tmp_path, demo_cache):
    out = run_cli(["--help"], tmp_path, demo_cache)
    assert out.returncode == 0
    for verb in ("fit", "sample", "prepare", "recipes"):
        assert re.search(rf"^\s+{verb}\s+\S", out.stdout, re.M), verb
    assert "key=value" in out.stdout
    fit = run_cli(["fit", "--help"], tmp_path, demo_cache)
    assert fit.returncode == 0 and "recipe=" in fit.stdout and "init.checkpoint" in fit.stdout


def test_recipes_lists_every_recipe_with_description(tmp_path, demo_cache):
    out = run_cli(["recipes"], tmp_path, demo_cache)
    assert out.returncode == 0
    lines = out.stdout.strip().splitlines()
    names = list_recipe_names() + list_cascade_names()
    assert len(lines) == len(names) and "demo/cascade" in names
    for name, line in zip(names, lines, strict=True):
        assert line.startswith(name) and len(line.split(None, 1)[1]) > 20


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["recipe=demo/decoder", "trainer.max_step=3"], "trainer.max_steps"),
        (["recipe=demo/decoder", "data.batch_size=many"], "many"),
        (["recipe=decoder"], "data.shards"),
        (["trainer.max_steps=3"], "recipe"),
        (["recipe=demo/decodr"], "demo/decoder"),
    ],
)
def test_config_errors_are_one_line_without_traceback(tmp_path, demo_cache, args, expected):
    out = run_cli(["fit", *args], tmp_path, demo_cache)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], out.stderr
    assert not (tmp_path / "runs").exists(), "no work may start before the config is valid"


def test_unknown_verb(tmp_path, demo_cache):
    out = run_cli(["trian"], tmp_path, demo_cache)
    assert out.returncode == 2 and "fit" in out.stderr


def test_readme_commands_resolve():
    """Every `python -m mav_train fit ...` in the README loads and validates as written."""
    text = (REPO / "README.md").read_text().replace("\\\n", " ")
    bash = "\n".join(re.findall(r"```bash\n(.*?)```", text, re.S))
    commands = re.findall(r"python -m mav_train fit ([^&\n`]+)", bash)
    assert len(commands) >= 3
    for command in commands:
        args = shlex.split(command, comments=True)  # a trailing "# ..." is a shell comment
        recipe = next(a.split("=", 1)[1] for a in args if a.startswith("recipe="))
        cfg = load_config(recipe, [a for a in args if not a.startswith("recipe=")])
        validate(cfg, COMPONENTS)
    assert "python -m pytest" in text


@pytest.fixture(scope="module")
def decoder_run(tmp_path_factory, demo_cache) -> Path:
    cwd = tmp_path_factory.mktemp("fit")
    # data.embeddings=demo as in the recipe, over 256 demo images: the embeddings of all 20,000 take 95 s here.
    out = run_cli(["fit", "recipe=demo/decoder", *SMOKE, "data.demo_samples=256"], cwd, demo_cache)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "computing the CLIP embeddings of" in out.stderr  # the demo embeddings were made (once) and read
    return cwd / "runs" / "demo" / "decoder"


def test_fit_demo_decoder_leaves_checkpoint_config_samples_and_wandb(decoder_run):
    assert (decoder_run / "last.ckpt").is_file()
    assert list(decoder_run.glob("best-*.ckpt"))
    resolved = load_config(str(decoder_run / "config.yaml"))
    assert resolved.trainer.max_steps == 4 and resolved.run_dir == "runs/demo/decoder"
    assert sorted(p.name for p in (decoder_run / "samples").glob("*.png")) == ["step0000002.png", "step0000004.png"]
    runs = list((decoder_run / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    ckpt = torch.load(decoder_run / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 4
    # The datamodule's stream position travels in the checkpoint (resume continues the data stream).
    assert ckpt["ImageTextDataModule"]["batches_consumed"] == 4


def test_fit_demo_temporal_decoder_from_the_demo_decoder(decoder_run, tmp_path, demo_cache):
    init = decoder_run / "last.ckpt"
    out = run_cli(["fit", "recipe=demo/temporal_decoder", f"init.checkpoint={init}", "data.num_frames=4", *SMOKE],
                  tmp_path, demo_cache)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "initialised temporal_decoder from" in out.stderr
    run_dir = tmp_path / "runs" / "demo" / "temporal_decoder"
    videos = sorted((run_dir / "samples").glob("*.mp4"))
    assert [v.name for v in videos] == ["step0000002.mp4", "step0000004.mp4"]
    reader = decord.VideoReader(str(videos[-1]))
    assert len(reader) == 4
    ckpt = torch.load(run_dir / "last.ckpt", weights_only=False)
    # Spatial layers were frozen: they still equal the decoder's EMA weights.
    source = torch.load(init, weights_only=False)["state_dict"]
    key = "network.input_conv.weight" if "network.input_conv.weight" in source else next(
        k for k in source if k.startswith("network.") and k.endswith("weight"))
    assert torch.equal(ckpt["state_dict"][key], source["ema_" + key])

    # (A single image= file with num= is the decoder's test below; the file/directory handling is shared.)
    heldout = tmp_path / "heldout"
    write_heldout(heldout, num=2, kind="video", frames=4)
    sample = run_cli(["sample", f"checkpoint={run_dir / 'last.ckpt'}", f"image={heldout}", "steps=2",
                      f"out={tmp_path / 'dir'}"], tmp_path, demo_cache)
    assert sample.returncode == 0, sample.stderr[-2000:]
    names = sorted(p.name for p in (tmp_path / "dir").iterdir())
    assert names == ["00000.mp4", "00000.txt", "00001.mp4", "00001.txt", "samples.mp4"]
    assert (tmp_path / "dir" / "00001.txt").read_text() == (heldout / "00001.txt").read_text()
    assert [len(decord.VideoReader(str(tmp_path / "dir" / n))) for n in ("00000.mp4", "00001.mp4", "samples.mp4")] \
        == [4, 4, 4]


def test_fit_from_scratch_says_so(tmp_path, demo_cache):
    out = run_cli(["fit", "recipe=demo/temporal_decoder", "data.num_frames=4", "trainer.max_steps=1",
                   "sampling.every_n_steps=0", "data.val_samples=0", "logger=none"], tmp_path, demo_cache)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "init.checkpoint is not set: training temporal_decoder from scratch" in out.stderr


def test_sample_images_from_decoder(decoder_run, tmp_path, demo_cache):
    out = run_cli(["sample", f"checkpoint={decoder_run / 'last.ckpt'}",
                   f"image={decoder_run / 'samples' / 'step0000002.png'}", "num=3", "steps=2", "sampler=dpmpp",
                   f"out={tmp_path}"], tmp_path, demo_cache)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "samples.png").is_file()
    assert sorted(p.name for p in tmp_path.glob("0*.png")) == ["000.png", "001.png", "002.png"]


def test_sample_a_heldout_directory_then_evaluate(decoder_run, tmp_path, demo_cache):
    heldout = tmp_path / "heldout"
    write_heldout(heldout, num=3)
    (heldout / "00002.txt").unlink()  # no caption: the sample is written, evaluate skips it
    out = run_cli(["sample", f"checkpoint={decoder_run / 'last.ckpt'}", f"image={heldout}", "steps=2",
                   f"out={tmp_path / 's'}"], tmp_path, demo_cache)
    assert out.returncode == 0, out.stderr[-2000:]
    names = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert names == ["00000.png", "00000.txt", "00001.png", "00001.txt", "00002.png", "samples.png"]
    judged = run_cli(["evaluate", "toy", f"samples={tmp_path / 's'}"], tmp_path, demo_cache)
    assert judged.returncode == 0, judged.stderr
    assert judged.stdout.strip().endswith("scored 2 of 3; skipped: missing_caption 1")


def test_prepare_demo_writes_both_layouts(tmp_path, demo_cache):
    out = run_cli(["prepare", "demo", "--out", str(tmp_path / "d")], tmp_path, demo_cache)
    assert out.returncode == 0, out.stderr
    for sub in ("images-256", "videos-256"):  # one directory per kind and set size
        assert (tmp_path / "d" / sub / "00000.tar").is_file()
        assert (tmp_path / "d" / sub / "00000.parquet").is_file()
        assert (tmp_path / "d" / sub / "00000_stats.json").is_file()
