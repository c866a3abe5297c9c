"""Bring-your-own images across the front ends on one database: each keeps the images pushed to it in its own
registry (``registry``), and an image pushed to one is served by all of them.

- **Pushing.** A push goes into the registry of the front end it reaches, which tells the others
  (``images.pushed``): each copies it at once, as below.
- **Resolving.** When a front end deploys ``name:tag``, it asks the other live front ends for their record
  of it (``images.record``); when one holds a later push than its own (or it has none), it copies that push
  from it (a tar.gz of the image's files, ``GET /zeroscale/peer/v1/images/<name>/<tag>``) into its own
  registry, through the same checks as any push, and keeps the push's time (a copy whose content is not
  the digest announced, pushed again there meanwhile, is kept and logged). So a deployment runs the latest
  push of a tag wherever it was pushed (as a pull from a container registry does).
- **Listing and describing** show every front end's latest push of each tag (``images.list``).
- **Deleting** a tag through one front end deletes it on every live front end (``images.delete``), whichever
  push each holds, as a tag deleted from a container registry is gone for every pull.

A front end that does not answer is left out (``zeroscale.peers``); one that joins copies what it deploys.
Blocking: call these from a worker thread, except the peer file source (``archive_file``)."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from zeroscale.images.names import ImageError, parse_reference, validate_name, validate_tag
from zeroscale.images.registry import ImageRecord, ImageRegistry
from zeroscale.peers import PATH, PeerClient, PeerRefused

log = logging.getLogger("zeroscale.images")

RECORD_OP, LIST_OP, DELETE_OP = "images.record", "images.list", "images.delete"
PUSHED_OP = "images.pushed"
FILES = "images"  # GET /zeroscale/peer/v1/images/<name>/<tag>


def _newer(doc: dict[str, Any], than: ImageRecord | None) -> bool:
    if than is None:
        return True
    return (
        str(doc["digest"]).removeprefix("sha256:") != than.digest and float(doc["pushed_at"]) > than.pushed_at
    )


class SharedImages:
    def __init__(self, registry: ImageRegistry, peers: PeerClient | None, *, max_archive_bytes: int) -> None:
        self.registry = registry
        self._peers = peers
        self._max_archive_bytes = max_archive_bytes

    # ---- what this front end answers the others ----
    def peer_ops(self) -> dict[str, Any]:
        return {
            RECORD_OP: self.record_op,
            LIST_OP: self.list_op,
            DELETE_OP: self.delete_op,
            PUSHED_OP: self.pushed_op,
        }

    def record_op(self, args: dict[str, Any]) -> dict[str, Any]:
        record = self.registry.get(validate_name(str(args["name"])), validate_tag(str(args["tag"])))
        return {"image": None if record is None else record.to_json()}

    def list_op(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"images": [r.to_json() for r in self.registry.list()]}

    def pushed_op(self, args: dict[str, Any]) -> dict[str, Any]:
        """Another front end took a push of ``name:tag``: copy it now (``resolve``), so that this front end
        holds it even when that one is gone by the time a deployment needs it."""
        name, tag = validate_name(str(args["name"])), validate_tag(str(args["tag"]))
        record = self.resolve(f"{name}:{tag}")
        return {"digest": None if record is None else f"sha256:{record.digest}"}

    def announce(self, name: str, tag: str) -> None:
        """Tell the other live front ends of a push taken here (each copies it; one that does not answer
        copies it when a deployment of its own needs it)."""
        if self._peers is not None:
            self._peers.gather(PUSHED_OP, {"name": name, "tag": tag})

    def delete_op(self, args: dict[str, Any]) -> dict[str, Any]:
        """Delete the tag here too (deleted through another front end)."""
        name, tag = validate_name(str(args["name"])), validate_tag(str(args["tag"]))
        try:
            self.registry.delete(name, tag)
        except ImageError:  # not here
            return {"deleted": False}
        return {"deleted": True}

    async def archive_file(self, parts: builtins.list[str]) -> Path | None:
        """The peer file source: a tar.gz of ``<name>/<tag>`` (removed by the route once sent)."""
        if len(parts) != 2:
            return None
        name, tag = validate_name(parts[0]), validate_tag(parts[1])
        return await asyncio.to_thread(self.registry.archive, name, tag)

    # ---- what this front end asks ----
    def resolve(self, image: str) -> ImageRecord | None:
        """The registered image ``image`` names, its latest push on any live front end (copied here first
        when another front end holds a later one)."""
        parsed = parse_reference(image)
        if parsed is not None and self._peers is not None:
            name, tag = parsed
            local = self.registry.get(name, tag)
            found = [
                (peer_id, answer["image"])
                for peer_id, answer in self._peers.gather(RECORD_OP, {"name": name, "tag": tag}).answers
                if answer.get("image") and _newer(answer["image"], local)
            ]
            if found:
                peer_id, doc = max(found, key=lambda item: float(item[1]["pushed_at"]))
                self._copy(peer_id, name, tag, doc)
        return self.registry.resolve(image)

    def _copy(self, peer_id: str, name: str, tag: str, doc: dict[str, Any]) -> None:
        assert self._peers is not None
        peer = next((p for p in self._peers.peers() if p.id == peer_id), None)
        if peer is None:
            return
        fd, raw = tempfile.mkstemp(
            prefix=f"{os.getpid()}-copy-", suffix=".tar.gz", dir=self.registry.root / ".tmp"
        )
        os.close(fd)
        archive = Path(raw)
        try:
            self._peers.download(peer, f"{PATH}/{FILES}/{name}/{tag}", archive, self._max_archive_bytes)
            record = self.registry.push(name, tag, archive, pushed_at=float(doc["pushed_at"]))
        except (OSError, PeerRefused, ImageError) as exc:
            log.warning("image %s:%s could not be copied from front end %s: %s", name, tag, peer_id, exc)
            return
        finally:
            archive.unlink(missing_ok=True)
        if f"sha256:{record.digest}" != doc["digest"]:
            log.warning(
                "image %s:%s copied from front end %s is %s, not the %s it announced (pushed again there)",
                name,
                tag,
                peer_id,
                record.digest,
                doc["digest"],
            )
        else:
            log.info("image %s:%s@%s copied from front end %s", name, tag, doc["digest"], peer_id)

    def list(self) -> builtins.list[ImageRecord]:
        """This front end's own pushes and copies."""
        return self.registry.list()

    def everywhere(self) -> builtins.list[dict[str, Any]]:
        """Every tag's latest push on any live front end, as ``ImageRecord.to_json``."""
        latest = {(r.name, r.tag): r.to_json() for r in self.registry.list()}
        if self._peers is not None:
            for _, answer in self._peers.gather(LIST_OP, {}).answers:
                for doc in answer["images"]:
                    key = (str(doc["name"]), str(doc["tag"]))
                    if key not in latest or float(doc["pushed_at"]) > float(latest[key]["pushed_at"]):
                        latest[key] = doc
        return [latest[key] for key in sorted(latest)]

    def find(self, name: str, tag: str) -> dict[str, Any] | None:
        """``name:tag``'s latest push on any live front end."""
        docs = [d for d in self.everywhere() if (d["name"], d["tag"]) == (name, tag)]
        return docs[0] if docs else None

    def delete(self, name: str, tag: str) -> tuple[dict[str, Any], bool]:
        """Delete ``name:tag`` here and on every live front end; (its latest push, whether that push's
        files stay here for the pools that run it). ImageError when no front end has it."""
        doc = self.find(name, tag)
        if doc is None:
            raise ImageError(f"Image {name}:{tag} is not registered.")
        kept = False
        with contextlib.suppress(ImageError):  # not here: only on others
            _, kept = self.registry.delete(name, tag)
        if self._peers is not None:
            self._peers.gather(DELETE_OP, {"name": name, "tag": tag})
        return doc, kept
