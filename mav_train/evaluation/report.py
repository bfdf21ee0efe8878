"""A metric's result with its protocol: as a printed table, as a JSON record, and into a W&B run."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mav_train.evaluation.paper_metrics import MetricResult
from mav_train.evaluation.protocols import Protocol


def record(result: MetricResult, protocol: Protocol, settings: dict[str, Any], sources: dict[str, str | None]
           ) -> dict[str, Any]:
    """The JSON record: the number, its protocol (name, title, how it is made, every setting and which of them
    differ from the protocol's), the inputs, the item counts and the skipped items by reason."""
    changed = sorted(k for k, v in settings.items() if k in protocol.defaults and protocol.defaults[k] != v)
    short = {side: {"used": result.counts[side], "asked": settings[f"num_{side}"]} for side in ("fake", "real")
             if settings.get(f"num_{side}") and result.counts.get(side, 0) < settings[f"num_{side}"]}
    return {
        "metric": result.metric, "value": result.value, **({"extra": result.extra} if result.extra else {}),
        "protocol": {"name": protocol.name, "title": protocol.title, "lines": list(protocol.lines),
                     "settings": settings, "changed": changed},
        "inputs": {k: v for k, v in sources.items() if v is not None},
        "counts": result.counts, "skipped": result.skipped, **({"short": short} if short else {}),
    }


def _skips(skipped: dict[str, int]) -> str:
    return ", ".join(f"{reason} {count}" for reason, count in sorted(skipped.items())) or "none"


def table(rec: dict[str, Any]) -> str:
    """The result as a small table followed by its protocol, e.g.::

        metric  value     generated  real  protocol
        fvd     123.4567  2048       2048  stylegan_v
    """
    extra = "".join(f" ± {v:.4f}" if k == "std" else f" {k}={v:.4f}" for k, v in rec.get("extra", {}).items())
    counts = rec["counts"]
    rows = [("metric", "value", "generated", "real", "protocol"),
            (rec["metric"], f"{rec['value']:.4f}{extra}", str(counts.get("fake", "-")), str(counts.get("real", "-")),
             rec["protocol"]["name"])]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    p = rec["protocol"]
    lines.append(f"protocol {p['name']}: {p['title']}")
    lines += [f"  - {line}" for line in p["lines"]]
    settings = " ".join(f"{k}={v}{'*' if k in p['changed'] else ''}" for k, v in p["settings"].items())
    lines.append(f"  settings: {settings}" + ("  (* differs from the protocol)" if p["changed"] else ""))
    for side, numbers in rec.get("short", {}).items():
        lines.append(f"  WARNING: {numbers['used']} {'generated' if side == 'fake' else side} items where the "
                     f"settings ask for {numbers['asked']}: not comparable with numbers made under this protocol")
    for side, skipped in rec["skipped"].items():
        lines.append(f"  skipped ({'generated' if side == 'fake' else side}): {_skips(skipped)}")
    return "\n".join(lines)


def write_json(rec: dict[str, Any], out: str | Path) -> Path:
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec, indent=2) + "\n")
    return path


def log_to_wandb(rec: dict[str, Any], run_dir: str | Path) -> str:
    """Log ``eval/<metric>`` (and its protocol) into the W&B run of a run directory: the run whose id ``fit``
    keeps in ``RUN_DIR/wandb_run_id.txt`` (a new one, whose id is kept there, when absent). Online when W&B
    credentials are configured, offline otherwise (``WANDB_MODE`` wins). Returns the run id."""
    import wandb

    from mav_train.training import wandb_mode, wandb_run_id

    directory = Path(run_dir)
    directory.mkdir(parents=True, exist_ok=True)
    run_id = wandb_run_id(directory)
    project = os.environ.get("WANDB_PROJECT", "mav_train")
    run = wandb.init(project=project, id=run_id, resume="allow", dir=str(directory), mode=wandb_mode("auto"),
                     reinit="create_new")
    try:
        key = f"eval/{rec['metric']}/{rec['protocol']['name']}"
        values = {key: rec["value"], **{f"{key}_{k}": v for k, v in rec.get("extra", {}).items()}}
        run.log(values)
        run.summary[f"{key}_protocol"] = json.dumps(rec["protocol"])
    finally:
        run.finish()
    return run_id
