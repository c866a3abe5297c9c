"""AWS JSON 1.1 services: ``X-Amz-Target: <Prefix>.<Operation>`` -> parse the body as hostile JSON ->
refuse members the operation does not serve -> validate against botocore's model -> a handler. One
``JsonService`` per AWS service zeroscale speaks (SageMaker, CloudWatch Logs, ...); each implemented
operation is one entry of its table and of its allow-list (``served.py``), and every other operation
botocore knows answers with a clear "not implemented" error naming it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from zeroscale import safejson
from zeroscale.api import served
from zeroscale.api.shapes import ServiceShapes
from zeroscale.errors import (
    NotImplementedOperation,
    SerializationException,
    UnknownOperationException,
    ValidationException,
)

# The largest input of an implemented operation is well under this (CreateModel: 15 containers with 32 KB
# of environment each); anything bigger is refused before it is parsed.
MAX_BODY_BYTES = 1024 * 1024

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
        self._refusals = served.refusals(shapes.service)
        unlisted = sorted(set(self._ops) - self._refusals.operations())
        if unlisted:
            raise ValueError(f"{shapes.service}: no allow-list in api/served.py for {', '.join(unlisted)}")

    def output_shape(self, target: str) -> Any:
        """botocore's output shape of the operation ``target`` names (None when unknown or empty)."""
        operation = target[len(self.target_prefix) :] if target.startswith(self.target_prefix) else ""
        return self._shapes.output_shape(operation) if operation in self._known else None

    def call(
        self, target: str, body: bytes, document: Callable[[], Any] | None = None
    ) -> dict[str, Any] | Awaitable[dict[str, Any] | None]:
        """``document``: the body's value when it was parsed already (``Access.document``), else it is
        parsed here."""
        operation = target[len(self.target_prefix) :] if target.startswith(self.target_prefix) else ""
        if operation not in self._known:
            raise UnknownOperationException(f"Operation {target or '(no X-Amz-Target)'} is not known.")
        handler = self._ops.get(operation)
        if handler is None:
            raise NotImplementedOperation(f"The operation {operation} is not implemented by zeroscale yet.")
        if len(body) > MAX_BODY_BYTES:
            raise ValidationException(
                f"The request body is {len(body)} bytes; {operation} accepts at most {MAX_BODY_BYTES}."
            )
        try:
            params = document() if document is not None else safejson.loads(body) if body else {}
        except safejson.JsonRejected as exc:
            raise SerializationException(f"The request body is not valid JSON: {exc}") from None
        if not isinstance(params, dict):
            raise SerializationException(f"The input of {operation} must be a JSON object.")
        self._refusals.check(operation, self._shapes.input_shape(operation), params)
        self._shapes.validate(operation, params)
        return handler(params) or {}
