"""``evaluate``: score samples with a metric: the paper's FVD, FID, IS and CLIPSIM (mav_train.evaluation), each
under a named protocol printed with the number, and ``toy``, the toy-world judge."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mav_train.config.load import ConfigError
from mav_train.evaluation.sample_files import SampleSet, load_samples
from mav_train.evaluation.toy_judge import score_images, score_videos

HELP = """\
Score generated samples: FVD, FID, IS and CLIPSIM under named protocols, or the toy-world judge.

usage: python -m mav_train evaluate fvd samples=DIR real=SRC network=I3D.pt [protocol=stylegan_v|ucf101]
                                        [num_real=2048] [num_fake=2048] [frames=16]
       python -m mav_train evaluate fid samples=DIR real=SRC network=INCEPTION.pt [protocol=msrvtt]
                                        [num_real=all] [num_fake=all] [frames_per_video=all]
       python -m mav_train evaluate is samples=DIR network=C3D.pt [protocol=stylegan_v|ucf101] [num_fake=2048]
                                       [splits=10] [frames=16]
       python -m mav_train evaluate clipsim samples=DIR clip.pretrained=PATH|demo [clip.model=ViT-B-32-quickgelu]
                                            [protocol=msrvtt|toy] [num_fake=all] [frames_per_video=all]
       python -m mav_train evaluate toy samples=DIR [out=FILE] [kind=auto|image|video]
  every paper metric also takes [out=FILE] [wandb=RUN_DIR] [batch_size=16] [device=auto|cpu|cuda] [seed=0]

  samples   generated samples: a directory of NAME.mp4 clips / NAME.png images with their captions in NAME.txt
            (what `sample` and `generate` write), or WebDataset shards
  real      the real data: a directory like samples, or img2dataset / video2dataset shards
            ('/data/ucf101/{00000..00009}.tar', a directory of .tar files)
  network   a local TorchScript file (nothing is downloaded): StyleGAN-V's i3d_torchscript.pt (FVD) and
            c3d_ucf101.pt (IS), StyleGAN2-ADA's inception-2015-12-05.pt (FID); see mav_train/evaluation/
            feature_networks.py for how each is called
  protocol  a named setup (printed with the number; `key=value` overrides it and is marked *):
            fvd: stylegan_v (default, fvd2048_16f), ucf101; is: stylegan_v (default, isv2048_ucf), ucf101;
            fid: msrvtt; clipsim: msrvtt (ViT-B/32), toy (the toy CLIP, clip.pretrained=demo)
  num_*     at most this many generated / real items (clips; frames for FID); all: every one there is
  out       also write the result as JSON; wandb  log it into the W&B run of this run directory (offline
            without credentials)

Prints a table (metric, value, items used), the protocol and the skipped items by reason (unreadable files,
clips shorter than the protocol's frames, items without a caption for CLIPSIM, corrupt shards).
`toy` prints per-attribute accuracies (background, color, shape, position, size, readable; videos add identity,
displacement_px, flicker, direction) of NAME.png / NAME.mp4 samples against their toy-world captions."""

PAPER_METRICS = ("fvd", "fid", "is", "clipsim")
METRICS = (*PAPER_METRICS, "toy")
TOY_KEYS = {"samples": None, "out": None, "kind": "auto"}
COMMON_KEYS = ("samples", "out", "protocol", "batch_size", "device", "seed", "wandb")
METRIC_KEYS = {
    "fvd": ("real", "network", "num_real", "num_fake", "frames"),
    "fid": ("real", "network", "num_real", "num_fake", "frames_per_video"),
    "is": ("network", "num_fake", "frames", "splits"),
    "clipsim": ("clip.model", "clip.pretrained", "num_fake", "frames_per_video"),
}
INT_KEYS = ("num_real", "num_fake", "frames", "frames_per_video", "splits", "batch_size", "seed")
ALL_WORDS = ("all", "none", "null")  # num_* / frames_per_video: no limit


def parse(args: list[str]) -> tuple[str, dict[str, str | None]]:
    """``["fvd", "samples=DIR", ...]`` → (metric, values given). Raises ConfigError naming the bad argument."""
    if not args or "=" in args[0]:
        raise ConfigError(f"evaluate: the first argument must be the metric, one of {', '.join(METRICS)}")
    metric = args[0]
    if metric not in METRICS:
        raise ConfigError(f"evaluate: unknown metric '{metric}'; known: {', '.join(METRICS)}")
    keys = tuple(TOY_KEYS) if metric == "toy" else COMMON_KEYS + METRIC_KEYS[metric]
    values: dict[str, str | None] = dict(TOY_KEYS) if metric == "toy" else {}
    for arg in args[1:]:
        key, sep, value = arg.partition("=")
        if not sep or key not in keys:
            raise ConfigError(f"evaluate {metric}: unknown argument '{arg}'; expected key=value with key in "
                              f"{', '.join(keys)}")
        values[key] = value
    if not values.get("samples"):
        raise ConfigError("evaluate: missing required value 'samples'")
    if metric == "toy" and values["kind"] not in ("auto", "image", "video"):
        raise ConfigError(f"evaluate: kind must be auto, image or video, got '{values['kind']}'")
    return metric, values


def _int_or_all(key: str, value: str | int | None) -> int | None:
    if value is None or isinstance(value, int):
        return value
    may_be_all = key.startswith(("num_", "frames_per"))
    if may_be_all and value.lower() in ALL_WORDS:
        return None
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"evaluate: {key} must be an integer{' or all' if may_be_all else ''}, got '{value}'"
                          ) from None
    if number < (0 if key == "seed" else 1):
        raise ConfigError(f"evaluate: {key} must be positive, got {number}")
    return number


def settings_of(metric: str, values: dict[str, str | None]):
    """(protocol, the metric's settings as a dict (protocol defaults, then the command's values), EvalSettings)."""
    from mav_train.evaluation.paper_metrics import EvalSettings
    from mav_train.evaluation.protocols import find_protocol

    try:
        protocol = find_protocol(metric, values.get("protocol"))
    except ValueError as err:
        raise ConfigError(f"evaluate: {err}") from None
    settings: dict = {key: protocol.defaults.get(key) for key in METRIC_KEYS[metric]
                      if key not in ("real", "network")}
    settings.update({"batch_size": 16, "seed": 0})
    for key, value in values.items():
        if key in settings:
            settings[key] = _int_or_all(key, value) if key in INT_KEYS else value
    device = values.get("device") or "auto"
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    fields = {key.replace("clip.", "clip_"): value for key, value in settings.items() if value is not None}
    return protocol, settings, EvalSettings(samples=values["samples"], real=values.get("real"),
                                            network=values.get("network"), device=device, **fields)


def run_paper_metric(metric: str, values: dict[str, str | None]) -> int:
    from mav_train.evaluation import report
    from mav_train.evaluation.media_source import check_source

    protocol, settings, eval_settings = settings_of(metric, values)
    try:
        check_source(values["samples"], "samples")
        if metric in ("fvd", "fid"):
            check_source(values.get("real"), "real")
        result = _compute(metric, eval_settings)
    except ValueError as err:
        print(f"mav_train evaluate: {err}", file=sys.stderr)
        return 2
    rec = report.record(result, protocol, settings, {k: values.get(k) for k in ("samples", "real", "network")})
    print(report.table(rec))
    if values.get("out"):
        print(f"wrote {report.write_json(rec, values['out'])}")
    if values.get("wandb"):
        print(f"logged to W&B run {report.log_to_wandb(rec, values['wandb'])} ({values['wandb']})")
    return 0


def _compute(metric: str, s):
    from mav_train.evaluation import paper_metrics

    if metric == "fvd":
        return paper_metrics.fvd(s)
    if metric == "fid":
        return paper_metrics.fid(s)
    if metric == "is":
        return paper_metrics.inception_score_of_clips(s)
    from mav_train.evaluation.clipsim import clipsim

    return clipsim(s)


def summary(samples: SampleSet) -> str:
    """E.g. ``scored 61 of 64; skipped: missing_caption 1, unreadable_file 1, not_a_toy_caption 1``."""
    line = f"scored {len(samples.items)} of {samples.total}"
    if samples.skipped:
        line += "; skipped: " + ", ".join(f"{reason} {count}" for reason, count in sorted(samples.skipped.items()))
    return line


def run(args: list[str]) -> int:
    metric, values = parse(args)
    if metric in PAPER_METRICS:
        return run_paper_metric(metric, values)
    try:
        samples = load_samples(values["samples"], values["kind"])
    except ValueError as err:
        print(f"mav_train evaluate: {err}", file=sys.stderr)
        return 2
    if not samples.items:
        print(f"mav_train evaluate: nothing to score in {values['samples']}: {summary(samples)}", file=sys.stderr)
        return 2
    score = score_images if samples.kind == "image" else score_videos
    scores = score(samples.items, samples.captions)
    print(scores.table())
    if values["out"]:
        out = Path(values["out"])
        out.parent.mkdir(parents=True, exist_ok=True)
        record = {"metric": "toy", "samples": str(values["samples"]), "scores": scores.as_dict(),
                  "scored": len(samples.items), "total": samples.total, "skipped": dict(samples.skipped)}
        out.write_text(json.dumps(record, indent=2) + "\n")
    print(summary(samples))
    return 0
