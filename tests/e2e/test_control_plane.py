"""The control plane against a real server: the server's own validation (boto3's client-side validation is
off, so every bad request reaches the wire), full CRUD, List* filters, sorting and pagination, and
operations zeroscale does not implement."""

from __future__ import annotations

import datetime
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from e2e.conftest import handler_model
from zeroscale.testing import ACCESS_KEY, REGION, SECRET_KEY, ServerProcess, deploy, wait_final

# Every test here runs on SQLite and on PostgreSQL (the control plane, restarts, metering, metrics).
BACKENDS = ("sqlite", "postgresql")

ARN = "arn:aws:sagemaker:us-east-1:000000000000"
SERVERLESS = {"MemorySizeInMB": 1024, "MaxConcurrency": 2}

SLOW_LOADING_MODEL = """
import time

def model_fn(model_dir):
    time.sleep(4.0)  # longer than CreateEndpoint and UpdateEndpoint wait for a deployment (2 s)
    return "slow"

def transform_fn(model, body, content_type, accept):
    return b"[]", "application/json"
"""


@pytest.fixture(scope="module")
def raw(server: ServerProcess) -> Any:
    """A sagemaker client that sends whatever it is given: only the server validates."""
    return server.client("sagemaker", parameter_validation=False)


@pytest.fixture(scope="module")
def model(raw: Any, sklearn_model: Any) -> str:
    raw.create_model(
        ModelName="base", PrimaryContainer={"Image": "sklearn", "ModelDataUrl": sklearn_model.url}
    )
    return "base"


def _error(call: Callable[..., Any], **params: Any) -> tuple[str, str, int]:
    with pytest.raises(ClientError) as err:
        call(**params)
    resp = err.value.response
    return resp["Error"]["Code"], resp["Error"]["Message"], resp["ResponseMetadata"]["HTTPStatusCode"]


def _config(name: str, model: str, **variant: Any) -> dict[str, Any]:
    return {
        "EndpointConfigName": name,
        "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": model, **variant}],
    }


# ---- validation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("serverless", "message"),
    [
        (
            {"MemorySizeInMB": 1500, "MaxConcurrency": 1},
            "Value '1500' at 'MemorySizeInMB' failed to satisfy constraint: "
            "Member must satisfy enum value set: [1024, 2048, 3072, 4096, 5120, 6144]",
        ),
        (
            {"MemorySizeInMB": 8192, "MaxConcurrency": 1},
            "1 validation error detected: Value '8192' at "
            "'productionVariants.1.member.serverlessConfig.memorySizeInMB' failed to satisfy constraint: "
            "Member must have value less than or equal to 6144",
        ),
        (
            {"MemorySizeInMB": 1024, "MaxConcurrency": 0},
            "1 validation error detected: Value '0' at "
            "'productionVariants.1.member.serverlessConfig.maxConcurrency' failed to satisfy constraint: "
            "Member must have value greater than or equal to 1",
        ),
        (
            {"MemorySizeInMB": 1024, "MaxConcurrency": 201},
            "1 validation error detected: Value '201' at "
            "'productionVariants.1.member.serverlessConfig.maxConcurrency' failed to satisfy constraint: "
            "Member must have value less than or equal to 200",
        ),
        (
            {"MemorySizeInMB": 1024, "MaxConcurrency": 2, "ProvisionedConcurrency": 3},
            'ProvisionedConcurrency (3) of production variant "AllTraffic" must be less than or equal to '
            "its MaxConcurrency (2).",
        ),
    ],
    ids=[
        "memory-not-a-1gb-step",
        "memory-out-of-range",
        "concurrency-0",
        "concurrency-201",
        "provisioned-above-max",
    ],
)
def test_serverless_config_rules(raw: Any, model: str, serverless: dict[str, Any], message: str) -> None:
    code, text, status = _error(
        raw.create_endpoint_config, **_config("bad-config", model, ServerlessConfig=serverless)
    )
    assert (code, text, status) == ("ValidationException", message, 400)
    assert _error(raw.describe_endpoint_config, EndpointConfigName="bad-config")[0] == "ValidationException"


def test_variant_needs_instance_type_or_serverless(raw: Any, model: str) -> None:
    code, text, _ = _error(raw.create_endpoint_config, **_config("no-kind", model))
    assert code == "ValidationException"
    assert text == 'Production variant "AllTraffic" must specify either InstanceType or ServerlessConfig.'


def test_missing_required_member(raw: Any, model: str) -> None:
    params = _config("x", model, ServerlessConfig=SERVERLESS)
    del params["EndpointConfigName"]
    code, text, _ = _error(raw.create_endpoint_config, **params)
    assert code == "ValidationException"
    assert text == (
        "1 validation error detected: Value null at 'endpointConfigName' failed to satisfy constraint: "
        "Member must not be null"
    )


def test_bad_name_pattern(raw: Any) -> None:
    code, text, _ = _error(raw.create_model, ModelName="bad_name!", PrimaryContainer={"Image": "sklearn"})
    assert code == "ValidationException"
    assert text == (
        "1 validation error detected: Value 'bad_name!' at 'modelName' failed to satisfy constraint: "
        "Member must satisfy regular expression pattern: [a-zA-Z0-9]([\\-a-zA-Z0-9]*[a-zA-Z0-9])?"
    )


def test_name_longer_than_63_characters(raw: Any, model: str) -> None:
    name = "a" * 64
    code, text, _ = _error(raw.create_model, ModelName=name, PrimaryContainer={"Image": "sklearn"})
    assert code == "ValidationException"
    assert text == (
        f"1 validation error detected: Value '{name}' at 'modelName' failed to satisfy constraint: "
        "Member must have length less than or equal to 63"
    )
    code, text, _ = _error(raw.create_endpoint, EndpointName=name, EndpointConfigName="whatever")
    assert code == "ValidationException"
    too_long = "Member must have length less than or equal to 63"
    assert f"Value '{name}' at 'endpointName' failed to satisfy constraint: {too_long}" in text
    # 63 characters is fine
    raw.create_model(ModelName="b" * 63, PrimaryContainer={"Image": "sklearn"})
    raw.delete_model(ModelName="b" * 63)


def test_wrong_json_type_is_a_serialization_exception(raw: Any, model: str) -> None:
    params = _config("typed", model, ServerlessConfig={"MemorySizeInMB": 1024, "MaxConcurrency": "2"})
    code, text, status = _error(raw.create_endpoint_config, **params)
    assert (code, status) == ("SerializationException", 400)
    assert "'productionVariants.1.member.serverlessConfig.maxConcurrency'" in text
    assert "Integer" in text


def test_duplicates(raw: Any, model: str) -> None:
    code, text, _ = _error(raw.create_model, ModelName=model, PrimaryContainer={"Image": "sklearn"})
    assert (code, text) == (
        "ValidationException",
        f'Cannot create already existing model "{ARN}:model/{model}".',
    )
    raw.create_endpoint_config(**_config("dup-config", model, ServerlessConfig=SERVERLESS))
    code, text, _ = _error(
        raw.create_endpoint_config, **_config("dup-config", model, ServerlessConfig=SERVERLESS)
    )
    assert (code, text) == (
        "ValidationException",
        f'Cannot create already existing endpoint configuration "{ARN}:endpoint-config/dup-config".',
    )
    # names are case-insensitive, as ARNs are lower-cased
    code, text, _ = _error(raw.create_model, ModelName=model.upper(), PrimaryContainer={"Image": "sklearn"})
    assert (code, text) == (
        "ValidationException",
        f'Cannot create already existing model "{ARN}:model/{model}".',
    )


def test_duplicate_endpoint(raw: Any, sklearn_model: Any) -> None:
    desc = deploy(raw, "dup-endpoint", sklearn_model.url)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    code, text, _ = _error(
        raw.create_endpoint, EndpointName="dup-endpoint", EndpointConfigName="dup-endpoint"
    )
    assert (code, text) == (
        "ValidationException",
        f'Cannot create already existing endpoint "{ARN}:endpoint/dup-endpoint".',
    )


def test_missing_references(raw: Any, model: str) -> None:
    code, text, _ = _error(
        raw.create_endpoint_config, **_config("orphan", "ghost", ServerlessConfig=SERVERLESS)
    )
    assert (code, text) == ("ValidationException", f'Could not find model "{ARN}:model/ghost".')
    code, text, _ = _error(raw.create_endpoint, EndpointName="orphan", EndpointConfigName="ghost")
    assert (code, text) == (
        "ValidationException",
        f'Could not find endpoint configuration "{ARN}:endpoint-config/ghost".',
    )
    assert (
        _error(raw.describe_endpoint, EndpointName="orphan")[1]
        == f'Could not find endpoint "{ARN}:endpoint/orphan".'
    )
    code, text, status = _error(raw.describe_model, ModelName="ghost")
    assert (code, text, status) == ("ValidationException", f'Could not find model "{ARN}:model/ghost".', 400)


def test_update_endpoint_rules(raw: Any, tmp_path: Path) -> None:
    code, text, _ = _error(raw.update_endpoint, EndpointName="ghost", EndpointConfigName="ghost")
    assert (code, text) == ("ValidationException", f'Could not find endpoint "{ARN}:endpoint/ghost".')

    deploy(raw, "slow", handler_model(tmp_path, SLOW_LOADING_MODEL), wait=False)
    assert raw.describe_endpoint(EndpointName="slow")["EndpointStatus"] == "Creating"
    code, text, _ = _error(raw.update_endpoint, EndpointName="slow", EndpointConfigName="slow")
    assert (code, text) == (
        "ValidationException",
        f'Cannot update in-progress endpoint "{ARN}:endpoint/slow". Wait until it is InService.',
    )
    desc = wait_final(raw, "slow")
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    # once InService an update is accepted, and the endpoint goes through Updating back to InService
    arn = raw.update_endpoint(EndpointName="slow", EndpointConfigName="slow")["EndpointArn"]
    assert arn == f"{ARN}:endpoint/slow"
    assert raw.describe_endpoint(EndpointName="slow")["EndpointStatus"] == "Updating"
    code, text, _ = _error(raw.update_endpoint, EndpointName="slow", EndpointConfigName="slow")
    assert (code, text) == (
        "ValidationException",
        f'Cannot update in-progress endpoint "{arn}". Wait until it is InService.',
    )
    assert wait_final(raw, "slow")["EndpointStatus"] == "InService"


# ---- CRUD ------------------------------------------------------------------------------------------------


def test_model_crud(raw: Any, sklearn_model: Any) -> None:
    container = {"Image": "sklearn", "ModelDataUrl": sklearn_model.url, "Environment": {"A_B": "1"}}
    before = datetime.datetime.now(datetime.UTC)
    arn = raw.create_model(ModelName="crud-model", PrimaryContainer=container)["ModelArn"]
    assert arn == f"{ARN}:model/crud-model"
    desc = raw.describe_model(ModelName="crud-model")
    assert desc["ModelName"] == "crud-model"
    assert desc["ModelArn"] == arn
    assert desc["PrimaryContainer"] == container
    assert desc["EnableNetworkIsolation"] is False
    assert isinstance(desc["CreationTime"], datetime.datetime)
    assert (
        before - datetime.timedelta(seconds=5) <= desc["CreationTime"] <= datetime.datetime.now(datetime.UTC)
    )
    listed = raw.list_models(NameContains="crud-model")["Models"]
    assert [(m["ModelName"], m["ModelArn"]) for m in listed] == [("crud-model", arn)]
    assert listed[0]["CreationTime"] == desc["CreationTime"]
    raw.delete_model(ModelName="crud-model")
    assert _error(raw.describe_model, ModelName="crud-model")[1] == f'Could not find model "{arn}".'
    assert raw.list_models(NameContains="crud-model")["Models"] == []
    assert _error(raw.delete_model, ModelName="crud-model")[:2] == (
        "ValidationException",
        f'Could not find model "{arn}".',
    )


def test_endpoint_config_crud(raw: Any, model: str) -> None:
    arn = raw.create_endpoint_config(**_config("crud-config", model, ServerlessConfig=SERVERLESS))[
        "EndpointConfigArn"
    ]
    assert arn == f"{ARN}:endpoint-config/crud-config"
    desc = raw.describe_endpoint_config(EndpointConfigName="crud-config")
    assert desc["EndpointConfigName"] == "crud-config"
    assert desc["EndpointConfigArn"] == arn
    assert desc["ProductionVariants"] == [
        {
            "VariantName": "AllTraffic",
            "ModelName": model,
            "InitialVariantWeight": 1.0,
            "ServerlessConfig": SERVERLESS,
        }
    ]
    assert isinstance(desc["CreationTime"], datetime.datetime)
    listed = raw.list_endpoint_configs(NameContains="crud-con")["EndpointConfigs"]
    assert [(c["EndpointConfigName"], c["EndpointConfigArn"]) for c in listed] == [("crud-config", arn)]
    raw.delete_endpoint_config(EndpointConfigName="crud-config")
    code, text, _ = _error(raw.describe_endpoint_config, EndpointConfigName="crud-config")
    assert (code, text) == ("ValidationException", f'Could not find endpoint configuration "{arn}".')


# ---- List* -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def twelve_models(raw: Any) -> list[str]:
    """pg-00 .. pg-11 created in a shuffled order, so name order and creation order differ."""
    order = [7, 2, 11, 0, 5, 9, 1, 10, 3, 8, 4, 6]
    names = [f"pg-{i:02d}" for i in order]
    for name in names:
        raw.create_model(ModelName=name, PrimaryContainer={"Image": "sklearn"})
    return names  # in creation order


def _names(resp: dict[str, Any], key: str = "Models", field: str = "ModelName") -> list[str]:
    return [item[field] for item in resp[key]]


def test_list_name_contains_and_sort(raw: Any, twelve_models: list[str]) -> None:
    by_name = sorted(twelve_models)
    kw = {"NameContains": "PG-", "MaxResults": 100}  # NameContains is case-insensitive
    assert _names(raw.list_models(SortBy="Name", SortOrder="Ascending", **kw)) == by_name
    assert _names(raw.list_models(SortBy="Name", SortOrder="Descending", **kw)) == by_name[::-1]
    assert _names(raw.list_models(SortBy="CreationTime", SortOrder="Ascending", **kw)) == twelve_models
    assert _names(raw.list_models(SortBy="CreationTime", SortOrder="Descending", **kw)) == twelve_models[::-1]
    # default: CreationTime, Descending; default page size 10
    default = raw.list_models(NameContains="pg-")
    assert _names(default) == twelve_models[::-1][:10]
    assert "NextToken" in default
    assert _names(raw.list_models(NameContains="pg-1", SortBy="Name", SortOrder="Ascending")) == [
        "pg-10",
        "pg-11",
    ]
    assert raw.list_models(NameContains="no-such-thing")["Models"] == []


@pytest.mark.parametrize(("sort_by", "order"), [("Name", "Ascending"), ("CreationTime", "Descending")])
def test_paginator_returns_each_model_once(
    raw: Any, twelve_models: list[str], sort_by: str, order: str
) -> None:
    paginator = raw.get_paginator("list_models")
    pages = list(
        paginator.paginate(
            NameContains="pg-", SortBy=sort_by, SortOrder=order, PaginationConfig={"PageSize": 5}
        )
    )
    assert [len(p["Models"]) for p in pages] == [5, 5, 2]
    collected = [m["ModelName"] for p in pages for m in p["Models"]]
    expected = sorted(twelve_models) if sort_by == "Name" else twelve_models[::-1]
    assert collected == expected
    assert "NextToken" not in pages[-1]
    # build_full_result agrees
    full = paginator.paginate(NameContains="pg-", PaginationConfig={"PageSize": 5}).build_full_result()
    assert sorted(_names(full)) == sorted(twelve_models)


def test_pages_are_stable_while_models_come_and_go(raw: Any) -> None:
    names = [f"kp-{i:02d}" for i in range(9)]
    for name in names:
        raw.create_model(ModelName=name, PrimaryContainer={"Image": "sklearn"})
    query = {"NameContains": "kp-", "SortBy": "Name", "SortOrder": "Ascending", "MaxResults": 4}
    first = raw.list_models(**query)
    assert _names(first) == names[:4]
    raw.delete_model(ModelName="kp-01")  # already returned
    raw.delete_model(ModelName="kp-05")  # not yet returned
    raw.create_model(ModelName="kp-00a", PrimaryContainer={"Image": "sklearn"})  # sorts before the cursor
    rest: list[str] = []
    token = first.get("NextToken")
    while token:
        page = raw.list_models(NextToken=token, **query)
        rest += _names(page)
        token = page.get("NextToken")
    assert rest == ["kp-04", "kp-06", "kp-07", "kp-08"]


def test_bad_list_parameters(raw: Any, twelve_models: list[str]) -> None:
    code, text, _ = _error(raw.list_models, SortBy="Colour")
    assert (code, text) == (
        "ValidationException",
        "1 validation error detected: Value 'Colour' at 'sortBy' failed to satisfy constraint: "
        "Member must satisfy enum value set: [Name, CreationTime]",
    )
    code, text, _ = _error(raw.list_models, MaxResults=101)
    assert (code, text) == (
        "ValidationException",
        "1 validation error detected: Value '101' at 'maxResults' failed to satisfy constraint: "
        "Member must have value less than or equal to 100",
    )
    code, text, _ = _error(raw.list_models, NextToken="not-a-token")
    assert (code, text) == ("ValidationException", "Invalid pagination token")
    # a token from one query replayed against another query is rejected
    token = raw.list_models(NameContains="pg-", MaxResults=5, SortBy="Name")["NextToken"]
    assert _error(raw.list_models, NameContains="pg-", MaxResults=5, SortBy="CreationTime", NextToken=token)[
        1
    ] == ("Invalid pagination token")


def test_list_endpoints_status_equals(raw: Any, sklearn_model: Any, tmp_path: Path) -> None:
    good = deploy(raw, "status-good", sklearn_model.url)
    assert good["EndpointStatus"] == "InService", good.get("FailureReason")
    (tmp_path / "broken.tar.gz").write_bytes(b"not a tar.gz archive\n")  # fails its deployment
    bad = deploy(raw, "status-bad", f"file://{tmp_path}/broken.tar.gz")
    assert bad["EndpointStatus"] == "Failed"
    assert f"{tmp_path}/broken.tar.gz" in bad["FailureReason"]

    failed = raw.list_endpoints(NameContains="status-", StatusEquals="Failed")["Endpoints"]
    assert [e["EndpointName"] for e in failed] == ["status-bad"]
    assert failed[0]["EndpointStatus"] == "Failed"
    assert failed[0]["EndpointArn"] == f"{ARN}:endpoint/status-bad"
    assert isinstance(failed[0]["CreationTime"], datetime.datetime)
    assert isinstance(failed[0]["LastModifiedTime"], datetime.datetime)
    in_service = raw.list_endpoints(NameContains="status-", StatusEquals="InService")["Endpoints"]
    assert [e["EndpointName"] for e in in_service] == ["status-good"]
    both = raw.list_endpoints(NameContains="status-", SortBy="Name", SortOrder="Ascending")["Endpoints"]
    assert [e["EndpointName"] for e in both] == ["status-bad", "status-good"]
    assert raw.list_endpoints(NameContains="status-", StatusEquals="Updating")["Endpoints"] == []
    code, text, _ = _error(raw.list_endpoints, StatusEquals="Sleeping")
    assert code == "ValidationException"
    assert text.startswith(
        "1 validation error detected: Value 'Sleeping' at 'statusEquals' failed to satisfy"
    )

    # a Failed endpoint can still be deleted
    raw.delete_endpoint(EndpointName="status-bad")
    raw.get_waiter("endpoint_deleted").wait(
        EndpointName="status-bad", WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
    assert _names(raw.list_endpoints(NameContains="status-"), "Endpoints", "EndpointName") == ["status-good"]


# ---- operations zeroscale does not know ----------------------------------------------------------------


def test_operation_not_implemented(raw: Any, sm: Any) -> None:
    code, text, status = _error(raw.create_processing_job, ProcessingJobName="pj")
    assert "CreateProcessingJob" in text
    assert code == "NotImplementedError"
    assert status == 501
    code, text, _ = _error(sm.list_training_jobs)
    assert "ListTrainingJobs" in text
    # the server is still fine
    assert isinstance(sm.list_models()["Models"], list)


def _signed_post(
    server: ServerProcess, target: str, body: bytes
) -> tuple[int, dict[str, str], dict[str, Any]]:
    headers = {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": target}
    request = AWSRequest(method="POST", url=f"{server.url}/", data=body, headers=headers)
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "sagemaker", REGION).add_auth(request)
    prepared = request.prepare()
    req = urllib.request.Request(
        prepared.url, data=body, headers=dict(prepared.headers.items()), method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers.items()), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items()), json.loads(exc.read())


def test_unknown_target(server: ServerProcess, model: str) -> None:
    status, headers, body = _signed_post(server, "SageMaker.MakeCoffee", b"{}")
    assert status == 400
    assert body["__type"] == "UnknownOperationException"
    assert "SageMaker.MakeCoffee" in body["message"]
    assert headers.get("x-amzn-RequestId") or headers.get("x-amzn-requestid")
    status, _, body = _signed_post(server, "Kinesis_20131202.ListStreams", b"{}")
    assert (status, body["__type"]) == (400, "UnknownOperationException")
    # the signing path itself works: a known target answers
    status, _, body = _signed_post(
        server, "SageMaker.DescribeModel", json.dumps({"ModelName": model}).encode()
    )
    assert status == 200
    assert body["ModelName"] == model
    # broken JSON is a SerializationException
    status, _, body = _signed_post(server, "SageMaker.DescribeModel", b"{not json")
    assert (status, body["__type"]) == (400, "SerializationException")
