"""What one IAM user's pushes may hold of the image registry: so that one tenant cannot fill
``--images-max-mb`` for every other, nor use up rows and inodes with many tiny images.

A user's pushes are the tags whose current push that user made (the ``creator`` of the tag's row in the
database, ``images.tags``): their bytes (each push's files, as pushed) and their number. A tag pushed again
counts, whole, to whoever pushed it last; the registry keeps one copy of an image per tag, so the same
content under two tags counts twice, to each tag's pusher, as it takes twice the room on disk. A tag deleted
frees its pusher's room at once (its files may stay while endpoints run them: those count to
``--images-max-mb`` alone). The admin's pushes are not counted.

Checked in the transaction that records the push, after the write, under the lock of the user's tags
(``store/locks.py``): exact across front ends sharing a database. A refusal is an ``ImageError``, as the
registry's own ``--images-max-mb`` refusal is, and nothing of the push is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

from zeroscale.images.names import ImageError
from zeroscale.images.registry import MB, ImageRecord
from zeroscale.images.tags import KIND, PUSHED, Pusher
from zeroscale.store.db import Quota, Reads

_REMEDY = "delete images no model needs (zeroscale images delete NAME:TAG), or ask the operator to raise it"


@dataclass(frozen=True)
class ImageQuota:
    most_bytes: int = 0  # of one user's pushes together (0: no limit)
    most_tags: int = 0  # tags one user's pushes may name (0: no limit)

    def of(self, record: ImageRecord, pusher: Pusher) -> Quota | None:
        """The quota the push ``record`` by ``pusher`` must keep; None (no lock, no read) for the admin's,
        and when there is none."""
        if not pusher.user_id or (self.most_bytes <= 0 and self.most_tags <= 0):
            return None

        def check(reads: Reads) -> None:
            others = [
                rec
                for rec in reads.created_by(KIND, pusher.user_id, statuses=(PUSHED,))
                if rec.name.lower() != record.ref.lower()  # this tag's earlier push, if this user's: replaced
            ]
            if 0 < self.most_tags <= len(others):
                raise ImageError(
                    f"Image {record.ref}: IAM user {pusher.name}'s pushes already name {len(others)} image "
                    f"tags, the most one user's may (zeroscale serve --images-max-per-user): {_REMEDY}."
                )
            held = sum(int(rec.doc.get("size") or 0) for rec in others)
            if self.most_bytes > 0 and held + record.size > self.most_bytes:
                raise ImageError(
                    f"Image {record.ref}: its {record.size / MB:.1f} MB would take IAM user {pusher.name}'s "
                    f"pushed images past {self.most_bytes / MB:.0f} MB (they hold {held / MB:.1f} MB; "
                    f"zeroscale serve --images-max-mb-per-user): {_REMEDY}."
                )

        return Quota(KIND, pusher.user_id, check)
