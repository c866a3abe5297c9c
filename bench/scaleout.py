"""Real-time scale-out: the time from a scaling policy's decision to the new instance serving a request.

A real-time variant of one ml.t2.medium instance (2 vCPUs: two always-warm workers) serves a handler model
that answers with its worker's pid, under four client threads invoking back to back (so requests wait for a
worker, and a new one gets one as soon as it is up). A StepScaling policy (+1 instance, no cooldown) is the
action of a CloudWatch alarm; t0 is just before SetAlarmState puts the alarm in ALARM, so the policy decides
at once: the figure is the decision's path (alarm -> policy -> UpdateEndpointWeightsAndCapacities' own
machinery -> two workers forked and pinged) up to the first answer from a pid that was not serving before.
An alarm on a real metric adds up to one period plus 1 s to it (10 s periods at the finest).

Baseline, in the same run: the same scale-out asked directly, UpdateEndpointWeightsAndCapacities
DesiredInstanceCount 2, from the call to the first answer of a new worker. Between rounds the variant goes
back to one instance by hand.

    .venv/bin/python -m bench.scaleout [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import ServerProcess
from zeroscale.testing import SKLEARN_IMAGE, make_tar, wait_final, wait_for

CODE = """
import os


def model_fn(model_dir):
    return None


def predict_fn(data, model):
    return {"pid": os.getpid()}
"""
EP = "bench-scaleout"
ALARM = "bench-scaleout-alarm"
VARIANT = "AllTraffic"
SCOPE = {
    "ServiceNamespace": "sagemaker",
    "ResourceId": f"endpoint/{EP}/variant/{VARIANT}",
    "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
}
CLIENTS = 4


@dataclass
class ScaleOutResult:
    policy_s: list[float] = field(
        default_factory=list
    )  # alarm (the policy's decision) -> a new worker answers
    direct_s: list[float] = field(default_factory=list)  # UpdateEndpointWeightsAndCapacities -> the same


class Traffic:
    """Client threads invoking back to back; each answer's (end, pid)."""

    def __init__(self, smr: Any) -> None:
        self._smr = smr
        self.answers: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop) for _ in range(CLIENTS)]

    def _loop(self) -> None:
        while not self._stop.is_set():
            resp = self._smr.invoke_endpoint(EndpointName=EP, Body=b"[1]", ContentType="application/json")
            pid = int(json.loads(resp["Body"].read())["pid"])
            self.answers.append((time.monotonic(), pid))

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def first_new(self, old: set[int], since: float) -> float | None:
        """When the first answer from a worker not in ``old`` arrived (after ``since``)."""
        return min((t for t, pid in self.answers if pid not in old and t >= since), default=None)


def _instances(sm: Any) -> int:
    return int(sm.describe_endpoint(EndpointName=EP)["ProductionVariants"][0]["CurrentInstanceCount"])


def _back_to_one(sm: Any) -> None:
    assert wait_final(sm, EP)["EndpointStatus"] == "InService"  # the scale-out's update applied
    sm.update_endpoint_weights_and_capacities(
        EndpointName=EP, DesiredWeightsAndCapacities=[{"VariantName": VARIANT, "DesiredInstanceCount": 1}]
    )
    wait_for(lambda: _instances(sm) == 1, timeout_s=60, interval_s=0.05)
    assert wait_final(sm, EP)["EndpointStatus"] == "InService"
    time.sleep(0.5)  # the old instance's workers gone


def _measure(smr: Any, start: Any) -> float:
    """Traffic on the one instance, then ``start()`` at t0; seconds to the first answer of a new worker."""
    with Traffic(smr) as traffic:
        wait_for(lambda: len(traffic.answers) > 40, timeout_s=30, interval_s=0.01)
        old = {pid for _, pid in traffic.answers}
        t0 = time.monotonic()
        start()
        wait_for(lambda: traffic.first_new(old, t0) is not None, timeout_s=60, interval_s=0.005)
        first = traffic.first_new(old, t0)
    assert first is not None
    return first - t0


def run(root: Path, rounds: int = 5) -> ScaleOutResult:
    res = ScaleOutResult()
    root.mkdir(parents=True, exist_ok=True)
    srv = ServerProcess(root / "data").start()
    try:
        sm, smr = srv.client("sagemaker"), srv.client("sagemaker-runtime")
        aas, cw = srv.client("application-autoscaling"), srv.client("cloudwatch")
        tar = make_tar(root / "pid.tar.gz", {"code/inference.py": CODE.encode()})
        sm.create_model(
            ModelName=EP, PrimaryContainer={"Image": SKLEARN_IMAGE, "ModelDataUrl": f"file://{tar}"}
        )
        sm.create_endpoint_config(
            EndpointConfigName=EP,
            ProductionVariants=[
                {
                    "VariantName": VARIANT,
                    "ModelName": EP,
                    "InstanceType": "ml.t2.medium",
                    "InitialInstanceCount": 1,
                }
            ],
        )
        sm.create_endpoint(EndpointName=EP, EndpointConfigName=EP)
        assert wait_final(sm, EP)["EndpointStatus"] == "InService"
        aas.register_scalable_target(**SCOPE, MinCapacity=1, MaxCapacity=2)
        policy = aas.put_scaling_policy(
            **SCOPE,
            PolicyName="out",
            PolicyType="StepScaling",
            StepScalingPolicyConfiguration={
                "AdjustmentType": "ChangeInCapacity",
                "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}],
                "Cooldown": 0,
            },
        )["PolicyARN"]
        cw.put_metric_alarm(
            AlarmName=ALARM,
            Namespace="AWS/SageMaker",
            MetricName="Invocations",
            Dimensions=[
                {"Name": "EndpointName", "Value": EP},
                {"Name": "VariantName", "Value": VARIANT},
            ],
            Statistic="Sum",
            Period=60,
            EvaluationPeriods=1,
            Threshold=1e12,  # never by itself: SetAlarmState decides
            ComparisonOperator="GreaterThanThreshold",
            AlarmActions=[policy],
        )
        for _ in range(rounds):
            cw.set_alarm_state(AlarmName=ALARM, StateValue="OK", StateReason="bench: next round")
            res.policy_s.append(
                _measure(
                    smr,
                    lambda: cw.set_alarm_state(AlarmName=ALARM, StateValue="ALARM", StateReason="bench: out"),
                )
            )
            cw.set_alarm_state(AlarmName=ALARM, StateValue="OK", StateReason="bench: back")
            _back_to_one(sm)
            res.direct_s.append(
                _measure(
                    smr,
                    lambda: sm.update_endpoint_weights_and_capacities(
                        EndpointName=EP,
                        DesiredWeightsAndCapacities=[{"VariantName": VARIANT, "DesiredInstanceCount": 2}],
                    ),
                )
            )
            _back_to_one(sm)
    finally:
        srv.stop()
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zeroscale-scaleout-") as tmp:
        res = run(Path(tmp), args.rounds)
    for label, values in (
        ("policy decision (alarm) -> new instance answers", res.policy_s),
        ("UpdateEndpointWeightsAndCapacities -> new instance answers (baseline)", res.direct_s),
    ):
        shown = ", ".join(f"{v * 1000:.0f}" for v in values)
        print(f"{label} (ms): {shown}; median {statistics.median(values) * 1000:.0f}")


if __name__ == "__main__":
    main()
