"""Dynamic batching with real boto3, a real server and real workers: a RandomForest's (and an XGBoost
Booster's) answers with batching on equal their answers with batching off, byte for byte, for many
concurrent requests of different sizes, types and Accepts; requests that cannot be merged get their own
answers; bad settings are refused by name."""

from __future__ import annotations

import collections
import io
import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from botocore.exceptions import ClientError

from zeroscale.metering.ledger import Ledger
from zeroscale.metering.pricing import billed_ms
from zeroscale.testing import ServerProcess, deploy, make_tar

from .conftest import SklearnModel, handler_model

ON = {"ZEROSCALE_MAX_BATCH_SIZE": "16", "ZEROSCALE_MAX_BATCH_DELAY_MS": "2"}
TYPES = ("application/json", "text/csv", "application/x-npy")


@pytest.fixture(scope="module")
def endpoints(sm: Any, sklearn_model: SklearnModel) -> tuple[str, str]:
    """The same model twice: batching on (one worker, so requests queue and merge) and off."""
    on = deploy(sm, "bt-on", sklearn_model.url, environment=ON, max_concurrency=1)
    assert on["EndpointStatus"] == "InService", on.get("FailureReason")
    off = deploy(sm, "bt-off", sklearn_model.url, max_concurrency=1)
    assert off["EndpointStatus"] == "InService", off.get("FailureReason")
    return "bt-on", "bt-off"


def body_of(rows: np.ndarray, content_type: str) -> bytes:
    if content_type == "application/json":
        return json.dumps(rows.tolist()).encode()
    if content_type == "text/csv":
        return "\n".join(",".join(repr(float(v)) for v in row) for row in rows).encode()
    buf = io.BytesIO()
    np.save(buf, rows)
    return buf.getvalue()


def call(smr: Any, endpoint: str, body: bytes, content_type: str, accept: str) -> tuple[str, bytes]:
    try:
        resp = smr.invoke_endpoint(EndpointName=endpoint, Body=body, ContentType=content_type, Accept=accept)
    except ClientError as err:
        r = err.response
        return (
            "error",
            f"{r['Error']['Code']} {r.get('OriginalStatusCode')} {r.get('OriginalMessage')}".encode(),
        )
    return resp["ContentType"], resp["Body"].read()


def test_answers_with_batching_equal_answers_without(
    server: ServerProcess, smr: Any, endpoints: tuple[str, str], sklearn_model: SklearnModel
) -> None:
    on, off = endpoints
    rng = np.random.RandomState(21)
    pick = random.Random(5)
    requests = []
    for _ in range(160):
        rows = rng.rand(pick.choice((1, 1, 2, 3, 5, 8, 13, 40)), 4)
        content_type, accept = pick.choice(TYPES), pick.choice(TYPES)
        requests.append((body_of(rows, content_type), content_type, accept, rows))
    with ThreadPoolExecutor(24) as pool:
        got_on = list(pool.map(lambda r: call(smr, on, r[0], r[1], r[2]), requests))
    got_off = [call(smr, off, body, content_type, accept) for body, content_type, accept, _ in requests]
    assert got_on == got_off
    for (content_type, body), (_, _, accept, rows) in zip(got_on, requests, strict=True):
        assert content_type == accept
        if accept == "application/json":
            assert json.loads(body) == sklearn_model.expected(rows)

    # The requests were merged: records of one batch share its worker and its (measured) model time.
    ledger = Ledger(server.db_url)
    deadline = time.monotonic() + 10
    while True:
        records = [r for r in ledger.invocations() if r.endpoint == on]
        if len(records) >= len(requests) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(records) == len(requests)  # one record per client request
    batches = collections.Counter((r.worker_id, r.model_s) for r in records)
    assert max(batches.values()) > 1, batches
    # ... and each is billed its share of the batch's predict call, not the whole of it
    for r in records:
        share = r.model_s / batches[(r.worker_id, r.model_s)]
        assert r.billed_ms == billed_ms(share), (r, batches[(r.worker_id, r.model_s)])
    # /metrics counts the same: requests that shared a predict call, and those calls
    shared = [n for n in batches.values() if n > 1]
    text = server.metrics()
    labels = f'{{endpoint_name="{on}",variant_name="AllTraffic"}}'
    assert f"zeroscale_batched_invocations_total{labels} {float(sum(shared))}" in text
    assert f"zeroscale_batches_total{labels} {float(len(shared))}" in text
    assert f'zeroscale_batches_total{{endpoint_name="{off}"' not in text


def test_requests_that_cannot_be_merged_get_their_own_answers(smr: Any, endpoints: tuple[str, str]) -> None:
    """1-D bodies, another column count, ints among floats, strings, bad JSON, an empty body, an object:
    sent together, each gets exactly the answer (or error) it gets without batching."""
    on, off = endpoints
    bodies = [
        (b"[[0.1, 0.2, 0.3, 0.4]]", "application/json"),
        (b"[0.1, 0.2, 0.3, 0.4]", "application/json"),
        (b"[[0.1, 0.2, 0.3]]", "application/json"),
        (b"[[1, 0, 1, 0], [0, 1, 0, 1]]", "application/json"),
        (b"[[0.9, 0.1, 0.9, 0.1], [0.2, 0.8, 0.2, 0.8]]", "application/json"),
        (b"not json", "application/json"),
        (b'{"instances": [[0.1, 0.2, 0.3, 0.4]]}', "application/json"),
        (b"[]", "application/json"),
        (b"0.1,0.2,0.3,0.4\n0.5,0.6,0.7,0.8\n", "text/csv"),
        (b"0.1,,0.3,0.4\n", "text/csv"),
        (b'"a",0.2,0.3,0.4\n', "text/csv"),
        (b"0.1,0.2,0.3\n", "text/csv"),
    ]
    work = [b for b in bodies for _ in range(4)]
    with ThreadPoolExecutor(16) as pool:
        got_on = list(pool.map(lambda b: call(smr, on, b[0], b[1], "application/json"), work))
    got_off = [call(smr, off, body, content_type, "application/json") for body, content_type in work]
    assert got_on == got_off
    assert sum(kind == "error" for kind, _ in got_on) >= 6 * 4  # the failures are real failures


def test_bad_settings_are_refused_at_create_model_by_name(sm: Any, sklearn_model: SklearnModel) -> None:
    cases = [
        ({"ZEROSCALE_MAX_BATCH_SIZE": "0"}, "ZEROSCALE_MAX_BATCH_SIZE=0 is out of range"),
        ({"ZEROSCALE_MAX_BATCH_SIZE": "5000"}, "ZEROSCALE_MAX_BATCH_SIZE=5000 is out of range"),
        ({"ZEROSCALE_MAX_BATCH_SIZE": "many"}, "ZEROSCALE_MAX_BATCH_SIZE='many' is not an integer"),
        ({"ZEROSCALE_MAX_BATCH_DELAY_MS": "5"}, "ZEROSCALE_MAX_BATCH_DELAY_MS is set but"),
        (
            {"ZEROSCALE_MAX_BATCH_SIZE": "8", "ZEROSCALE_MAX_BATCH_DELAY_MS": "5000"},
            "ZEROSCALE_MAX_BATCH_DELAY_MS=5000 is out of range",
        ),
    ]
    for env, named in cases:
        container = {"Image": "sklearn", "ModelDataUrl": sklearn_model.url, "Environment": env}
        with pytest.raises(ClientError) as err:
            sm.create_model(ModelName="bt-bad", PrimaryContainer=container)
        assert err.value.response["Error"]["Code"] == "ValidationException"
        assert err.value.response["Error"]["Message"].startswith(f"PrimaryContainer.Environment: {named}")
    several = [
        {
            "Image": "sklearn",
            "ModelDataUrl": sklearn_model.url,
            "Environment": {"ZEROSCALE_MAX_BATCH_SIZE": "4"},
        },
        {"Image": "sklearn", "ModelDataUrl": sklearn_model.url},
    ]
    with pytest.raises(ClientError) as err:
        sm.create_model(ModelName="bt-bad", Containers=several)
    assert "Containers.1.Environment: ZEROSCALE_MAX_BATCH_SIZE is set but it has several containers" in str(
        err.value
    )
    multi = {
        "Image": "sklearn",
        "ModelDataUrl": "s3://bucket/models/",
        "Mode": "MultiModel",
        "Environment": {"ZEROSCALE_MAX_BATCH_SIZE": "4"},
    }
    with pytest.raises(ClientError) as err:
        sm.create_model(ModelName="bt-bad", PrimaryContainer=multi)
    assert "ZEROSCALE_MAX_BATCH_SIZE is set but it is a multi-model endpoint" in str(err.value)


def test_runtimes_and_user_code_that_cannot_batch_fail_the_deploy_by_name(
    sm: Any, sklearn_model: SklearnModel, tmp_path_factory: pytest.TempPathFactory
) -> None:
    user_code = handler_model(
        tmp_path_factory.mktemp("bt-code"),
        "def predict_fn(data, model):\n    return [len(data)]\n",
        {"model.joblib": sklearn_model.tar.parent / "model.joblib"},
    )
    env = {"ZEROSCALE_MAX_BATCH_SIZE": "8"}
    code = deploy(sm, "bt-code", user_code, environment=env)
    assert code["EndpointStatus"] == "Failed"
    assert "ZEROSCALE_MAX_BATCH_SIZE is set but it has its own inference code" in code["FailureReason"]
    torch = deploy(sm, "bt-torch", sklearn_model.url, image="pytorch", environment=env)
    assert torch["EndpointStatus"] == "Failed"
    assert "ZEROSCALE_MAX_BATCH_SIZE is set but the pytorch runtime's predict" in torch["FailureReason"]


def test_xgboost_answers_with_batching_equal_answers_without(
    sm: Any, smr: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    xgb = pytest.importorskip("xgboost")
    root = tmp_path_factory.mktemp("bt-xgb")
    rng = np.random.RandomState(8)
    x = rng.rand(300, 5)
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
        xgb.DMatrix(x, label=(x[:, 0] + x[:, 3] > 1).astype(int)),
        num_boost_round=15,
    )
    booster.save_model(str(root / "model.ubj"))
    (root / "model.ubj").rename(root / "xgboost-model")
    url = f"file://{make_tar(root / 'xgb.tar.gz', {'xgboost-model': root / 'xgboost-model'})}"
    for name, env in (("bt-xgb-on", ON), ("bt-xgb-off", None)):
        desc = deploy(sm, name, url, image="xgboost", environment=env, max_concurrency=1)
        assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    pick = random.Random(9)
    work = []
    for _ in range(60):
        content_type = pick.choice(("text/csv", "application/json", "application/x-npy"))
        accept = pick.choice(("text/csv", "application/json", "application/jsonlines"))
        work.append((body_of(rng.rand(pick.choice((1, 2, 6, 17)), 5), content_type), content_type, accept))
    with ThreadPoolExecutor(16) as pool:
        got_on = list(pool.map(lambda w: call(smr, "bt-xgb-on", *w), work))
    got_off = [call(smr, "bt-xgb-off", *w) for w in work]
    assert got_on == got_off
    assert all(kind != "error" for kind, _ in got_on)
