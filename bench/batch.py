"""Batch transform throughput: records per second through zeroscale (CreateTransformJob, MultiRecord over
real S3, SeaweedFS) against the same model predicting the same CSV in one process with the same mini-batches,
as a ratio measured in one run. Target: 0.8 or better for the reference RandomForest (100 trees, 10
features).

    .venv/bin/python -m bench.batch [--rows N] [--files F] [--payload-mb M] [--repeats R]

zeroscale: one worker (InstanceCount 1, MaxConcurrentTransforms 1), timed by the job's own record, from its
CreationTime to its TransformEndTime (worker start, S3 reads and writes, the front end and the worker's CSV
decoding included); the time until the client, polling DescribeTransformJob every 50 ms, sees it Completed
is reported beside it (a 200,000-record job takes about a second: the poll's granularity is in that one).
Baseline: one process that reads the same files from memory, cuts the same mini-batches (whole lines up to
MaxPayloadInMB), decodes each with numpy, predicts and formats one line per record.
Alternating runs; the ratio is the median of the per-pair ratios. Writes bench/results/batch.md
(``run(...)`` serves bench/run.py too).
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np

from bench.common import RESULTS, ServerProcess, build_models
from zeroscale.testing_s3 import SeaweedS3

BUCKET = "bench-batch"
MB = 1024 * 1024


@dataclass(frozen=True)
class BatchResult:
    records: int
    payload_mb: int
    zeroscale_rps: list[float]  # records over the job's CreationTime -> TransformEndTime
    baseline_rps: list[float]
    polled_rps: list[float] = field(default_factory=list)  # records over create -> Completed seen by polling

    @property
    def ratio(self) -> float:
        """The median of each run's ratio to the baseline run next to it (robust to the machine's load
        moving between runs)."""
        return statistics.median(z / b for z, b in zip(self.zeroscale_rps, self.baseline_rps, strict=True))


def _csv(rows: np.ndarray) -> bytes:
    return "".join(",".join(f"{v:.6f}" for v in row) + "\n" for row in rows).encode()


def _mini_batches(data: bytes, limit: int) -> list[bytes]:
    out, start = [], 0
    while start < len(data):
        end = min(len(data), start + limit)
        if end < len(data):
            end = data.rindex(b"\n", start, end) + 1
        out.append(data[start:end])
        start = end
    return out


def _baseline(model: Any, files: list[bytes], limit: int) -> float:
    started = time.perf_counter()
    records = 0
    for data in files:
        chunks = []
        for batch in _mini_batches(data, limit):
            rows = np.loadtxt(io.BytesIO(batch), delimiter=",", ndmin=2)
            chunks.append("\n".join(str(int(p)) for p in model.predict(rows)) + "\n")
            records += len(rows)
        "".join(chunks)
    return records / (time.perf_counter() - started)


def _through_zeroscale(sm: Any, name: str, payload_mb: int, records: int) -> tuple[float, float]:
    """Records per second over the job's own span (CreationTime -> TransformEndTime), and over the time
    from the create call until a poll sees the job Completed."""
    started = time.perf_counter()
    sm.create_transform_job(
        TransformJobName=name,
        ModelName="rf",
        BatchStrategy="MultiRecord",
        MaxPayloadInMB=payload_mb,
        TransformInput={
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/in/"}},
            "ContentType": "text/csv",
            "SplitType": "Line",
        },
        TransformOutput={
            "S3OutputPath": f"s3://{BUCKET}/{name}",
            "Accept": "text/csv",
            "AssembleWith": "Line",
        },
        TransformResources={"InstanceType": "ml.c5.2xlarge", "InstanceCount": 1},
    )
    while (status := sm.describe_transform_job(TransformJobName=name))["TransformJobStatus"] == "InProgress":
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    if status["TransformJobStatus"] != "Completed":
        raise RuntimeError(f"{name}: {status['TransformJobStatus']}: {status.get('FailureReason')}")
    span = (status["TransformEndTime"] - status["CreationTime"]).total_seconds()
    return records / span, records / elapsed


def run(root: Path, *, rows: int, files: int, payload_mb: int, repeats: int) -> BatchResult:
    (root / "models").mkdir(parents=True)
    models = build_models(root / "models")
    model = joblib.load(models.rf_joblib)
    X = np.random.RandomState(1).rand(rows, 10)
    parts = [_csv(part) for part in np.array_split(X, files)]
    with SeaweedS3(root / "s3") as s3server:
        s3 = s3server.client()
        s3.create_bucket(Bucket=BUCKET)
        for i, data in enumerate(parts):
            s3.put_object(Bucket=BUCKET, Key=f"in/part-{i}.csv", Body=data)
        server = ServerProcess(
            root / "data", {"s3_endpoint_url": s3server.endpoint_url}, env=s3server.env()
        ).start()
        try:
            sm = server.client("sagemaker")
            sm.create_model(
                ModelName="rf", PrimaryContainer={"Image": "sklearn", "ModelDataUrl": f"file://{models.rf}"}
            )
            _through_zeroscale(sm, "warmup", payload_mb, rows)  # zygote, caches
            _baseline(model, parts, payload_mb * MB)
            through, base, polled = [], [], []
            for i in range(repeats):
                job, seen = _through_zeroscale(sm, f"run-{i}", payload_mb, rows)
                through.append(job)
                polled.append(seen)
                base.append(_baseline(model, parts, payload_mb * MB))
        finally:
            server.stop()
    return BatchResult(rows, payload_mb, through, base, polled)


def report(res: BatchResult) -> str:
    z, b = statistics.median(res.zeroscale_rps), statistics.median(res.baseline_rps)
    return "\n".join(
        [
            "# Batch transform throughput",
            "",
            f"{res.records} records of 10 features, RandomForest 100 trees, MultiRecord, MaxPayloadInMB "
            f"{res.payload_mb}, one worker; median of {len(res.zeroscale_rps)} alternating runs.",
            "",
            "| figure | records/s | baseline: one process, same mini-batches | ratio | target |",
            "|---|---:|---:|---:|---|",
            f"| batch transform through zeroscale | {z:,.0f} | {b:,.0f} | {res.ratio:.2f} | >= 0.8: "
            f"{'met' if res.ratio >= 0.8 else 'missed'} |",
            "",
            "The ratio is the median of each run's ratio to its neighbouring baseline run; the records/s are "
            "the medians of each side.",
            "",
            "Runs (records/s): zeroscale "
            + ", ".join(f"{v:,.0f}" for v in res.zeroscale_rps)
            + "; baseline "
            + ", ".join(f"{v:,.0f}" for v in res.baseline_rps)
            + "; ratios "
            + ", ".join(f"{z / b:.2f}" for z, b in zip(res.zeroscale_rps, res.baseline_rps, strict=True))
            + ". Until Completed was seen by polling every 50 ms: "
            + ", ".join(f"{v:,.0f}" for v in res.polled_rps)
            + " records/s (ratios "
            + ", ".join(f"{z / b:.2f}" for z, b in zip(res.polled_rps, res.baseline_rps, strict=True))
            + ").",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=2)
    parser.add_argument("--payload-mb", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zeroscale-bench-batch-") as tmp:
        res = run(
            Path(tmp), rows=args.rows, files=args.files, payload_mb=args.payload_mb, repeats=args.repeats
        )
    text = report(res)
    (RESULTS / "batch.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
