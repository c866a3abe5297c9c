"""A Ray node's unpacked bring-your-own images, held to a cap: the node's own ``ImageRegistry`` (one entry per
content digest, its tag), shared by every front end's agent on the node.

- Use: each agent holds a shared lock on the images its workers run (a ``Hold`` of its ``Holds``
  ``across_processes``, ``entrylocks.py``); an image's last use is its directory's mtime, written at each
  worker start.
- Additions take the node's lock on additions (an ``flock`` on ``<root>/.adding``, waited for): room is made
  for the new image (``imagecap.plan``), it is unpacked and held, before the next agent's addition counts.
  An image that does not fit beside those in use is refused (``NodeImagesFull``), nothing unpacked.
- Trims (the agents' periodic ones) remove what the plan says among the images no agent holds (each locked
  exclusively, without waiting, while it is looked at); a trim that finds an addition under way leaves the
  room to it (the adder trims first), so no trim sees an image half in place.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from zeroscale.artifacts.entrylocks import try_lock_exclusive, unlock
from zeroscale.artifacts.holds import Hold
from zeroscale.errors import DeployError
from zeroscale.images.names import ImageError
from zeroscale.images.registry import ImageRecord, ImageRegistry
from zeroscale.workers.imagecap import NodeImage, Plan, plan

NAME = "image"  # the node's registry's one name: each image is the tag of its content digest
KEEP_S = 3600.0  # an image no worker on the node has started with this long is removed
_ADDING = ".adding"
MB = 1024 * 1024


class NodeImagesFull(DeployError):
    """An image does not fit beside the images the node's workers use: another node may have room, or this
    one once some of those workers end."""


class NodeImages:
    def __init__(
        self,
        root: Path,
        *,
        cap_bytes: int,
        max_bytes: int,
        max_files: int,
        keep_s: float = KEEP_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``cap_bytes``: what every image together may take (0: no cap); ``max_bytes``, ``max_files``: one
        image's, as for any push."""
        self.registry = ImageRegistry(root, max_bytes=max_bytes, max_files=max_files)
        self.root = self.registry.root
        self._cap_bytes = cap_bytes
        self._keep_s = keep_s
        self._clock = clock

    def use(self, digest: str, hold: Hold) -> ImageRecord | None:
        """Blocking. The image ``digest``, held by ``hold`` and used now; None when the node does not have it
        (or another agent's trim removed it as this looked)."""
        record = self.registry.get(NAME, digest)
        if record is None or not hold.add(str(record.root)):
            return None
        return _used(record)

    def add(self, digest: str, archive: bytes, size: int, hold: Hold) -> ImageRecord:
        """Blocking. Register ``archive`` (a tar.gz of ``size`` bytes of files) as image ``digest``, held by
        ``hold``, after making room for it. NodeImagesFull when it does not fit beside the images in use;
        DeployError when the archive is not that content, ImageError when it is not a valid image."""
        with self._adding(wait=True):
            found = self.use(digest, hold)  # another agent added it while this waited
            if found is not None:
                return found
            room = self._trim(adding=size)
            if not room.fits:
                raise NodeImagesFull(self._full(room, size))
            record = self.registry.push_bytes(NAME, digest, archive)
            if record.digest != digest:  # not kept under a name it does not have
                with contextlib.suppress(ImageError):
                    self.registry.delete(NAME, digest)
                raise DeployError(
                    f"The image sent to this node is sha256:{record.digest}, not sha256:{digest}."
                )
            if not hold.add(str(record.root)):  # no trim runs during an addition: not expected
                raise DeployError(f"The image sha256:{digest} was removed from this node as it started.")
            return _used(record)

    def trim(self) -> list[str]:
        """Blocking. Remove the images the plan names (none in use); the digests removed. Nothing while
        another addition is under way (it trims first)."""
        with self._adding(wait=False) as alone:
            return self._trim().remove if alone else []

    def _trim(self, adding: int = 0) -> Plan:
        """Under the lock on additions."""
        records = {record.tag: record for record in self.registry.list()}
        locks: dict[str, int] = {}  # the images no agent holds, locked so that none takes them meanwhile
        images: dict[str, NodeImage] = {}
        try:
            for tag, record in records.items():
                try:
                    used = record.root.stat().st_mtime
                except OSError:  # removed meanwhile
                    continue
                fd = try_lock_exclusive(record.root)
                if fd is not None:
                    locks[tag] = fd
                images[tag] = NodeImage(record.size, used)
            held = images.keys() - locks.keys()
            chosen = plan(
                images, held, cap_bytes=self._cap_bytes, keep_s=self._keep_s, now=self._clock(), adding=adding
            )
            for tag in chosen.remove:
                with contextlib.suppress(ImageError):  # removed by hand meanwhile
                    self.registry.delete(NAME, tag)
        finally:
            for fd in locks.values():
                unlock(fd)
        return chosen

    def _full(self, room: Plan, size: int) -> str:
        cap, held = self._cap_bytes / MB, room.held_bytes / MB
        why = (
            f"it alone is larger than the node's cap for images, {cap:.0f} MB"
            if size > self._cap_bytes
            else f"the images this node's running workers use hold {held:.1f} MB of its cap of {cap:.0f} MB"
        )
        return (
            f"The image's {size / MB:.1f} MB do not fit on this node: {why} (zeroscale serve "
            "--ray-node-images-mb). Raise --ray-node-images-mb, or retry once workers of other images on "
            "the node have ended (scale those endpoints in or delete them)."
        )

    @contextlib.contextmanager
    def _adding(self, *, wait: bool) -> Iterator[bool]:
        """The node's lock on additions (every agent's); yields False, unlocked, when ``wait`` is False and
        another holds it."""
        fd = os.open(self.root / _ADDING, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)


def _used(record: ImageRecord) -> ImageRecord:
    """``record``'s image is used now: its directory's mtime, which trims read as its last use."""
    with contextlib.suppress(OSError):
        os.utime(record.root)
    return record
