"""UpdateEndpointWeightsAndCapacities: validating the desired weights and capacities, and laying them over a
variant's pool spec.

An override is kept per variant in the endpoint's record (``VariantOverrides``), as absolute values, so a
restart serves the endpoint as it was last adjusted; an UpdateEndpoint to a configuration drops them (the
new configuration brings its own, as SageMaker does without RetainAllVariantProperties), or, with
RetainAllVariantProperties, makes the variants it keeps an override of what they had (``retained``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from zeroscale.control.endpoint_configs import MAX_CONCURRENCY, variant_specs
from zeroscale.control.instances import instance_size
from zeroscale.errors import ValidationException
from zeroscale.router.spec import PoolSpec

Override = dict[str, Any]  # weight, and instance_count or max_concurrency + provisioned


def capacity_overrides(
    described: Mapping[str, Mapping[str, Any]],
    current: Mapping[str, Override],
    desired: Sequence[Mapping[str, Any]],
) -> dict[str, Override]:
    """``described``: the endpoint's ProductionVariants by name (DescribeEndpoint's shape); ``current``: the
    overrides in force; ``desired``: DesiredWeightsAndCapacities. Returns every override after the call;
    ValidationException naming the variant and member for anything SageMaker would refuse."""
    names = [d["VariantName"] for d in desired]
    unknown = [n for n in names if n not in described]
    if unknown:
        raise ValidationException(
            f"The variant(s) [{', '.join(unknown)}] are not present in the endpoint: it has "
            f"[{', '.join(described)}]."
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValidationException(f"The variant(s) [{', '.join(repeated)}] appear more than once.")
    out = {name: dict(o) for name, o in current.items()}
    for d in desired:
        name = d["VariantName"]
        variant = described[name]
        o = out.setdefault(name, {})
        o.setdefault("weight", float(variant["DesiredWeight"]))
        given = [k for k in ("DesiredWeight", "DesiredInstanceCount", "ServerlessUpdateConfig") if k in d]
        if not given:
            raise ValidationException(
                f"Variant {name}: give at least one of DesiredWeight, DesiredInstanceCount or "
                "ServerlessUpdateConfig."
            )
        if "DesiredWeight" in d:
            o["weight"] = float(d["DesiredWeight"])
        serverless = variant.get("DesiredServerlessConfig")
        if "DesiredInstanceCount" in d:
            if serverless is not None:
                raise ValidationException(
                    f"Variant {name} is serverless: change its capacity with ServerlessUpdateConfig, "
                    "not DesiredInstanceCount."
                )
            # 0 is allowed (SageMaker refuses it): the variant keeps no instance warm and starts one
            # instance's workers on demand, as a serverless variant does
            o["instance_count"] = int(d["DesiredInstanceCount"])
        if "ServerlessUpdateConfig" in d:
            if serverless is None:
                raise ValidationException(
                    f"Variant {name} runs on instances: change its capacity with DesiredInstanceCount, "
                    "not ServerlessUpdateConfig."
                )
            update = d["ServerlessUpdateConfig"]
            max_c = int(update.get("MaxConcurrency", serverless["MaxConcurrency"]))
            provisioned = int(
                update.get("ProvisionedConcurrency", serverless.get("ProvisionedConcurrency", 0))
            )
            if not 1 <= max_c <= MAX_CONCURRENCY:
                raise ValidationException(
                    f"MaxConcurrency {max_c} of variant {name} must be from 1 to {MAX_CONCURRENCY}."
                )
            if provisioned > max_c:
                raise ValidationException(
                    f"ProvisionedConcurrency ({provisioned}) of variant {name} must be less than or equal "
                    f"to its MaxConcurrency ({max_c})."
                )
            o["max_concurrency"], o["provisioned"] = max_c, provisioned
    weights = {name: float(v["DesiredWeight"]) for name, v in described.items()}
    weights.update({name: o["weight"] for name, o in out.items()})
    if sum(weights.values()) <= 0:
        raise ValidationException("The desired weights add up to 0: no variant would get traffic.")
    return out


# What RetainAllVariantProperties keeps of a variant the new configuration has too (VariantPropertyType's
# values; DataCaptureConfig is not served, so there is nothing of it to keep). A serverless variant's
# capacity is none of them: it comes from the new configuration.
RETAINED = ("DesiredWeight", "DesiredInstanceCount")


def retained(
    described: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]], excluded: Collection[str]
) -> dict[str, Override]:
    """UpdateEndpoint with RetainAllVariantProperties: for each variant of the ``new`` configuration that
    the endpoint has now (``described``: DescribeEndpoint's ProductionVariants), its weight and, on
    instances both before and after, its instance count as they are now (set by
    UpdateEndpointWeightsAndCapacities or autoscaling), less the ``excluded`` properties, which the new
    configuration gives."""
    now = {v["VariantName"]: v for v in described}
    out: dict[str, Override] = {}
    for variant in new:
        was = now.get(variant["VariantName"])
        if was is None:
            continue
        o: Override = {}
        weight = was.get("DesiredWeight", was.get("CurrentWeight"))
        if "DesiredWeight" not in excluded and weight is not None:
            o["weight"] = float(weight)
        count = was.get("DesiredInstanceCount", was.get("CurrentInstanceCount"))
        if "DesiredInstanceCount" not in excluded and variant.get("InstanceType") and count is not None:
            o["instance_count"] = int(count)
        if o:
            out[variant["VariantName"]] = o
    return out


def with_overrides(spec: PoolSpec, override: Mapping[str, Any] | None) -> PoolSpec:
    """``spec`` with a variant's override laid over it (the same model and memory size)."""
    if not override:
        return spec
    changes: dict[str, Any] = {"weight": float(override.get("weight", spec.weight))}
    if spec.real_time and "instance_count" in override:
        count = int(override["instance_count"])
        changes["instance_count"] = count
        changes["max_concurrency"] = changes["provisioned"] = count * spec.workers_per_instance
        if count == 0:  # scaled to zero: one instance's workers on demand, none kept warm
            changes["max_concurrency"] = spec.workers_per_instance
    elif not spec.real_time and "max_concurrency" in override:
        changes["max_concurrency"] = int(override["max_concurrency"])
        changes["provisioned"] = int(override["provisioned"])
    return dataclasses.replace(spec, **changes)


def warm_mb(config_doc: Mapping[str, Any], overrides: Mapping[str, Mapping[str, Any]] | None = None) -> int:
    """The memory a deployment of ``config_doc`` keeps warm whatever its traffic, with ``overrides`` in force:
    each instance variant's instances x the instance's memory, each serverless variant's
    ProvisionedConcurrency x MemorySizeInMB (shadow variants too)."""
    total = 0
    for v in variant_specs(config_doc):
        override = (overrides or {}).get(v.name) or {}
        if v.serverless is None:
            size = instance_size(v.instance_type or "", v.name)
            total += int(override.get("instance_count", v.instance_count)) * size.memory_mb
        else:
            provisioned = override.get("provisioned", v.serverless.provisioned_concurrency)
            total += int(provisioned) * v.serverless.memory_mb
    return total
