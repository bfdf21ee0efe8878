"""The clip-retrieval embedding folder reader: alignment, disjoint slots, exact resume, bad input."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from datamodules.embeddings import (
    EmbeddingDataModule,
    EmbeddingStream,
    make_blocks,
    scan_embedding_folder,
)
from datamodules.factory import build_datamodule
from tests.datamodules.helpers import data_config


def write_folder(root, rows=(700, 500), dim=8, bad_rows=(), empty_captions=()) -> None:
    """Parts whose image embedding row r of part i is (i * 1000 + r) everywhere, the text embedding its negative,
    the caption and key its number: alignment is visible in every column."""
    for i, n in enumerate(rows):
        ids = i * 1000 + np.arange(n)
        img = np.repeat(ids[:, None], dim, axis=1).astype(np.float32)
        for r in bad_rows if i == 0 else ():
            img[r, 0] = np.nan
        captions = [f"caption {v}" for v in ids]
        for r in empty_captions if i == 0 else ():
            captions[r] = "  "
        for sub in ("img_emb", "text_emb", "metadata"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        np.save(root / "img_emb" / f"img_emb_{i}.npy", img)
        np.save(root / "text_emb" / f"text_emb_{i}.npy", -img)
        pq.write_table(pa.table({"caption": captions, "key": [f"k{v}" for v in ids]}),
                       root / "metadata" / f"metadata_{i}.parquet")


def stream(root, rank, world, start=None, batch_size=16, batches=20, shuffle=True):
    parts = scan_embedding_folder(root)
    blocks = make_blocks(parts, 0, sum(p.rows for p in parts))
    return EmbeddingStream(parts, blocks, batch_size, batches, shuffle=shuffle, seed=3, tag=0,
                           start=None if start is None else torch.tensor(start), rank_world=(rank, world))


def test_rows_stay_aligned(tmp_path):
    write_folder(tmp_path)
    for batch in stream(tmp_path, 0, 1, batches=5):
        ids = batch["image_emb"][:, 0]
        assert torch.equal(batch["text_emb"][:, 0], -ids)
        assert batch["caption"] == [f"caption {int(v)}" for v in ids]
        assert batch["key"] == [f"k{int(v)}" for v in ids]
        assert batch["image_emb"].shape == (16, 8) and batch["image_emb"].dtype == torch.float32


def test_slots_are_disjoint_across_ranks_and_workers(tmp_path, monkeypatch):
    write_folder(tmp_path)
    seen = {}
    for rank in range(2):
        for worker in range(2):
            monkeypatch.setattr("datamodules.embeddings.current_worker", lambda w=worker: (w, 2))
            # 72 batches per rank = 36 of 16 per worker = 576 rows: more than a pass over any slot (<= 500 rows).
            ids = torch.cat([b["image_emb"][:, 0] for b in stream(tmp_path, rank, 2, batches=72)]).long()
            seen[(rank, worker)] = set(ids.tolist())
    slots = list(seen.values())
    for i in range(len(slots)):
        for j in range(i + 1, len(slots)):
            assert not slots[i] & slots[j]
    everything = set(range(700)) | {1000 + r for r in range(500)}
    assert set().union(*slots) == everything  # together the slots read every row


def test_resume_continues_exactly(tmp_path, monkeypatch):
    """Worker w of a loader resumed after c batches continues the interrupted run's worker (c + w) % W."""
    write_folder(tmp_path)
    num_workers = 2

    def run(start, batches):
        per_worker = {}
        for worker in range(num_workers):
            monkeypatch.setattr("datamodules.embeddings.current_worker", lambda w=worker: (w, num_workers))
            per_worker[worker] = [b["key"] for b in stream(tmp_path, 0, 1, start=start, batches=batches)]
        # The DataLoader hands out batches round-robin over the workers.
        out, i = [], 0
        while any(per_worker.values()):
            if per_worker[i % num_workers]:
                out.append(per_worker[i % num_workers].pop(0))
            i += 1
        return out

    whole = run(None, 40)
    resumed = run(13, 40)  # the rest of the epoch after 13 consumed batches
    assert resumed == whole[13:]


def test_datamodule_resume_position_is_in_its_state(tmp_path):
    write_folder(tmp_path)
    dm = EmbeddingDataModule(data_config(None, embeddings=str(tmp_path), batch_size=16, epoch_samples=320,
                                         num_workers=0, val_samples=64))
    loader = dm.train_dataloader()
    first = [b["key"] for _, b in zip(range(7), loader, strict=False)]
    assert dm.state_dict()["batches_consumed"] == 7
    again = EmbeddingDataModule(dm.cfg)
    again.load_state_dict(dm.state_dict())
    rest = [b["key"] for b in again.train_dataloader()]
    full = [b["key"] for b in EmbeddingDataModule(dm.cfg).train_dataloader()]
    assert first + rest == full
    # The last val_samples rows are validation and never trained on.
    val_keys = {k for b in dm.val_dataloader() for k in b["key"]}
    assert val_keys == {f"k{1000 + r}" for r in range(436, 500)}
    assert not val_keys & {k for keys in full for k in keys}


def test_bad_rows_are_skipped_and_counted(tmp_path):
    write_folder(tmp_path, rows=(300,), bad_rows=(3, 4), empty_captions=(5,))
    batches = list(stream(tmp_path, 0, 1, batch_size=300, batches=1, shuffle=False))
    keys = batches[0]["key"]
    assert len(keys) == 297 and not {"k3", "k4", "k5"} & set(keys)
    assert batches[0]["skips"] == {"non_finite": 2, "empty_caption": 1}


def test_disagreeing_files_fail_naming_both(tmp_path):
    write_folder(tmp_path)
    np.save(tmp_path / "text_emb" / "text_emb_1.npy", np.zeros((499, 8), np.float32))
    with pytest.raises(ValueError, match=r"img_emb_1\.npy has 500 rows.*text_emb_1\.npy has 499"):
        scan_embedding_folder(tmp_path)
    write_folder(tmp_path)
    pq.write_table(pa.table({"caption": ["x"]}), tmp_path / "metadata" / "metadata_0.parquet")
    with pytest.raises(ValueError, match=r"img_emb_0\.npy has 700 rows.*metadata_0\.parquet has 1"):
        scan_embedding_folder(tmp_path)


def test_width_must_match_the_clip(tmp_path):
    write_folder(tmp_path)
    dm = build_datamodule(data_config(None, embeddings=str(tmp_path)), component="prior")
    with pytest.raises(ValueError, match=r"img_emb_0\.npy holds 8-d embeddings, but prior.embed_dim .* is 768"):
        dm.check_embed_dim(768, "prior.embed_dim of the configured CLIP (ViT-L-14)")
    with pytest.raises(ValueError, match="not by temporal_decoder"):
        build_datamodule(data_config(None, embeddings=str(tmp_path)), component="temporal_decoder")
