"""Bring-your-own images across the front ends on one database: each keeps the images it holds in its own
registry (``registry``), what each tag names now is one fact in the database (``tags``), and an image
pushed to one front end is served by all of them.

- **Pushing.** A push goes into the registry of the front end it reaches, which records it as the tag's last
  word (counted to its IAM user, refused past that user's quota: ``images.quota``) before it puts it in
  place, and tells the others (``images.pushed``): each copies it at once, as below.
- **Resolving.** When a front end deploys ``name:tag``, it reads the tag's last word. A tag deleted since
  this front end took its copy (it was down, or did not answer, when the tag was deleted) is forgotten here
  too. A push this front end does not hold is copied from a live front end that holds it (a tar.gz of the
  image's files, ``GET /zeroscale/peer/v1/images/<name>/<tag>``, asked with ``images.record``) into its own
  registry, through the same checks as any push, keeping the push's time. So a deployment runs the latest
  push of a tag wherever it was pushed (as a pull from a container registry does); when no live front end
  holds it, the deployment fails saying so, and never runs an older push.
- **Listing and describing** read the last words: every tag pushed and not deleted, wherever it is held.
- **Deleting** a tag records its deletion and deletes it here and on every live front end
  (``images.delete``); one that does not answer forgets it when it next resolves it or starts.

A front end's start (``reconcile``) forgets the tags deleted while it was down and records the pushes it
holds that have no word yet (made before the words were kept). Blocking: call these from a worker thread,
except the peer file source (``archive_file``)."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from zeroscale.errors import DeployError
from zeroscale.images.names import ImageError, parse_reference, validate_name, validate_tag
from zeroscale.images.quota import ImageQuota
from zeroscale.images.registry import ImageRecord, ImageRegistry
from zeroscale.images.tags import ADMIN, Pusher, TagLedger, TagWord
from zeroscale.peers import PATH, PeerClient, PeerRefused

log = logging.getLogger("zeroscale.images")

RECORD_OP, DELETE_OP = "images.record", "images.delete"
PUSHED_OP = "images.pushed"
FILES = "images"  # GET /zeroscale/peer/v1/images/<name>/<tag>


class SharedImages:
    def __init__(
        self,
        registry: ImageRegistry,
        tags: TagLedger,
        peers: PeerClient | None,
        *,
        max_archive_bytes: int,
        quota: ImageQuota | None = None,
    ) -> None:
        """``quota``: what one IAM user's pushes may hold (None: no limit)."""
        self.registry = registry
        self._tags = tags
        self._peers = peers
        self._max_archive_bytes = max_archive_bytes
        self._quota = quota or ImageQuota()

    # ---- what this front end answers the others ----
    def peer_ops(self) -> dict[str, Any]:
        return {
            RECORD_OP: self.record_op,
            DELETE_OP: self.delete_op,
            PUSHED_OP: self.pushed_op,
        }

    def record_op(self, args: dict[str, Any]) -> dict[str, Any]:
        record = self.registry.get(validate_name(str(args["name"])), validate_tag(str(args["tag"])))
        return {"image": None if record is None else record.to_json()}

    def pushed_op(self, args: dict[str, Any]) -> dict[str, Any]:
        """Another front end took a push of ``name:tag``: copy it now (``resolve``), so that this front end
        holds it even when that one is gone by the time a deployment needs it."""
        name, tag = validate_name(str(args["name"])), validate_tag(str(args["tag"]))
        try:
            record = self.resolve(f"{name}:{tag}")
        except DeployError as exc:
            log.warning("%s", exc)
            return {"digest": None}
        return {"digest": None if record is None else f"sha256:{record.digest}"}

    def push(self, name: str, tag: str, archive: bytes, by: Pusher = ADMIN) -> ImageRecord:
        """``by``'s push of ``name:tag`` (a tar / tar.gz in memory) to this front end: recorded as the tag's
        last word, counted to ``by`` (refused past its quota: ImageError, nothing kept), registered here,
        and announced to the other live front ends (each copies it; one that does not answer copies it when
        a deployment of its own needs it)."""

        def admit(record: ImageRecord) -> None:  # under the registry's lock, before the push is in place
            self._tags.pushed(record, by, self._quota.of(record, by))

        record = self.registry.push_bytes(name, tag, archive, admit=admit)
        if self._peers is not None:
            self._peers.gather(PUSHED_OP, {"name": name, "tag": tag})
        return record

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
    def reconcile(self) -> None:
        """At start: forget the tags deleted while this front end was away; record the pushes it holds that
        have no word yet (pushed before the words were kept)."""
        words = self._tags.words()
        for record in self.registry.list():
            word = words.get((record.name, record.tag))
            if word is None:
                self._tags.known(record)
            elif word.outdates(record):
                self._forget(record)

    def resolve(self, image: str) -> ImageRecord | None:
        """The registered image ``image`` names: its tag's last push, copied here first from a live front end
        that holds it when this one does not. DeployError when no live front end holds it."""
        parsed = parse_reference(image)
        if parsed is None:
            return None
        name, tag = parsed
        local = self.registry.get(name, tag)
        word = self._tags.word(name, tag)
        if word is None:
            if local is not None:
                self._tags.known(local)
            return self.registry.resolve(image)
        if local is not None and word.outdates(local):
            self._forget(local)
            local = self.registry.get(name, tag)  # None, or a push taken here meanwhile (kept)
        if not word.deleted and local is None:
            self._fetch(name, tag, word)
        return self.registry.resolve(image)

    def _forget(self, record: ImageRecord) -> None:
        try:
            self.registry.delete(record.name, record.tag, digest=record.digest)
        except ImageError:  # gone already, or pushed here again since it was read
            return
        log.info("image %s was deleted or pushed over elsewhere: forgotten here", record.resolved)

    def _fetch(self, name: str, tag: str, word: TagWord) -> None:
        """Copy the push ``word`` names from a live front end that holds it (DeployError: none does)."""
        holders = []
        if self._peers is not None:
            holders = [
                peer_id
                for peer_id, answer in self._peers.gather(RECORD_OP, {"name": name, "tag": tag}).answers
                if (answer.get("image") or {}).get("digest") == word.digest
            ]
        for peer_id in holders:
            if self._copy(peer_id, name, tag, word.doc):
                return
        raise DeployError(
            f"Image {name}:{tag} was last pushed as {word.digest}, and no live front end holds that push "
            f"now: push it again (zeroscale images push {name}:{tag} DIR)."
        )

    def _copy(self, peer_id: str, name: str, tag: str, doc: dict[str, Any]) -> bool:
        """Copy ``doc``'s push of ``name:tag`` from front end ``peer_id``: True when it is held here now."""
        assert self._peers is not None
        peer = next((p for p in self._peers.peers() if p.id == peer_id), None)
        if peer is None:
            return False
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
            return False
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
            return False
        log.info("image %s:%s@%s copied from front end %s", name, tag, doc["digest"], peer_id)
        return True

    def everywhere(self) -> builtins.list[dict[str, Any]]:
        """Every tag's last push, wherever it is held (``ImageRecord.to_json``), by name and tag (the pushes
        this front end held before the words were kept were recorded at its start, ``reconcile``)."""
        words = self._tags.words()
        return [words[key].doc for key in sorted(words) if not words[key].deleted]

    def find(self, name: str, tag: str) -> dict[str, Any] | None:
        """``name:tag``'s last push, or None when it has none or was deleted since."""
        word = self._tags.word(name, tag)
        return None if word is None or word.deleted else word.doc

    def delete(self, name: str, tag: str) -> tuple[dict[str, Any], bool]:
        """Delete ``name:tag`` for every front end: its deletion recorded, then deleted here and on every
        live front end; (its last push, whether that push's files stay here for the pools that run it).
        ImageError when it is not registered."""
        doc = self.find(name, tag)
        if doc is None:
            raise ImageError(f"Image {name}:{tag} is not registered.")
        self._tags.deleted(name, tag, str(doc["digest"]))
        kept = False
        with contextlib.suppress(ImageError):  # not here: only on others
            _, kept = self.registry.delete(name, tag)
        if self._peers is not None:
            self._peers.gather(DELETE_OP, {"name": name, "tag": tag})
        return doc, kept
