"""Application Auto Scaling for real-time endpoint variants: the operations (a JSON 1.1 table), and the loop
that evaluates every target's policies once per period and applies decisions through
UpdateEndpointWeightsAndCapacities, recording each scaling activity with its cause.

With several front ends on one database, every front end samples its own traffic, and only the leader
(the oldest live one) evaluates, with the others' samples merged in (``Samples.values``): one front end
decides each step, from the whole endpoint's metrics. When a front end does not answer, the evaluation's view
is partial and no target scales in on it (``policy.decide``: its traffic can only raise the metrics); a
scale-out still may. A step policy run by an alarm whose data was partial likewise takes no step down."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from zeroscale.autoscaling import policy as pol
from zeroscale.autoscaling import steps
from zeroscale.autoscaling.samples import STATISTICS, Exported, Samples
from zeroscale.autoscaling.targets import (
    DIMENSION,
    NAMESPACE,
    InvalidNextToken,
    ObjectNotFound,
    Resource,
    Targets,
    check_scope,
    parse_resource,
)
from zeroscale.control.endpoints import Endpoints
from zeroscale.errors import ValidationException, ZeroscaleError
from zeroscale.metrics import catalog
from zeroscale.peers import Ask, Peer
from zeroscale.store.db import AlreadyExists, Record
from zeroscale.types import EndpointStatus

log = logging.getLogger("zeroscale.autoscaling")
PREDEFINED = "SageMakerVariantInvocationsPerInstance"
DEFAULT_COOLDOWN_S = 300  # Application Auto Scaling's default for SageMaker variants
MAX_CAPACITY = 100
_PAGE = 50
_IN_PROGRESS = "InProgress"
# what DescribeScalingActivities returns of an activity's record (it also keeps the count it set)
_ACTIVITY_MEMBERS = (
    "ResourceId",
    "Description",
    "Cause",
    "StartTime",
    "EndTime",
    "StatusCode",
    "StatusMessage",
)

Operation = Callable[[Mapping[str, Any]], Any]
# The other front ends' answers to a peer operation, and those that did not answer (PeerClient.ask)
Others = Ask
PERIODS_OP = "autoscaling.periods"


class AutoScaling:
    def __init__(
        self,
        targets: Targets,
        endpoints: Endpoints,
        samples: Samples,
        *,
        region: str,
        account_id: str,
        clock: Callable[[], float] = time.time,
        sample_s: float = 1.0,
        leads: Callable[[], bool] = lambda: True,
        others: Others | None = None,
    ) -> None:
        self._t = targets
        self._endpoints = endpoints
        self.samples = samples
        self._region = region
        self._account = account_id
        self._clock = clock
        self._sample_s = min(sample_s, samples.period_s)
        self._task: asyncio.Task[None] | None = None
        self._failing: dict[str, str] = {}  # target -> why its last evaluation failed (logged once)
        self._leads = leads
        self._others = others
        self._theirs: list[Exported] = []  # the other front ends' periods, read for this evaluation
        self._missing: tuple[Peer, ...] = ()  # those that did not answer for it: a partial view, no scale-in

    def operations(self) -> dict[str, Operation]:
        return {
            "RegisterScalableTarget": self.register,
            "DescribeScalableTargets": self.describe_targets,
            "DeregisterScalableTarget": self.deregister,
            "PutScalingPolicy": self.put_policy,
            "DescribeScalingPolicies": self.describe_policies,
            "DeleteScalingPolicy": self.delete_policy,
            "DescribeScalingActivities": self.describe_activities,
        }

    # ---- scalable targets ----
    def register(self, params: Mapping[str, Any]) -> dict[str, Any]:
        try:
            return self._register(params)
        except AlreadyExists:  # registered meanwhile through another front end: this call updates it
            return self._register(params)

    def _register(self, params: Mapping[str, Any]) -> dict[str, Any]:
        check_scope(params)
        resource = parse_resource(params["ResourceId"])
        self._instance_variant(resource)
        rec = self._t.target(resource.id)
        doc = dict(rec.doc) if rec is not None else {}
        for name in ("MinCapacity", "MaxCapacity"):
            if name in params:
                doc[name] = int(params[name])
            elif rec is None:
                raise ValidationException(f"{name} is required to register a new scalable target.")
        if doc["MinCapacity"] < 0:
            raise ValidationException(f"MinCapacity {doc['MinCapacity']} must be 0 or more.")
        if doc["MaxCapacity"] < doc["MinCapacity"]:
            raise ValidationException(
                f"MaxCapacity {doc['MaxCapacity']} must be greater than or equal to MinCapacity "
                f"{doc['MinCapacity']}."
            )
        if doc["MaxCapacity"] > MAX_CAPACITY:
            raise ValidationException(f"MaxCapacity {doc['MaxCapacity']} is over zeroscale's {MAX_CAPACITY}.")
        if params.get("RoleARN"):
            doc["RoleARN"] = params["RoleARN"]
        if params.get("SuspendedState") is not None:
            doc["SuspendedState"] = {**doc.get("SuspendedState", {}), **params["SuspendedState"]}
        now = self._clock()
        if rec is None:
            doc.update(ResourceId=resource.id, ScalableTargetARN=self._target_arn())
            rec = Record("scalable-target", resource.id, doc["ScalableTargetARN"], now, now, None, doc)
            self._t.save_target(rec, new=True)
        else:
            rec.doc, rec.modified_at = doc, now
            self._t.save_target(rec, new=False)
        self._watch()
        return {"ScalableTargetARN": doc["ScalableTargetARN"]}

    def describe_targets(self, params: Mapping[str, Any]) -> dict[str, Any]:
        check_scope(params)
        wanted = set(params.get("ResourceIds") or [])
        found = [t for t in self._t.targets() if not wanted or t.name in wanted]
        page, token = _page(found, params)
        return {"ScalableTargets": [self._target_doc(t) for t in page], **token}

    def _target_doc(self, rec: Record) -> dict[str, Any]:
        d = rec.doc
        out = {
            "ServiceNamespace": NAMESPACE,
            "ResourceId": rec.name,
            "ScalableDimension": DIMENSION,
            "MinCapacity": d["MinCapacity"],
            "MaxCapacity": d["MaxCapacity"],
            "RoleARN": d.get("RoleARN", self._role_arn()),
            "CreationTime": rec.created_at,
            "SuspendedState": {
                "DynamicScalingInSuspended": False,
                "DynamicScalingOutSuspended": False,
                "ScheduledScalingSuspended": False,
                **d.get("SuspendedState", {}),
            },
            "ScalableTargetARN": d["ScalableTargetARN"],
        }
        return out

    def deregister(self, params: Mapping[str, Any]) -> dict[str, Any]:
        check_scope(params)
        rec = self._t.require(params["ResourceId"])
        self._t.delete_target(rec.name)
        self._watch()
        return {}

    # ---- policies ----
    def put_policy(self, params: Mapping[str, Any]) -> dict[str, Any]:
        check_scope(params)
        if params.get("PolicyType", "StepScaling") == "StepScaling":  # the default, as in AWS
            return self._put_step_policy(params)
        target = self._t.require(params["ResourceId"])
        resource = parse_resource(target.name)
        config = params.get("TargetTrackingScalingPolicyConfiguration")
        if config is None:
            raise ValidationException(
                "TargetTrackingScalingPolicyConfiguration is required for a TargetTrackingScaling policy."
            )
        spec = _metric(config, resource)
        name: str = params["PolicyName"]
        key = self._t.policy_key(target.name, name)
        old = self._t.policy(target.name, name)
        now = self._clock()
        arn = old.arn if old is not None else self._policy_arn(target.name, name)
        doc = {
            "PolicyName": name,
            "ResourceId": target.name,
            "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": dict(config),
            "Metric": spec,
        }
        created = old.created_at if old is not None else now
        self._t.save_policy(Record("scaling-policy", key, arn, created, now, None, doc))
        self._watch()
        return {"PolicyARN": arn, "Alarms": []}

    def _put_step_policy(self, params: Mapping[str, Any]) -> dict[str, Any]:
        target = self._t.require(params["ResourceId"])
        config = params.get("StepScalingPolicyConfiguration")
        if config is None:
            raise ValidationException("StepScalingPolicyConfiguration is required for a StepScaling policy.")
        if params.get("TargetTrackingScalingPolicyConfiguration") is not None:
            raise ValidationException(
                "TargetTrackingScalingPolicyConfiguration is for a TargetTrackingScaling policy."
            )
        steps.check(config)
        name: str = params["PolicyName"]
        old = self._t.policy(target.name, name)
        now = self._clock()
        arn = old.arn if old is not None else self._policy_arn(target.name, name)
        doc = {
            "PolicyName": name,
            "ResourceId": target.name,
            "PolicyType": "StepScaling",
            "StepScalingPolicyConfiguration": dict(config),
        }
        created = old.created_at if old is not None else now
        key = self._t.policy_key(target.name, name)
        self._t.save_policy(Record("scaling-policy", key, arn, created, now, None, doc))
        return {"PolicyARN": arn, "Alarms": []}

    # ---- step scaling: invoked by CloudWatch alarms (an alarm action naming the policy's ARN) ----
    def step_policy(self, arn: str) -> Record:
        found = next((p for p in self._t.policies() if p.arn == arn), None)
        if found is None or found.doc["PolicyType"] != "StepScaling":
            raise ObjectNotFound(f"No step scaling policy has the ARN {arn}.")
        return found

    async def step(
        self, arn: str, breach: float, alarm: str, *, above: bool = True, partial: bool = False
    ) -> None:
        """The alarm ``alarm`` is in ALARM and names this step policy: scale by the step of ``breach``
        (``above``: the alarm fires above its threshold, for a breach of 0; ``partial``: its data lacked a
        front end that did not answer, so no step lowers the capacity, ``steps.decide``)."""
        policy = self.step_policy(arn)
        target = self._t.target(policy.doc["ResourceId"])
        if target is None:
            return
        resource = parse_resource(target.name)
        desc = self._endpoints.describe(resource.endpoint)
        variant = next(
            (v for v in desc.get("ProductionVariants") or [] if v["VariantName"] == resource.variant), None
        )
        if variant is None or "DesiredInstanceCount" not in variant:
            return
        if not self._settle_activities(target, desc, variant) or desc["EndpointStatus"] != "InService":
            return
        current = int(variant["DesiredInstanceCount"])
        now = self._clock()
        name, config = policy.doc["PolicyName"], policy.doc["StepScalingPolicyConfiguration"]
        capacity = _capacity(target, current)
        decision = steps.decide(name, config, breach, capacity, now, alarm, above=above, partial=partial)
        if decision is not None:
            await self._apply(target, resource, current, decision, now)
        elif partial and steps.decide(name, config, breach, capacity, now, alarm, above=above) is not None:
            log.warning(
                "autoscaling %s: alarm %s's data lacked a front end that did not answer: policy %s's step, "
                "which lowers the capacity, is not taken",
                target.name,
                alarm,
                name,
            )

    def describe_policies(self, params: Mapping[str, Any]) -> dict[str, Any]:
        check_scope(params)
        names = set(params.get("PolicyNames") or [])
        found = [
            p for p in self._t.policies(params.get("ResourceId")) if not names or p.doc["PolicyName"] in names
        ]
        page, token = _page(found, params)
        return {"ScalingPolicies": [_policy_doc(p) for p in page], **token}

    def delete_policy(self, params: Mapping[str, Any]) -> dict[str, Any]:
        check_scope(params)
        resource_id, name = params["ResourceId"], params["PolicyName"]
        if not self._t.delete_policy(resource_id, name):
            raise _not_found_policy(resource_id, name)
        self._watch()
        return {}

    # ---- activities ----
    def describe_activities(self, params: Mapping[str, Any]) -> dict[str, Any]:
        check_scope(params)
        page, token = _page(self._t.activities(params.get("ResourceId")), params)
        out = []
        for a in page:
            d = {k: a.doc[k] for k in _ACTIVITY_MEMBERS if a.doc.get(k) is not None}
            out.append(
                {**d, "ActivityId": a.name, "ServiceNamespace": NAMESPACE, "ScalableDimension": DIMENSION}
            )
        return {"ScalingActivities": out, **token}

    # ---- the loop ----
    async def start(self) -> None:
        self._watch()
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        started = self._clock()
        next_period = started + self.samples.period_s
        while True:
            await asyncio.sleep(self._sample_s)
            try:
                self.samples.sample()
                if self.samples.wants_gauges():  # a policy tracks the asynchronous backlog
                    for source in self.samples.gauges:
                        self.samples.observe(await asyncio.to_thread(source))
                now = self._clock()
                if now >= next_period:
                    # a period is as long as it really was (longer when the loop was held up)
                    next_period = max(next_period, now - self._sample_s) + self.samples.period_s
                    self.samples.close_period(now - started)
                    started = now
                    # targets and policies another front end put since: sampled from the next period on
                    self.samples.watch(await asyncio.to_thread(self._watched))
                    await self.evaluate()
            except Exception:
                log.exception("autoscaling: evaluation failed")

    async def periods(self, args: dict[str, Any]) -> dict[str, Any]:
        """The peer operation ``autoscaling.periods``: this front end's samples, for the leader."""
        return dict(self.samples.export())

    def _watch(self) -> None:
        self.samples.watch(self._watched())

    def _watched(self) -> frozenset[tuple[str, str]]:
        pairs = set()
        for t in self._t.targets():
            resource = parse_resource(t.name)
            pairs.add((resource.endpoint.lower(), resource.variant))
        for p in self._t.policies():
            dims = p.doc.get("Metric", {}).get("Dimensions")
            if dims:
                pairs.add((dims["EndpointName"].lower(), dims["VariantName"]))
        return frozenset(pairs)

    async def evaluate(self) -> None:
        """One evaluation of every target: finish activities in progress, then decide and apply."""
        if not self._leads():
            return  # the leader decides, with this front end's samples among its own
        self._theirs = []
        missing: tuple[Peer, ...] = ()
        if self._others is not None:
            gathered = await self._others(PERIODS_OP, {})
            self._theirs = [answer for _, answer in gathered.answers]
            missing = gathered.missing
        if {p.id for p in missing} != {p.id for p in self._missing}:  # said when it changes, not each time
            if missing:
                log.warning(
                    "autoscaling: front ends %s did not answer for their samples: no target scales in while "
                    "they are missing (their traffic is not counted; scaling out still may)",
                    ", ".join(f"{peer.id} at {peer.url}" for peer in missing),
                )
            else:
                log.info("autoscaling: every front end answered for its samples again")
        self._missing = missing
        policies: dict[str, list[Record]] = {}
        for p in self._t.policies():
            policies.setdefault(p.doc["ResourceId"], []).append(p)
        targets = self._t.targets()
        for gone in self._failing.keys() - {t.name for t in targets}:
            del self._failing[gone]
        for target in targets:
            try:
                await self._evaluate(target, policies.get(target.name, []))
            except ZeroscaleError as exc:
                # said once, not every period: a target outlives its endpoint until it is deregistered
                if self._failing.get(target.name) != exc.message:
                    log.info("autoscaling %s: %s", target.name, exc.message)
                self._failing[target.name] = exc.message
            else:
                self._failing.pop(target.name, None)

    async def _evaluate(self, target: Record, policies: list[Record]) -> None:
        resource = parse_resource(target.name)
        desc = self._endpoints.describe(resource.endpoint)
        variant = next(
            (v for v in desc.get("ProductionVariants") or [] if v["VariantName"] == resource.variant), None
        )
        if variant is None or "DesiredInstanceCount" not in variant:
            return
        if not self._settle_activities(target, desc, variant):
            return  # a change is still being applied
        if desc["EndpointStatus"] != EndpointStatus.IN_SERVICE.value:
            return
        current = int(variant["DesiredInstanceCount"])
        tracked = []
        for p in policies:
            if p.doc["PolicyType"] != "TargetTrackingScaling":
                continue  # step policies run when their alarm says so (step)
            config = p.doc["TargetTrackingScalingPolicyConfiguration"]
            tracked.append((_tracking(p.doc["PolicyName"], config), self._values(p.doc["Metric"], current)))
        now = self._clock()
        decision = pol.decide(tracked, _capacity(target, current), now, partial=bool(self._missing))
        if decision is None:
            return
        await self._apply(target, resource, current, decision, now)

    def _values(self, metric: Mapping[str, Any], instances: int) -> list[float | None]:
        if metric.get("Predefined"):
            values = self.samples.values(
                metric["EndpointName"], metric["VariantName"], "Invocations", "Sum", self._theirs
            )
            return [None if v is None else v / max(1, instances) for v in values]
        dims = metric["Dimensions"]
        return self.samples.values(
            dims["EndpointName"], dims["VariantName"], metric["MetricName"], metric["Statistic"], self._theirs
        )

    async def _apply(
        self, target: Record, resource: Resource, current: int, decision: pol.Decision, now: float
    ) -> None:
        out = decision.desired > current
        activity = self._t.add_activity(
            target.name,
            now,
            {
                "ResourceId": target.name,
                "Description": f"Setting desired instance count to {decision.desired}.",
                "Cause": decision.cause,
                "StartTime": now,
                "StatusCode": _IN_PROGRESS,
                "StatusMessage": f"Changing the desired instance count from {current} to {decision.desired}.",
                "Desired": decision.desired,
            },
        )
        target.doc["LastScaleOutAt" if out else "LastScaleInAt"] = now
        self._t.save_target(target, new=False)
        log.info("autoscaling %s: %s", target.name, decision.cause)
        try:
            await self._endpoints.update_weights_and_capacities(
                {
                    "EndpointName": resource.endpoint,
                    "DesiredWeightsAndCapacities": [
                        {"VariantName": resource.variant, "DesiredInstanceCount": decision.desired}
                    ],
                }
            )
        except ZeroscaleError as exc:
            self._finish(activity, "Failed", exc.message)

    def _settle_activities(self, target: Record, desc: Mapping[str, Any], variant: Mapping[str, Any]) -> bool:
        """Mark the target's activities in progress Successful or Failed once the endpoint settled; False
        while one is still in progress."""
        settled = True
        for a in self._t.activities(target.name):
            if a.doc["StatusCode"] != _IN_PROGRESS:
                continue
            if desc["EndpointStatus"] == EndpointStatus.UPDATING.value:
                settled = False
            elif desc.get("FailureReason"):
                self._finish(a, "Failed", str(desc["FailureReason"]))
            elif variant.get("DesiredInstanceCount") == a.doc.get("Desired"):
                message = f"Successfully set desired instance count to {a.doc['Desired']}."
                self._finish(a, "Successful", message + " Change successfully fulfilled by sagemaker.")
            else:
                self._finish(a, "Overridden", "The desired instance count was changed by another request.")
        return settled

    def _finish(self, activity: Record, status: str, message: str) -> None:
        now = self._clock()
        activity.status = status
        activity.modified_at = now
        activity.doc.update(StatusCode=status, StatusMessage=message, EndTime=now)
        self._t.update_activity(activity)

    # ---- helpers ----
    def _instance_variant(self, resource: Resource) -> None:
        """ValidationException unless the endpoint exists and the variant runs on instances."""
        try:
            desc = self._endpoints.describe(resource.endpoint)
        except ZeroscaleError:
            raise ValidationException(
                f"The endpoint {resource.endpoint} of ResourceId {resource.id} does not exist."
            ) from None
        variant = next(
            (v for v in desc.get("ProductionVariants") or [] if v["VariantName"] == resource.variant), None
        )
        if variant is None:
            raise ValidationException(
                f"The variant {resource.variant} of ResourceId {resource.id} does not exist in endpoint "
                f"{resource.endpoint}."
            )
        if "DesiredInstanceCount" not in variant:
            raise ValidationException(
                f"The variant {resource.variant} of endpoint {resource.endpoint} is serverless: "
                f"{DIMENSION} scales variants that run on instances."
            )

    def _target_arn(self) -> str:
        return (
            f"arn:aws:application-autoscaling:{self._region}:{self._account}:scalable-target/"
            f"056{uuid.uuid4().hex}"
        )

    def _policy_arn(self, resource_id: str, name: str) -> str:
        return (
            f"arn:aws:autoscaling:{self._region}:{self._account}:scalingPolicy:{uuid.uuid4()}:"
            f"resource/{NAMESPACE}/{resource_id}:policyName/{name}"
        )

    def _role_arn(self) -> str:
        return (
            f"arn:aws:iam::{self._account}:role/aws-service-role/sagemaker.application-autoscaling."
            "amazonaws.com/AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"
        )


def _capacity(target: Record, current: int) -> pol.Capacity:
    suspended = target.doc.get("SuspendedState", {})
    return pol.Capacity(
        current=current,
        minimum=target.doc["MinCapacity"],
        maximum=target.doc["MaxCapacity"],
        last_out_at=target.doc.get("LastScaleOutAt"),
        last_in_at=target.doc.get("LastScaleInAt"),
        out_suspended=bool(suspended.get("DynamicScalingOutSuspended")),
        in_suspended=bool(suspended.get("DynamicScalingInSuspended")),
    )


def _metric(config: Mapping[str, Any], resource: Resource) -> dict[str, Any]:
    """The metric a target-tracking configuration tracks, checked, as the loop reads it."""
    predefined = config.get("PredefinedMetricSpecification")
    custom = config.get("CustomizedMetricSpecification")
    if (predefined is None) == (custom is None):
        raise ValidationException(
            "Give exactly one of PredefinedMetricSpecification and CustomizedMetricSpecification."
        )
    if float(config["TargetValue"]) <= 0:
        raise ValidationException(f"TargetValue {config['TargetValue']} must be greater than 0.")
    if predefined is not None:
        return {"Predefined": PREDEFINED, "EndpointName": resource.endpoint, "VariantName": resource.variant}
    assert custom is not None
    name = custom.get("MetricName")
    info = catalog.BY_NAME.get(name or "")
    if info is None:
        raise ValidationException(
            f"MetricName {name} is not one of zeroscale's metrics: {', '.join(catalog.BY_NAME)}."
        )
    if custom.get("Namespace") != "AWS/SageMaker":
        raise ValidationException(
            f"Namespace {custom.get('Namespace')}: zeroscale's metrics are AWS/SageMaker."
        )
    dims = {d["Name"]: d["Value"] for d in custom.get("Dimensions") or []}
    wanted = catalog.dimension_names(str(name))
    if set(dims) != wanted:
        raise ValidationException(
            f"Dimensions {', '.join(sorted(dims)) or '(none)'}: CloudWatch names {name} by exactly "
            f"{' and '.join(sorted(wanted))}."
        )
    dims.setdefault("VariantName", catalog.ENDPOINT_WIDE)  # the asynchronous backlog's: the endpoint's
    statistic = custom.get("Statistic")
    if statistic not in STATISTICS:
        raise ValidationException(f"Statistic {statistic} must be one of {', '.join(STATISTICS)}.")
    unit = custom.get("Unit")
    if unit is not None and unit != info.unit:
        raise ValidationException(f"Unit {unit}: zeroscale records {name} in {info.unit}.")
    return {"MetricName": name, "Statistic": statistic, "Dimensions": dims}


def _tracking(name: str, config: Mapping[str, Any]) -> pol.Tracking:
    custom = config.get("CustomizedMetricSpecification")
    metric = PREDEFINED if custom is None else f"{custom['MetricName']} ({custom['Statistic']})"
    return pol.Tracking(
        name=name,
        metric=metric,
        target=float(config["TargetValue"]),
        scale_out_cooldown_s=float(config.get("ScaleOutCooldown", DEFAULT_COOLDOWN_S)),
        scale_in_cooldown_s=float(config.get("ScaleInCooldown", DEFAULT_COOLDOWN_S)),
        disable_scale_in=bool(config.get("DisableScaleIn", False)),
    )


def _policy_doc(rec: Record) -> dict[str, Any]:
    d = rec.doc
    config = (
        "StepScalingPolicyConfiguration"
        if d["PolicyType"] == "StepScaling"
        else "TargetTrackingScalingPolicyConfiguration"
    )
    return {
        "PolicyARN": rec.arn,
        "PolicyName": d["PolicyName"],
        "ServiceNamespace": NAMESPACE,
        "ResourceId": d["ResourceId"],
        "ScalableDimension": DIMENSION,
        "PolicyType": d["PolicyType"],
        config: d[config],
        "Alarms": [],
        "CreationTime": rec.created_at,
    }


def _not_found_policy(resource_id: str, name: str) -> ZeroscaleError:
    return ObjectNotFound(
        f"No scaling policy found for service namespace: {NAMESPACE}, resource ID: {resource_id}, "
        f"scalable dimension: {DIMENSION}, policy name: {name}"
    )


def _page(items: list[Record], params: Mapping[str, Any]) -> tuple[list[Record], dict[str, str]]:
    """A page of ``items`` from NextToken (an offset zeroscale handed out), MaxResults at a time."""
    token = params.get("NextToken")
    start = 0
    if token:
        if not (isinstance(token, str) and token.isdigit() and len(token) < 10):
            raise InvalidNextToken("The NextToken is not one zeroscale handed out.")
        start = int(token)
    size = int(params.get("MaxResults") or _PAGE)
    page = items[start : start + size]
    more = start + size < len(items)
    return page, ({"NextToken": str(start + size)} if more else {})
