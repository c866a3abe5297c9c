"""What each extra container of an inference pipeline costs a warm request.

    .venv/bin/python -m bench.pipeline [--requests N]

Two endpoints of the same trivial echo model on one server, each warm (MaxConcurrency 1): ``single`` (one
container) and ``pipe3`` (three containers, InferenceExecutionConfig Mode Serial). Requests alternate between
them on one keep-alive connection, signed with botocore's SigV4 signer (signing kept out of the timer).
Prints each endpoint's latency percentiles, the pipeline's ratio to the single container, and the latency
one more stage adds: (pipe3 - single) / 2, computed per request pair, then its percentiles.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.common import JSON, ServerProcess, SignedClient, build_models, ms, pct, server, wait_final

BODY = b'{"echo": 1}'
STAGES = 3


def deploy_pair(srv: ServerProcess, echo_url: str) -> None:
    sm = srv.client("sagemaker")
    container = {"Image": "sklearn", "ModelDataUrl": echo_url}
    sm.create_model(ModelName="single", PrimaryContainer=container)
    sm.create_model(
        ModelName="pipe3",
        Containers=[{**container, "ContainerHostname": f"stage-{i}"} for i in range(1, STAGES + 1)],
        InferenceExecutionConfig={"Mode": "Serial"},
    )
    for name in ("single", "pipe3"):
        sm.create_endpoint_config(
            EndpointConfigName=name,
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": name,
                    "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 1},
                }
            ],
            Tags=[{"Key": "zeroscale:idle-timeout-s", "Value": "3600"}],
        )
        sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
        desc = wait_final(sm, name)
        if desc["EndpointStatus"] != "InService":
            raise RuntimeError(f"{name}: {desc.get('FailureReason')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500, help="request pairs (default 500)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zsbench-pipeline-") as tmp:
        root = Path(tmp)
        models = build_models(root)
        with server(root, "data") as srv:
            deploy_pair(srv, f"file://{models.echo}")
            client = SignedClient(srv.url)
            for _ in range(20):  # warm: every container's worker has served
                client.invoke("single", BODY)
                client.invoke("pipe3", BODY)
            single: list[float] = []
            pipe: list[float] = []
            for _ in range(args.requests):
                single.append(client.invoke("single", BODY)[1])
                pipe.append(client.invoke("pipe3", BODY)[1])
            client.close()
    per_stage = [(p - s) / (STAGES - 1) for p, s in zip(pipe, single, strict=True)]
    print(f"{args.requests} request pairs, {JSON} body of {len(BODY)} bytes, warm workers")
    print(f"{'':<28}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}")
    for label, values in (
        ("single container", single),
        (f"{STAGES}-container pipeline", pipe),
        ("one more stage (paired)", per_stage),
    ):
        print(f"{label:<28}" + "".join(f"{ms(pct(values, q)):>10.3f}" for q in (50, 90, 99)))
    print(f"pipeline / single at p50: {pct(pipe, 50) / pct(single, 50):.2f}x")
    extra = (pct(pipe, 50) - pct(single, 50)) / (STAGES - 1)
    print(f"one more stage from the p50s: {ms(extra):.3f} ms")


if __name__ == "__main__":
    main()
