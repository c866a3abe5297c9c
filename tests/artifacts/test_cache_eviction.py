"""The artifact cache's capacity: unused entries evicted least recently used, never one in use or held, the
order kept across a restart, and no caller handed a directory that is gone (real archives, real files)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from zeroscale.artifacts import ArtifactCache
from zeroscale.artifacts.eviction import Entry, victims

from .tarballs import model_tarball

SIZE = 100_000  # each model's file bytes


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float = 1.0) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def archives(tmp_path: Path) -> dict[str, str]:
    """Four archives of SIZE bytes each, with different contents."""
    out = {}
    for name in "abcd":
        path = model_tarball(tmp_path / f"{name}.tar.gz", {"model.bin": name.encode() * SIZE})
        out[name] = str(path)
    return out


def make_cache(root: Path, clock: Clock, capacity: int | None, grace_s: float = 0.0) -> ArtifactCache:
    cache = ArtifactCache(root, capacity_bytes=capacity, grace_s=grace_s, clock=clock)
    cache.in_use = set  # nothing outside the cache uses an entry
    return cache


def prepare(cache: ArtifactCache, url: str, clock: Clock) -> Path:
    """One hold-less preparation, a second after the last."""
    clock.tick()
    return cache.prepare(url)


def entries(cache: ArtifactCache) -> int:
    return cache.load().entries


def test_victims_policy_least_recently_used_first_skipping_what_is_kept() -> None:
    table = {
        "old": Entry(10, used=1.0),
        "kept": Entry(10, used=2.0),
        "graced": Entry(10, used=3.0, kept_until=100.0),
        "mid": Entry(10, used=4.0),
        "new": Entry(10, used=5.0),
    }
    assert victims(table, 50, set(), now=10.0) == []
    assert victims(table, 30, {"kept"}, now=10.0) == ["old", "mid"]
    assert victims(table, 0, {"kept"}, now=10.0) == ["old", "mid", "new"]
    assert victims(table, 0, {"kept"}, now=200.0) == ["old", "graced", "mid", "new"]
    assert victims({}, 0, set(), now=0.0) == []


def test_unused_entries_go_least_recently_used_first(
    tmp_path: Path, archives: dict[str, str], clock: Clock
) -> None:
    cache = make_cache(tmp_path / "cache", clock, capacity=2 * SIZE + 10)
    a = prepare(cache, archives["a"], clock)
    b = prepare(cache, archives["b"], clock)
    prepare(cache, archives["a"], clock)  # a is now more recent than b
    c = prepare(cache, archives["c"], clock)  # three entries: the least recently used (b) goes
    assert a.is_dir() and c.is_dir() and not b.parent.exists()
    load = cache.load()
    assert (load.entries, load.bytes, load.evictions, load.evicted_bytes) == (2, 2 * SIZE, 1, SIZE)
    # b's index record went with it; preparing b again extracts it again, and evicts a (now the oldest)
    assert len(list((cache.root / "index").iterdir())) == 2
    again = prepare(cache, archives["b"], clock)
    assert again == b and (again / "model.bin").read_bytes() == b"b" * SIZE
    assert not a.parent.exists() and c.is_dir()


def test_what_is_in_use_or_held_is_never_evicted(
    tmp_path: Path, archives: dict[str, str], clock: Clock
) -> None:
    cache = make_cache(tmp_path / "cache", clock, capacity=0)
    a = prepare(cache, archives["a"], clock)
    in_use = {str(a)}
    cache.in_use = lambda: in_use
    with cache.hold() as hold:
        clock.tick()
        b = cache.prepare(archives["b"], hold)
        c = prepare(cache, archives["c"], clock)  # neither in use nor held (nor graced): the next trim's
        assert c.is_dir()
        assert cache.trim() == [c.parent.name] and a.is_dir() and b.is_dir()
        assert cache.trim() == []
    # the hold closed (the deployment's pools are routed): b is only kept if something uses it
    assert cache.trim() == [b.parent.name] and not b.parent.exists()
    in_use.clear()  # a's endpoint was deleted
    assert cache.trim() == [a.parent.name]
    assert entries(cache) == 0 and cache.load().evictions == 3


def test_two_holds_on_one_entry_both_keep_it(tmp_path: Path, archives: dict[str, str], clock: Clock) -> None:
    cache = make_cache(tmp_path / "cache", clock, capacity=0)
    first, second = cache.hold(), cache.hold()
    a = cache.prepare(archives["a"], first)
    assert cache.prepare(archives["a"], second) == a
    first.close()
    first.close()  # twice: harmless
    assert cache.trim() == [] and a.is_dir()
    second.close()
    assert cache.trim() == [a.parent.name]


def test_a_directory_handed_out_without_a_hold_is_kept_for_the_grace_period(
    tmp_path: Path, archives: dict[str, str], clock: Clock
) -> None:
    cache = make_cache(tmp_path / "cache", clock, capacity=0, grace_s=60)
    a = prepare(cache, archives["a"], clock)
    clock.tick(59)
    assert cache.trim() == [] and a.is_dir()
    clock.tick(2)
    assert cache.trim() == [a.parent.name]


def test_an_entry_kept_again_is_used_now_and_the_evictions_are_told(
    tmp_path: Path, archives: dict[str, str], clock: Clock
) -> None:
    """``keep``: a multi-model endpoint's target, found again without asking its source; ``on_evicted``:
    what a multi-model image's staged copies of the evicted entries learn from."""
    cache = make_cache(tmp_path / "cache", clock, capacity=2 * SIZE + 10)
    told: list[list[str]] = []
    cache.on_evicted = told.append
    a = prepare(cache, archives["a"], clock)
    b = prepare(cache, archives["b"], clock)
    clock.tick(60)
    assert cache.keep(str(a))  # now the most recently used, and graced again: b goes first
    c = prepare(cache, archives["c"], clock)
    assert told == [[str(b)]] and a.is_dir() and not b.exists()
    assert not cache.keep(str(b))  # gone: the caller fetches it again
    assert not cache.keep(str(tmp_path))  # not an entry at all
    assert cache.trim() == [] and c.is_dir()


def test_the_order_and_sizes_survive_a_restart(
    tmp_path: Path, archives: dict[str, str], clock: Clock
) -> None:
    root = tmp_path / "cache"
    first = make_cache(root, clock, capacity=None)  # no capacity: nothing is evicted
    dirs = {}
    for name in "abcda":  # a minute apart: a last use is written to disk to the minute
        clock.tick(60)
        dirs[name] = prepare(first, archives[name], clock)
    assert first.trim() == [] and first.load().entries == 4
    # a restart with a capacity of two models: the two least recently used (b, c) go, at the first trim
    second = ArtifactCache(root, capacity_bytes=2 * SIZE, grace_s=0, clock=clock)
    assert (second.load().entries, second.load().bytes) == (4, 4 * SIZE)
    # nothing goes before the server says what its endpoints use (it routes them first): not even when
    # preparing one of them adds nothing
    assert prepare(second, archives["d"], clock) == dirs["d"] and second.trim() == []
    assert not second.over_capacity()
    second.in_use = set
    assert sorted(second.trim()) == sorted(dirs[n].parent.name for n in "bc")
    assert dirs["a"].is_dir() and dirs["d"].is_dir()


def test_an_entry_removed_by_hand_is_forgotten(
    tmp_path: Path, archives: dict[str, str], clock: Clock
) -> None:
    cache = make_cache(tmp_path / "cache", clock, capacity=SIZE)
    a = prepare(cache, archives["a"], clock)
    os.rename(a.parent, tmp_path / "moved")  # someone cleaned the cache by hand
    b = prepare(cache, archives["b"], clock)
    assert cache.load().entries == 1 and b.is_dir()
    assert prepare(cache, archives["a"], clock).is_dir()  # fetched and extracted again


def test_no_caller_is_handed_a_directory_that_goes_while_trims_run(
    tmp_path: Path, archives: dict[str, str], clock: Clock
) -> None:
    """Capacity 0, no grace: every entry not held goes at the next trim. Preparers that hold what they
    prepare must always find it whole while they hold it, however the trims interleave."""
    cache = make_cache(tmp_path / "cache", clock, capacity=0)
    stop = threading.Event()
    failures: list[str] = []

    def trimmer() -> None:
        while not stop.is_set():
            cache.trim()

    def preparer(name: str) -> None:
        for _ in range(40):
            with cache.hold() as hold:
                model = cache.prepare(archives[name], hold)
                if (model / "model.bin").read_bytes() != name.encode() * SIZE:
                    failures.append(name)

    threads: list[threading.Thread] = [threading.Thread(target=trimmer) for _ in range(2)]
    workers = [threading.Thread(target=preparer, args=(name,)) for name in "abab"]
    run: Callable[[threading.Thread], None] = threading.Thread.start
    for thread in threads + workers:
        run(thread)
    for thread in workers:
        thread.join()
    stop.set()
    for thread in threads:
        thread.join()
    assert failures == []
    assert cache.load().evictions > 0  # the trims did evict between the holds
    cache.trim()
    assert cache.load().entries == 0 and cache.load().bytes == 0
    assert sorted(p.name for p in cache.root.iterdir()) == ["index", "tmp"]
    assert list((cache.root / "tmp").iterdir()) == []


def test_a_cache_held_over_its_capacity_by_what_is_in_use_is_not_walked_at_every_preparation(
    tmp_path: Path, archives: dict[str, str], clock: Clock
) -> None:
    """A preparation trims only when the cache grew since the last trim: deploying a cached model again (a
    lookup) asks nothing of the fleet, however far what is in use keeps the cache over its capacity."""
    cache = make_cache(tmp_path / "cache", clock, capacity=0)
    a = prepare(cache, archives["a"], clock)
    asked: list[int] = []

    def in_use() -> set[str]:
        asked.append(1)
        return {str(a)}

    cache.in_use = in_use
    for _ in range(5):
        assert prepare(cache, archives["a"], clock) == a
    assert asked == []
    b = prepare(
        cache, archives["b"], clock
    )  # a new entry: one trim, which keeps both (a in use, b just made)
    assert len(asked) == 1 and cache.load().entries == 2
    assert cache.trim() == [b.parent.name]  # an explicit trim (the server's, once a minute) always looks
    assert len(asked) == 2
