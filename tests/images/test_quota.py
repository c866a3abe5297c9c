"""What one IAM user's pushes may hold of the registry (``images.quota``): its bytes and its tags, counted to
whoever pushed each tag last; refused by name with nothing kept, while other users and the admin push on;
a deletion frees the user's room. Exact when front ends push at once (several on one database, the race
made certain as in tests/store/test_quotas.py)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from store.test_quotas import _widen_race_window  # each row write held open a moment
from zeroscale.cli.image_commands import pack
from zeroscale.images import ImageError, ImageRegistry
from zeroscale.images.quota import ImageQuota
from zeroscale.images.sharing import SharedImages
from zeroscale.images.tags import ADMIN, Pusher, TagLedger
from zeroscale.store import Store

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "byo-image"
KB = 1024
ALICE, BOB = Pusher("alice", "AIDAALICE"), Pusher("bob", "AIDABOB")


class FrontEnd:
    def __init__(self, root: Path, url: str, quota: ImageQuota) -> None:
        self.registry = ImageRegistry(root, max_bytes=10 * 1024 * KB, max_files=50)
        self.store = Store(url)
        self.images = SharedImages(
            self.registry,
            TagLedger(self.store, time.time),
            None,
            max_archive_bytes=10 * 1024 * KB,
            quota=quota,
        )


def image(root: Path, payload_kb: int) -> bytes:
    """A pushable image of the example's files and ``payload_kb`` KB of bytes of its own (content no other
    call's has)."""
    source = Path(root) / os.urandom(8).hex()
    shutil.copytree(EXAMPLE, source)
    (source / "payload.bin").write_bytes(os.urandom(payload_kb * KB))
    return pack(source)


@pytest.fixture
def front_end(tmp_path: Path) -> Iterator[FrontEnd]:
    one = FrontEnd(tmp_path / "images", f"sqlite:///{tmp_path / 'db'}", ImageQuota(100 * KB, 3))
    yield one
    one.store.close()


def test_past_its_bytes_a_users_push_is_refused_by_name_and_deleting_frees_room(
    front_end: FrontEnd, tmp_path: Path
) -> None:
    images = front_end.images
    images.push("a", "1", image(tmp_path, 60), ALICE)
    with pytest.raises(ImageError) as refused:
        images.push("a", "2", image(tmp_path, 60), ALICE)
    assert refused.value.message.startswith("Image a:2: its 0.1 MB would take IAM user alice's pushed images")
    assert "(they hold 0.1 MB; zeroscale serve --images-max-mb-per-user)" in refused.value.message
    assert refused.value.message.endswith(
        "delete images no model needs (zeroscale images delete NAME:TAG), or ask the operator to raise it."
    )
    assert images.find("a", "2") is None and front_end.registry.get("a", "2") is None  # nothing kept
    assert not (front_end.registry.root / "a" / "2").exists()
    images.push("b", "1", image(tmp_path, 60), BOB)  # another user's room is its own
    for n in range(3):
        images.push("admin", str(n), image(tmp_path, 60), ADMIN)  # the admin's are not counted
    images.push("a", "1", image(tmp_path, 90), ALICE)  # pushed over: the tag's earlier push is replaced
    images.delete("a", "1")
    images.push("a", "2", image(tmp_path, 60), ALICE)
    assert images.find("a", "2") is not None


def test_a_tag_counts_to_whoever_pushed_it_last(front_end: FrontEnd, tmp_path: Path) -> None:
    images = front_end.images
    images.push("shared", "1", image(tmp_path, 60), ALICE)
    images.push("shared", "1", image(tmp_path, 60), BOB)
    found = images.find("shared", "1")
    assert found is not None and found["pushed_by"] == "bob"
    images.push("a", "1", image(tmp_path, 60), ALICE)  # alice's room was freed
    with pytest.raises(ImageError, match=r"IAM user bob's pushed images past 0 MB \(they hold 0\.1 MB"):
        images.push("b", "1", image(tmp_path, 60), BOB)
    images.push("shared", "1", image(tmp_path, 1), ADMIN)  # the admin's now: bob's room is freed
    images.push("b", "1", image(tmp_path, 60), BOB)


def test_the_number_of_a_users_tags_is_bounded(front_end: FrontEnd, tmp_path: Path) -> None:
    images = front_end.images
    tiny = image(tmp_path, 0)
    for n in range(3):
        images.push("a", str(n), tiny, ALICE)
    with pytest.raises(ImageError) as refused:
        images.push("a", "3", tiny, ALICE)
    assert refused.value.message == (
        "Image a:3: IAM user alice's pushes already name 3 image tags, the most one user's may (zeroscale "
        "serve --images-max-per-user): delete images no model needs (zeroscale images delete NAME:TAG), or "
        "ask the operator to raise it."
    )
    assert front_end.registry.get("a", "3") is None
    images.push("a", "0", image(tmp_path, 1), ALICE)  # a tag pushed again is no new one
    for n in range(4):
        images.push("b", str(n), tiny, BOB) if n < 3 else images.push("admin", str(n), tiny, ADMIN)
    images.delete("a", "0")
    images.push("a", "3", tiny, ALICE)


FRONT_ENDS, THREADS_EACH = 3, 2


def test_a_users_quota_holds_when_front_ends_push_at_once(db_url: str, tmp_path: Path) -> None:
    """Six pushes of 60 KB by one user at once, two on each of three front ends, with room for two: two are
    recorded and held, four refused and kept nowhere."""
    front_ends = [FrontEnd(tmp_path / f"fe{n}", db_url, ImageQuota(130 * KB, 0)) for n in range(FRONT_ENDS)]
    for fe in front_ends:
        _widen_race_window(fe.store)
    archives = [image(tmp_path, 60) for _ in range(FRONT_ENDS * THREADS_EACH)]
    start = threading.Barrier(len(archives))
    pushed: list[str] = []
    refused: list[str] = []
    failed: list[BaseException] = []

    def push(fe: FrontEnd, n: int) -> None:
        start.wait()
        try:
            pushed.append(fe.images.push("race", str(n), archives[n], ALICE).ref)
        except ImageError:
            refused.append(str(n))
        except Exception as exc:  # any other error fails the test below
            failed.append(exc)

    threads = [
        threading.Thread(target=push, args=(front_ends[n % FRONT_ENDS], n)) for n in range(len(archives))
    ]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not failed, failed
        assert (len(pushed), len(refused)) == (2, 4)
        assert sorted(f"{d['name']}:{d['tag']}" for d in front_ends[0].images.everywhere()) == sorted(pushed)
        held = sorted(record.ref for fe in front_ends for record in fe.registry.list())
        assert held == sorted(pushed)  # a refused push is in no registry
    finally:
        for fe in front_ends:
            fe.store.close()
