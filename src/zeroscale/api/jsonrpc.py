"""AWS JSON 1.1 services: ``X-Amz-Target: <Prefix>.<Operation>`` -> validate against botocore's model ->
a handler. One ``JsonService`` per AWS service zeroscale speaks (SageMaker, CloudWatch Logs, ...); each
implemented operation is one entry of its table, and every other operation botocore knows answers with a
clear "not implemented" error naming it."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from zeroscale.api.shapes import ServiceShapes
from zeroscale.errors import NotImplementedOperation, SerializationException, UnknownOperationException

Params = Mapping[str, Any]
# An operation may be async (CloudWatch Logs reads files in a thread): the app awaits what it returns.
Operation = Callable[[Params], dict[str, Any] | Awaitable[dict[str, Any] | None] | None]


class JsonService:
    def __init__(self, shapes: ServiceShapes, operations: Mapping[str, Operation]) -> None:
        self._shapes = shapes
        self._ops = dict(operations)
        self._known = shapes.operation_names()
        self.target_prefix: str = shapes.target_prefix + "."
        self.signing_name: str = shapes.signing_name

    def call(self, target: str, body: bytes) -> dict[str, Any] | Awaitable[dict[str, Any] | None]:
        operation = target[len(self.target_prefix) :] if target.startswith(self.target_prefix) else ""
        if operation not in self._known:
            raise UnknownOperationException(f"Operation {target or '(no X-Amz-Target)'} is not known.")
        handler = self._ops.get(operation)
        if handler is None:
            raise NotImplementedOperation(f"The operation {operation} is not implemented by zeroscale yet.")
        try:
            params = json.loads(body) if body else {}
        except ValueError as exc:
            raise SerializationException(f"The request body is not valid JSON: {exc}") from None
        self._shapes.validate(operation, params)
        return handler(params) or {}
