"""Model package groups and their versioned model packages (the model registry).

A group is a named collection; each CreateModelPackage in it is the next version (1, 2, ...), stored as the
resource ``<group>/<version>`` with the ARN ``model-package/<group>/<version>``. A version carries an
``InferenceSpecification`` (its containers and supported content types) and a ``ModelApprovalStatus``.
``CreateModel`` deploys one through ``resolve``: a version's ARN (or ``<group>/<version>``), or a group's
name or ARN for its latest Approved version; a Rejected version is refused by name.
"""

from __future__ import annotations

import builtins
import copy
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from zeroscale.control.arns import Arns
from zeroscale.control.listing import paginate
from zeroscale.control.resources import Resources
from zeroscale.errors import ConflictException, ValidationException
from zeroscale.store.db import Record, Store

GROUP_KIND = "model-package-group"
KIND = "model-package"
APPROVED, REJECTED, PENDING = "Approved", "Rejected", "PendingManualApproval"

# <group>/<version>, with or without the ARN prefix; a group name alone, with or without its ARN prefix.
_ARN_PREFIX = re.compile(r"arn:aws[a-z-]*:sagemaker:[a-z0-9-]*:[0-9]{12}:(?P<kind>[a-z-]+)/(?P<rest>.+)")
_VERSIONED = re.compile(r"(?P<group>[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62})/(?P<version>[0-9]{1,9})")

# DescribeModelPackageOutput members echoed from the create request (the wire layer refuses the others).
_DESCRIBED = (
    "ModelPackageDescription",
    "InferenceSpecification",
    "CertifyForMarketplace",
    "MetadataProperties",
    "CustomerMetadataProperties",
    "Domain",
    "Task",
    "SamplePayloadUrl",
    "ApprovalDescription",
)


def _split(name: str, kinds: tuple[str, ...]) -> str:
    """``name`` without an ARN prefix of one of ``kinds`` (an ARN of another kind is not found)."""
    m = _ARN_PREFIX.fullmatch(name)
    if m is None:
        return name
    if m.group("kind") not in kinds:
        raise ValidationException(f"{name} is not the ARN of a model package or a model package group.")
    return m.group("rest")


class ModelPackages:
    def __init__(self, store: Store, arns: Arns, clock: Callable[[], float] = time.time) -> None:
        self.groups = Resources(store, arns, GROUP_KIND, "model package group")
        self._res = Resources(store, arns, KIND, "model package")
        self._store = store
        self._clock = clock

    # ---- groups ----
    def create_group(self, params: Mapping[str, Any]) -> dict[str, Any]:
        name: str = params["ModelPackageGroupName"]
        doc = {k: copy.deepcopy(v) for k, v in params.items() if k != "ModelPackageGroupName"}
        doc.setdefault("Tags", [])
        doc["LastVersion"] = 0
        arn = self.groups.insert(name, doc, self._clock(), status="Completed")
        return {"ModelPackageGroupArn": arn}

    def get_group(self, name_or_arn: str) -> Record:
        return self.groups.get(_split(name_or_arn, (GROUP_KIND,)))

    def describe_group(self, name_or_arn: str) -> dict[str, Any]:
        rec = self.get_group(name_or_arn)
        out = self._group_summary(rec)
        out["CreatedBy"] = {}
        return out

    def list_groups(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return self.groups.page(
            params, ("Name", "CreationTime"), "ModelPackageGroupSummaryList", self._group_summary
        )

    def delete_group(self, name_or_arn: str) -> None:
        rec = self.get_group(name_or_arn)
        if self._versions(rec.name):
            raise ConflictException(
                f'Model package group "{rec.arn}" still has model packages: delete them first.'
            )
        self.groups.delete(rec.name)

    @staticmethod
    def _group_summary(rec: Record) -> dict[str, Any]:
        out: dict[str, Any] = {"ModelPackageGroupName": rec.name, "ModelPackageGroupArn": rec.arn}
        if rec.doc.get("ModelPackageGroupDescription"):
            out["ModelPackageGroupDescription"] = rec.doc["ModelPackageGroupDescription"]
        out["CreationTime"] = rec.created_at
        out["ModelPackageGroupStatus"] = rec.status or "Completed"
        return out

    # ---- packages ----
    def create(
        self, params: Mapping[str, Any], check_container: Callable[[Mapping[str, Any], str], None]
    ) -> dict[str, Any]:
        """A new version in ``ModelPackageGroupName``. ``check_container`` checks each of the inference
        specification's containers as CreateModel would (an image zeroscale can run, its environment)."""
        group_ref = params.get("ModelPackageGroupName")
        if not group_ref:
            raise ValidationException(
                "ModelPackageGroupName is required: zeroscale keeps versioned model packages only "
                "(unversioned and marketplace packages are not supported)."
            )
        spec = params.get("InferenceSpecification")
        if not spec:
            raise ValidationException(
                "InferenceSpecification is required: a model package without containers cannot be deployed."
            )
        for i, container in enumerate(spec.get("Containers") or [], start=1):
            check_container(container, f"InferenceSpecification.Containers.{i}")
        group = self.get_group(group_ref)
        now = self._clock()
        doc = {k: copy.deepcopy(v) for k, v in params.items() if k != "ModelPackageGroupName"}
        doc.setdefault("ModelApprovalStatus", PENDING)
        doc.setdefault("Tags", [])
        token = params.get("ClientToken")
        if token:  # a retried call: the version it made, never a second one
            for rec in self._store.having(KIND, f"{group.name}/", "ClientToken", str(token)):
                # the request's own members, less what UpdateModelPackage may have changed since
                same = all(
                    rec.doc.get(k) == v
                    for k, v in params.items()
                    if k not in ("ModelPackageGroupName", "ModelApprovalStatus", "ApprovalDescription")
                )
                if not same:
                    raise ValidationException(
                        f"ClientToken {token} was used by another CreateModelPackage request (version "
                        f"{rec.doc['ModelPackageVersion']} of group {group.name}), with other parameters."
                    )
                return {"ModelPackageArn": rec.arn}
        while True:  # the next version; another front end taking the same one makes this one try the next
            version = int(group.doc.get("LastVersion") or 0) + 1
            doc["ModelPackageGroupName"] = group.name
            doc["ModelPackageVersion"] = version
            group.doc["LastVersion"] = version
            if not self._store.update(group):
                raise self.groups.missing(group.name)
            try:
                arn = self._res.insert(f"{group.name}/{version}", doc, now, status="Completed")
            except ValidationException:
                group = self.get_group(group.name)
                continue
            return {"ModelPackageArn": arn}

    def get(self, name_or_arn: str) -> Record:
        """A version by its ARN or ``<group>/<version>``; ValidationException naming it when absent."""
        rest = _split(name_or_arn, (KIND,))
        if _VERSIONED.fullmatch(rest) is None and self.groups.find(rest) is None:
            raise self._res.missing(rest)  # neither a version nor a group's name: nothing of that name
        if _VERSIONED.fullmatch(rest) is None:
            raise ValidationException(
                f"Model package {name_or_arn} is not a versioned model package: name it by its ARN "
                "(model-package/<group>/<version>) or as <group>/<version>."
            )
        return self._res.get(rest)

    def describe(self, name_or_arn: str) -> dict[str, Any]:
        rec = self.get(name_or_arn)
        out = self._summary(rec)
        out.update({k: rec.doc[k] for k in _DESCRIBED if rec.doc.get(k) is not None})
        out["ModelPackageStatusDetails"] = {
            "ValidationStatuses": [{"Name": rec.doc["ModelPackageGroupName"], "Status": "NotStarted"}]
        }
        out["CreatedBy"] = {}
        out["LastModifiedTime"] = rec.modified_at
        return out

    def list(self, params: Mapping[str, Any]) -> dict[str, Any]:
        group_ref = params.get("ModelPackageGroupName")
        status = params.get("ModelApprovalStatus")
        group = self.get_group(group_ref).name.lower() if group_ref else None
        # Unversioned by default, as SageMaker's, but a group's versions when a group is named and no type
        kind = params.get("ModelPackageType") or ("Versioned" if group else "Unversioned")
        if kind == "Unversioned":
            records: builtins.list[Record] = []  # every package zeroscale keeps is versioned
        else:
            records = [
                r
                for r in self._store.list(KIND)
                if (group is None or r.doc["ModelPackageGroupName"].lower() == group)
                and (status is None or r.doc.get("ModelApprovalStatus") == status)
            ]
        return _page(records, params, self._summary)

    def update(self, params: Mapping[str, Any]) -> dict[str, Any]:
        rec = self.get(params["ModelPackageArn"])
        for key in ("ModelApprovalStatus", "ApprovalDescription"):
            if params.get(key) is not None:
                rec.doc[key] = params[key]
        rec.modified_at = self._clock()
        if not self._store.update(rec):
            raise self._res.missing(rec.name)
        return {"ModelPackageArn": rec.arn}

    def delete(self, name_or_arn: str) -> None:
        self._res.delete(self.get(name_or_arn).name)

    def _versions(self, group: str) -> builtins.list[Record]:
        return [r for r in self._store.list(KIND) if r.doc["ModelPackageGroupName"].lower() == group.lower()]

    @staticmethod
    def _summary(rec: Record) -> dict[str, Any]:
        doc = rec.doc
        out: dict[str, Any] = {
            "ModelPackageName": doc["ModelPackageGroupName"],
            "ModelPackageGroupName": doc["ModelPackageGroupName"],
            "ModelPackageVersion": doc["ModelPackageVersion"],
            "ModelPackageArn": rec.arn,
            "CreationTime": rec.created_at,
            "ModelPackageStatus": rec.status or "Completed",
            "ModelApprovalStatus": doc.get("ModelApprovalStatus", PENDING),
        }
        if doc.get("ModelPackageDescription"):
            out["ModelPackageDescription"] = doc["ModelPackageDescription"]
        return out

    # ---- deploying one ----
    def resolve(self, name_or_arn: str) -> Record:
        """The version CreateModel deploys for ``ModelPackageName``: the version named, or the latest
        Approved version of the group named. A Rejected version, or a group with no Approved version, is a
        ValidationException naming it."""
        m = _ARN_PREFIX.fullmatch(name_or_arn)
        rest = m.group("rest") if m is not None else name_or_arn
        if (m is not None and m.group("kind") == GROUP_KIND) or _VERSIONED.fullmatch(rest) is None:
            group = self.get_group(name_or_arn)
            approved = [r for r in self._versions(group.name) if r.doc.get("ModelApprovalStatus") == APPROVED]
            if not approved:
                raise ValidationException(
                    f'Model package group "{group.name}" has no Approved model package to deploy.'
                )
            latest: Record = max(approved, key=lambda r: int(r.doc["ModelPackageVersion"]))
            return latest
        rec = self.get(name_or_arn)
        if rec.doc.get("ModelApprovalStatus") == REJECTED:
            raise ValidationException(
                f'Model package "{rec.arn}" is Rejected (ModelApprovalStatus) and cannot be deployed.'
            )
        return rec


def _page(
    records: list[Record], params: Mapping[str, Any], summary: Callable[[Record], Any]
) -> dict[str, Any]:
    page, token = paginate(records, params, scope=KIND, sort_keys=("Name", "CreationTime"))
    out: dict[str, Any] = {"ModelPackageSummaryList": [summary(r) for r in page]}
    if token is not None:
        out["NextToken"] = token
    return out
