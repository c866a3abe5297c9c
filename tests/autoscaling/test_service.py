"""The evaluation loop's one step, against a fake endpoint and a real (in-memory) store, with a fake clock: a
customized-metric policy scales out through update_weights_and_capacities, the activity is recorded with its
cause and settles when the endpoint does, and the cooldown is kept in the target's record."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from typing import Any

import pytest

from zeroscale.autoscaling.samples import Samples
from zeroscale.autoscaling.service import AutoScaling
from zeroscale.autoscaling.targets import DIMENSION, POLICIES_PER_TARGET, LimitExceeded, Targets
from zeroscale.errors import ValidationException
from zeroscale.events import InvocationRecord
from zeroscale.metrics.service import Gauge
from zeroscale.peers import Gathered, Peer, PeerClient
from zeroscale.store.db import Store

RESOURCE = "endpoint/demo/variant/A"
SCOPE = {"ServiceNamespace": "sagemaker", "ResourceId": RESOURCE, "ScalableDimension": DIMENSION}


class FakeEndpoints:
    def __init__(self) -> None:
        self.count = 1
        self.status = "InService"
        self.calls: list[dict[str, Any]] = []
        self.gone = False

    def describe(self, name: str) -> dict[str, Any]:
        if self.gone:
            raise ValidationException(f'Could not find endpoint "{name}".')
        variant = {"VariantName": "A", "CurrentInstanceCount": self.count, "DesiredInstanceCount": self.count}
        return {"EndpointName": name, "EndpointStatus": self.status, "ProductionVariants": [variant]}

    async def update_weights_and_capacities(self, params: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(params)
        self.status = "Updating"
        return {}


def slow(at: float) -> InvocationRecord:
    return InvocationRecord("demo", "A", "w", at, 0.5, 0.5, 1, 1, 200, "", 1024, None, False)


def scaling(now: list[float]) -> tuple[FakeEndpoints, Samples, AutoScaling]:
    """An endpoint, the samples the loop would take, and the service, on the clock ``now[0]``."""
    endpoints = FakeEndpoints()
    samples = Samples(lambda: [], period_s=10.0, keep=15, clock=lambda: now[0])
    service = AutoScaling(
        Targets(Store("sqlite://")),
        endpoints,
        samples,
        region="us-east-1",
        account_id="1",
        clock=lambda: now[0],
    )
    return endpoints, samples, service


def test_a_customized_metric_scales_out_and_the_activity_settles() -> None:
    now = [1000.0]
    endpoints, samples, service = scaling(now)
    service.register({**SCOPE, "MinCapacity": 1, "MaxCapacity": 3})
    latency = {
        "MetricName": "ModelLatency",
        "Namespace": "AWS/SageMaker",
        "Dimensions": [{"Name": "EndpointName", "Value": "demo"}, {"Name": "VariantName", "Value": "A"}],
        "Statistic": "Average",
    }
    service.put_policy(
        {
            **SCOPE,
            "PolicyName": "latency",
            "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": {
                "TargetValue": 200_000.0,  # 200 ms
                "CustomizedMetricSpecification": latency,
                "ScaleOutCooldown": 60,
            },
        }
    )
    for _ in range(3):  # three periods of 500 ms: 2.5 x the target
        samples.invocation(slow(now[0]))
        samples.close_period()
        asyncio.run(service.evaluate())
        now[0] += 10
    assert endpoints.calls == [
        {
            "EndpointName": "demo",
            "DesiredWeightsAndCapacities": [{"VariantName": "A", "DesiredInstanceCount": 3}],
        }
    ]
    (activity,) = service.describe_activities({"ServiceNamespace": "sagemaker"})["ScalingActivities"]
    assert activity["StatusCode"] == "InProgress" and "EndTime" not in activity
    assert "ModelLatency (Average) was above the target 200000" in activity["Cause"]
    endpoints.status, endpoints.count = "InService", 3
    asyncio.run(service.evaluate())
    (activity,) = service.describe_activities({"ServiceNamespace": "sagemaker"})["ScalingActivities"]
    assert activity["StatusCode"] == "Successful" and activity["EndTime"] == now[0]
    assert activity["Description"] == "Setting desired instance count to 3."
    # at MaxCapacity now, and the scale-out time is kept in the target's record
    target = service.describe_targets({"ServiceNamespace": "sagemaker"})["ScalableTargets"][0]
    assert target["MaxCapacity"] == 3
    assert service._t.require(RESOURCE).doc["LastScaleOutAt"] == 1020.0


def test_a_policy_without_policy_type_is_step_scaling() -> None:
    service = AutoScaling(
        Targets(Store("sqlite://")),
        FakeEndpoints(),
        Samples(lambda: [], 60.0, 15, lambda: 0.0),
        region="us-east-1",
        account_id="1",
    )
    service.register({**SCOPE, "MinCapacity": 1, "MaxCapacity": 3})
    tracking = {"TargetValue": 1.0, "PredefinedMetricSpecification": {}}
    with pytest.raises(ValidationException, match="StepScalingPolicyConfiguration is required"):
        service.put_policy({**SCOPE, "PolicyName": "p", "TargetTrackingScalingPolicyConfiguration": tracking})


def test_the_asynchronous_backlog_per_instance_scales_out_named_by_the_endpoint_alone() -> None:
    """SageMaker's asynchronous scaling policy: ApproximateBacklogSizePerInstance, whose one dimension is
    EndpointName (a VariantName is refused, as CloudWatch has no such series); the backlog's gauges are
    read only while a policy tracks them."""
    now = [1000.0]
    endpoints, samples, service = scaling(now)
    service.register({**SCOPE, "MinCapacity": 1, "MaxCapacity": 5})
    backlog = {
        "MetricName": "ApproximateBacklogSizePerInstance",
        "Namespace": "AWS/SageMaker",
        "Dimensions": [{"Name": "EndpointName", "Value": "demo"}],
        "Statistic": "Average",
    }
    policy = {
        **SCOPE,
        "PolicyName": "backlog",
        "PolicyType": "TargetTrackingScaling",
        "TargetTrackingScalingPolicyConfiguration": {
            "TargetValue": 2.0,
            "CustomizedMetricSpecification": backlog,
        },
    }
    with pytest.raises(
        ValidationException, match="CloudWatch names ApproximateBacklogSizePerInstance by exactly"
    ):
        variant = [*backlog["Dimensions"], {"Name": "VariantName", "Value": "A"}]  # type: ignore[misc]
        config = {**policy["TargetTrackingScalingPolicyConfiguration"]}  # type: ignore[dict-item]
        config["CustomizedMetricSpecification"] = {**backlog, "Dimensions": variant}
        service.put_policy({**policy, "TargetTrackingScalingPolicyConfiguration": config})
    assert not samples.wants_gauges()
    service.put_policy(policy)
    assert samples.wants_gauges()
    for _ in range(3):  # 6 queued per instance against a target of 2
        samples.observe(
            [Gauge("demo", "", "ApproximateBacklogSizePerInstance", 6.0), Gauge("other", "", "x", 1.0)]
        )
        samples.close_period()
        asyncio.run(service.evaluate())
        now[0] += 10
    assert endpoints.calls == [
        {
            "EndpointName": "demo",
            "DesiredWeightsAndCapacities": [{"VariantName": "A", "DesiredInstanceCount": 3}],
        }
    ]


def test_a_target_holds_at_most_fifty_policies() -> None:
    """Application Auto Scaling's quota: a fifty-first policy is refused until one is deleted; putting an
    existing one again only changes it."""
    _, _, service = scaling([1000.0])
    service.register({**SCOPE, "MinCapacity": 1, "MaxCapacity": 3})
    step = {"AdjustmentType": "ChangeInCapacity", "StepAdjustments": [{"ScalingAdjustment": 1}]}
    for n in range(POLICIES_PER_TARGET):
        service.put_policy({**SCOPE, "PolicyName": f"p{n}", "StepScalingPolicyConfiguration": step})
    with pytest.raises(LimitExceeded) as err:
        service.put_policy({**SCOPE, "PolicyName": "one-more", "StepScalingPolicyConfiguration": step})
    assert (err.value.code, err.value.status) == ("LimitExceededException", 400)
    assert "has 50 scaling policies" in err.value.message and "DeleteScalingPolicy" in err.value.message
    service.put_policy(
        {**SCOPE, "PolicyName": "p0", "StepScalingPolicyConfiguration": {**step, "Cooldown": 5}}
    )
    service.delete_policy({**SCOPE, "PolicyName": "p1"})
    service.put_policy({**SCOPE, "PolicyName": "one-more", "StepScalingPolicyConfiguration": step})
    assert len(service.describe_policies({"ServiceNamespace": "sagemaker"})["ScalingPolicies"]) == 50


def test_a_target_whose_endpoint_is_gone_is_logged_once_not_every_period(
    caplog: pytest.LogCaptureFixture,
) -> None:
    endpoints, _, service = scaling([1000.0])
    service.register({**SCOPE, "MinCapacity": 1, "MaxCapacity": 3})
    endpoints.gone = True
    with caplog.at_level(logging.INFO, logger="zeroscale.autoscaling"):
        for _ in range(3):
            asyncio.run(service.evaluate())
        endpoints.gone = False
        asyncio.run(service.evaluate())
        endpoints.gone = True  # gone again: said again
        asyncio.run(service.evaluate())
    said = [r.getMessage() for r in caplog.records]
    assert said == [f'autoscaling {RESOURCE}: Could not find endpoint "demo".'] * 2


def record(at: float, latency_s: float = 0.05) -> InvocationRecord:
    return InvocationRecord("demo", "A", "w", at, latency_s, latency_s, 1, 1, 200, "", 1024, None, False)


def test_the_leader_decides_from_every_front_ends_samples() -> None:
    """Two front ends on one database, each serving half of an endpoint's traffic: 36 invocations a minute
    each, 72 together, against a target of 60 per instance. The other front end's samples (as its peer
    route answers them, through JSON) are merged with the leader's period by period, so the leader scales
    out, where either alone would not; the other front end never decides."""
    now = [1000.0]
    endpoints, samples, leader = scaling(now)
    other_samples = Samples(lambda: [], period_s=10.0, keep=15, clock=lambda: now[0])

    async def others(op: str, args: dict[str, Any]) -> Gathered:
        return Gathered((("fe-b", json.loads(json.dumps(other_samples.export()))),))

    leader._others = others
    follower_endpoints = FakeEndpoints()
    follower = AutoScaling(
        leader._t,
        follower_endpoints,
        other_samples,
        region="us-east-1",
        account_id="1",
        clock=lambda: now[0],
        leads=lambda: False,
    )
    per_instance(leader, ScaleOutCooldown=60)
    other_samples.watch(samples._watched)
    for _ in range(3):  # three 10-s periods of 6 invocations on each front end
        for n in range(6):
            samples.invocation(record(now[0] + n, latency_s=0.1))
            other_samples.invocation(record(now[0] + n, latency_s=0.4))
        samples.close_period()
        other_samples.close_period()
        assert samples.values("demo", "A", "Invocations", "Sum")[-1] == 36.0
        asyncio.run(follower.evaluate())
        asyncio.run(leader.evaluate())
        now[0] += 10
    assert follower_endpoints.calls == []
    assert endpoints.calls == [
        {
            "EndpointName": "demo",
            "DesiredWeightsAndCapacities": [{"VariantName": "A", "DesiredInstanceCount": 2}],
        }
    ]
    (activity,) = leader.describe_activities({"ServiceNamespace": "sagemaker"})["ScalingActivities"]
    assert "SageMakerVariantInvocationsPerInstance was above the target 60" in activity["Cause"]
    # the statistics pool every sample of both front ends: an average over all twelve, not of the two
    theirs = [json.loads(json.dumps(other_samples.export()))]
    assert samples.values("demo", "A", "ModelLatency", "Average", theirs)[-1] == pytest.approx(250_000.0)
    assert samples.values("demo", "A", "ModelLatency", "Maximum", theirs)[-1] == pytest.approx(400_000.0)
    assert samples.values("demo", "A", "Invocations", "SampleCount", theirs)[-1] == 72.0
    # a front end that started later has fewer periods: the oldest are the leader's own
    late = Samples(lambda: [], period_s=10.0, keep=15, clock=lambda: now[0])
    late.watch(samples._watched)
    late.invocation(record(now[0]))
    late.close_period()
    merged = samples.values("demo", "A", "Invocations", "Sum", [json.loads(json.dumps(late.export()))])
    assert merged == [36.0, 36.0, 42.0]


def per_instance(scaling: AutoScaling, **config: Any) -> None:
    """1 to 4 instances, tracking 60 invocations per instance (with ``config`` added)."""
    scaling.register({**SCOPE, "MinCapacity": 1, "MaxCapacity": 4})
    predefined = {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}
    tracking = {"TargetValue": 60.0, "PredefinedMetricSpecification": predefined, **config}
    scaling.put_policy(
        {
            **SCOPE,
            "PolicyName": "per-instance",
            "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": tracking,
        }
    )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_no_scale_in_while_a_front_end_does_not_answer_the_leader(caplog: pytest.LogCaptureFixture) -> None:
    """Four instances and no invocations on the leader for fifteen periods: below the target, so it would
    scale in. But another live front end does not answer for its samples (nothing listens where it serves:
    a real peer call, refused), and its share of the traffic may be what keeps the instances busy, so the
    capacity holds and the log says why, once. When the view is whole again (that front end left), the
    next evaluation scales in."""
    now = [1000.0]
    endpoints, samples, leader = scaling(now)
    endpoints.count = 4
    down = Peer("fe-b", f"http://127.0.0.1:{closed_port()}")
    live = [down]
    client = PeerClient(b"k" * 32, "fe-a", lambda: live, timeout_s=2.0)
    leader._others = client.ask
    per_instance(leader)
    try:
        with caplog.at_level(logging.INFO, logger="zeroscale.autoscaling"):
            for _ in range(16):
                samples.close_period()
                asyncio.run(leader.evaluate())
                now[0] += 10
            assert endpoints.calls == []
            said = [r.getMessage() for r in caplog.records if r.name == "zeroscale.autoscaling"]
            assert len(said) == 1 and f"front ends fe-b at {down.url} did not answer" in said[0]
            assert "no target scales in" in said[0]
            live.clear()
            asyncio.run(leader.evaluate())
    finally:
        client.close()
    assert endpoints.calls == [
        {
            "EndpointName": "demo",
            "DesiredWeightsAndCapacities": [{"VariantName": "A", "DesiredInstanceCount": 1}],
        }
    ]
    assert "every front end answered" in caplog.records[-2].getMessage()


def test_a_step_down_is_not_taken_on_an_alarms_partial_view() -> None:
    """An alarm whose data lacked a front end invokes a step policy: its step down is not taken, its step
    up is; with the whole view, the step down is."""
    endpoints, _, service = scaling([1000.0])
    endpoints.count = 2
    service.register({**SCOPE, "MinCapacity": 0, "MaxCapacity": 4})
    config = {
        "AdjustmentType": "ChangeInCapacity",
        "Cooldown": 0,
        "StepAdjustments": [
            {"MetricIntervalUpperBound": 0, "ScalingAdjustment": -1},
            {"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1},
        ],
    }
    arn = service.put_policy({**SCOPE, "PolicyName": "steps", "StepScalingPolicyConfiguration": config})[
        "PolicyARN"
    ]
    asyncio.run(service.step(arn, -3.0, "quiet", above=False, partial=True))
    assert endpoints.calls == []
    asyncio.run(service.step(arn, 3.0, "busy", partial=True))
    assert [c["DesiredWeightsAndCapacities"][0]["DesiredInstanceCount"] for c in endpoints.calls] == [3]
    endpoints.status, endpoints.count = "InService", 3
    asyncio.run(service.step(arn, -3.0, "quiet", above=False))
    assert [c["DesiredWeightsAndCapacities"][0]["DesiredInstanceCount"] for c in endpoints.calls] == [3, 2]


ROLE = "arn:aws:iam::1:role/r"


def test_a_target_registered_through_two_front_ends_at_once_is_registered_once_then_updated() -> None:
    """Both front ends find no target and insert one: the second insert meets the first's record (another
    front end's registration lands between this one's read and its insert, here). It then registers as an
    update of that target (what was given changes, the rest stays), as RegisterScalableTarget does for a
    target that exists, not as an internal failure."""
    now = [1000.0]
    _, samples, service = scaling(now)
    other = AutoScaling(
        service._t, FakeEndpoints(), samples, region="us-east-1", account_id="1", clock=lambda: now[0]
    )
    targets = service._t
    read = targets.target

    def read_then_the_other_registers(resource_id: str) -> Any:
        found = read(resource_id)
        if found is None and targets.target is read_then_the_other_registers:
            targets.target = read  # type: ignore[method-assign]  # once
            other.register({**SCOPE, "MinCapacity": 1, "MaxCapacity": 5, "RoleARN": ROLE})
        return found

    targets.target = read_then_the_other_registers  # type: ignore[method-assign]
    arn = service.register({**SCOPE, "MinCapacity": 2, "MaxCapacity": 4})["ScalableTargetARN"]
    [target] = service.describe_targets({"ServiceNamespace": "sagemaker"})["ScalableTargets"]
    assert (target["MinCapacity"], target["MaxCapacity"], target["RoleARN"]) == (2, 4, ROLE)
    assert target["ScalableTargetARN"] == arn
