"""Real-time variants with real workers and real boto3: instance types as sizes, always-warm instances,
weights and the target-variant header, UpdateEndpointWeightsAndCapacities with Desired* then Current*."""

from __future__ import annotations

import collections
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from click.testing import CliRunner

from metrics.promtext import value
from zeroscale.cli.main import cli
from zeroscale.testing import ACCESS_KEY, REGION, SECRET_KEY, ServerProcess, wait_final, wait_for

from .conftest import handler_model

IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"


def instance(name: str, model: str, weight: float = 1.0, count: int = 1, kind: str = "ml.t2.medium") -> dict:
    return {
        "VariantName": name,
        "ModelName": model,
        "InstanceType": kind,
        "InitialInstanceCount": count,
        "InitialVariantWeight": weight,
    }


def error(call: Any, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as exc:
        call(**kwargs)
    return exc.value.response["Error"]["Code"], exc.value.response["Error"]["Message"]


@pytest.fixture(scope="module")
def ab(server: ServerProcess, sm: Any, sklearn_model: Any) -> str:
    """An endpoint with variants A and B (ml.t2.medium: 2 vCPUs, so 2 always-warm workers each), 3:1."""
    sm.create_model(
        ModelName="rt-model", PrimaryContainer={"Image": IMAGE, "ModelDataUrl": sklearn_model.url}
    )
    sm.create_endpoint_config(
        EndpointConfigName="rt-ab",
        ProductionVariants=[instance("A", "rt-model", 3.0), instance("B", "rt-model", 1.0)],
    )
    sm.create_endpoint(EndpointName="rt-ab", EndpointConfigName="rt-ab")
    desc = wait_final(sm, "rt-ab")
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    return "rt-ab"


def invoke(smr: Any, endpoint: str, body: bytes, **kwargs: Any) -> str:
    resp = smr.invoke_endpoint(EndpointName=endpoint, Body=body, ContentType="application/json", **kwargs)
    resp["Body"].read()
    return str(resp["InvokedProductionVariant"])


def test_a_real_time_variant_takes_6_mb(smr: Any, ab: str) -> None:
    with pytest.raises(ClientError) as err:  # past serverless's 4 MB: the model answers (refusing it)
        smr.invoke_endpoint(EndpointName=ab, Body=b"0" * (6 * 1024 * 1024), ContentType="text/csv")
    assert err.value.response["Error"]["Code"] == "ModelError"


def test_instances_are_always_warm_workers_one_per_vcpu(server: ServerProcess, ab: str) -> None:
    wait_for(lambda: server.workers(ab, "A") == 2 and server.workers(ab, "B") == 2, timeout_s=30)


def test_weights_split_traffic_and_the_target_variant_overrides_them(
    smr: Any, ab: str, sklearn_model: Any
) -> None:
    body = sklearn_model.json_body(sklearn_model.X[:1])
    counts = collections.Counter(invoke(smr, ab, body) for _ in range(200))
    assert set(counts) == {"A", "B"}
    assert 0.6 < counts["A"] / 200 < 0.9  # 3:1
    assert {invoke(smr, ab, body, TargetVariant="B") for _ in range(20)} == {"B"}
    code, message = error(smr.invoke_endpoint, EndpointName=ab, Body=body, TargetVariant="C")
    assert code == "ValidationError" and "Variant C not found" in message


def test_unknown_instance_types_and_all_zero_weights_are_refused_by_name(sm: Any, ab: str) -> None:
    code, message = error(
        sm.create_endpoint_config,
        EndpointConfigName="rt-bad",
        ProductionVariants=[instance("A", "rt-model", kind="ml.p4d.24xlarge")],
    )
    assert code == "ValidationException"
    assert "InstanceType ml.p4d.24xlarge of production variant A is not served by zeroscale" in message
    code, message = error(
        sm.create_endpoint_config,
        EndpointConfigName="rt-bad",
        ProductionVariants=[instance("A", "rt-model", 0.0), instance("B", "rt-model", 0.0)],
    )
    assert code == "ValidationException" and "InitialVariantWeight" in message


def test_update_weights_and_capacities(
    server: ServerProcess, sm: Any, smr: Any, ab: str, sklearn_model: Any
) -> None:
    sm.update_endpoint_weights_and_capacities(
        EndpointName=ab,
        DesiredWeightsAndCapacities=[
            {"VariantName": "A", "DesiredWeight": 0.0},
            {"VariantName": "B", "DesiredWeight": 2.0, "DesiredInstanceCount": 2},
        ],
    )
    desc = wait_final(sm, ab)
    assert desc["EndpointStatus"] == "InService"
    variants = {v["VariantName"]: v for v in desc["ProductionVariants"]}
    assert (variants["A"]["CurrentWeight"], variants["A"]["DesiredWeight"]) == (0.0, 0.0)
    assert (variants["B"]["CurrentWeight"], variants["B"]["DesiredWeight"]) == (2.0, 2.0)
    assert (variants["B"]["CurrentInstanceCount"], variants["B"]["DesiredInstanceCount"]) == (2, 2)
    assert "VariantStatus" not in variants["B"]
    wait_for(lambda: server.workers(ab, "B") == 4, timeout_s=30)  # two instances of 2 vCPUs
    body = sklearn_model.json_body(sklearn_model.X[:1])
    assert {invoke(smr, ab, body) for _ in range(40)} == {"B"}  # A has weight 0
    assert invoke(smr, ab, body, TargetVariant="A") == "A"  # still reachable by name
    # back down to one instance: the extra workers go at once
    sm.update_endpoint_weights_and_capacities(
        EndpointName=ab, DesiredWeightsAndCapacities=[{"VariantName": "B", "DesiredInstanceCount": 1}]
    )
    assert wait_final(sm, ab)["EndpointStatus"] == "InService"
    wait_for(lambda: server.workers(ab, "B") == 2, timeout_s=30)


def test_update_endpoint_retains_variant_properties_when_asked(
    server_factory: Callable[..., ServerProcess], sklearn_model: Any
) -> None:
    """RetainAllVariantProperties: the variants the new configuration keeps keep the weights and instance
    counts they were given since (UpdateEndpointWeightsAndCapacities, autoscaling), but what
    ExcludeRetainedVariantProperties names; a new variant takes the configuration's. Without it, the
    configuration's, as before. (A server of its own, with room for both fleets of an update in its memory
    budget: the instances reserve 4 GB each, the workers use far less.)"""
    server = server_factory(memory_budget_mb=64 * 1024)
    sm = server.client("sagemaker")
    sm.create_model(
        ModelName="rt-model", PrimaryContainer={"Image": IMAGE, "ModelDataUrl": sklearn_model.url}
    )
    sm.create_endpoint_config(
        EndpointConfigName="rt-keep-1",
        ProductionVariants=[instance("A", "rt-model", 3.0), instance("B", "rt-model")],
    )
    sm.create_endpoint_config(
        EndpointConfigName="rt-keep-2",
        ProductionVariants=[
            instance("A", "rt-model", 3.0),
            instance("B", "rt-model"),
            instance("C", "rt-model"),
        ],
    )
    sm.create_endpoint(EndpointName="rt-keep", EndpointConfigName="rt-keep-1")
    assert wait_final(sm, "rt-keep")["EndpointStatus"] == "InService"
    sm.update_endpoint_weights_and_capacities(
        EndpointName="rt-keep",
        DesiredWeightsAndCapacities=[
            {"VariantName": "A", "DesiredWeight": 0.5},
            {"VariantName": "B", "DesiredInstanceCount": 2},
        ],
    )
    assert wait_final(sm, "rt-keep")["EndpointStatus"] == "InService"

    def variants(**update: Any) -> dict[str, tuple[float, int]]:
        sm.update_endpoint(EndpointName="rt-keep", **update)
        desc = wait_final(sm, "rt-keep")
        assert (desc["EndpointStatus"], desc.get("FailureReason")) == ("InService", None)
        return {
            v["VariantName"]: (v["CurrentWeight"], v["CurrentInstanceCount"])
            for v in desc["ProductionVariants"]
        }

    kept = variants(EndpointConfigName="rt-keep-2", RetainAllVariantProperties=True)
    assert kept == {"A": (0.5, 1), "B": (1.0, 2), "C": (1.0, 1)}
    wait_for(lambda: server.workers("rt-keep", "B") == 4, timeout_s=30)  # two instances, as before
    counts_from_config = variants(
        EndpointConfigName="rt-keep-1",
        RetainAllVariantProperties=True,
        ExcludeRetainedVariantProperties=[{"VariantPropertyType": "DesiredInstanceCount"}],
    )
    assert counts_from_config == {"A": (0.5, 1), "B": (1.0, 1)}
    assert variants(EndpointConfigName="rt-keep-2") == {"A": (3.0, 1), "B": (1.0, 1), "C": (1.0, 1)}
    code, message = error(
        sm.update_endpoint,
        EndpointName="rt-keep",
        EndpointConfigName="rt-keep-1",
        ExcludeRetainedVariantProperties=[{"VariantPropertyType": "DesiredWeight"}],
    )
    assert code == "ValidationException"
    assert message.startswith("ExcludeRetainedVariantProperties applies with RetainAllVariantProperties=true")
    code, message = error(  # a property zeroscale has none of: refused by name, not taken and dropped
        sm.update_endpoint,
        EndpointName="rt-keep",
        EndpointConfigName="rt-keep-1",
        RetainAllVariantProperties=True,
        ExcludeRetainedVariantProperties=[{"VariantPropertyType": "DataCaptureConfig"}],
    )
    assert code == "ValidationException" and "serves no data capture" in message, message
    sm.delete_endpoint(EndpointName="rt-keep")


def test_current_instance_count_says_how_many_instances_the_host_s_memory_holds(
    server_factory: Callable[..., ServerProcess], sklearn_model: Any
) -> None:
    """3 x ml.t2.medium wants 6 workers of 2 GB; a host of 6 GB starts 3 of them, which is 2 instances:
    DescribeEndpoint says so (CurrentInstanceCount 2, DesiredInstanceCount 3) once the shortfall lasted,
    as the metering bills it; asked for 1 instance, which fits, both say 1."""
    server = server_factory(memory_budget_mb=6 * 1024, warm_cache_mb=0)
    sm = server.client("sagemaker")
    sm.create_model(
        ModelName="rt-model", PrimaryContainer={"Image": IMAGE, "ModelDataUrl": sklearn_model.url}
    )
    sm.create_endpoint_config(
        EndpointConfigName="rt-big", ProductionVariants=[instance("A", "rt-model", count=3)]
    )
    sm.create_endpoint(EndpointName="rt-big", EndpointConfigName="rt-big")
    assert wait_final(sm, "rt-big")["EndpointStatus"] == "InService"

    def counts() -> tuple[int, int]:
        (v,) = sm.describe_endpoint(EndpointName="rt-big")["ProductionVariants"]
        return v["CurrentInstanceCount"], v["DesiredInstanceCount"]

    wait_for(lambda: counts() == (2, 3), timeout_s=40)
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": REGION}
    listed = CliRunner().invoke(cli, ["endpoints", "--endpoint-url", server.url], env=env)
    assert listed.exit_code == 0 and "2 of 3 x ml.t2.medium" in listed.output, listed.output
    sm.update_endpoint_weights_and_capacities(
        EndpointName="rt-big", DesiredWeightsAndCapacities=[{"VariantName": "A", "DesiredInstanceCount": 1}]
    )
    assert wait_final(sm, "rt-big")["EndpointStatus"] == "InService"
    wait_for(lambda: counts() == (1, 1), timeout_s=40)


def test_update_weights_and_capacities_refuses_what_sagemaker_refuses(
    server: ServerProcess, sm: Any, ab: str
) -> None:
    cases = [
        ([{"VariantName": "Nope", "DesiredWeight": 1.0}], "The variant(s) [Nope] are not present"),
        (
            [{"VariantName": "A", "DesiredWeight": 0.0}, {"VariantName": "B", "DesiredWeight": 0.0}],
            "add up to 0",
        ),
        ([{"VariantName": "A"}], "give at least one of"),
        (
            [{"VariantName": "A", "ServerlessUpdateConfig": {"MaxConcurrency": 2}}],
            "runs on instances: change its capacity with DesiredInstanceCount",
        ),
    ]
    for desired, text in cases:
        code, message = error(
            sm.update_endpoint_weights_and_capacities, EndpointName=ab, DesiredWeightsAndCapacities=desired
        )
        assert code == "ValidationException" and text in message, (desired, message)
    raw = server.client("sagemaker", parameter_validation=False)  # what a client that checks nothing sends
    code, message = error(
        raw.update_endpoint_weights_and_capacities,
        EndpointName=ab,
        DesiredWeightsAndCapacities=[{"VariantName": "A", "DesiredWeight": -1.0}],
    )
    assert code == "ValidationException" and "desiredWeight" in message  # botocore's model's range


def test_serverless_capacity_updates(server: ServerProcess, sm: Any, smr: Any, sklearn_model: Any) -> None:
    sm.create_model(
        ModelName="sl-model", PrimaryContainer={"Image": IMAGE, "ModelDataUrl": sklearn_model.url}
    )
    sm.create_endpoint_config(
        EndpointConfigName="sl-cap",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "sl-model",
                "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 2},
            }
        ],
    )
    sm.create_endpoint(EndpointName="sl-cap", EndpointConfigName="sl-cap")
    assert wait_final(sm, "sl-cap")["EndpointStatus"] == "InService"
    code, message = error(
        sm.update_endpoint_weights_and_capacities,
        EndpointName="sl-cap",
        DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 2}],
    )
    assert code == "ValidationException" and "is serverless" in message
    sm.update_endpoint_weights_and_capacities(
        EndpointName="sl-cap",
        DesiredWeightsAndCapacities=[
            {
                "VariantName": "AllTraffic",
                "ServerlessUpdateConfig": {"MaxConcurrency": 5, "ProvisionedConcurrency": 2},
            }
        ],
    )
    variant = wait_final(sm, "sl-cap")["ProductionVariants"][0]
    want = {"MemorySizeInMB": 1024, "MaxConcurrency": 5, "ProvisionedConcurrency": 2}
    assert variant["CurrentServerlessConfig"] == variant["DesiredServerlessConfig"] == want
    wait_for(lambda: server.workers("sl-cap") >= 2, timeout_s=30)  # the new provisioned floor
    body = sklearn_model.json_body(sklearn_model.X[:3])
    resp = smr.invoke_endpoint(EndpointName="sl-cap", Body=body, ContentType="application/json")
    assert json.loads(resp["Body"].read()) == sklearn_model.expected(sklearn_model.X[:3])


FAILING_SHADOW = """
def model_fn(model_dir):
    return None

def transform_fn(model, body, content_type, accept):
    raise RuntimeError("the candidate model is broken")
"""


def test_a_shadow_variant_gets_a_copy_of_the_traffic_and_its_answers_are_discarded(
    server: ServerProcess, sm: Any, smr: Any, sklearn_model: Any, tmp_path: Path
) -> None:
    sm.create_model(
        ModelName="shadow-candidate",
        PrimaryContainer={"Image": IMAGE, "ModelDataUrl": handler_model(tmp_path, FAILING_SHADOW)},
    )
    sm.create_endpoint_config(
        EndpointConfigName="rt-shadow",
        ProductionVariants=[instance("Prod", "rt-model", 1.0)],
        ShadowProductionVariants=[instance("Candidate", "shadow-candidate", 1.0)],  # a copy of every request
    )
    sm.create_endpoint(EndpointName="rt-shadow", EndpointConfigName="rt-shadow")
    desc = wait_final(sm, "rt-shadow")
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    assert [v["VariantName"] for v in desc["ShadowProductionVariants"]] == ["Candidate"]
    assert (
        sm.describe_endpoint_config(EndpointConfigName="rt-shadow")["ShadowProductionVariants"][0][
            "ModelName"
        ]
        == "shadow-candidate"
    )
    body = sklearn_model.json_body(sklearn_model.X[:2])
    for _ in range(10):
        resp = smr.invoke_endpoint(EndpointName="rt-shadow", Body=body, ContentType="application/json")
        assert resp["InvokedProductionVariant"] == "Prod"
        assert json.loads(resp["Body"].read()) == sklearn_model.expected(sklearn_model.X[:2])
    labels = {"endpoint_name": "rt-shadow", "variant_name": "Candidate"}

    def shadow_errors() -> float | None:
        return value(server.metrics(), "zeroscale_invocation_5xx_errors_total", **labels)

    # A streamed request is copied too (the shadow serves it whole, its answer discarded).
    streamed = smr.invoke_endpoint_with_response_stream(
        EndpointName="rt-shadow", Body=body, ContentType="application/json"
    )
    assert streamed["InvokedProductionVariant"] == "Prod"
    parts = b"".join(e["PayloadPart"]["Bytes"] for e in streamed["Body"])
    assert json.loads(parts) == sklearn_model.expected(sklearn_model.X[:2])
    wait_for(lambda: shadow_errors() == 11, timeout_s=20)  # recorded under its own name
    assert value(server.metrics(), "zeroscale_invocations_total", **labels) == 11
    code, _ = error(smr.invoke_endpoint, EndpointName="rt-shadow", Body=body, TargetVariant="Candidate")
    assert code == "ValidationError"  # a shadow is not a target


def test_shadow_variants_follow_sagemaker_s_rules(sm: Any, ab: str) -> None:
    code, message = error(
        sm.create_endpoint_config,
        EndpointConfigName="rt-shadow-bad",
        ProductionVariants=[instance("A", "rt-model"), instance("B", "rt-model")],
        ShadowProductionVariants=[instance("S", "rt-model")],
    )
    assert code == "ValidationException" and "exactly one production variant" in message


def test_serverless_to_real_time_and_back_under_load_fails_no_request(
    server_factory: Callable[..., ServerProcess], sklearn_model: Any
) -> None:
    """Every request succeeds through both moves, and every one sent after a move is InService reaches the
    new variant. (One sent before may still end on the old fleet after that: it drains in the background.)
    A server of its own, with room for both fleets of a move: on the module's, the instances and
    provisioned workers of the tests before held 18 of its 23.5 GB, and a move under load now and then
    found no room for its new fleet beside the old one's busy workers (CI failed so twice)."""
    server = server_factory(memory_budget_mb=16 * 1024)
    sm = server.client("sagemaker")
    sm.create_model(
        ModelName="rt-model", PrimaryContainer={"Image": IMAGE, "ModelDataUrl": sklearn_model.url}
    )
    serverless = {"MemorySizeInMB": 1024, "MaxConcurrency": 3}
    sm.create_endpoint_config(
        EndpointConfigName="move-sl",
        ProductionVariants=[
            {"VariantName": "Serverless", "ModelName": "rt-model", "ServerlessConfig": serverless}
        ],
    )
    sm.create_endpoint_config(
        EndpointConfigName="move-rt", ProductionVariants=[instance("RealTime", "rt-model", count=1)]
    )
    sm.create_endpoint(EndpointName="move", EndpointConfigName="move-sl")
    assert wait_final(sm, "move")["EndpointStatus"] == "InService"
    smr = server.client("sagemaker-runtime", max_pool_connections=8)
    body = sklearn_model.json_body(sklearn_model.X[:2])
    want = sklearn_model.expected(sklearn_model.X[:2])
    stop = threading.Event()
    served: list[tuple[str, float]] = []  # (the variant that answered, when the request was sent)
    errors: list[BaseException] = []

    def stream() -> None:
        while not stop.is_set():
            try:
                sent = time.monotonic()
                resp = smr.invoke_endpoint(EndpointName="move", Body=body, ContentType="application/json")
                assert json.loads(resp["Body"].read()) == want
                served.append((str(resp["InvokedProductionVariant"]), sent))
            except BaseException as exc:  # every failure is a test failure
                errors.append(exc)

    threads = [threading.Thread(target=stream) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for config, variant in (("move-rt", "RealTime"), ("move-sl", "Serverless")):
            n = len(served)
            wait_for(lambda n=n: len(served) >= n + 10, timeout_s=10, interval_s=0.02)
            sm.update_endpoint(EndpointName="move", EndpointConfigName=config)
            done = wait_final(sm, "move", timeout_s=30)
            # an update that failed leaves the old configuration serving, InService, and says why
            assert (done["EndpointStatus"], done.get("FailureReason")) == ("InService", None)
            moved = time.monotonic()

            def since(moved: float = moved) -> list[str]:
                return [v for v, sent in list(served) if sent >= moved]

            wait_for(lambda: len(since()) >= 10, timeout_s=10, interval_s=0.02)
            assert set(since()) == {variant}
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
