"""One kind of stored resource (models, endpoint configurations, endpoints): its ARNs, SageMaker's
"Could not find" / "Cannot create already existing" errors, and the store calls every kind makes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from zeroscale.control.arns import Arns
from zeroscale.control.listing import paginate_stored
from zeroscale.errors import ValidationException
from zeroscale.store.db import AlreadyExists, Quota, Record, Store


class Resources:
    def __init__(self, store: Store, arns: Arns, kind: str, noun: str) -> None:
        """``kind`` names the ARN and the store's kind (``endpoint-config``); ``noun`` the resource in
        messages (``endpoint configuration``)."""
        self.store = store
        self.kind = kind
        self._arns = arns
        self._noun = noun

    def arn(self, name: str) -> str:
        return self._arns.arn(self.kind, name)

    def missing(self, name: str) -> ValidationException:
        return ValidationException(f'Could not find {self._noun} "{self.arn(name)}".')

    def duplicate(self, name: str) -> ValidationException:
        return ValidationException(f'Cannot create already existing {self._noun} "{self.arn(name)}".')

    def find(self, name: str) -> Record | None:
        return self.store.get(self.kind, name)

    def get(self, name: str) -> Record:
        rec = self.store.get(self.kind, name)
        if rec is None:
            raise self.missing(name)
        return rec

    def insert(
        self,
        name: str,
        doc: dict[str, Any],
        now: float,
        status: str | None = None,
        owner: str | None = None,
        *,
        quota: Quota | None = None,
    ) -> str:
        """Store a new resource and return its ARN; a duplicate name is SageMaker's ValidationException;
        ``quota``: one more the insert must keep (see Store.insert)."""
        arn = self.arn(name)
        try:
            self.store.insert(Record(self.kind, name, arn, now, now, status, doc, owner), quota=quota)
        except AlreadyExists:
            raise self.duplicate(name) from None
        return arn

    def delete(self, name: str) -> None:
        if not self.store.delete(self.kind, name):
            raise self.missing(name)

    def page(
        self,
        params: Mapping[str, Any],
        sort_keys: Sequence[str],
        key: str,
        summary: Any,
        *,
        documents: bool = True,
    ) -> dict[str, Any]:
        """A List* answer: ``{key: [summary(record), ...], "NextToken"?}``; ``documents`` False for a summary
        of the records' columns only (the documents are not read)."""
        records, token = paginate_stored(
            self.store, self.kind, params, sort_keys=sort_keys, documents=documents
        )
        out: dict[str, Any] = {key: [summary(r) for r in records]}
        if token is not None:
            out["NextToken"] = token
        return out
