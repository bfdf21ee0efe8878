"""Shards in the img2dataset / video2dataset layout: ``00000.tar``, ``00000.parquet``, ``00000_stats.json``.

Everything written is a function of the records (fixed tar mtimes, no clock): equal input gives equal bytes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds


@dataclass
class ShardRecord:
    """One sample: ``files`` maps an extension (``jpg``, ``txt``, ``mp4``) to bytes; ``meta`` is ``KEY.json``.

    ``write_json=False`` leaves the json out of the tar (metadata missing entirely); ``meta`` still goes to
    the parquet table.
    """

    key: str
    files: dict[str, bytes]
    meta: dict[str, Any] = field(default_factory=dict)
    write_json: bool = True


def sample_key(shard: int, index: int, samples_per_shard: int) -> str:
    """img2dataset key: 5 shard digits + enough sample digits for ``samples_per_shard`` (at least 4)."""
    digits = max(4, len(str(max(samples_per_shard - 1, 0))))
    return f"{shard:05d}{index:0{digits}d}"


def _parquet_row(meta: dict[str, Any]) -> dict[str, Any]:
    """Nested values (exif, yt_meta_dict, video_metadata) are stored as json strings, as the tools do."""
    return {
        name: json.dumps(value) if isinstance(value, (dict, list)) else value for name, value in meta.items()
    }


def write_shard(out_dir: Path, shard: int, records: Sequence[ShardRecord], stats: dict[str, Any]) -> Path:
    """Write ``{shard:05d}.tar`` with its parquet table and stats json into ``out_dir``; returns the tar."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tar_path = out_dir / f"{shard:05d}.tar"
    with wds.TarWriter(str(tar_path), encoder=False, mtime=0.0) as writer:
        for record in records:
            entry: dict[str, Any] = {"__key__": record.key, **record.files}
            if record.write_json:
                entry["json"] = json.dumps(record.meta, indent=4).encode()
            writer.write(entry)
    table = pa.Table.from_pylist([_parquet_row(record.meta) for record in records])
    pq.write_table(table, out_dir / f"{shard:05d}.parquet")
    (out_dir / f"{shard:05d}_stats.json").write_text(json.dumps(stats, indent=4))
    return tar_path
