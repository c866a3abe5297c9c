"""Canary rollback: the time from a CloudWatch alarm entering ALARM to the old fleet taking all the traffic,
for an UpdateEndpoint with a CANARY DeploymentConfig (50% of the traffic on the new fleet, baking for an
hour) whose AutoRollbackConfiguration names the alarm. Baseline, in the same run: the manual way back
without a guard, an UpdateEndpoint to the old configuration, from the call to the old model answering all
the traffic.

    .venv/bin/python -m bench.rollback [--rounds N]

Both are measured from the client: two threads invoke the endpoint back to back (each answer says which
model gave it), and "all the traffic" is the start of the first request after which no request reached the
new model. The alarm is put in ALARM with SetAlarmState (t0 just before the call), so the figure is the
guard's own reaction (the alarm evaluator's notification, the fleet's route swap), not the metric's period:
an alarm on a real metric adds up to one period plus 1 s (10 s periods here). Also reported: t0 to the
endpoint's InService (the new fleet drained). One real-time variant (ml.t2.medium: two workers a fleet).
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
def model_fn(model_dir):
    return "{name}"


def predict_fn(data, model):
    return {{"model": model}}
"""
EP = "bench-rollback"
ALARM = "bench-rollback-alarm"


@dataclass
class RollbackResult:
    guarded_s: list[float] = field(default_factory=list)  # alarm -> all traffic on the old fleet
    in_service_s: list[float] = field(default_factory=list)  # alarm -> InService (new fleet drained)
    manual_s: list[float] = field(default_factory=list)  # UpdateEndpoint back -> all traffic on the old model


class Traffic:
    """Two threads invoking back to back; each answer's (start, model)."""

    def __init__(self, smr: Any) -> None:
        self._smr = smr
        self.answers: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._loop) for _ in range(2)]

    def _loop(self) -> None:
        while not self._stop.is_set():
            t = time.monotonic()
            resp = self._smr.invoke_endpoint(EndpointName=EP, Body=b"[1]", ContentType="application/json")
            self.answers.append((t, json.loads(resp["Body"].read())["model"]))

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def last_start_of(self, model: str, since: float) -> float:
        return max((t for t, m in self.answers if m == model and t >= since), default=since)


def _config(sm: Any, name: str, model: str) -> str:
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": model,
                "InstanceType": "ml.t2.medium",
                "InitialInstanceCount": 1,
            }
        ],
    )
    return name


def run(root: Path, rounds: int = 5) -> RollbackResult:
    res = RollbackResult()
    root.mkdir(parents=True, exist_ok=True)
    srv = ServerProcess(root / "data").start()
    try:
        sm, smr, cw = srv.client("sagemaker"), srv.client("sagemaker-runtime"), srv.client("cloudwatch")
        for color in ("blue", "green"):
            tar = make_tar(root / f"{color}.tar.gz", {"code/inference.py": CODE.format(name=color).encode()})
            sm.create_model(
                ModelName=color, PrimaryContainer={"Image": SKLEARN_IMAGE, "ModelDataUrl": f"file://{tar}"}
            )
            _config(sm, color, color)
        sm.create_endpoint(EndpointName=EP, EndpointConfigName="blue")
        assert wait_final(sm, EP)["EndpointStatus"] == "InService"
        cw.put_metric_alarm(
            AlarmName=ALARM,
            Namespace="AWS/SageMaker",
            MetricName="Invocation5XXErrors",
            Dimensions=[
                {"Name": "EndpointName", "Value": EP},
                {"Name": "VariantName", "Value": "AllTraffic"},
            ],
            Statistic="Sum",
            Period=10,
            EvaluationPeriods=1,
            Threshold=0,
            ComparisonOperator="GreaterThanThreshold",
            TreatMissingData="notBreaching",
        )
        deployment = {
            "BlueGreenUpdatePolicy": {
                "TrafficRoutingConfiguration": {
                    "Type": "CANARY",
                    "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 50},
                    "WaitIntervalInSeconds": 3600,
                }
            },
            "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": ALARM}]},
        }
        for _ in range(rounds):
            cw.set_alarm_state(AlarmName=ALARM, StateValue="OK", StateReason="bench: next round")
            sm.update_endpoint(EndpointName=EP, EndpointConfigName="green", DeploymentConfig=deployment)
            with Traffic(smr) as traffic:
                wait_for(
                    lambda t=traffic: any(m == "green" for _, m in t.answers[-50:]),
                    timeout_s=60,
                    interval_s=0.01,
                )
                t0 = time.monotonic()
                cw.set_alarm_state(AlarmName=ALARM, StateValue="ALARM", StateReason="bench: roll back")
                wait_for(
                    lambda: sm.describe_endpoint(EndpointName=EP)["EndpointStatus"] == "InService",
                    timeout_s=60,
                    interval_s=0.01,
                )
                res.in_service_s.append(time.monotonic() - t0)
                time.sleep(0.3)  # more answers after it, so the last green one is really the last
                res.guarded_s.append(traffic.last_start_of("green", t0) - t0)
            # baseline: the same fleets, no guard: green deployed plainly, then a manual UpdateEndpoint back
            sm.update_endpoint(EndpointName=EP, EndpointConfigName="green")
            assert wait_final(sm, EP)["EndpointStatus"] == "InService"
            with Traffic(smr) as traffic:
                wait_for(lambda t=traffic: len(t.answers) > 20, timeout_s=30, interval_s=0.01)
                t0 = time.monotonic()
                sm.update_endpoint(EndpointName=EP, EndpointConfigName="blue")
                wait_final(sm, EP)
                time.sleep(0.3)
                res.manual_s.append(traffic.last_start_of("green", t0) - t0)
    finally:
        srv.stop()
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zeroscale-rollback-") as tmp:
        res = run(Path(tmp), args.rounds)
    for label, values in (
        ("alarm -> old fleet takes all traffic", res.guarded_s),
        ("alarm -> InService (new fleet drained)", res.in_service_s),
        ("manual UpdateEndpoint back (baseline)", res.manual_s),
    ):
        shown = ", ".join(f"{v * 1000:.0f}" for v in values)
        print(f"{label} (ms): {shown}; median {statistics.median(values) * 1000:.0f}")


if __name__ == "__main__":
    main()
