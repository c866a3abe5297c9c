"""Tags of models, endpoint configurations, endpoints and model packages, by ARN: ListTags, AddTags and
DeleteTags. A resource's tags are those its create call gave (kept in its doc) until AddTags or DeleteTags
changes them; from then on they are a row of their own (``Store.tags``), written compare-and-set, so that
two front ends changing one resource's tags at once both count, and a deployment rewriting the resource's
doc never races them."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from zeroscale.control.listing import INVALID_TOKEN
from zeroscale.errors import ConflictException, ValidationException
from zeroscale.store.db import Record

SETTING_PREFIX = "zeroscale:"  # tags zeroscale reads as settings (``zeroscale:idle-timeout-s``)

_ARN = re.compile(r"arn:aws[a-z-]*:sagemaker:[^:]*:[^:]*:(?P<kind>[a-z-]+)/(?P<name>.+)")
MAX_TAGS = 50  # per resource, as AWS
Tags = list[dict[str, str]]  # [{"Key": ..., "Value": ...}], as the API carries them
_TRIES = 5  # compare-and-set rounds against other front ends changing the same tags


def check_tags(params: Mapping[str, Any]) -> None:
    """A call's ``Tags`` as AWS takes them: one value per key, and no key in the reserved ``aws:`` space."""
    seen: set[str] = set()
    for tag in params.get("Tags") or ():
        key = str(tag.get("Key", ""))
        if key.lower().startswith("aws:"):
            raise ValidationException(f"Tag keys starting with 'aws:' are reserved for AWS use: {key}.")
        if key in seen:
            raise ValidationException(f"Duplicate tag key: {key}. A resource has one value per tag key.")
        seen.add(key)


class Tagged(Protocol):
    def get(self, name: str) -> Record:
        """The stored resource; SageMaker's ValidationException when there is none."""
        ...


class TagStore(Protocol):
    def tags(self, kind: str, name: str) -> tuple[list[dict[str, str]], int] | None: ...

    def set_tags(self, kind: str, name: str, tags: list[dict[str, str]], version: int | None) -> bool: ...


class ResourceTags:
    def __init__(self, kinds: Mapping[str, Tagged], store: TagStore) -> None:
        """``kinds``: ARN resource type (``model``, ``endpoint-config``, ...) -> its resources."""
        self._kinds = kinds
        self._store = store

    def list_tags(self, params: Mapping[str, Any]) -> dict[str, Any]:
        rec = self._resource(params["ResourceArn"])
        if params.get("NextToken"):  # a resource has at most 50 tags: one page, never a token to give back
            raise ValidationException(INVALID_TOKEN)
        return {"Tags": self._current(rec)[0]}

    def add_tags(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Adds tags, or overwrites the values of keys the resource has (AWS's AddTags)."""
        rec = self._resource(params["ResourceArn"])
        check_tags(params)
        given = [{"Key": str(t["Key"]), "Value": str(t.get("Value", ""))} for t in params["Tags"]]
        _no_setting(rec, [t["Key"] for t in given], "AddTags")

        def added(tags: list[dict[str, str]]) -> list[dict[str, str]]:
            values = {t["Key"]: t["Value"] for t in tags} | {t["Key"]: t["Value"] for t in given}
            if len(values) > MAX_TAGS:
                raise ValidationException(
                    f"Could not add {len(given)} tag(s) to {rec.arn}: it would have {len(values)} tags; a "
                    f"resource has at most {MAX_TAGS}. Remove some first (DeleteTags)."
                )
            return [{"Key": key, "Value": value} for key, value in values.items()]

        self._change(rec, added)
        return {"Tags": given}

    def delete_tags(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Removes the tags of these keys; a key the resource does not have is no error (AWS's DeleteTags)."""
        rec = self._resource(params["ResourceArn"])
        keys = {str(key) for key in params["TagKeys"]}
        _no_setting(rec, keys, "DeleteTags")
        self._change(rec, lambda tags: [t for t in tags if t["Key"] not in keys])
        return {}

    def _resource(self, arn: str) -> Record:
        m = _ARN.fullmatch(arn)
        resources = self._kinds.get(m.group("kind")) if m is not None else None
        if m is None or resources is None:
            raise ValidationException(f'Could not find resource "{arn}".')
        rec = resources.get(m.group("name"))
        if rec.arn != arn:  # another region or account, or a name that is not lower-cased
            raise ValidationException(f'Could not find resource "{arn}".')
        return rec

    def _current(self, rec: Record) -> tuple[list[dict[str, str]], int | None]:
        found = self._store.tags(rec.kind, rec.name)
        if found is None:
            return [dict(t) for t in rec.doc.get("Tags") or []], None
        return found

    def _change(self, rec: Record, change: Callable[[Tags], Tags]) -> None:
        for _ in range(_TRIES):
            tags, version = self._current(rec)
            if self._store.set_tags(rec.kind, rec.name, change(tags), version):
                return
        raise ConflictException(f"The tags of {rec.arn} are being changed by another call; retry.")


def _no_setting(rec: Record, keys: Iterable[str], operation: str) -> None:
    """A tag zeroscale reads as a setting (``zeroscale:idle-timeout-s``) is read when its configuration is
    created: changed later it would be listed and never applied, so it is refused, naming the way."""
    settings = sorted(k for k in keys if k.lower().startswith(SETTING_PREFIX))
    if settings:
        raise ValidationException(
            f"{operation} cannot change {', '.join(settings)} on {rec.arn}: zeroscale reads such a tag when "
            "the resource is created. Create an endpoint configuration with it, then UpdateEndpoint to that."
        )
