"""Hostile JSON against the real server, as an attacker sends it (signed, so it gets past SigV4): whatever the
body, every JSON 1.1 service answers a 4xx in its error shape (``{"__type", "message"}``), never a 500, and
keeps serving. The runtime passes a payload through to the model, so a hostile one is the model's 4xx."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from zeroscale.api import served
from zeroscale.api.shapes import ServiceShapes
from zeroscale.testing import ACCESS_KEY, REGION, SECRET_KEY, ServerProcess, deploy

TARGETS = {"sagemaker": "SageMaker", "logs": "Logs_20140328"}
JSON_11 = "application/x-amz-json-1.1"


def post(server: ServerProcess, service: str, operation: str, body: bytes) -> tuple[int, dict[str, str], Any]:
    """A signed JSON 1.1 call with exactly ``body``; (status, headers, parsed JSON answer)."""
    headers = {"Content-Type": JSON_11, "X-Amz-Target": f"{TARGETS[service]}.{operation}"}
    request = AWSRequest(method="POST", url=f"{server.url}/", data=body, headers=headers)
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), service, REGION).add_auth(request)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        # refused by its Content-Length before it was all sent: the answer is still there
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.request("POST", "/", body=body, headers=dict(request.headers.items()))
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(raw)
    finally:
        conn.close()


def assert_client_error(answer: tuple[int, dict[str, str], Any], code: str | None = None) -> str:
    status, headers, body = answer
    assert 400 <= status < 500, (status, body)
    assert headers["content-type"] == JSON_11
    assert headers.get("x-amzn-requestid")
    assert set(body) == {"__type", "message"}, body
    if code is not None:
        assert body["__type"] == code, body
    return str(body["message"])


# ---- the body itself -------------------------------------------------------------------------------------

DEEP = b"[" * 5000 + b"]" * 5000
HOSTILE_BODIES = {
    "array-5000-deep": (DEEP, "SerializationException", "nested more than 64 deep"),
    "object-5000-deep": (b'{"a":' * 5000 + b"1" + b"}" * 5000, "SerializationException", "nested more than"),
    "unclosed-200000-deep": (b"[" * 200_000, "SerializationException", "nested more than 64 deep"),
    "deep-inside-a-member": (
        b'{"NameContains": ' + b"[" * 100 + b"]" * 100 + b"}",
        "SerializationException",
        "nested more than 64 deep",
    ),
    "nan": (b'{"MaxResults": NaN}', "SerializationException", "NaN is not a JSON number"),
    "infinity": (b'{"MaxResults": Infinity}', "SerializationException", "Infinity is not a JSON number"),
    "minus-infinity": (b'{"limit": -Infinity}', "SerializationException", "-Infinity is not a JSON number"),
    "overflowing-float": (b'{"MaxResults": 1e999}', "SerializationException", "out of range"),
    "huge-integer": (b'{"MaxResults": ' + b"9" * 5000 + b"}", "SerializationException", "longer than 64"),
    "duplicate-keys": (b'{"MaxResults": 1, "MaxResults": 100}', "SerializationException", "more than once"),
    "invalid-utf8": (b'{"NameContains": "\xc3\x28"}', "SerializationException", "not valid UTF-8"),
    "overlong-utf8": (b'{"NameContains": "\xc0\xaf"}', "SerializationException", "not valid UTF-8"),
    "utf16": ('{"MaxResults": 1}'.encode("utf-16"), "SerializationException", "not valid UTF-8"),
    "bom": (b'\xef\xbb\xbf{"MaxResults": 1}', "SerializationException", "BOM"),
    "lone-surrogate": (b'{"NameContains": "\\udc00"}', "SerializationException", "lone UTF-16 surrogate"),
    "control-character": (b'{"NameContains": "a\x01b"}', "SerializationException", "control character"),
    "top-level-array": (b"[]", "SerializationException", "must be a JSON object"),
    "top-level-string": (b'"ListModels"', "SerializationException", "must be a JSON object"),
    "top-level-number": (b"1", "SerializationException", "must be a JSON object"),
    "top-level-null": (b"null", "SerializationException", "must be a JSON object"),
    "truncated": (b'{"MaxResults": ', "SerializationException", "Expecting value"),
    "trailing-garbage": (b'{"MaxResults": 1} {}', "SerializationException", "Extra data"),
    "oversize": (b'{"NameContains": "' + b"a" * (2 * 1024 * 1024) + b'"}', "ValidationException", "oversize"),
}


@pytest.mark.parametrize(
    ("service", "operation"),
    [("sagemaker", "ListModels"), ("sagemaker", "CreateModel"), ("logs", "DescribeLogGroups")],
)  # the body is refused before anything looks at the operation's members
@pytest.mark.parametrize("name", sorted(HOSTILE_BODIES))
def test_hostile_bodies_answer_4xx_in_the_service_error_shape(
    server: ServerProcess, service: str, operation: str, name: str
) -> None:
    body, code, text = HOSTILE_BODIES[name]
    if service == "logs":
        body = body.replace(b"MaxResults", b"limit").replace(b"NameContains", b"logGroupNamePrefix")
    message = assert_client_error(post(server, service, operation, body), code)
    assert text in message


def test_integers_beyond_java_int_and_long(server: ServerProcess) -> None:
    message = assert_client_error(
        post(server, "sagemaker", "ListModels", b'{"MaxResults": 2147483648}'), "SerializationException"
    )
    assert "out of range of a 32-bit Integer" in message
    body = b'{"logGroupName": "g", "logStreamName": "s", "startTime": 9223372036854775808}'
    message = assert_client_error(post(server, "logs", "GetLogEvents", body), "SerializationException")
    assert "out of range of a 64-bit Long" in message


def test_a_5000_deep_array_used_to_be_a_500(server: ServerProcess) -> None:
    """The issue's reproduction: ``[[[[...`` 5,000 deep as a control-plane body."""
    status, _, body = post(server, "sagemaker", "CreateEndpoint", DEEP)
    assert (status, body["__type"]) == (400, "SerializationException")
    assert post(server, "sagemaker", "ListModels", b"{}")[0] == 200  # and the server is fine


def test_an_empty_body_is_an_empty_input(server: ServerProcess) -> None:
    status, _, body = post(server, "sagemaker", "ListEndpoints", b"")
    assert (status, body["Endpoints"]) == (200, [])


# ---- hostile tokens: parsed by the server, so as hostile as a body -----------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode()


HOSTILE_TOKENS = [
    _b64(b"[" * 5000 + b"]" * 5000),
    _b64(b'{"f": "x", "k": ' + b"[" * 3000 + b"]" * 3000 + b"}"),
    _b64(b'{"f": 1e999, "k": NaN}'),
    _b64(b'[{"a": 1}]'),
    _b64(b'[1, {"x": 2}, "3"]'),
    _b64(b'["a", 1]'),
    _b64(b"\xff\xfe"),
    "f/" + "9" * 5000,
    "b/\u00b2",
    "not base64 !!!",
]


@pytest.mark.parametrize(
    ("service", "operation", "params"),
    [
        ("sagemaker", "ListModels", {}),
        ("sagemaker", "ListEndpoints", {"SortBy": "CreationTime"}),
        ("sagemaker", "ListTags", {"ResourceArn": "arn:aws:sagemaker:us-east-1:000000000000:model/x"}),
        ("logs", "DescribeLogGroups", {}),
        ("logs", "DescribeLogStreams", {"logGroupName": "/aws/sagemaker/Endpoints/tokens"}),
        (
            "logs",
            "DescribeLogStreams",
            {"logGroupName": "/aws/sagemaker/Endpoints/tokens", "orderBy": "LastEventTime"},
        ),
        (
            "logs",
            "GetLogEvents",
            {"logGroupName": "/aws/sagemaker/Endpoints/tokens", "logStreamName": "AllTraffic/x"},
        ),
        ("logs", "FilterLogEvents", {"logGroupName": "/aws/sagemaker/Endpoints/tokens"}),
    ],
)
def test_hostile_pagination_tokens(
    server: ServerProcess, tokens_endpoint: str, service: str, operation: str, params: dict[str, Any]
) -> None:
    key = "NextToken" if service == "sagemaker" else "nextToken"
    for token in HOSTILE_TOKENS:
        status, _, body = post(server, service, operation, json.dumps({**params, key: token}).encode())
        assert 400 <= status < 500 or status == 200, (token[:40], status, body)
        if status != 200:
            assert set(body) == {"__type", "message"}


@pytest.fixture(scope="module")
def tokens_endpoint(server: ServerProcess, sklearn_model: Any) -> str:
    """An endpoint with a log group and a stream, so log tokens reach the code that parses them."""
    sm = server.client("sagemaker")
    desc = deploy(sm, "tokens", sklearn_model.url)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    return "tokens"


# ---- every served member with hostile values ---------------------------------------------------------------

MODEL = "hostile-base"
LOG_GROUP = "/aws/sagemaker/Endpoints/tokens"
BASES: dict[str, dict[str, Any]] = {
    "CreateModel": {
        "ModelName": "h",
        "PrimaryContainer": {"Image": "sklearn", "ModelDataUrl": "s3://bucket/model.tar.gz"},
    },
    "CreateEndpointConfig": {
        "EndpointConfigName": "h",
        "ProductionVariants": [
            {
                "VariantName": "v",
                "ModelName": MODEL,
                "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 1},
            }
        ],
    },
    "CreateEndpoint": {"EndpointName": "h", "EndpointConfigName": "no-such-config"},
    "UpdateEndpoint": {"EndpointName": "no-such-endpoint", "EndpointConfigName": "no-such-config"},
    "ListTags": {"ResourceArn": f"arn:aws:sagemaker:us-east-1:000000000000:model/{MODEL}"},
    "DescribeLogStreams": {"logGroupName": LOG_GROUP},
    "GetLogEvents": {"logGroupName": LOG_GROUP, "logStreamName": "AllTraffic/x"},
    "FilterLogEvents": {"logGroupName": LOG_GROUP},
}
SENTINEL = "__HOSTILE__"
LONG = '"' + "a" * 200_000 + '"'
RAW_VALUES = {
    "integer": ["2147483647", "-2147483648", "2147483648", "-9223372036854775809", "1.5", "-0", "1E2"],
    "long": ["9223372036854775807", "-9223372036854775808", "9223372036854775808", "1e18", "0"],
    "float": ["1.7976931348623157e308", "-1e308", "5e-324", "-0.0", "1e-400"],
    "timestamp": [
        "1e308",
        "-1e308",
        "-62135596801",
        "253402300800",
        '"9999-12-31T23:59:59+23:59"',
        '"0001-01-01T00:00:00+14:00"',
        '"2024-02-30T00:00:00Z"',
        '"1e999"',
        '"nan"',
    ],
    "string": [
        '"\\u0000"',
        '"\\ud83d\\ude00"',
        LONG,
        '"../../../etc/passwd"',
        '"%s%n%x"',
        '"a\\\\b\\"c"',
        '""',
    ],
    "boolean": ['"true"', "1", "{}"],
}


STRUCTURE_VALUES = ['"x"', "1", "[]", "[{}]", "{}", "true"]


def _values(shape: Any) -> list[str]:
    """Raw hostile JSON values for a member of ``shape``."""
    kind = shape.type_name
    if kind == "list" and shape.member.type_name in RAW_VALUES:
        return [f"[{raw}]" for raw in RAW_VALUES[shape.member.type_name]] + ['["a", 1, null]']
    if kind == "map" and shape.value.type_name in RAW_VALUES:
        keys = ['{"\\u0000": "v"}', '{"' + "k" * 5000 + '": "v"}', '{"": ""}']
        return [f'{{"K": {raw}}}' for raw in RAW_VALUES[shape.value.type_name]] + keys
    return RAW_VALUES.get(kind, STRUCTURE_VALUES)


def _paths() -> Iterator[tuple[str, str, str, str]]:
    """(service, operation, member path, raw hostile value) for every member each operation serves."""
    for service, table in (("sagemaker", served.SAGEMAKER), ("logs", served.LOGS)):
        shapes = ServiceShapes(service)
        for operation, rules in table.items():
            for path in rules:
                shape = shapes.input_shape(operation)
                names = path.split(".")
                for name in names[:-1]:
                    shape = shape.members[name]
                    while shape.type_name in ("list", "map"):
                        shape = shape.member if shape.type_name == "list" else shape.value
                for raw in _values(shape.members[names[-1]]):
                    yield service, operation, path, raw


def _request(operation: str, path: str, serial: int) -> dict[str, Any]:
    params = json.loads(json.dumps(BASES.get(operation, {})))
    for key in ("ModelName", "EndpointConfigName", "EndpointName"):
        if key in params and params[key] == "h":
            params[key] = f"h{serial}"
    node: Any = params
    names = path.split(".")
    for name in names[:-1]:
        child = node.get(name)
        if child is None:
            child = node[name] = [{}] if name in ("ProductionVariants", "Containers", "Tags") else {}
        node = child[0] if isinstance(child, list) else child
    node[names[-1]] = SENTINEL
    return params


def test_every_served_member_with_hostile_values(server: ServerProcess, tokens_endpoint: str) -> None:
    sm = server.client("sagemaker")
    sm.create_model(
        ModelName=MODEL, PrimaryContainer={"Image": "sklearn", "ModelDataUrl": "s3://bucket/model.tar.gz"}
    )
    failures = []
    count = 0
    for serial, (service, operation, path, raw) in enumerate(_paths()):
        body = json.dumps(_request(operation, path, serial)).replace(json.dumps(SENTINEL), raw)
        status, _, answer = post(server, service, operation, body.encode())
        count += 1
        if status >= 500 or (status != 200 and set(answer) != {"__type", "message"}):
            failures.append((operation, path, raw[:40], status, answer))
    assert count > 300
    assert failures == []
    assert post(server, "sagemaker", "DescribeModel", json.dumps({"ModelName": MODEL}).encode())[0] == 200


# ---- the runtime: the payload is the model's business, and hostile JSON is its 4xx ------------------------


def test_runtime_hostile_json_payloads(
    server: ServerProcess, tokens_endpoint: str, sklearn_model: Any
) -> None:
    smr = server.client("sagemaker-runtime")
    for payload in (DEEP, b"[[NaN, Infinity]]", b"\xff\xfe[[1]]", b'{"a": 1, "a": 2}', b"[" * 200_000):
        resp = None
        try:
            resp = smr.invoke_endpoint(
                EndpointName=tokens_endpoint, ContentType="application/json", Body=payload
            )
        except smr.exceptions.ModelError as err:
            meta = err.response["ResponseMetadata"]
            assert meta["HTTPStatusCode"] == 424
            assert err.response["OriginalStatusCode"] in range(400, 600)
        except smr.exceptions.ValidationError as err:
            assert err.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert resp is None or resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    # the endpoint still answers
    body = sklearn_model.json_body(sklearn_model.X[:2])
    out = smr.invoke_endpoint(EndpointName=tokens_endpoint, ContentType="application/json", Body=body)
    assert json.loads(out["Body"].read()) == sklearn_model.expected(sklearn_model.X[:2])
    assert re.fullmatch(r"[0-9a-f-]{36}", out["ResponseMetadata"]["RequestId"])
