"""SageMaker JSON 1.1: ``X-Amz-Target: SageMaker.<Operation>`` -> validate against botocore's model ->
call the control plane. Each implemented operation is one entry here; every other operation botocore
knows answers with a clear "not implemented" error naming it."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from zeroscale.api.shapes import ServiceShapes
from zeroscale.control.endpoint_configs import EndpointConfigs
from zeroscale.control.endpoints import Endpoints
from zeroscale.control.models import Models
from zeroscale.errors import NotImplementedOperation, SerializationException, UnknownOperationException

Params = Mapping[str, Any]
Handler = Callable[[Params], dict[str, Any] | None]
TARGET_PREFIX = "SageMaker."


@dataclass
class ControlPlane:
    models: Models
    configs: EndpointConfigs
    endpoints: Endpoints

    def operations(self) -> dict[str, Handler]:
        m, c, e = self.models, self.configs, self.endpoints
        return {
            "CreateModel": m.create,
            "DescribeModel": lambda p: m.describe(p["ModelName"]),
            "ListModels": m.list,
            "DeleteModel": lambda p: m.delete(p["ModelName"]),
            "CreateEndpointConfig": c.create,
            "DescribeEndpointConfig": lambda p: c.describe(p["EndpointConfigName"]),
            "ListEndpointConfigs": c.list,
            "DeleteEndpointConfig": lambda p: c.delete(p["EndpointConfigName"]),
            "CreateEndpoint": e.create,
            "DescribeEndpoint": lambda p: e.describe(p["EndpointName"]),
            "ListEndpoints": e.list,
            "UpdateEndpoint": e.update,
            "DeleteEndpoint": lambda p: e.delete(p["EndpointName"]),
        }


class Dispatcher:
    def __init__(self, plane: ControlPlane, shapes: ServiceShapes) -> None:
        self._ops = plane.operations()
        self._shapes = shapes
        self._known = shapes.operation_names()

    def call(self, target: str, body: bytes) -> dict[str, Any]:
        operation = target[len(TARGET_PREFIX) :] if target.startswith(TARGET_PREFIX) else ""
        if operation not in self._known:
            raise UnknownOperationException(
                f"Operation {target or '(no X-Amz-Target)'} is not a SageMaker operation."
            )
        handler = self._ops.get(operation)
        if handler is None:
            raise NotImplementedOperation(f"The operation {operation} is not implemented by zeroscale yet.")
        try:
            params = json.loads(body) if body else {}
        except ValueError as exc:
            raise SerializationException(f"The request body is not valid JSON: {exc}") from None
        self._shapes.validate(operation, params)
        return handler(params) or {}
