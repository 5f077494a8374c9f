"""The memory LRU of chunk bytes."""

from __future__ import annotations

from outcrop.cache import ByteLRU


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
