"""ListTags: the Tags given when a model, endpoint configuration or endpoint was created, by its ARN."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

from zeroscale.control.listing import INVALID_TOKEN
from zeroscale.errors import ValidationException
from zeroscale.store.db import Record

_ARN = re.compile(r"arn:aws[a-z-]*:sagemaker:[^:]*:[^:]*:(?P<kind>[a-z-]+)/(?P<name>.+)")


def check_tags(params: Mapping[str, Any]) -> None:
    """A create call's ``Tags`` as AWS takes them: one value per key, and no key in the reserved ``aws:``
    space (there is no AddTags or DeleteTags here to mend them afterwards)."""
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


class ResourceTags:
    def __init__(self, kinds: Mapping[str, Tagged]) -> None:
        """``kinds``: ARN resource type (``model``, ``endpoint-config``, ``endpoint``) -> its resources."""
        self._kinds = kinds

    def list(self, params: Mapping[str, Any]) -> dict[str, Any]:
        arn: str = params["ResourceArn"]
        if params.get("NextToken"):  # a resource has at most 50 tags: one page, never a token to give back
            raise ValidationException(INVALID_TOKEN)
        m = _ARN.fullmatch(arn)
        resources = self._kinds.get(m.group("kind")) if m is not None else None
        if m is None or resources is None:
            raise ValidationException(f'Could not find resource "{arn}".')
        rec = resources.get(m.group("name"))
        if rec.arn != arn:  # another region or account, or a name that is not lower-cased
            raise ValidationException(f'Could not find resource "{arn}".')
        return {"Tags": list(rec.doc.get("Tags") or [])}
