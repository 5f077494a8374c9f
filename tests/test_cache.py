"""The memory LRU of chunk bytes, and the disk store shared by processes."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from outcrop.cache import ByteLRU, DiskStore


def test_total_size_never_exceeds_the_budget_and_oldest_go_first() -> None:
    cache = ByteLRU(budget=10)
    cache.set("a", b"1234")
    cache.set("b", b"5678")
    assert cache.get("a") == b"1234"  # now "b" is the least recently used
    cache.set("c", b"90ab")
    assert cache.get("b") is None
    assert cache.get("a") == b"1234"
    assert cache.get("c") == b"90ab"
    assert cache.size == 8


def test_value_larger_than_the_budget_is_not_kept() -> None:
    cache = ByteLRU(budget=3)
    cache.set("big", b"1234")
    assert cache.get("big") is None
    assert cache.size == 0


def test_replacing_a_key_counts_its_size_once() -> None:
    cache = ByteLRU(budget=100)
    cache.set("k", b"x" * 40)
    cache.set("k", b"y" * 30)
    assert cache.size == 30
    assert len(cache) == 1


def test_zero_budget_keeps_nothing() -> None:
    cache = ByteLRU(budget=0)
    cache.set("k", b"x")
    assert cache.get("k") is None


# -- the disk store ---------------------------------------------------------------------------


def test_disk_store_round_trips_small_and_file_sized_values(tmp_path: Path) -> None:
    with DiskStore(tmp_path / "c", 2**30) as store:
        big = bytes(range(256)) * 1000  # past diskcache's 32 KB: a file of its own
        store.set("small", b"\x00abc")
        store.set("big", big)
        assert store.get("small") == b"\x00abc"
        assert store.get("big") == big
        assert store.get("absent") is None
        store.set("small", b"replaced")
        assert store.get("small") == b"replaced"


def test_disk_store_keeps_values_across_instances(tmp_path: Path) -> None:
    with DiskStore(tmp_path / "c", 2**30) as store:
        store.set("ds@1/60/0/b", b"block")
    with DiskStore(tmp_path / "c", 2**30) as store:
        assert store.get("ds@1/60/0/b") == b"block"


def test_disk_store_evicts_the_least_recently_used_past_its_size(tmp_path: Path) -> None:
    value = 50_000
    with DiskStore(tmp_path / "probe", 2**30) as probe:
        overhead = int(probe.stats()["bytes"] or 0)  # the empty SQLite file
    with DiskStore(tmp_path / "probe", overhead + 20 * value + 30_000) as store:
        for i in range(20):
            store.set(f"k{i}", bytes([i]) * value)
        for i in range(10):  # now k10 … k19 are the least recently used
            assert store.get(f"k{i}") is not None
        store.set("k20", b"\x14" * value)  # over the limit: diskcache culls 10 at a time
        assert all(store.get(f"k{i}") == bytes([i]) * value for i in range(10))
        assert all(store.get(f"k{i}") is None for i in range(10, 20))
        assert store.get("k20") == b"\x14" * value
        stats = store.stats()
        assert stats["entries"] == 11
        assert stats["size_limit"] == overhead + 20 * value + 30_000


def test_clear_removes_a_prefix_or_everything(tmp_path: Path) -> None:
    with DiskStore(tmp_path / "c", 2**30) as store:
        for key in ("a@1/1", "a@1/2", "a@2/1", "a/b@1/1", "b@1/1", "a@"):
            store.set(key, key.encode())
        assert store.clear(prefix="a@1/") == 2
        assert store.get("a@1/1") is None and store.get("a@2/1") == b"a@2/1"
        assert store.get("a/b@1/1") == b"a/b@1/1"
        assert store.clear(prefix="zzz") == 0
        assert store.clear() == 4
        assert store.stats()["entries"] == 0


def test_hits_and_misses_are_counted_when_asked(tmp_path: Path) -> None:
    with DiskStore(tmp_path / "c", 2**30) as store:
        assert store.stats()["hits"] is None
    with DiskStore(tmp_path / "c", 2**30, statistics=True) as store:
        store.set("k", b"v")
        store.get("k")
        store.get("k")
        store.get("nope")
        stats = store.stats()
        assert (stats["hits"], stats["misses"]) == (2, 1)


def _write_and_read(directory: str, me: int, rounds: int) -> None:
    """In another process: write own keys and one shared key, checking every read whole."""
    mine, theirs = bytes([me]) * 70_000, bytes([1 - me]) * 70_000
    with DiskStore(Path(directory), 2**30) as store:
        for i in range(rounds):
            store.set(f"p{me}/{i}", f"{me}:{i}".encode())
            store.set("shared", mine)
            seen = store.get("shared")
            if seen not in (mine, theirs):
                raise SystemExit(f"process {me} read a torn or foreign value")


def test_two_processes_share_one_directory_without_torn_values(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_write_and_read, args=(str(tmp_path / "c"), me, 150))
        for me in (0, 1)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0, 0]
    with DiskStore(tmp_path / "c", 2**30) as store:
        for me in (0, 1):
            assert all(store.get(f"p{me}/{i}") == f"{me}:{i}".encode() for i in range(150))
        assert store.get("shared") in (bytes([0]) * 70_000, bytes([1]) * 70_000)
