"""Endpoints: Create/Describe/List/Update/DeleteEndpoint and the state machine behind them.

Creating -> InService | Failed; InService -> Updating -> InService (the old configuration keeps serving
until the new one is warm; a failed update leaves it serving and says why in FailureReason);
any -> Deleting -> gone.
Deploy work runs in background tasks; the store is written at each transition, so a restarted server resumes.
CreateEndpoint and UpdateEndpoint wait up to ``settle_s`` (2 s) for their deployment before they answer, so
a quick one (a warm runtime, a small model) is already InService at the caller's first DescribeEndpoint:
botocore's ``endpoint_in_service`` waiter polls every 30 s. A longer one goes on in the background.

Several front ends on one database: the one that accepted a transition owns it (``owner``); ``sync`` makes
every other front end serve what the store says (activate a deployment it did not make, deactivate a
deleted endpoint) and take over the transitions of front ends that died (see control/cluster.py).
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from zeroscale.background import Background
from zeroscale.control import rollout
from zeroscale.control.arns import Arns
from zeroscale.control.capacity import capacity_overrides, retained, warm_mb, with_overrides
from zeroscale.control.deploy import Deployer
from zeroscale.control.endpoint_configs import KIND as CONFIG_KIND
from zeroscale.control.endpoint_configs import EndpointConfigs, variant_specs
from zeroscale.control.guarded import Guard
from zeroscale.control.models import Models, runnable_containers
from zeroscale.control.resources import Resources
from zeroscale.errors import DeployError, ResourceLimitExceeded, ValidationException, ZeroscaleError
from zeroscale.router.fleet import Fleet
from zeroscale.router.spec import PoolSpec
from zeroscale.store.db import Quota, Reads, Record, Store
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
        *,
        frontend: str | None = None,
        limit: Callable[[builtins.list[PoolSpec]], builtins.list[PoolSpec]] = lambda specs: specs,
        guard: Guard | None = None,
        creator: Callable[[], str] = lambda: "",
        warm_mb_per_user: int = 0,
        running: Callable[[str], Mapping[str, int]] | None = None,
    ) -> None:
        """``settle_s``: how long CreateEndpoint and UpdateEndpoint wait for their deployment; ``frontend``:
        this front end's id, the owner of the transitions it runs; ``limit``: this front end's share of each
        variant's concurrency (all of it by default); ``creator``: the IAM user id a request is for ("" for
        the admin); ``warm_mb_per_user``: the most memory one IAM user's endpoints may keep warm (instances
        and ProvisionedConcurrency; 0: no limit); ``running``: the always-warm workers of each variant of an
        endpoint that are up now, every front end's (as metered), which an instance variant's
        CurrentInstanceCount counts (None: it says the desired count)."""
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
        self.frontend = frontend
        self._limit = limit
        self._guard = guard  # runs deployments with a DeploymentConfig (None: refused)
        self._creator = creator
        self._warm_mb_per_user = warm_mb_per_user
        self._workers_up = running
        # What this front end routes: lower-cased name -> the deployment (see _deployment), and each
        # variant's spec with the whole of its concurrency (the pools have this front end's share)
        self._active: dict[str, str] = {}
        # Endpoints whose stored deployment this front end could not serve (its model could not be fetched,
        # say): why, and when it was last tried. An invocation says so, and tries again now and then.
        self._unservable: dict[str, tuple[str, float]] = {}
        self._full_specs: dict[str, dict[str, PoolSpec]] = {}
        # Called with the endpoint's name and record after it starts serving a configuration (the record
        # it serves), or stops serving here (None: deleted, or no longer serving).
        self.listeners: builtins.list[Callable[[str, Record | None], None]] = []

    def get(self, name: str) -> Record:
        return self._res.get(name)

    def _save(
        self,
        rec: Record,
        status: EndpointStatus,
        *,
        expect: EndpointStatus | None = None,
        quota: Quota | None = None,
        **doc: Any,
    ) -> bool:
        """Write ``rec`` at ``status`` with these ``doc`` changes; with ``expect``, only if the stored status
        still is that one (another front end may have changed it): True when written. ``quota``: checked
        in the write's transaction (its error: nothing written)."""
        rec.status = status.value
        rec.modified_at = self._clock()
        for key, value in doc.items():
            if value is None:
                rec.doc.pop(key, None)
            else:
                rec.doc[key] = value
        return self._store.update(rec, if_status=None if expect is None else expect.value, quota=quota)

    # ---- operations ----
    async def create(self, params: Mapping[str, Any]) -> dict[str, Any]:
        name: str = params["EndpointName"]
        config = self._configs.get(params["EndpointConfigName"])
        doc: dict[str, Any] = {"EndpointConfigName": config.name, "Tags": list(params.get("Tags") or [])}
        deployment = params.get("DeploymentConfig")
        if deployment:
            self._plan(deployment, config)  # checked now; used by updates that retain it
            doc[DEPLOYMENT_CONFIG] = dict(deployment)
        quota = self._warm_quota(self._creator(), name, config.doc, None)
        arn = self._res.insert(
            name, doc, self._clock(), EndpointStatus.CREATING.value, owner=self.frontend, quota=quota
        )
        deploy = self._deploy(name, config.name, updating=False, config=config, overrides={})
        await self._settle(self._run(name, deploy))
        return {"EndpointArn": arn}

    def _updatable(self, name: str) -> Record:
        """The endpoint, if it is InService: an update of a Failed one is refused for good (only its
        deletion is), one in progress until it is done."""
        rec = self.get(name)
        if rec.status == EndpointStatus.FAILED.value:
            raise ValidationException(
                f'Cannot update failed endpoint "{rec.arn}": delete it (DeleteEndpoint) and create it again.'
            )
        if rec.status != EndpointStatus.IN_SERVICE.value:
            raise ValidationException(
                f'Cannot update in-progress endpoint "{rec.arn}". Wait until it is InService.'
            )
        return rec

    async def update(self, params: Mapping[str, Any]) -> dict[str, Any]:
        rec = self._updatable(params["EndpointName"])
        config = self._configs.get(params["EndpointConfigName"])
        deployment = params.get("DeploymentConfig")
        if params.get("RetainDeploymentConfig"):
            if deployment:
                raise ValidationException("Give DeploymentConfig or RetainDeploymentConfig=true, not both.")
            deployment = rec.doc.get(DEPLOYMENT_CONFIG)
        plan = self._plan(deployment, config) if deployment else None
        rec.owner = self.frontend
        # A new configuration brings its own weights and capacities, unless RetainAllVariantProperties.
        excluded = {
            str(p.get("VariantPropertyType")) for p in params.get("ExcludeRetainedVariantProperties") or ()
        }
        if "DataCaptureConfig" in excluded:
            raise ValidationException(
                "ExcludeRetainedVariantProperties DataCaptureConfig: zeroscale serves no data capture, so "
                "there is none to retain or to exclude."
            )
        if not params.get("RetainAllVariantProperties"):
            if excluded:
                raise ValidationException(
                    "ExcludeRetainedVariantProperties applies with RetainAllVariantProperties=true only: "
                    "without it no variant property is retained."
                )
            overrides = None
        else:
            now = rec.doc.get("ProductionVariants") or []
            overrides = retained(now, config.doc.get("ProductionVariants") or [], excluded) or None
        quota = self._warm_quota(rec.creator, rec.name, config.doc, overrides, now=self._warm_now(rec))
        changed = self._save(
            rec,
            EndpointStatus.UPDATING,
            expect=EndpointStatus.IN_SERVICE,
            quota=quota,
            FailureReason=None,
            VariantOverrides=overrides,
            PendingDeploymentSummary=None,
            # What the update deploys: a front end that takes it over (this one after a restart) resumes it.
            **{UPDATE_TARGET: {"EndpointConfigName": config.name, "DeploymentConfig": deployment or None}},
            **(
                {DEPLOYMENT_CONFIG: dict(deployment), "LastDeploymentConfig": dict(deployment)}
                if deployment
                else {}
            ),
        )
        if not changed:
            raise ValidationException(  # another front end changed it since it was read
                f'Cannot update in-progress endpoint "{rec.arn}". Wait until it is InService.'
            )
        deploy = self._deploy(
            rec.name, config.name, updating=True, plan=plan, config=config, overrides=overrides or {}
        )
        await self._settle(self._run(rec.name, deploy))
        return {"EndpointArn": rec.arn}

    def _warm_now(self, rec: Record, reads: Reads | None = None) -> int:
        """The memory ``rec`` keeps warm as it is deployed now (a Failed or Deleting endpoint: none); with
        ``reads``, inside a write's transaction, an endpoint not yet deployed has its configuration read
        there too (another connection's read would not see what the transaction's lock holds still)."""
        if rec.status in (EndpointStatus.FAILED.value, EndpointStatus.DELETING.value):
            return 0
        try:
            if reads is None or rec.doc.get(DEPLOYED):
                config = self.deployed_config(rec)
            else:
                found = reads.get(CONFIG_KIND, rec.doc["EndpointConfigName"])
                if found is None:
                    return 0
                config = found
            return warm_mb(config.doc, rec.doc.get("VariantOverrides"))
        except (ZeroscaleError, KeyError):  # a record without a deployable configuration holds nothing
            return 0

    def _warm_quota(
        self,
        creator: str | None,
        name: str,
        config_doc: Mapping[str, Any],
        overrides: Mapping[str, Mapping[str, Any]] | None,
        *,
        now: int = 0,
    ) -> Quota | None:
        """The quota the write of endpoint ``name`` deployed from ``config_doc`` (keeping ``now`` MB warm
        before) must keep: ResourceLimitExceeded when the IAM user ``creator``'s endpoints would keep more
        memory warm than its quota. Checked in the write's transaction, under the lock of the user's
        endpoints (store/locks.py), so two writes of one user at once, on any front ends, take turns. None
        (no lock, no read) for the admin's, without a quota, and for a change that does not grow."""
        if not creator or self._warm_mb_per_user <= 0:
            return None
        wanted = warm_mb(config_doc, overrides)
        if wanted <= now:
            return None

        def check(reads: Reads) -> None:
            held = sum(
                self._warm_now(rec, reads)
                for rec in reads.created_by(KIND, creator)
                if rec.name.lower() != name.lower()
            )
            if held + wanted > self._warm_mb_per_user:
                raise ResourceLimitExceeded(
                    f"The service limit 'Always-warm memory per IAM user' is {self._warm_mb_per_user} MB, "
                    f"with current utilization of {held + now} MB and a request delta of {wanted - now} MB "
                    "(instances and ProvisionedConcurrency of its endpoints): lower an endpoint's instance "
                    "count or ProvisionedConcurrency, delete one, or have the operator raise it "
                    "(zeroscale serve --max-warm-mb-per-user)."
                )

        return Quota(KIND, creator, check)

    def _plan(self, deployment: Mapping[str, Any], config: Record) -> rollout.Plan | None:
        """A DeploymentConfig checked against the configuration it deploys: its plan."""
        if self._guard is None:
            raise ValidationException("DeploymentConfig is not served by this server (no CloudWatch alarms).")
        variants = [v for v in variant_specs(config.doc) if not v.shadow]
        real_time = all(v.serverless is None for v in variants)
        units = sum(
            v.instance_count if v.serverless is None else v.serverless.max_concurrency for v in variants
        )
        plan = rollout.plan_of(deployment, units, all_real_time=real_time)
        self._guard.check_alarms(rollout.alarm_names(deployment))
        return plan

    async def update_weights_and_capacities(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """New weights, instance counts and serverless capacities for some variants, same models: Desired*
        changes now, Current* once the change is applied (status Updating, then InService)."""
        rec = self._updatable(params["EndpointName"])
        described = {v["VariantName"]: v for v in rec.doc.get("ProductionVariants") or []}
        overrides = capacity_overrides(
            described, dict(rec.doc.get("VariantOverrides") or {}), params["DesiredWeightsAndCapacities"]
        )
        quota = self._warm_quota(
            rec.creator, rec.name, self.deployed_config(rec).doc, overrides, now=self._warm_now(rec)
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
        rec.owner = self.frontend
        changed = self._save(
            rec,
            EndpointStatus.UPDATING,
            expect=EndpointStatus.IN_SERVICE,
            quota=quota,
            FailureReason=None,
            VariantOverrides=overrides,
            ProductionVariants=list(described.values()),
            **{UPDATE_TARGET: None},  # no new configuration: a takeover settles it (below)
        )
        if not changed:  # another front end changed it since it was read
            raise ValidationException(
                f'Cannot update in-progress endpoint "{rec.arn}". Wait until it is InService.'
            )
        await self._settle(self._run(rec.name, self._apply_overrides(rec.name, overrides)))
        return {"EndpointArn": rec.arn}

    def delete(self, name: str) -> None:
        rec = self.get(name)
        rec.owner = self.frontend
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
        for member in ("ProductionVariants", "ShadowProductionVariants"):
            if rec.doc.get(member):
                out[member] = self._instances_running(rec, rec.doc[member])
        if rec.doc.get("AsyncInferenceConfig"):
            out["AsyncInferenceConfig"] = rec.doc["AsyncInferenceConfig"]
        if rec.doc.get("FailureReason"):
            out["FailureReason"] = rec.doc["FailureReason"]
        for member in ("LastDeploymentConfig", "PendingDeploymentSummary"):
            if rec.doc.get(member):
                out[member] = rec.doc[member]
        return out

    def _instances_running(
        self, rec: Record, variants: builtins.list[dict[str, Any]]
    ) -> builtins.list[dict[str, Any]]:
        """``variants`` as described, with each settled instance variant's CurrentInstanceCount the
        instances whose workers run now: fewer than desired while the host's memory holds fewer (the
        metering's count, which it bills, after ``PROVISIONED_SHORT_S``), at most the desired count."""

        def settled(v: Mapping[str, Any]) -> bool:
            return "CurrentInstanceCount" in v and "VariantStatus" not in v

        if self._workers_up is None or rec.status != EndpointStatus.IN_SERVICE.value:
            return variants
        if not any(settled(v) for v in variants):
            return variants
        specs = self._full_specs.get(rec.name.lower(), {})
        running = self._workers_up(rec.name)
        out = []
        for v in variants:
            spec, up = specs.get(v["VariantName"]), running.get(v["VariantName"])
            if settled(v) and spec is not None and spec.workers_per_instance and up is not None:
                instances = -(-up // spec.workers_per_instance)  # one with any worker up runs
                v = {**v, "CurrentInstanceCount": min(int(v["CurrentInstanceCount"]), instances)}
            out.append(v)
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

    def _running(self, key: str) -> asyncio.Task[Any] | None:
        """The endpoint's deploy, delete or activation still under way on this front end, if any."""
        task = self._latest.get(key)
        return task if task is not None and not task.done() else None

    async def _settle(self, task: asyncio.Task[Any]) -> None:
        """Wait up to ``settle_s`` for ``task``, which goes on regardless (it is not cancelled)."""
        await asyncio.wait({task}, timeout=self._settle_s)

    async def _deploy(
        self,
        name: str,
        config_name: str,
        *,
        updating: bool,
        warm: bool = True,
        plan: rollout.Plan | None = None,
        config: Record | None = None,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """Deploy ``config_name`` to the endpoint. ``config``: that configuration as the caller (Create or
        UpdateEndpoint) just read it; ``overrides``: the VariantOverrides it just stored with the endpoint.
        Each is read from the store when not given (a deployment a front end takes over or resumes)."""
        hold = self._deployer.hold()  # its artifacts stay in the cache until its pools are routed
        try:
            if config is None:
                config = self._configs.get(config_name)
            # The models as they are now: the pools, the description and the snapshot are all made from
            # these, whatever is deleted or replaced while the workers start.
            models = self._models_of(config)
            full = await self._deployer.pool_specs(name, config, models, hold)
            if overrides is None:
                stored = self._store.get(KIND, name)
                overrides = (stored.doc.get("VariantOverrides") or {}) if stored is not None else {}
            full = [with_overrides(spec, overrides.get(spec.variant)) for spec in full]
            specs = self._limit(full)  # this front end's share; the endpoint is described with the whole
            # A front end whose share is zero starts no worker, not even the deploy-time check's.
            warm = warm and all(s.max_concurrency > 0 for s in specs)
            if plan is not None and self._guard is not None and self._fleet.route(name) is not None:
                report = self._reporter(name, config, full, models)
                outcome = await self._guard.run(name, specs, plan, report)
                if outcome.reason is not None:
                    self._rolled_back(name, outcome.reason, failed=outcome.rollback_failed)
                    return
            else:
                await self._fleet.activate(name, specs, warm=warm)
        except (DeployError, ValidationException) as exc:
            self._not_deployed(name, _reason(exc), updating=updating)
            return
        except Exception as exc:  # a bug: the endpoint still leaves Creating / Updating, never stays there
            log.exception("endpoint %s: the deployment broke", name)
            why = f"zeroscale could not deploy the endpoint ({type(exc).__name__}); the server log has why."
            self._not_deployed(name, why, updating=updating)
            return
        finally:
            hold.close()
        rec = self._store.get(KIND, name)
        if rec is None or rec.status == EndpointStatus.DELETING.value:
            await self._fleet.deactivate(name)
            self._active.pop(name.lower(), None)
            return
        rec.doc[DEPLOYED] = self._snapshot(config, models)
        self._save(
            rec,
            EndpointStatus.IN_SERVICE,
            EndpointConfigName=config.name,
            ProductionVariants=self._described_variants(config, full, models, shadow=False),
            ShadowProductionVariants=self._described_variants(config, full, models, shadow=True) or None,
            AsyncInferenceConfig=config.doc.get("AsyncInferenceConfig"),
            FailureReason=None,
            PendingDeploymentSummary=None,
        )
        self._active[name.lower()] = _deployment(rec)
        self._full_specs[name.lower()] = {spec.variant: spec for spec in full}
        self._tell(name, rec)

    def _not_deployed(self, name: str, reason: str, *, updating: bool) -> None:
        """A deployment that did not happen: a new endpoint is Failed, an updated one goes on serving its
        last configuration (InService); both say why in FailureReason."""
        rec = self._store.get(KIND, name)
        if rec is None or rec.status == EndpointStatus.DELETING.value:
            return
        log.warning("endpoint %s: %s", name, reason)
        status = EndpointStatus.IN_SERVICE if updating else EndpointStatus.FAILED
        self._save(rec, status, FailureReason=reason, PendingDeploymentSummary=None)

    def _reporter(
        self, name: str, config: Record, full: builtins.list[PoolSpec], models: Mapping[str, Record]
    ) -> Callable[[str, float, float], None]:
        """How a guarded deployment's progress reaches DescribeEndpoint: PendingDeploymentSummary (the new
        fleet's variants, their VariantStatus), and the endpoint's status (RollingBack)."""
        started = self._clock()
        variants = self._described_variants(config, full, models, shadow=False)
        messages = {
            "Creating": "Provisioning the new fleet beside the old one.",
            "ActivatingTraffic": "Shifting {share} of the traffic to the new fleet.",
            "Baking": "Baking with {share} of the traffic on the new fleet, watching the alarms.",
            "TerminationWait": "All the traffic is on the new fleet; the old one is retired after the wait.",
            "RollingBack": "All the traffic is back on the old fleet; the new fleet is being removed.",
        }

        def report(phase: str, share: float, at: float) -> None:
            rec = self._store.get(KIND, name)
            if rec is None or rec.status == EndpointStatus.DELETING.value:
                return
            status = "Baking" if phase == "TerminationWait" else phase
            if phase == "RollingBack":
                status = "Deleting"
            message = messages[phase].format(share=f"{share:.0%}")
            pending = [
                {**v, "VariantStatus": [{"Status": status, "StatusMessage": message, "StartTime": at}]}
                for v in variants
            ]
            summary = {"EndpointConfigName": config.name, "ProductionVariants": pending, "StartTime": started}
            endpoint_status = (
                EndpointStatus.ROLLING_BACK if phase == "RollingBack" else EndpointStatus.UPDATING
            )
            self._save(rec, endpoint_status, PendingDeploymentSummary=summary)

        return report

    def _rolled_back(self, name: str, reason: str, *, failed: bool) -> None:
        rec = self._store.get(KIND, name)
        if rec is None or rec.status == EndpointStatus.DELETING.value:
            return
        log.warning("endpoint %s: %s", name, reason)
        status = EndpointStatus.UPDATE_ROLLBACK_FAILED if failed else EndpointStatus.IN_SERVICE
        self._save(
            rec, status, FailureReason=_reason(ValidationException(reason)), PendingDeploymentSummary=None
        )

    def _models_of(self, config: Record) -> dict[str, Record]:
        """The models ``config``'s variants name (lower-cased name -> record); ValidationException for one
        that does not exist."""
        names = sorted({v.model_name.lower() for v in variant_specs(config.doc)})
        return {name: self._models.get(name) for name in names}

    @staticmethod
    def _snapshot(config: Record, models: Mapping[str, Record]) -> dict[str, Any]:
        """The documents this deployment was made from, kept in the endpoint's row (never answered on the
        wire): another front end, or this one after a restart, rebuilds the same pools from them even when
        the configuration or a model was deleted (SageMaker allows it) or replaced since."""
        return {
            "EndpointConfig": config.doc,
            "EndpointConfigCreator": config.creator,
            "Models": {name: m.doc for name, m in models.items()},
        }

    def deployed_config(self, rec: Record) -> Record:
        """The endpoint configuration ``rec`` is deployed from, as it was then (its snapshot): the same after
        the configuration was deleted or replaced, as SageMaker lets it be."""
        return self._deployed(rec)[0]

    def _deployed(self, rec: Record) -> tuple[Record, dict[str, Record] | None]:
        """The configuration and models ``rec`` is deployed from: its snapshot, else the store's."""
        snap = rec.doc.get(DEPLOYED)
        config_name = rec.doc["EndpointConfigName"]
        if not snap:
            return self._configs.get(config_name), None
        config = Record("endpoint-config", config_name, "", 0.0, 0.0, None, dict(snap["EndpointConfig"]))
        config.creator = snap.get("EndpointConfigCreator")  # (a snapshot from before it was kept: none)
        models = {k: Record("model", k, "", 0.0, 0.0, None, dict(doc)) for k, doc in snap["Models"].items()}
        return config, models

    def _tell(self, name: str, rec: Record | None) -> None:
        """The listeners hear that ``name`` now serves as ``rec`` says (None: it serves no more here)."""
        for listener in self.listeners:
            try:
                listener(name, rec)
            except Exception:
                log.exception("endpoint listener failed for %s", name)

    def _described_variants(
        self,
        config: Record,
        specs: builtins.list[PoolSpec],
        models: Mapping[str, Record],
        *,
        shadow: bool,
    ) -> builtins.list[dict[str, Any]]:
        now = self._clock()
        out: builtins.list[dict[str, Any]] = []
        for variant, spec in zip(variant_specs(config.doc), specs, strict=True):
            if variant.shadow != shadow:
                continue
            runtimes = [c.runtime for c in spec.containers] or [spec.runtime]
            containers = runnable_containers(models[variant.model_name.lower()].doc)
            desc: dict[str, Any] = {
                "VariantName": variant.name,
                "DeployedImages": [  # one per container
                    {
                        "SpecifiedImage": str(c.get("Image", "")),
                        "ResolvedImage": f"zeroscale/{runtime}",
                        "ResolutionTime": now,
                    }
                    for c, runtime in zip(containers, runtimes, strict=False)
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
        base = self._full_specs.get(name.lower(), {})
        specs = {
            p.spec.variant: with_overrides(base.get(p.spec.variant, p.spec), overrides.get(p.spec.variant))
            for p in route.pools
        }
        shares = {variant: self._limit([spec])[0] for variant, spec in specs.items()}
        try:
            await self._fleet.adjust(name, shares, timeout_s=self._settle_s + 30.0)
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
            self._active.pop(rec.name.lower(), None)
            self._store.delete(KIND, rec.name)
            self._tell(rec.name, None)

    # ---- several front ends ----
    async def _resume_update(self, first: asyncio.Task[Any], rec: Record, target: Mapping[str, Any]) -> None:
        """After ``first`` (the serving deployment routed), UpdateEndpoint's deployment again; when it can no
        longer run (its configuration deleted, an alarm gone), InService on what serves, saying why."""
        await asyncio.wait([first])
        try:
            config = self._configs.get(str(target["EndpointConfigName"]))
            deployment = target.get("DeploymentConfig")
            plan = self._plan(deployment, config) if deployment else None
        except (ValidationException, DeployError) as exc:
            reason = (
                f"The update to endpoint configuration {target['EndpointConfigName']} stopped with the "
                f"server that ran it and cannot resume: {_reason(exc)} The endpoint serves its previous "
                "configuration; update it again."
            )
            current = self._store.get(KIND, rec.name) or rec
            self._save(current, EndpointStatus.IN_SERVICE, FailureReason=reason, **{UPDATE_TARGET: None})
            return
        log.warning("endpoint %s: resuming its update to %s", rec.name, config.name)
        await self._deploy(rec.name, config.name, updating=True, plan=plan)

    async def _follow(self, rec: Record) -> None:
        """Route a deployment another front end made (or this one made before a restart), starting no
        worker it does not need; the store is not written."""
        key, deployment = rec.name.lower(), _deployment(rec)
        hold = self._deployer.hold()
        try:
            config, models = self._deployed(rec)
            full = await self._deployer.pool_specs(rec.name, config, models, hold)
            overrides = rec.doc.get("VariantOverrides") or {}
            full = [with_overrides(spec, overrides.get(spec.variant)) for spec in full]
            await self._fleet.activate(rec.name, self._limit(full), warm=False)
            self._full_specs[key] = {spec.variant: spec for spec in full}
            self._tell(rec.name, rec)
            self._unservable.pop(key, None)
        except (DeployError, ValidationException) as exc:
            log.error("endpoint %s: cannot serve its deployment here: %s", rec.name, _reason(exc))
            self._unservable[key] = (_reason(exc), time.monotonic())
        finally:
            hold.close()
        self._active[key] = deployment  # tried: not again until it changes (but see ``catch_up``)

    async def _forget_route(self, name: str) -> None:
        self._active.pop(name.lower(), None)
        self._full_specs.pop(name.lower(), None)
        await self._fleet.deactivate(name)
        self._tell(name, None)

    async def catch_up(self, name: str, timeout_s: float = 10.0) -> None:
        """An invocation for an endpoint this front end does not route: when the store says it serves
        (another front end deployed it since the last sync), route it now, waiting at most ``timeout_s``."""
        rec = await asyncio.to_thread(self._store.get, KIND, name)
        serving = _SERVING
        if rec is None or rec.status not in serving or not rec.doc.get("ProductionVariants"):
            return
        key = rec.name.lower()
        task = self._running(key)
        if task is None:
            failed = self._unservable.get(key)
            if self._active.get(key) == _deployment(rec) and (
                failed is None or time.monotonic() - failed[1] < UNSERVABLE_RETRY_S
            ):
                self._refuse_unservable(rec)
                return
            task = self._run(rec.name, self._follow(rec))
        await asyncio.wait([task], timeout=timeout_s)
        self._refuse_unservable(rec)

    def _refuse_unservable(self, rec: Record) -> None:
        """ServiceUnavailable naming why, for an endpoint the store says serves whose deployment this front
        end could not serve (else the invocation would read "not found")."""
        failed = self._unservable.get(rec.name.lower())
        if failed is not None and self._fleet.route(rec.name) is None:
            raise ZeroscaleError(
                f"Endpoint {rec.name} is {rec.status} but this server cannot serve its deployment now: "
                f"{failed[0]} It is tried again at an invocation at most every {UNSERVABLE_RETRY_S:g} s.",
                code="ServiceUnavailable",
                status=503,
            )

    def sync(self, live: builtins.set[str]) -> builtins.list[asyncio.Task[None]]:
        """Serve what the store says: every InService (or Updating: the old deployment serves) endpoint
        routed at its current deployment, nothing else; transitions owned by a front end not in ``live``
        are taken over (once: the claim is a compare-and-set). Returns the activation tasks started."""
        records = {r.name.lower(): r for r in self._store.list(KIND)}
        started: builtins.list[asyncio.Task[None]] = []
        for key, rec in records.items():
            if self._running(key) is not None:
                continue  # a transition or activation of this front end is under way
            if rec.status in _TRANSITIONS and rec.owner not in live:
                claimed = self._store.claim(KIND, rec.name, self.frontend or "", rec.owner)
                if claimed is None:
                    continue  # another front end took it
                log.warning("endpoint %s: taking over %s from front end %s", rec.name, rec.status, rec.owner)
                rec = claimed
                if rec.status == EndpointStatus.DELETING.value:
                    self._run(rec.name, self._delete(rec))
                    continue
                if rec.status == EndpointStatus.CREATING.value:
                    self._run(rec.name, self._deploy(rec.name, rec.doc["EndpointConfigName"], updating=False))
                    continue
                target = rec.doc.get(UPDATE_TARGET)
                if rec.status == EndpointStatus.UPDATING.value and target:
                    # UpdateEndpoint died with its front end: the deployment that serves is routed first
                    # (it serves on meanwhile), then the update runs again, to its end or its failure.
                    follow = self._run(rec.name, self._follow(rec))
                    started.append(follow)
                    self._run(rec.name, self._resume_update(follow, rec, target))
                    continue
                # The update (or its rollback) died with its front end: UpdateEndpoint's deployment never
                # replaced the one that serves, which serves on; new weights and capacities (their overrides
                # are stored) are what the route below serves, so they are current now.
                self._save(rec, EndpointStatus.IN_SERVICE, PendingDeploymentSummary=None, **_settled(rec))
            serving = rec.status in _SERVING
            if serving and rec.doc.get("ProductionVariants"):
                if self._active.get(key) != _deployment(rec) or self._fleet.route(rec.name) is None:
                    started.append(self._run(rec.name, self._follow(rec)))
            elif key in self._active:
                self._run(rec.name, self._forget_route(rec.name))
        for key in builtins.set(self._active) - builtins.set(records):
            if self._running(key) is None:
                self._run(key, self._forget_route(key))
        return started

    # ---- restart ----
    async def resume(self, timeout_s: float = 60.0, live: builtins.set[str] | None = None) -> None:
        """Bring every stored endpoint back after a restart, starting no worker it does not need: route
        InService endpoints, and finish what this front end (or a dead one) left in progress.

        Returns once every InService endpoint routes again (or ``timeout_s`` passed), so the server never
        answers DescribeEndpoint "InService" for an endpoint whose invocations it cannot route yet."""
        serving = self.sync(live if live is not None else builtins.set())
        if serving:
            await asyncio.wait(serving, timeout=timeout_s)

    async def close(self) -> None:
        self._latest.clear()
        await self._background.cancel()


DEPLOYMENT_CONFIG = "ZeroscaleDeploymentConfig"  # the config CreateEndpoint gave, for RetainDeploymentConfig
# An invocation tries a deployment this front end could not serve again, at most this often.
UNSERVABLE_RETRY_S = 5.0
UPDATE_TARGET = "ZeroscaleUpdate"  # an UpdateEndpoint under way: its configuration and DeploymentConfig
DEPLOYED = "ZeroscaleDeployment"  # the endpoint row's snapshot of what it was deployed from (see _snapshot)
_TRANSITIONS = frozenset(
    {
        EndpointStatus.CREATING.value,
        EndpointStatus.UPDATING.value,
        EndpointStatus.ROLLING_BACK.value,
        EndpointStatus.DELETING.value,
    }
)
# the statuses in which the endpoint's deployment serves (an update or a rollback: the old one)
_SERVING = (EndpointStatus.IN_SERVICE.value, EndpointStatus.UPDATING.value, EndpointStatus.ROLLING_BACK.value)


def _deployment(rec: Record) -> str:
    """What identifies a deployment: its configuration and described variants (with their resolution
    times, new at each successful create or update)."""
    return json.dumps([rec.doc.get("EndpointConfigName"), rec.doc.get("ProductionVariants")], sort_keys=True)


def _settled(rec: Record) -> dict[str, Any]:
    """The described variants of an endpoint whose UpdateEndpointWeightsAndCapacities died half-way, with
    their Desired* values current and no variant Updating (nothing to change when none was)."""
    variants = rec.doc.get("ProductionVariants") or []
    if not any("VariantStatus" in v for v in variants):
        return {}
    settled = []
    for variant in variants:
        variant = {k: v for k, v in variant.items() if k != "VariantStatus"}
        for part in ("Weight", "InstanceCount", "ServerlessConfig"):
            if f"Desired{part}" in variant:
                variant[f"Current{part}"] = variant[f"Desired{part}"]
        settled.append(variant)
    return {"ProductionVariants": settled}


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
    """A FailureReason (at most 1,024 characters, botocore's): the error's first line, then as many whole
    lines of its end as fit (a worker's output ends with the exception that stopped it)."""
    text = getattr(exc, "message", None) or str(exc)
    if len(text) <= _FAILURE_REASON_MAX:
        return text
    first, _, rest = text.partition("\n")
    first = first[: _FAILURE_REASON_MAX // 2]
    room = _FAILURE_REASON_MAX - len(first) - len("\n...\n")
    tail: list[str] = []
    for line in reversed(rest.splitlines()):
        if len(line) + 1 > room:
            if not tail:  # one long last line: its end
                tail.append(line[-room:])
            break
        tail.append(line)
        room -= len(line) + 1
    return first + "\n...\n" + "\n".join(reversed(tail))
