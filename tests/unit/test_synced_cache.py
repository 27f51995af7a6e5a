"""SyncedCache: what the destination holds per (sync, key), bounded by bytes; a warm-up fills
it without evicting, and a mark tells readers of the store when entries were dropped."""

from __future__ import annotations

from service.runner.stream import _ENTRY_BYTES, SyncedCache

ENTRY = 1 + _ENTRY_BYTES  # a one-character key


def test_fill_adds_keys_it_has_none_of_and_keeps_newer_entries() -> None:
    cache = SyncedCache(100 * ENTRY)
    cache.put("s", [("a", b"new")])
    assert cache.fill("s", [("a", b"old"), ("b", b"h"), ("c", None)])
    assert cache.get("s") == {"a": b"new", "b": b"h", "c": None}
    assert cache.bytes == 3 * ENTRY


def test_fill_stops_at_three_quarters_and_evicts_nothing() -> None:
    cache = SyncedCache(8 * ENTRY)
    cache.put("other", [("x", b"h")])
    assert not cache.fill("s", [(k, b"h") for k in "abcdefgh"])
    assert cache.get("other") == {"x": b"h"}
    assert list(cache.get("s")) == ["a", "b", "c", "d", "e"]  # 6 entries of 8: three quarters
    assert cache.bytes == 6 * ENTRY


def test_fill_up_to_exactly_three_quarters_takes_every_key() -> None:
    cache = SyncedCache(8 * ENTRY)
    assert cache.fill("s", [(k, b"h") for k in "abc"])
    assert cache.fill("s", [(k, b"h") for k in "cdef"])  # c is there: 6 entries of 8
    assert cache.bytes == 6 * ENTRY
    assert not cache.fill("s", [("g", b"h")])
    assert list(cache.get("s")) == list("abcdef")


def test_the_mark_moves_when_entries_are_dropped_and_only_then() -> None:
    cache = SyncedCache(4 * ENTRY)
    marks = [cache.mark("s")]
    cache.put("s", [("a", b"h")])
    cache.fill("s", [("b", b"h")])
    cache.mark("t")
    assert cache.mark("s") == marks[-1]  # adding drops nothing
    for drop in (
        lambda: cache.forget("s", ["a"]),
        lambda: cache.forget("s"),
        lambda: cache.put("s", [(k, b"h") for k in "abcde"]),  # over the bytes: evicts
        cache.clear,
    ):
        drop()
        assert cache.mark("s") != marks[-1]
        marks.append(cache.mark("s"))
    cache.forget("t")
    assert cache.mark("s") == marks[-1]  # another sync's drop
