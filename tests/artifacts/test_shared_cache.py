"""An artifact cache several processes share (a Ray node's, one for every front end's agent): an entry any
process holds is never evicted by another, a process that waited on an eviction fetches the entry again,
and processes racing trims at capacity 0 always read whole files (real processes, real archives, real
``flock``)."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from zeroscale.artifacts import ArtifactCache
from zeroscale.artifacts.entrylocks import try_lock_exclusive, unlock
from zeroscale.artifacts.holds import Holds

from .tarballs import model_tarball

SIZE = 100_000

# Another process with the same cache: holds what it prepares until told to let go ("hold"), or prepares,
# reads and trims in a loop at capacity 0 ("race"), printing what it found.
OTHER = """
import sys
from pathlib import Path
from zeroscale.artifacts import ArtifactCache
from zeroscale.artifacts.holds import Holds

mode, root, *urls = sys.argv[1:]
cache = ArtifactCache(Path(root), capacity_bytes=0, holds=Holds(across_processes=True))
cache.in_use = set
if mode == "hold":
    with cache.hold() as hold:
        model = cache.prepare(urls[0], hold)
        print(model, flush=True)
        sys.stdin.readline()
else:
    bad = 0
    for i in range(60):
        name, url = urls[i % len(urls)].split("=", 1)
        with cache.hold() as hold:
            model = cache.prepare(url, hold)
            cache.trim()
            if (model / "model.bin").read_bytes() != name.encode() * SIZE:
                bad += 1
    print("bad", bad, "evictions", cache.load().evictions, flush=True)
""".replace("SIZE", str(SIZE))


@pytest.fixture
def archives(tmp_path: Path) -> dict[str, str]:
    out = {}
    for name in "abc":
        out[name] = str(model_tarball(tmp_path / f"{name}.tar.gz", {"model.bin": name.encode() * SIZE}))
    return out


def shared(root: Path, capacity: int | None = 0) -> ArtifactCache:
    cache = ArtifactCache(root, capacity_bytes=capacity, holds=Holds(across_processes=True))
    cache.in_use = set  # what it uses, it holds
    return cache


def other(mode: str, root: Path, *urls: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen(
        [sys.executable, "-c", OTHER, mode, str(root), *urls],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def in_place(root: Path) -> set[str]:
    return {p.name for p in root.iterdir() if len(p.name) == 64}


def test_an_entry_another_process_holds_stays_until_it_lets_go(
    tmp_path: Path, archives: dict[str, str]
) -> None:
    root = tmp_path / "cache"
    cache = shared(root)
    holder = other("hold", root, archives["a"])
    try:
        assert holder.stdout is not None
        a = Path(holder.stdout.readline().strip())
        assert (a / "model.bin").is_file()
        with cache.hold() as hold:
            b = cache.prepare(archives["b"], hold)  # a new entry: a trim, which keeps both
        assert in_place(root) == {a.parent.name, b.parent.name}
        # Nothing of this process holds b now; a is the other's, counted here though this never used it.
        assert cache.trim() == [b.parent.name]
        assert cache.load().entries == 1 and cache.load().bytes == SIZE
        assert (a / "model.bin").read_bytes() == b"a" * SIZE
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(30) == 0
    finally:
        holder.kill()
    assert cache.trim() == [a.parent.name]
    assert in_place(root) == set() and cache.load().bytes == 0


def test_a_killed_process_holds_nothing(tmp_path: Path, archives: dict[str, str]) -> None:
    root = tmp_path / "cache"
    cache = shared(root)
    holder = other("hold", root, archives["a"])
    assert holder.stdout is not None
    a = Path(holder.stdout.readline().strip())
    assert cache.trim() == []
    holder.kill()
    holder.wait(30)
    assert cache.trim() == [a.parent.name]


def test_a_use_that_waited_on_an_eviction_fetches_the_entry_again(
    tmp_path: Path, archives: dict[str, str]
) -> None:
    """Another process evicts ``a`` (holding its lock, then renaming it away) just as this one finds its
    marker: this one waits for the lock, sees the path no longer names what it locked, and extracts ``a``
    again, whole. Then the same with a third process having put ``a`` back meanwhile: this one holds the
    entry now in place, not the one it waited on."""
    root = tmp_path / "cache"
    cache = shared(root, capacity=None)
    first = cache.prepare(archives["a"])
    evicting = try_lock_exclusive(first.parent)
    assert evicting is not None
    found: list[Path] = []
    thread = threading.Thread(target=lambda: found.append(cache.prepare(archives["a"], cache.hold())))
    thread.start()
    time.sleep(0.3)
    assert thread.is_alive()  # waiting for the evicting process's lock
    moved = tmp_path / "evicted"
    os.rename(first.parent, moved)
    unlock(evicting)
    thread.join(30)
    assert found == [first]  # the same path, a new entry behind it
    assert (first / "model.bin").read_bytes() == b"a" * SIZE
    assert os.stat(first.parent).st_ino != os.stat(moved).st_ino
    assert try_lock_exclusive(first.parent) is None  # held by the hold the thread took

    second = shared(tmp_path / "cache2", capacity=None)
    entry = second.prepare(archives["a"]).parent
    evicting = try_lock_exclusive(entry)
    assert evicting is not None
    held = second.hold()
    thread = threading.Thread(target=lambda: found.append(second.prepare(archives["a"], held)))
    thread.start()
    time.sleep(0.3)
    os.rename(entry, tmp_path / "evicted2")
    shutil.copytree(tmp_path / "evicted2", entry)  # put back by another process
    unlock(evicting)
    thread.join(30)
    assert found[-1] == entry / "model"
    assert try_lock_exclusive(entry) is None  # what is in place is held, not what was moved away
    fd = try_lock_exclusive(tmp_path / "evicted2")
    assert fd is not None
    unlock(fd)
    held.close()


def test_an_entry_being_placed_is_locked_before_it_is_in_place(
    tmp_path: Path, archives: dict[str, str]
) -> None:
    """The staging directory is locked before its rename into place (the lock moves with it): no instant
    in which another process's trim could take the new entry, unheld."""
    cache = shared(tmp_path / "cache")
    with cache.hold() as hold:
        model = cache.prepare(archives["a"], hold)
        assert try_lock_exclusive(model.parent) is None
    fd = try_lock_exclusive(model.parent)
    assert fd is not None
    unlock(fd)

    staging, name = tmp_path / "cache" / "tmp" / "staging", "b" * 64
    staging.mkdir()
    (staging / "complete").write_text("{}")
    with cache.hold() as hold:
        with cache._shelf.placing(name, 2, hold, staging):
            assert try_lock_exclusive(staging) is None  # held before the rename
            os.rename(staging, cache.root / name)
        assert try_lock_exclusive(cache.root / name) is None
    fd = try_lock_exclusive(cache.root / name)
    assert fd is not None
    unlock(fd)


def test_processes_racing_trims_at_capacity_zero_read_whole_files(
    tmp_path: Path, archives: dict[str, str]
) -> None:
    root = tmp_path / "cache"
    shared(root)
    urls = [f"{name}={archives[name]}" for name in "ab"]
    racers = [other("race", root, *urls), other("race", root, *reversed(urls))]
    results = [racer.communicate(timeout=120)[0].split() for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0]
    assert [r[:2] for r in results] == [["bad", "0"], ["bad", "0"]]
    assert sum(int(r[3]) for r in results) > 0  # the trims did evict between the holds
    cache = shared(root)
    cache.trim()
    assert in_place(root) == set() and list((root / "tmp").iterdir()) == []


def test_a_trim_that_locked_an_entry_evicted_and_placed_again_meanwhile_leaves_the_new_one(
    tmp_path: Path, archives: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between a trim's open of an entry and its lock, another process evicts that entry and a third puts
    it in place again and holds it: the trim got the lock of what was evicted, and must not move the new
    one."""
    root = tmp_path / "cache"
    trimming, evicting, placing = shared(root), shared(root), shared(root)
    with placing.hold() as hold:
        model = placing.prepare(archives["a"], hold)
    held = placing.hold()
    real = fcntl.flock
    armed = [True]

    def racing(fd: int, operation: int) -> None:
        if armed[0] and operation & fcntl.LOCK_EX:
            armed[0] = False
            assert evicting.trim() == [model.parent.name]
            assert placing.prepare(archives["a"], held) == model
        real(fd, operation)

    monkeypatch.setattr(fcntl, "flock", racing)
    assert trimming.trim() == []
    assert (model / "model.bin").read_bytes() == b"a" * SIZE
    held.close()
    assert trimming.trim() == [model.parent.name]


def test_a_placer_that_lost_the_race_never_moves_aside_an_entry_another_holds(
    tmp_path: Path, archives: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One process's rename into place fails (another's copy is there); as it looks, that copy is evicted
    (it finds nothing to use), then placed again by a process that holds it. The loser tries again and
    takes the entry now in place (it is complete) rather than taking it for debris and moving it aside."""
    root = tmp_path / "cache"
    loser, other = shared(root), shared(root)
    first, again = other.hold(), other.hold()
    real_placing, real_use = loser._shelf.placing, loser._shelf.use
    steps: list[str] = []

    def placing(*args: Any, **kwargs: Any) -> Any:
        if not steps:
            steps.append("other placed")
            other.prepare(archives["a"], first)  # just before the loser's rename
        return real_placing(*args, **kwargs)

    def use(name: str, hold: Any) -> bool:
        if steps != ["other placed"]:
            return real_use(name, hold)
        steps.append("evicted and placed again")
        first.close()
        assert other.trim() == [name]
        found = real_use(name, hold)  # the loser's look: the entry is gone...
        other.prepare(archives["a"], again)  # ...and is back, held, before the loser acts on it
        return found

    monkeypatch.setattr(loser._shelf, "placing", placing)
    monkeypatch.setattr(loser._shelf, "use", use)
    with loser.hold() as hold:
        model = loser.prepare(archives["a"], hold)
    assert steps == ["other placed", "evicted and placed again"]
    assert shared(root).trim() == []  # the other's hold still keeps the entry in place
    assert (model / "model.bin").read_bytes() == b"a" * SIZE
    again.close()


def test_debris_without_a_marker_is_replaced(tmp_path: Path, archives: dict[str, str]) -> None:
    root = tmp_path / "cache"
    cache = shared(root, capacity=None)
    model = cache.prepare(archives["a"])
    shutil.rmtree(model.parent)
    (model / "half").mkdir(parents=True)  # a directory where the entry goes, with no marker
    assert cache.prepare(archives["a"]) == model
    assert (model / "model.bin").read_bytes() == b"a" * SIZE and not (model / "half").exists()
