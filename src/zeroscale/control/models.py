"""Models: CreateModel, DescribeModel, ListModels, DeleteModel over wire-shaped dicts.

The API layer has already validated input against botocore's model (types, lengths, patterns, enums,
required members, the 100-entry / 1024-character Environment limits); only semantic rules live here.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from typing import Any

from zeroscale.control.arns import Arns
from zeroscale.control.resources import Resources
from zeroscale.errors import ValidationException
from zeroscale.store.db import Record, Store

KIND = "model"
ENVIRONMENT_MAX_TOTAL_BYTES = 32 * 1024

# DescribeModelOutput members echoed from the create request (the wire layer refuses the others).
_DESCRIBED = ("PrimaryContainer", "Containers", "ExecutionRoleArn", "EnableNetworkIsolation")


def _check_container(container: Mapping[str, Any], where: str) -> None:
    if not container.get("Image"):
        raise ValidationException(
            f"{where} must specify an Image: zeroscale runs a container only from an image URI "
            "(ModelPackageName and inference specifications are not supported)."
        )
    if container.get("Mode") == "MultiModel" and not container.get("ModelDataUrl"):
        raise ValidationException(
            f"{where}.Mode is MultiModel: ModelDataUrl must name the S3 prefix that holds the models."
        )
    if container.get("MultiModelConfig") and container.get("Mode") != "MultiModel":
        raise ValidationException(f"{where}.MultiModelConfig is only for Mode MultiModel.")
    env: Mapping[str, str] = container.get("Environment") or {}
    total = sum(len(k.encode()) + len(v.encode()) for k, v in env.items())
    if total > ENVIRONMENT_MAX_TOTAL_BYTES:
        raise ValidationException(
            f"The Environment of {where} is {total} bytes in total; keys and values together must not "
            f"exceed {ENVIRONMENT_MAX_TOTAL_BYTES} bytes."
        )


def check_containers(params: Mapping[str, Any]) -> None:
    """Exactly one of PrimaryContainer or Containers, and every container runnable by zeroscale."""
    primary = params.get("PrimaryContainer")
    containers = params.get("Containers") or []
    if primary is not None and containers:
        raise ValidationException("Specify either PrimaryContainer or Containers, not both.")
    if primary is None and not containers:
        raise ValidationException("A model needs a container: specify either PrimaryContainer or Containers.")
    if primary is not None:
        _check_container(primary, "PrimaryContainer")
    for i, container in enumerate(containers, start=1):
        _check_container(container, f"Containers.{i}")


class Models:
    def __init__(self, store: Store, arns: Arns, clock: Callable[[], float] = time.time) -> None:
        self._res = Resources(store, arns, KIND, "model")
        self._clock = clock

    def create(self, params: Mapping[str, Any]) -> dict[str, Any]:
        name: str = params["ModelName"]
        if self._res.find(name) is not None:
            raise self._res.duplicate(name)
        check_containers(params)
        doc = copy.deepcopy(dict(params))
        doc["EnableNetworkIsolation"] = bool(doc.get("EnableNetworkIsolation", False))
        doc.setdefault("Tags", [])
        return {"ModelArn": self._res.insert(name, doc, self._clock())}

    def get(self, name: str) -> Record:
        """The stored model; ValidationException ``Could not find model "<arn>".`` when absent."""
        return self._res.get(name)

    def describe(self, name: str) -> dict[str, Any]:
        rec = self.get(name)
        out: dict[str, Any] = {"ModelName": rec.name}
        out.update({k: rec.doc[k] for k in _DESCRIBED if rec.doc.get(k) is not None})
        out["ModelArn"] = rec.arn
        out["CreationTime"] = rec.created_at
        return out

    def list(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return self._res.page(
            params,
            ("Name", "CreationTime"),
            "Models",
            lambda r: {"ModelName": r.name, "ModelArn": r.arn, "CreationTime": r.created_at},
        )

    def delete(self, name: str) -> None:
        self._res.delete(name)
