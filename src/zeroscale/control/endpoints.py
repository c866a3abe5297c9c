"""Endpoints: Create/Describe/List/Update/DeleteEndpoint and the state machine behind them.

Creating -> InService | Failed; InService -> Updating -> InService (the old configuration keeps serving
until the new one is warm; a failed update leaves it serving and says why in FailureReason);
any -> Deleting -> gone.
Deploy work runs in background tasks; the store is written at each transition, so a restarted server resumes.
CreateEndpoint and UpdateEndpoint wait up to ``settle_s`` (2 s) for their deployment before they answer, so
a quick one (a warm runtime, a small model) is already InService at the caller's first DescribeEndpoint:
botocore's ``endpoint_in_service`` waiter polls every 30 s. A longer one goes on in the background.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from zeroscale.background import Background
from zeroscale.control.arns import Arns
from zeroscale.control.capacity import capacity_overrides, with_overrides
from zeroscale.control.deploy import Deployer, primary_container
from zeroscale.control.endpoint_configs import EndpointConfigs, variant_specs
from zeroscale.control.models import Models
from zeroscale.control.resources import Resources
from zeroscale.errors import DeployError, ValidationException
from zeroscale.router.fleet import Fleet
from zeroscale.router.spec import PoolSpec
from zeroscale.store.db import Record, Store
from zeroscale.types import EndpointStatus

KIND = "endpoint"
log = logging.getLogger("zeroscale.endpoints")
_FAILURE_REASON_MAX = 1024
SETTLE_S = 2.0


class Endpoints:
    def __init__(
        self,
        store: Store,
        arns: Arns,
        models: Models,
        configs: EndpointConfigs,
        deployer: Deployer,
        fleet: Fleet,
        clock: Callable[[], float] = time.time,
        settle_s: float = SETTLE_S,
    ) -> None:
        """``settle_s``: how long CreateEndpoint and UpdateEndpoint wait for their deployment."""
        self._res = Resources(store, arns, KIND, "endpoint")
        self._store = store
        self._models = models
        self._configs = configs
        self._deployer = deployer
        self._fleet = fleet
        self._clock = clock
        self._settle_s = settle_s
        self._background = Background("endpoint")
        # the latest deploy or delete of each endpoint (lower-cased name), which a delete cancels
        self._latest: dict[str, asyncio.Task[Any]] = {}
        # Called with the endpoint's name after it starts serving a configuration or is deleted.
        self.listeners: builtins.list[Callable[[str], None]] = []

    def get(self, name: str) -> Record:
        return self._res.get(name)

    def _save(self, rec: Record, status: EndpointStatus, **doc: Any) -> None:
        rec.status = status.value
        rec.modified_at = self._clock()
        for key, value in doc.items():
            if value is None:
                rec.doc.pop(key, None)
            else:
                rec.doc[key] = value
        self._store.update(rec)

    # ---- operations ----
    async def create(self, params: Mapping[str, Any]) -> dict[str, Any]:
        name: str = params["EndpointName"]
        config = self._configs.get(params["EndpointConfigName"])
        doc = {"EndpointConfigName": config.name, "Tags": list(params.get("Tags") or [])}
        arn = self._res.insert(name, doc, self._clock(), EndpointStatus.CREATING.value)
        await self._settle(self._run(name, self._deploy(name, config.name, updating=False)))
        return {"EndpointArn": arn}

    async def update(self, params: Mapping[str, Any]) -> dict[str, Any]:
        rec = self.get(params["EndpointName"])
        if rec.status != EndpointStatus.IN_SERVICE.value:
            raise ValidationException(
                f'Cannot update in-progress endpoint "{rec.arn}". Wait until it is InService.'
            )
        config = self._configs.get(params["EndpointConfigName"])
        # A new configuration brings its own weights and capacities (RetainAllVariantProperties false).
        self._save(rec, EndpointStatus.UPDATING, FailureReason=None, VariantOverrides=None)
        await self._settle(self._run(rec.name, self._deploy(rec.name, config.name, updating=True)))
        return {"EndpointArn": rec.arn}

    async def update_weights_and_capacities(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """New weights, instance counts and serverless capacities for some variants, same models: Desired*
        changes now, Current* once the change is applied (status Updating, then InService)."""
        rec = self.get(params["EndpointName"])
        if rec.status != EndpointStatus.IN_SERVICE.value:
            raise ValidationException(
                f'Cannot update in-progress endpoint "{rec.arn}". Wait until it is InService.'
            )
        described = {v["VariantName"]: v for v in rec.doc.get("ProductionVariants") or []}
        overrides = capacity_overrides(
            described, dict(rec.doc.get("VariantOverrides") or {}), params["DesiredWeightsAndCapacities"]
        )
        now = self._clock()
        for name, o in overrides.items():
            variant = described[name]
            variant["DesiredWeight"] = o["weight"]
            if "instance_count" in o:
                variant["DesiredInstanceCount"] = o["instance_count"]
            if "max_concurrency" in o:
                variant["DesiredServerlessConfig"] = _serverless_config(
                    variant["DesiredServerlessConfig"]["MemorySizeInMB"],
                    o["max_concurrency"],
                    o["provisioned"],
                )
            variant["VariantStatus"] = [{"Status": "Updating", "StartTime": now}]
        self._save(
            rec,
            EndpointStatus.UPDATING,
            FailureReason=None,
            VariantOverrides=overrides,
            ProductionVariants=list(described.values()),
        )
        await self._settle(self._run(rec.name, self._apply_overrides(rec.name, overrides)))
        return {"EndpointArn": rec.arn}

    def delete(self, name: str) -> None:
        rec = self.get(name)
        self._save(rec, EndpointStatus.DELETING)
        previous = self._latest.pop(rec.name.lower(), None)
        if previous is not None:
            previous.cancel()
        self._run(rec.name, self._delete(rec))

    def describe(self, name: str) -> dict[str, Any]:
        rec = self.get(name)
        out: dict[str, Any] = {
            "EndpointName": rec.name,
            "EndpointArn": rec.arn,
            "EndpointConfigName": rec.doc["EndpointConfigName"],
            "EndpointStatus": rec.status,
            "CreationTime": rec.created_at,
            "LastModifiedTime": rec.modified_at,
        }
        if rec.doc.get("ProductionVariants"):
            out["ProductionVariants"] = rec.doc["ProductionVariants"]
        if rec.doc.get("ShadowProductionVariants"):
            out["ShadowProductionVariants"] = rec.doc["ShadowProductionVariants"]
        if rec.doc.get("AsyncInferenceConfig"):
            out["AsyncInferenceConfig"] = rec.doc["AsyncInferenceConfig"]
        if rec.doc.get("FailureReason"):
            out["FailureReason"] = rec.doc["FailureReason"]
        return out

    def list(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return self._res.page(
            params,
            ("Name", "CreationTime", "Status"),
            "Endpoints",
            lambda r: {
                "EndpointName": r.name,
                "EndpointArn": r.arn,
                "CreationTime": r.created_at,
                "LastModifiedTime": r.modified_at,
                "EndpointStatus": r.status,
            },
        )

    # ---- background work ----
    def _run(self, name: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[Any]:
        task = self._background.spawn(coro)
        self._latest[name.lower()] = task
        return task

    async def _settle(self, task: asyncio.Task[Any]) -> None:
        """Wait up to ``settle_s`` for ``task``, which goes on regardless (it is not cancelled)."""
        await asyncio.wait({task}, timeout=self._settle_s)

    async def _deploy(self, name: str, config_name: str, *, updating: bool, warm: bool = True) -> None:
        try:
            config = self._configs.get(config_name)
            specs = await self._deployer.pool_specs(name, config)
            stored = self._store.get(KIND, name)
            overrides = (stored.doc.get("VariantOverrides") or {}) if stored is not None else {}
            specs = [with_overrides(spec, overrides.get(spec.variant)) for spec in specs]
            await self._fleet.activate(name, specs, warm=warm)
        except (DeployError, ValidationException) as exc:
            reason = _reason(exc)
            rec = self._store.get(KIND, name)
            if rec is None or rec.status == EndpointStatus.DELETING.value:
                return
            log.warning("endpoint %s: %s", name, reason)
            status = EndpointStatus.IN_SERVICE if updating else EndpointStatus.FAILED
            self._save(rec, status, FailureReason=reason)
            return
        rec = self._store.get(KIND, name)
        if rec is None or rec.status == EndpointStatus.DELETING.value:
            await self._fleet.deactivate(name)
            return
        self._save(
            rec,
            EndpointStatus.IN_SERVICE,
            EndpointConfigName=config.name,
            ProductionVariants=self._described_variants(config, specs, shadow=False),
            ShadowProductionVariants=self._described_variants(config, specs, shadow=True) or None,
            AsyncInferenceConfig=config.doc.get("AsyncInferenceConfig"),
            FailureReason=None,
        )
        self._tell(name)

    def _tell(self, name: str) -> None:
        for listener in self.listeners:
            try:
                listener(name)
            except Exception:
                log.exception("endpoint listener failed for %s", name)

    def _described_variants(
        self, config: Record, specs: builtins.list[PoolSpec], *, shadow: bool
    ) -> builtins.list[dict[str, Any]]:
        now = self._clock()
        out: builtins.list[dict[str, Any]] = []
        for variant, spec in zip(variant_specs(config.doc), specs, strict=True):
            if variant.shadow != shadow:
                continue
            image = str(primary_container(self._models.get(variant.model_name)).get("Image", ""))
            desc: dict[str, Any] = {
                "VariantName": variant.name,
                "DeployedImages": [
                    {
                        "SpecifiedImage": image,
                        "ResolvedImage": f"zeroscale/{spec.runtime}",
                        "ResolutionTime": now,
                    }
                ],
            }
            desc.update(_current_and_desired(spec))
            out.append(desc)
        return out

    async def _apply_overrides(self, name: str, overrides: Mapping[str, Mapping[str, Any]]) -> None:
        route = self._fleet.route(name)
        rec = self._store.get(KIND, name)
        if route is None or rec is None or rec.status == EndpointStatus.DELETING.value:
            return
        specs = {p.spec.variant: with_overrides(p.spec, overrides.get(p.spec.variant)) for p in route.pools}
        try:
            await self._fleet.adjust(name, specs, timeout_s=self._settle_s + 30.0)
        except DeployError as exc:
            self._save(rec, EndpointStatus.IN_SERVICE, FailureReason=_reason(exc))
            return
        rec = self._store.get(KIND, name)
        if rec is None or rec.status == EndpointStatus.DELETING.value:
            return
        variants = []
        for desc in rec.doc.get("ProductionVariants") or []:
            spec = specs.get(desc["VariantName"])
            desc = {k: v for k, v in desc.items() if k != "VariantStatus"}
            if spec is not None:
                desc.update(_current_and_desired(spec))
            variants.append(desc)
        self._save(rec, EndpointStatus.IN_SERVICE, ProductionVariants=variants)

    async def _delete(self, rec: Record) -> None:
        try:
            await self._fleet.deactivate(rec.name)
        finally:
            self._store.delete(KIND, rec.name)
            self._tell(rec.name)

    # ---- restart ----
    async def resume(self, timeout_s: float = 60.0) -> None:
        """Bring every stored endpoint back after a restart, starting no worker it does not need.

        Returns once every InService endpoint routes again (or ``timeout_s`` passed), so the server never
        answers DescribeEndpoint "InService" for an endpoint whose invocations it cannot route yet."""
        serving: builtins.list[asyncio.Task[Any]] = []
        for rec in self._store.list(KIND):
            status = rec.status
            if status == EndpointStatus.DELETING.value:
                self._run(rec.name, self._delete(rec))
            elif status == EndpointStatus.CREATING.value:
                self._run(rec.name, self._deploy(rec.name, rec.doc["EndpointConfigName"], updating=False))
            elif status in (EndpointStatus.IN_SERVICE.value, EndpointStatus.UPDATING.value):
                if status == EndpointStatus.UPDATING.value:
                    self._save(rec, EndpointStatus.IN_SERVICE)
                serving.append(
                    self._run(
                        rec.name,
                        self._deploy(rec.name, rec.doc["EndpointConfigName"], updating=True, warm=False),
                    )
                )
        if serving:
            await asyncio.wait(serving, timeout=timeout_s)

    async def close(self) -> None:
        self._latest.clear()
        await self._background.cancel()


def _serverless_config(memory_mb: int, max_concurrency: int, provisioned: int) -> dict[str, Any]:
    sc: dict[str, Any] = {"MemorySizeInMB": memory_mb, "MaxConcurrency": max_concurrency}
    if provisioned:
        sc["ProvisionedConcurrency"] = provisioned
    return sc


def _current_and_desired(spec: PoolSpec) -> dict[str, Any]:
    """A variant's Current* and Desired* members once its pool serves ``spec``."""
    out: dict[str, Any] = {"CurrentWeight": spec.weight, "DesiredWeight": spec.weight}
    if spec.real_time:
        out["CurrentInstanceCount"] = out["DesiredInstanceCount"] = spec.instance_count
    else:
        sc = _serverless_config(spec.memory_mb, spec.max_concurrency, spec.provisioned)
        out["CurrentServerlessConfig"] = out["DesiredServerlessConfig"] = sc
    return out


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc)
    if len(text) > _FAILURE_REASON_MAX:
        text = text[: _FAILURE_REASON_MAX // 4] + "\n...\n" + text[-(_FAILURE_REASON_MAX * 3 // 4) :]
    return text
