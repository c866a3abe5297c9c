"""Scalable targets, scaling policies and scaling activities, as records of the resource store (so they
survive a restart), and the checks on what Application Auto Scaling may scale here: namespace ``sagemaker``,
``endpoint/<name>/variant/<variant>``, dimension ``sagemaker:variant:DesiredInstanceCount``."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zeroscale.errors import ValidationException, ZeroscaleError
from zeroscale.store.db import AlreadyExists, Record, Store

NAMESPACE = "sagemaker"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
TARGET = "scalable-target"
POLICY = "scaling-policy"
ACTIVITY = "scaling-activity"
ACTIVITIES_KEPT = 100  # per target, newest first
POLICIES_PER_TARGET = 50  # Application Auto Scaling's quota: step and target tracking together
_RESOURCE = re.compile(r"endpoint/([^/]+)/variant/([^/]+)")
_KEY_MAX = 255  # the store's name column


class LimitExceeded(ZeroscaleError):
    """Application Auto Scaling's LimitExceededException: a quota of its own reached."""

    code = "LimitExceededException"
    status = 400


class ObjectNotFound(ZeroscaleError):
    code = "ObjectNotFoundException"
    status = 400


class InvalidNextToken(ZeroscaleError):
    code = "InvalidNextTokenException"
    status = 400


@dataclass(frozen=True)
class Resource:
    endpoint: str
    variant: str

    @property
    def id(self) -> str:
        return f"endpoint/{self.endpoint}/variant/{self.variant}"


def check_scope(params: Mapping[str, Any]) -> None:
    """ValidationException naming a namespace or dimension zeroscale does not scale."""
    namespace = params.get("ServiceNamespace")
    if namespace is not None and namespace != NAMESPACE:
        raise ValidationException(
            f"ServiceNamespace {namespace} is not served by zeroscale: only {NAMESPACE} (endpoint variants)."
        )
    dimension = params.get("ScalableDimension")
    if dimension is not None and dimension != DIMENSION:
        raise ValidationException(
            f"ScalableDimension {dimension} is not served by zeroscale: only {DIMENSION}."
        )


def parse_resource(resource_id: str) -> Resource:
    m = _RESOURCE.fullmatch(resource_id)
    if m is None:
        raise ValidationException(
            f"Unsupported ResourceId {resource_id}: a SageMaker variant is endpoint/<name>/variant/<variant>."
        )
    return Resource(m.group(1), m.group(2))


class Targets:
    """The three record kinds. Names: a target is its ResourceId; a policy ``<ResourceId>/policy/<name>``."""

    def __init__(self, store: Store) -> None:
        self._store = store

    # ---- targets ----
    def target(self, resource_id: str) -> Record | None:
        return self._store.get(TARGET, resource_id)

    def require(self, resource_id: str) -> Record:
        rec = self.target(resource_id)
        if rec is None:
            raise ObjectNotFound(
                f"No scalable target registered for service namespace: {NAMESPACE}, resource ID: "
                f"{resource_id}, scalable dimension: {DIMENSION}"
            )
        return rec

    def targets(self) -> list[Record]:
        return self._store.list(TARGET)

    def save_target(self, rec: Record, *, new: bool) -> None:
        if new:
            self._store.insert(rec)
        else:
            self._store.update(rec)

    def delete_target(self, resource_id: str) -> None:
        for policy in self.policies(resource_id):
            self._store.delete(POLICY, policy.name)
        self._store.delete(TARGET, resource_id)

    # ---- policies ----
    @staticmethod
    def policy_key(resource_id: str, name: str) -> str:
        key = f"{resource_id}/policy/{name}"
        if len(key) > _KEY_MAX:
            raise ValidationException(
                f"PolicyName {name[:64]}... is too long for zeroscale: the resource ID and policy name "
                f"together must stay within {_KEY_MAX - len('/policy/')} characters."
            )
        return key

    def policies(self, resource_id: str | None = None) -> list[Record]:
        found = self._store.list(POLICY)
        return [p for p in found if resource_id is None or p.doc["ResourceId"] == resource_id]

    def policy(self, resource_id: str, name: str) -> Record | None:
        return self._store.get(POLICY, self.policy_key(resource_id, name))

    def save_policy(self, rec: Record) -> None:
        """A new policy, or a new configuration of one: a target holds at most ``POLICIES_PER_TARGET``
        (Application Auto Scaling's quota), each looked at whenever its target's metrics are."""
        resource_id = rec.doc["ResourceId"]
        if self._store.get(POLICY, rec.name) is None:
            held = len(self.policies(resource_id))
            if held >= POLICIES_PER_TARGET:
                raise LimitExceeded(
                    f"Scalable target {resource_id} has {held} scaling policies, the most one may have "
                    f"({POLICIES_PER_TARGET}): delete one (DeleteScalingPolicy) before putting another."
                )
        try:
            self._store.insert(rec)
        except AlreadyExists:
            self._store.update(rec)

    def delete_policy(self, resource_id: str, name: str) -> bool:
        return self._store.delete(POLICY, self.policy_key(resource_id, name))

    # ---- activities ----
    def activities(self, resource_id: str | None = None) -> list[Record]:
        """Newest first."""
        found = self._store.list(ACTIVITY)
        found = [a for a in found if resource_id is None or a.doc["ResourceId"] == resource_id]
        return sorted(found, key=lambda a: a.created_at, reverse=True)

    def add_activity(self, resource_id: str, at: float, doc: dict[str, Any]) -> Record:
        activity_id = str(uuid.uuid4())
        rec = Record(ACTIVITY, activity_id, activity_id, at, at, doc["StatusCode"], doc)
        self._store.insert(rec)
        for old in self.activities(resource_id)[ACTIVITIES_KEPT:]:
            self._store.delete(ACTIVITY, old.name)
        return rec

    def update_activity(self, rec: Record) -> None:
        self._store.update(rec)
