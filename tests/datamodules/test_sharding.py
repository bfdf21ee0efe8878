"""Shard specs, the (rank, worker) slot plan, and tar reading."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from datamodules.shard_writer import write_shard
from datamodules.sharding import expand_shards, iter_tar_samples, plan_slot, resolve_rank_world
from tests.datamodules.helpers import image_record, solid_jpg, write_truncated_shard


def touch_shards(directory: Path, count: int) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{i:05d}.tar" for i in range(count)]
    for path in paths:
        path.write_bytes(b"")
    return [str(p) for p in paths]


def test_expand_brace_list_directory_and_glob(tmp_path: Path) -> None:
    shards = touch_shards(tmp_path / "a", 3)
    more = touch_shards(tmp_path / "b", 2)
    assert expand_shards(f"{tmp_path}/a/{{00000..00002}}.tar") == shards
    assert expand_shards(f"{tmp_path}/a/{{00000,00002}}.tar") == [shards[0], shards[2]]
    assert expand_shards(f"{tmp_path}/a/00001.tar, {tmp_path}/b/{{00000..00001}}.tar") == [shards[1], *more]
    assert expand_shards(str(tmp_path / "b")) == more
    assert expand_shards(f"{tmp_path}/a/*.tar") == shards
    assert expand_shards("pipe:cat /x/{0..1}.tar") == ["pipe:cat /x/0.tar", "pipe:cat /x/1.tar"]


@pytest.mark.parametrize("spec", [None, "", "  "])
def test_empty_spec_names_the_field(spec: str | None) -> None:
    with pytest.raises(ValueError, match="data.val_shards"):
        expand_shards(spec, "data.val_shards")


def test_no_match_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"data.shards=.*matches no shard files"):
        expand_shards(f"{tmp_path}/{{00000..00003}}.tar")


@pytest.mark.parametrize("num_shards,num_slots", list(itertools.product(range(1, 8), range(1, 7))))
def test_slot_plans_partition_every_sample(num_shards: int, num_slots: int) -> None:
    shards = [f"s{i}" for i in range(num_shards)]
    samples_per_shard = 12
    owners: dict[tuple[str, int], int] = {}
    for slot in range(num_slots):
        plan = plan_slot(shards, slot, num_slots)
        assert plan.shards, "every slot reads something"
        for shard in plan.shards:
            for index in range(samples_per_shard):
                if plan.keeps(index):
                    assert (shard, index) not in owners, "two slots share a sample"
                    owners[(shard, index)] = slot
    assert len(owners) == num_shards * samples_per_shard


def test_rank_world_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert resolve_rank_world() == (1, 3)
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(ValueError, match="RANK 3"):
        resolve_rank_world()
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    assert resolve_rank_world() == (0, 1)


def test_truncated_tar_raises_before_partial_sample(tmp_path: Path) -> None:
    record = image_record("000000000", solid_jpg())
    path = write_truncated_shard(tmp_path, 0, record, keep_bytes=700)
    seen = []
    with pytest.raises(Exception, match="empty header|unexpected end|truncated"):
        seen.extend(iter_tar_samples(str(path)))
    assert seen == []
    # cut at a header boundary: tarfile alone would take it for a complete archive
    full = write_shard(tmp_path / "full", 0, [record, image_record("000000001", solid_jpg())], {})
    path.write_bytes(full.read_bytes()[: 512 * 5])
    with pytest.raises(Exception, match="truncated"):
        list(iter_tar_samples(str(path)))


def test_partly_missing_pattern_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    shards = touch_shards(tmp_path, 2)
    assert expand_shards(f"{tmp_path}/{{00000..00004}}.tar") == shards
    assert "3 of 5 shards" in caplog.text
