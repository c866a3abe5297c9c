"""ListTags: the Tags given when a model, endpoint configuration or endpoint was created, by its ARN."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

from zeroscale.control.listing import INVALID_TOKEN
from zeroscale.errors import ValidationException
from zeroscale.store.db import Record

_ARN = re.compile(r"arn:aws[a-z-]*:sagemaker:[^:]*:[^:]*:(?P<kind>[a-z-]+)/(?P<name>.+)")


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
