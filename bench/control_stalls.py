"""What the largest control-plane calls cost the event loop that also serves invocations: GetMetricData with
500 MetricDataQueries (the most the API takes) over metrics with no data, and CreateModel and
CreateModelPackage of about 490 KB (15 containers with 32 KB of environment each, the most zeroscale takes),
each made with real boto3 against a real server.

    .venv/bin/python -m bench.control_stalls [--calls 12] [--queries 500]

For each call, measured on the server:
- ``loop cpu``: the CPU time of the event loop's thread (the server's main thread, from its
  ``/proc/<pid>/task/<pid>/schedstat``) from the request sent to the answer read, whatever it ran meanwhile
  (the server is otherwise idle);
- ``all threads``: the CPU time of all the server's threads meanwhile (the loop's included; the probe's
  thread, below, takes about 1 ms of it per 50 ms);
- ``longest hold``: the longest time the loop ran without coming back to its queue of callbacks, which is
  what an invocation arriving meanwhile waits at most: a thread of the server posts a callback to the loop
  every millisecond (``bench/stalls_site``), and the latest of them in the call is the longest hold;
- ``round trip``: the client's time for the call.

Medians over ``--calls`` calls (the maximum beside them). CreateModelPackage adds a version to one group at
each call, so its later calls see more versions (boto3 sends a ClientToken with each, which the server
compares with the group's earlier versions).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zeroscale.testing import ServerProcess

SITE = Path(__file__).resolve().parent / "stalls_site"
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
METRICS = ("Invocations", "ModelLatency", "Invocation5XXErrors", "OverheadLatency", "Invocation4XXErrors")


def queries(count: int, period: int) -> list[dict[str, Any]]:
    """``count`` queries of the metrics of ``count / 5`` endpoints that nobody deployed."""
    out = []
    for i in range(count):
        dims = [
            {"Name": "EndpointName", "Value": f"bench-ep-{i // len(METRICS)}"},
            {"Name": "VariantName", "Value": "AllTraffic"},
        ]
        metric = {"Namespace": "AWS/SageMaker", "MetricName": METRICS[i % len(METRICS)], "Dimensions": dims}
        out.append({"Id": f"q{i}", "MetricStat": {"Metric": metric, "Period": period, "Stat": "Sum"}})
    return out


def environment() -> dict[str, str]:
    """32 KB of environment: the most a container's may hold (control/models.py)."""
    env = {f"K{i:02d}": "v" * 1020 for i in range(32)}
    env["Z"] = "v" * (32 * 1024 - 32 * 1023 - 1)
    return env


def containers(model: Path, hostnames: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(15):
        c: dict[str, Any] = {"Image": IMAGE, "ModelDataUrl": f"file://{model}", "Environment": environment()}
        if hostnames:
            c["ContainerHostname"] = f"c{i}"
        out.append(c)
    return out


def _cpu_s(pid: int) -> tuple[float, float]:
    """CPU time of the server's main thread (its event loop's), and of all its threads, in seconds."""
    loop, total = 0.0, 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            used = int((task / "schedstat").read_text().split()[0]) / 1e9
        except (FileNotFoundError, ProcessLookupError):  # a thread that ended meanwhile
            continue
        total += used
        if task.name == str(pid):
            loop = used
    return loop, total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=12, help="calls of each kind")
    parser.add_argument("--queries", type=int, default=500, help="MetricDataQueries per GetMetricData")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="zeroscale-bench-control-stalls-"))
    (root / "model.joblib").write_bytes(b"unused")
    model = root / "model.tar.gz"
    with tarfile.open(model, "w:gz") as tar:
        tar.add(root / "model.joblib", "model.joblib")
    record = root / "stalls.jsonl"
    path = os.pathsep.join(p for p in (str(SITE), os.environ.get("PYTHONPATH", "")) if p)
    env = {"ZEROSCALE_STALLS_FILE": str(record), "ZEROSCALE_STALLS_AFTER_US": "1000", "PYTHONPATH": path}
    srv = ServerProcess(root / "srv", {}, env=env).start()
    try:
        assert srv.proc is not None
        pid = srv.proc.pid
        sm, cw = srv.client("sagemaker"), srv.client("cloudwatch")
        sm.create_model_package_group(ModelPackageGroupName="bench-group")
        end = time.time()
        start = end - 3 * 3600
        made = iter(range(1_000_000))
        calls: dict[str, Callable[[], object]] = {
            f"GetMetricData, {args.queries} x 60 s": lambda: cw.get_metric_data(
                StartTime=start, EndTime=end, MetricDataQueries=queries(args.queries, 60)
            ),
            f"GetMetricData, {args.queries} x 10 s": lambda: cw.get_metric_data(
                StartTime=start, EndTime=end, MetricDataQueries=queries(args.queries, 10)
            ),
            "CreateModel, 15 x 32 KB": lambda: sm.create_model(
                ModelName=f"bench-model-{next(made)}",
                Containers=containers(model, hostnames=True),
                InferenceExecutionConfig={"Mode": "Serial"},
            ),
            "CreateModelPackage, 15 x 32 KB": lambda: sm.create_model_package(
                ModelPackageGroupName="bench-group",
                InferenceSpecification={
                    "Containers": containers(model, hostnames=False),
                    "SupportedContentTypes": ["text/csv"],
                    "SupportedResponseMIMETypes": ["text/csv"],
                },
            ),
        }
        heads = ("loop cpu", "all threads", "longest hold", "round trip")
        print(f"{'(ms: median / max)':34s} " + " ".join(f"{h:>16s}" for h in heads))
        for name, call in calls.items():
            call()  # the first of a kind: imports, caches
            cpu: list[float] = []
            every: list[float] = []
            hold: list[float] = []
            trip: list[float] = []
            for _ in range(args.calls):
                time.sleep(0.1)
                record.write_text("")
                (loop0, all0), t0 = _cpu_s(pid), time.perf_counter()
                call()
                trip.append(time.perf_counter() - t0)
                loop1, all1 = _cpu_s(pid)
                cpu.append(loop1 - loop0)
                every.append(all1 - all0)
                time.sleep(0.05)  # the probe's last record written
                late = [json.loads(line)["late_us"] / 1e6 for line in record.read_text().splitlines()]
                hold.append(max(late, default=0.0))
            cells = [
                f"{statistics.median(v) * 1e3:7.1f} / {max(v) * 1e3:6.1f}" for v in (cpu, every, hold, trip)
            ]
            print(f"{name:34s} " + " ".join(f"{c:>16s}" for c in cells))
        print("(a hold under 1 ms is not recorded: 0)")
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
