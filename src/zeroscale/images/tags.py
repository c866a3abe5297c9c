"""Which push each bring-your-own image tag names now, kept in the database every front end shares.

An image's files live in the registry of each front end that holds it (``registry``); what a tag means is
one fact for all of them, so it is kept where every front end reads it: the last push of ``name:tag`` (its
record: digest, time, manifest) or its deletion (when, and which digest it took away). A front end that was
down or unreachable when a tag was pushed or deleted learns it here, not from a peer that may be gone too:
its stale copy is forgotten, and a deleted tag never comes back from a front end that missed the delete.

One row a tag (``Store`` kind ``image-tag``, named ``name:tag``); the last word wins, as a tag pushed or
deleted in a container registry is for every later pull. A push's row names who made it: the IAM user id as
its ``creator`` (what ``images.quota`` counts; none for the admin's), the user's name in its doc
(``pushed_by``, for listings).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zeroscale.images.registry import ImageRecord
from zeroscale.store import AlreadyExists, Record, Store
from zeroscale.store.db import Quota

KIND = "image-tag"
PUSHED, DELETED = "Pushed", "Deleted"


@dataclass(frozen=True)
class Pusher:
    """The IAM user a push is authorized for: (name, user id), both "" for the admin."""

    name: str
    user_id: str


ADMIN = Pusher("", "")


@dataclass(frozen=True)
class TagWord:
    """The last word on a tag: its push (``doc`` is ``ImageRecord.to_json``), or its deletion."""

    deleted: bool
    at: float  # when it was pushed or deleted (the clock of the front end that took it)
    digest: str  # the push's, or the one the deletion took away ("sha256:..."; "" when none was known)
    doc: dict[str, Any]

    def names(self, record: ImageRecord) -> bool:
        """Whether ``record`` (a push held by a front end) is the one this word stands for."""
        return not self.deleted and f"sha256:{record.digest}" == self.digest

    def outdates(self, record: ImageRecord) -> bool:
        """Whether ``record`` (a push held by a front end) is one this word deleted or replaced: the push it
        deleted, or any push made before it other than the one it names."""
        if self.deleted:
            return f"sha256:{record.digest}" == self.digest or record.pushed_at <= self.at
        return not self.names(record) and record.pushed_at < self.at


class TagLedger:
    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        """``clock``: wall-clock seconds (a deletion's time is compared with pushes of other front ends)."""
        self._store = store
        self._clock = clock

    def word(self, name: str, tag: str) -> TagWord | None:
        """The last word on ``name:tag``; None when none was ever recorded."""
        rec = self._store.get(KIND, f"{name}:{tag}")
        return None if rec is None else _word(rec)

    def words(self) -> dict[tuple[str, str], TagWord]:
        """The last word on every tag ever recorded, by (name, tag): one query."""
        return {_name_tag(rec.name): _word(rec) for rec in self._store.list(KIND)}

    def pushed(self, record: ImageRecord, by: Pusher, quota: Quota | None = None) -> None:
        """``record`` was pushed (by ``by``, to this front end): the tag names it from now on, and counts to
        ``by``. ``quota``: checked in the write's transaction (its error: nothing written)."""
        doc = {**record.to_json(), "pushed_by": by.name}
        rec = _record(record.name, record.tag, PUSHED, record.pushed_at, doc, by.user_id or None)
        self._write(rec, quota=quota, with_creator=True)

    def deleted(self, name: str, tag: str, digest: str) -> None:
        """``name:tag`` was deleted; ``digest`` the push it named then ("sha256:...")."""
        self._write(_record(name, tag, DELETED, self._clock(), {"name": name, "tag": tag, "digest": digest}))

    def known(self, record: ImageRecord) -> bool:
        """Record ``record`` when the ledger has no word on its tag (a push made before the ledger kept
        them): True when it did; an existing word is never replaced this way. Who pushed it is not known:
        it counts to no IAM user (not to the one whose deployment found it)."""
        rec = _record(record.name, record.tag, PUSHED, record.pushed_at, record.to_json())
        try:
            self._store.insert(rec, caller=False)
        except AlreadyExists:
            return False
        return True

    def _write(self, rec: Record, *, quota: Quota | None = None, with_creator: bool = False) -> None:
        """``with_creator``: the row's creator becomes ``rec.creator`` (a push's); else it stays."""
        if self._store.update(rec, quota=quota, with_creator=with_creator):
            return
        try:
            self._store.insert(rec, quota=quota)
        except AlreadyExists:  # inserted by another front end meanwhile: the later write wins
            self._store.update(rec, quota=quota, with_creator=with_creator)


def _record(
    name: str, tag: str, status: str, at: float, doc: dict[str, Any], creator: str | None = None
) -> Record:
    return Record(
        kind=KIND,
        name=f"{name}:{tag}",
        arn="",
        created_at=at,
        modified_at=at,
        status=status,
        doc=doc,
        creator=creator,
    )


def _name_tag(key: str) -> tuple[str, str]:
    name, _, tag = key.partition(":")
    return name, tag


def _word(rec: Record) -> TagWord:
    return TagWord(
        deleted=rec.status == DELETED,
        at=rec.modified_at,
        digest=str(rec.doc.get("digest") or ""),
        doc=rec.doc,
    )
