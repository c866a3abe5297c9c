"""Endpoint configurations: Create/Describe/List/DeleteEndpointConfig, plus a typed view of the variants.

Wire-shaped (PascalCase) dicts stop at this module: the runtime reads ``variant_specs`` and
``idle_timeout_override`` instead of the document.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from zeroscale.control.arns import Arns
from zeroscale.control.async_config import check_async_config
from zeroscale.control.instances import instance_size
from zeroscale.control.models import Models
from zeroscale.control.resources import Resources
from zeroscale.errors import ValidationException
from zeroscale.store.db import Record, Store
from zeroscale.types import SERVERLESS_MEMORY_SIZES_MB

KIND = "endpoint-config"
IDLE_TIMEOUT_TAG = "zeroscale:idle-timeout-s"
MAX_CONCURRENCY = 200

# DescribeEndpointConfigOutput members echoed from the create request (the wire layer refuses the others).
_DESCRIBED = (
    "ProductionVariants",
    "ShadowProductionVariants",
    "ExecutionRoleArn",
    "EnableNetworkIsolation",
    "AsyncInferenceConfig",
)


@dataclass(frozen=True)
class ServerlessSpec:
    memory_mb: int
    max_concurrency: int
    provisioned_concurrency: int  # 0 when unset


@dataclass(frozen=True)
class VariantSpec:
    name: str
    model_name: str
    weight: float
    serverless: ServerlessSpec | None
    instance_type: str | None
    instance_count: int  # InitialInstanceCount (default 1) for instance variants, 0 for serverless
    shadow: bool = False  # a shadow variant: a copy of the production variant's traffic, answers discarded


def variant_specs(doc: Mapping[str, Any]) -> list[VariantSpec]:
    """The production variants of a stored endpoint-config document in their given order, then its shadow
    variants."""
    specs = []
    tagged = [(v, False) for v in doc["ProductionVariants"]]
    tagged += [(v, True) for v in doc.get("ShadowProductionVariants") or []]
    for v, shadow in tagged:
        sc = v.get("ServerlessConfig")
        serverless = (
            ServerlessSpec(
                memory_mb=int(sc["MemorySizeInMB"]),
                max_concurrency=int(sc["MaxConcurrency"]),
                provisioned_concurrency=int(sc.get("ProvisionedConcurrency") or 0),
            )
            if sc is not None
            else None
        )
        specs.append(
            VariantSpec(
                name=v["VariantName"],
                model_name=v["ModelName"],
                weight=float(v.get("InitialVariantWeight", 1.0)),
                serverless=serverless,
                instance_type=v.get("InstanceType"),
                instance_count=0 if serverless else int(v.get("InitialInstanceCount") or 1),
                shadow=shadow,
            )
        )
    return specs


def shadow_sampling(variants: list[VariantSpec]) -> dict[str, float]:
    """The share of the production traffic each shadow variant gets a copy of: its weight over the
    production variant's (SageMaker's rule: one production variant beside shadows), at most 1."""
    production = [v for v in variants if not v.shadow]
    base = production[0].weight if len(production) == 1 else 0.0
    return {v.name: min(1.0, v.weight / base) if base > 0 else 0.0 for v in variants if v.shadow}


def idle_timeout_override(doc: Mapping[str, Any]) -> float | None:
    """Seconds from the ``zeroscale:idle-timeout-s`` tag, or None; ValidationException if not positive."""
    value: Any = None
    for tag in doc.get("Tags") or []:
        if tag.get("Key") == IDLE_TIMEOUT_TAG:
            value = tag.get("Value")
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValidationException(
            f"Value '{value}' of tag '{IDLE_TIMEOUT_TAG}' failed to satisfy constraint: "
            "Member must be a positive number of seconds"
        )
    return seconds


def _range_error(value: Any, field: str, bound: str) -> ValidationException:
    return ValidationException(
        f"Value '{value}' at '{field}' failed to satisfy constraint: Member must have value {bound}"
    )


def _check_serverless(sc: Mapping[str, Any], variant: str) -> None:
    memory = sc.get("MemorySizeInMB")
    if memory not in SERVERLESS_MEMORY_SIZES_MB:
        sizes = ", ".join(str(s) for s in SERVERLESS_MEMORY_SIZES_MB)
        raise ValidationException(
            f"Value '{memory}' at 'MemorySizeInMB' failed to satisfy constraint: "
            f"Member must satisfy enum value set: [{sizes}]"
        )
    for field in ("MaxConcurrency", "ProvisionedConcurrency"):
        value = sc.get(field)
        if value is None and field == "ProvisionedConcurrency":
            continue
        if not isinstance(value, int) or value < 1:
            raise _range_error(value, field, "greater than or equal to 1")
        if value > MAX_CONCURRENCY:
            raise _range_error(value, field, f"less than or equal to {MAX_CONCURRENCY}")
    provisioned = sc.get("ProvisionedConcurrency")
    if provisioned is not None and provisioned > sc["MaxConcurrency"]:
        raise ValidationException(
            f'ProvisionedConcurrency ({provisioned}) of production variant "{variant}" must be less than '
            f"or equal to its MaxConcurrency ({sc['MaxConcurrency']})."
        )


class EndpointConfigs:
    def __init__(
        self, store: Store, arns: Arns, models: Models, clock: Callable[[], float] = time.time
    ) -> None:
        self._res = Resources(store, arns, KIND, "endpoint configuration")
        self._models = models
        self._clock = clock

    def _check_variants(self, variants: list[dict[str, Any]], shadows: list[dict[str, Any]]) -> None:
        if shadows and (len(variants) != 1 or len(shadows) != 1):
            raise ValidationException(
                "An endpoint configuration with ShadowProductionVariants must have exactly one production "
                f"variant and one shadow variant; {len(variants)} and {len(shadows)} were given."
            )
        seen: set[str] = set()
        for v in variants + shadows:
            name = v["VariantName"]
            if name.lower() in seen:
                raise ValidationException(
                    f'Production variant names must be unique within an endpoint configuration; "{name}" '
                    "appears more than once."
                )
            seen.add(name.lower())
            if not v.get("ModelName"):
                raise ValidationException(f'Production variant "{name}" must specify a ModelName.')
            self._models.get(v["ModelName"])
            has_instance = v.get("InstanceType") is not None
            serverless = v.get("ServerlessConfig")
            if has_instance and serverless is not None:
                raise ValidationException(
                    f'Production variant "{name}" specifies both InstanceType and ServerlessConfig; '
                    "specify exactly one."
                )
            if not has_instance and serverless is None:
                raise ValidationException(
                    f'Production variant "{name}" must specify either InstanceType or ServerlessConfig.'
                )
            if serverless is not None:
                if v.get("InitialInstanceCount") is not None:
                    raise ValidationException(
                        f'Production variant "{name}" is serverless (ServerlessConfig): '
                        "InitialInstanceCount is for instance variants (InstanceType); leave it out."
                    )
                _check_serverless(serverless, name)
            else:
                instance_size(v["InstanceType"], name)
        if shadows and float(shadows[0].get("InitialVariantWeight", 1.0)) <= 0:
            raise ValidationException(
                f'Shadow variant "{shadows[0]["VariantName"]}" needs an InitialVariantWeight greater than 0: '
                "its share of the production traffic is its weight over the production variant's."
            )
        weights = [float(v.get("InitialVariantWeight", 1.0)) for v in variants]
        if sum(weights) <= 0:
            raise ValidationException(
                "The sum of InitialVariantWeight over the production variants must be greater than 0: "
                "no variant would get traffic."
            )
        variants = variants + shadows
        n_serverless = sum(1 for v in variants if v.get("ServerlessConfig") is not None)
        if 0 < n_serverless < len(variants):
            raise ValidationException(
                "An endpoint configuration cannot mix serverless production variants (ServerlessConfig) "
                "with instance-based ones (InstanceType)."
            )
        if n_serverless > 1 + len(shadows):
            raise ValidationException(
                "A serverless endpoint configuration supports only one production variant; "
                f"{n_serverless} were given."
            )

    def create(self, params: Mapping[str, Any]) -> dict[str, Any]:
        name: str = params["EndpointConfigName"]
        if self._res.find(name) is not None:
            raise self._res.duplicate(name)
        doc = copy.deepcopy(dict(params))
        variants: list[dict[str, Any]] = doc["ProductionVariants"]
        shadows: list[dict[str, Any]] = doc.get("ShadowProductionVariants") or []
        self._check_variants(variants, shadows)
        check_async_config(doc.get("AsyncInferenceConfig"))
        for v in variants + shadows:
            v["InitialVariantWeight"] = float(v.get("InitialVariantWeight", 1.0))
        doc.setdefault("Tags", [])
        idle_timeout_override(doc)
        return {"EndpointConfigArn": self._res.insert(name, doc, self._clock())}

    def get(self, name: str) -> Record:
        """The stored config; ValidationException ``Could not find endpoint configuration "<arn>".``."""
        return self._res.get(name)

    def describe(self, name: str) -> dict[str, Any]:
        rec = self.get(name)
        out: dict[str, Any] = {"EndpointConfigName": rec.name, "EndpointConfigArn": rec.arn}
        out.update({k: rec.doc[k] for k in _DESCRIBED if rec.doc.get(k) is not None})
        out["CreationTime"] = rec.created_at
        return out

    def list(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return self._res.page(
            params,
            ("Name", "CreationTime"),
            "EndpointConfigs",
            lambda r: {
                "EndpointConfigName": r.name,
                "EndpointConfigArn": r.arn,
                "CreationTime": r.created_at,
            },
            documents=False,
        )

    def delete(self, name: str) -> None:
        self._res.delete(name)
