"""``evaluate``: score samples with a metric. Today: ``toy``, the toy-world judge (mav_train.evaluation)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mav_train.config.load import ConfigError
from mav_train.evaluation.sample_files import SampleSet, load_samples
from mav_train.evaluation.toy_judge import score_images, score_videos

HELP = """\
Score generated samples. Today: `toy`, the toy-world judge (does each sample show what its caption says?).

usage: python -m mav_train evaluate toy samples=DIR [out=FILE] [kind=auto|image|video]

  samples  a directory of NAME.png images or NAME.mp4 clips, each with its caption in NAME.txt
           (e.g. what `sample ... image=HELDOUT_DIR out=DIR` writes; `prepare heldout` writes ground truth)
  out      also write the scores as JSON to FILE
  kind     image or video; auto (default) decides by the files present

Prints per-attribute accuracies (background, color, shape, position, size, readable; videos add identity,
displacement_px, flicker, direction). Items with a missing caption, an unreadable file or a caption that is not
a toy-world caption are skipped and counted; the summary line says how many were scored."""

METRICS = ("toy",)
KEYS = {"samples": None, "out": None, "kind": "auto"}


def parse(args: list[str]) -> tuple[str, dict[str, str | None]]:
    """``["toy", "samples=DIR", ...]`` → (metric, values). Raises ConfigError naming the bad argument."""
    if not args or "=" in args[0]:
        raise ConfigError(f"evaluate: the first argument must be the metric, one of {', '.join(METRICS)}")
    metric, values = args[0], dict(KEYS)
    if metric not in METRICS:
        raise ConfigError(f"evaluate: unknown metric '{metric}'; known: {', '.join(METRICS)}")
    for arg in args[1:]:
        key, sep, value = arg.partition("=")
        if not sep or key not in KEYS:
            raise ConfigError(f"evaluate: unknown argument '{arg}'; expected key=value with key in {', '.join(KEYS)}")
        values[key] = value
    if not values["samples"]:
        raise ConfigError("evaluate: missing required value 'samples'")
    if values["kind"] not in ("auto", "image", "video"):
        raise ConfigError(f"evaluate: kind must be auto, image or video, got '{values['kind']}'")
    return metric, values


def summary(samples: SampleSet) -> str:
    """E.g. ``scored 61 of 64; skipped: missing_caption 1, unreadable_file 1, not_a_toy_caption 1``."""
    line = f"scored {len(samples.items)} of {samples.total}"
    if samples.skipped:
        line += "; skipped: " + ", ".join(f"{reason} {count}" for reason, count in sorted(samples.skipped.items()))
    return line


def run(args: list[str]) -> int:
    _, values = parse(args)
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
