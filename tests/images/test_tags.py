"""What each image tag names now, kept in the database the front ends share: a tag deleted while a front end
was away is forgotten there (at its start, and when it next resolves the tag) and never listed again from
its copy; pushes made before the words were kept are recorded, and never replace a later word."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from zeroscale.cli.image_commands import pack
from zeroscale.errors import DeployError
from zeroscale.images import ImageError, ImageRecord, ImageRegistry
from zeroscale.images.sharing import SharedImages
from zeroscale.images.tags import TagLedger
from zeroscale.store import Store

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "byo-image"
MB = 1024 * 1024


class FrontEnd:
    """One front end's registry and its view of the shared database (a Store of its own on one file)."""

    def __init__(self, root: Path, url: str, clock: list[float]) -> None:
        self.registry = ImageRegistry(root, max_bytes=10 * MB, max_files=50)
        self.store = Store(url)
        self.images = SharedImages(
            self.registry, TagLedger(self.store, lambda: clock[0]), None, max_archive_bytes=10 * MB
        )


@pytest.fixture
def frontends(tmp_path: Path) -> Iterator[tuple[FrontEnd, FrontEnd, list[float]]]:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    clock = [time.time()]
    a, c = FrontEnd(tmp_path / "a", url, clock), FrontEnd(tmp_path / "c", url, clock)
    yield a, c, clock
    a.store.close()
    c.store.close()


def pushed_and_copied(a: FrontEnd, c: FrontEnd) -> ImageRecord:
    """byo:1 pushed to a, and copied by c when it was announced, as the peer route does (the same content,
    the push's time)."""
    pushed = a.images.push("byo", "1", pack(EXAMPLE))
    copy = c.registry.push("byo", "1", pushed.root, pushed_at=pushed.pushed_at)
    assert copy.digest == pushed.digest
    return pushed


def test_a_tag_deleted_while_a_front_end_was_away_is_forgotten_there(
    frontends: tuple[FrontEnd, FrontEnd, list[float]],
) -> None:
    a, c, clock = frontends
    pushed = pushed_and_copied(a, c)
    assert c.images.resolve("byo:1") == c.registry.get("byo", "1")
    assert [d["digest"] for d in c.images.everywhere()] == [f"sha256:{pushed.digest}"]
    clock[0] += 10
    deleted, _ = a.images.delete("byo", "1")  # c is not told: it is away
    assert deleted["digest"] == f"sha256:{pushed.digest}"
    assert c.registry.get("byo", "1") is not None  # its copy is still on its disk
    assert c.images.everywhere() == [] and c.images.find("byo", "1") is None
    assert c.images.resolve("byo:1") is None  # never deployed again from its copy ...
    assert c.registry.get("byo", "1") is None  # ... which is forgotten
    with pytest.raises(ImageError, match="not registered"):
        c.images.delete("byo", "1")


def test_a_front_end_forgets_at_its_start_what_was_deleted_while_it_was_down(
    frontends: tuple[FrontEnd, FrontEnd, list[float]],
) -> None:
    a, c, clock = frontends
    pushed = pushed_and_copied(a, c)
    kept = c.registry.push("byo", "2", pushed.root)  # its own push, before the words were kept
    clock[0] += 10
    a.images.delete("byo", "1")
    c.images.reconcile()
    assert c.registry.get("byo", "1") is None
    assert c.registry.get("byo", "2") == kept  # recorded now, so every front end lists it
    assert [(d["name"], d["tag"]) for d in a.images.everywhere()] == [("byo", "2")]
    assert a.images.find("byo", "2") == kept.to_json()


def test_a_push_after_a_deletion_is_the_tags_word_and_an_old_copy_never_replaces_it(
    frontends: tuple[FrontEnd, FrontEnd, list[float]], tmp_path: Path
) -> None:
    a, c, clock = frontends
    first = pushed_and_copied(a, c)
    clock[0] += 10
    a.images.delete("byo", "1")
    source = tmp_path / "v2"
    source.mkdir()
    for f in EXAMPLE.iterdir():
        (source / f.name).write_bytes(f.read_bytes())
        (source / f.name).chmod(f.stat().st_mode)
    (source / "extra.txt").write_text("the second push")
    second = a.images.push("byo", "1", pack(source))
    assert second.digest != first.digest
    c.images.reconcile()  # its copy of the first push was deleted before the second: forgotten
    assert c.registry.get("byo", "1") is None
    assert c.images.find("byo", "1") == {**second.to_json(), "pushed_by": ""}  # the admin's
    with pytest.raises(DeployError, match="no live front end holds that push now: push it again"):
        c.images.resolve("byo:1")  # nothing to copy it from (no peers here), and never the deleted push


def test_a_push_from_before_the_words_counts_to_no_user_whoever_finds_it(tmp_path: Path) -> None:
    """A push made before tags were kept is recorded when a deployment resolves it, under an IAM user's
    request: who pushed it is not known, so it counts to no user (not to the deploying one's quota)."""
    registry = ImageRegistry(tmp_path / "fe", max_bytes=10 * MB, max_files=50)
    store = Store(f"sqlite:///{tmp_path / 'shared.db'}", creator=lambda: "user-deploying")
    try:
        images = SharedImages(registry, TagLedger(store, time.time), None, max_archive_bytes=10 * MB)
        old = registry.push_bytes("byo", "1", pack(EXAMPLE))  # before the words were kept
        assert images.resolve("byo:1") == old
        row = store.get("image-tag", "byo:1")
        assert row is not None and row.status == "Pushed"
        assert row.creator is None
    finally:
        store.close()
