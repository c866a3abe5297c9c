"""The sagemaker-inference-toolkit handler contract through the real server and real boto3: every hook
overridden, transform_fn, the optional context argument, content types and Accept defaults, status codes
from user exceptions, SAGEMAKER_PROGRAM and SAGEMAKER_SUBMIT_DIRECTORY (a subdirectory, a sourcedir.tar.gz).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from botocore.exceptions import ClientError

from e2e.conftest import handler_model
from zeroscale.testing import deploy, make_tar

EVERY_HOOK = """
import json
import os


def model_fn(model_dir):
    with open(os.path.join(model_dir, "scale.txt")) as f:
        return {"scale": int(f.read()), "loaded_by": "model_fn"}


def input_fn(body, content_type):
    if content_type != "text/plain":
        raise ValueError("input_fn wants text/plain, got " + content_type)
    return {"numbers": [int(x) for x in body.decode().split()], "decoded_by": "input_fn"}


def predict_fn(data, model):
    return {
        "values": [n * model["scale"] for n in data["numbers"]],
        "trail": [model["loaded_by"], data["decoded_by"], "predict_fn"],
    }


def output_fn(prediction, accept):
    prediction["trail"].append("output_fn")
    prediction["accept"] = accept
    return json.dumps(prediction), "application/vnd.zeroscale.hooks+json"
"""

# Defaults for input_fn and output_fn; a predict_fn that can fail with a status code.
DEFAULTS = """
class Unprocessable(Exception):
    status_code = 422


def model_fn(model_dir):
    return "sums"


def predict_fn(data, model):
    if data.min() < 0:
        raise Unprocessable("negative values are not allowed here")
    return data.sum(axis=1)
"""

TRANSFORM_ONLY = """
def model_fn(model_dir):
    return "upper"


def transform_fn(model, body, content_type, accept):
    text = body.decode().upper() if model == "upper" else body.decode()
    return text + " | " + content_type + " | " + accept, "text/x-shout"
"""

TRANSFORM_AND_PREDICT = """
def transform_fn(model, body, content_type, accept):
    return body


def predict_fn(data, model):
    return data
"""

WITH_CONTEXT = """
import json


def model_fn(model_dir, context):
    return {"model_fn": context.system_properties["model_dir"] == model_dir}


def input_fn(body, content_type, context):
    return {"body": body.decode(), "input_fn": context.get_request_header(0, "Content-Type")}


def predict_fn(data, model, context):
    props = context.system_properties
    return {**model, **data, "predict_fn": [props["batch_size"], props["gpu_id"]]}


def output_fn(prediction, accept, context):
    return json.dumps({**prediction, "output_fn": context.get_all_request_header(0).get("accept")}), accept
"""

TRANSFORM_WITH_CONTEXT = """
def model_fn(model_dir, context):
    return None


def transform_fn(model, body, content_type, accept, context):
    return context.get_request_header(0, "X-Amzn-SageMaker-Custom-Attributes") or "none", "text/plain"
"""

ANSWER = """
def model_fn(model_dir):
    return None


def transform_fn(model, body, content_type, accept):
    from helper import ANSWER

    return ANSWER, "text/plain"
"""


def up(sm: Any, name: str, url: str, **kw: Any) -> str:
    desc = deploy(sm, name, url, **kw)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    return name


def call(smr: Any, name: str, body: bytes, **kw: Any) -> tuple[bytes, str]:
    resp = smr.invoke_endpoint(EndpointName=name, Body=body, **kw)
    return resp["Body"].read(), resp["ContentType"]


def model_error(smr: Any, name: str, body: bytes, **kw: Any) -> dict[str, Any]:
    with pytest.raises(ClientError) as err:
        call(smr, name, body, **kw)
    response: dict[str, Any] = err.value.response
    assert response["Error"]["Code"] == "ModelError", response
    return response


def test_every_hook_overridden(sm: Any, smr: Any, tmp_path: Path) -> None:
    name = up(sm, "every-hook", handler_model(tmp_path, EVERY_HOOK, {"scale.txt": b"10"}))
    body, content_type = call(smr, name, b"1 2 3", ContentType="text/plain", Accept="application/json")
    assert content_type == "application/vnd.zeroscale.hooks+json"  # output_fn's (body, content_type)
    assert json.loads(body) == {
        "values": [10, 20, 30],
        "trail": ["model_fn", "input_fn", "predict_fn", "output_fn"],
        "accept": "application/json",
    }
    response = model_error(smr, name, b"[1]", ContentType="application/json")
    assert response["OriginalStatusCode"] == 500
    assert "input_fn wants text/plain, got application/json" in response["OriginalMessage"]


def test_default_codecs_accept_and_status_codes(sm: Any, smr: Any, tmp_path: Path) -> None:
    env = {"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "text/csv"}
    name = up(sm, "defaults", handler_model(tmp_path, DEFAULTS), environment=env)
    rows = json.dumps([[1, 2], [3, 4]]).encode()
    # No Accept, and */*: the model's SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT.
    assert call(smr, name, rows, ContentType="application/json") == (b"3\n7\n", "text/csv")
    assert call(smr, name, rows, ContentType="application/json", Accept="*/*") == (b"3\n7\n", "text/csv")
    assert call(smr, name, b"1,2\n3,4\n", ContentType="text/csv", Accept="application/json") == (
        b"[3.0, 7.0]",  # CSV decodes to floats
        "application/json",
    )
    npy, content_type = call(smr, name, rows, ContentType="application/json", Accept="application/x-npy")
    assert content_type == "application/x-npy"
    assert np.load(io.BytesIO(npy)).tolist() == [3, 7]

    unsupported = model_error(smr, name, b"<rows/>", ContentType="application/xml")
    assert unsupported["OriginalStatusCode"] == 415
    assert "application/xml" in unsupported["OriginalMessage"]
    assert (
        model_error(smr, name, rows, ContentType="application/json", Accept="image/png")["OriginalStatusCode"]
        == 406
    )
    assert model_error(smr, name, b"[[1,", ContentType="application/json")["OriginalStatusCode"] == 400
    negative = model_error(smr, name, b"[[1, -2]]", ContentType="application/json")
    assert negative["OriginalStatusCode"] == 422  # the exception's status_code
    assert "negative values are not allowed here" in negative["OriginalMessage"]


def test_transform_fn_alone(sm: Any, smr: Any, tmp_path: Path) -> None:
    name = up(sm, "transform-only", handler_model(tmp_path, TRANSFORM_ONLY))
    body, content_type = call(smr, name, b"hello", ContentType="text/plain", Accept="text/anything")
    assert (body, content_type) == (b"HELLO | text/plain | text/anything", "text/x-shout")
    body, _ = call(smr, name, b"hi", ContentType="text/plain")  # no Accept: application/json
    assert body == b"HI | text/plain | application/json"


def test_transform_fn_with_predict_fn_fails_the_deploy(sm: Any, tmp_path: Path) -> None:
    desc = deploy(sm, "transform-and-predict", handler_model(tmp_path, TRANSFORM_AND_PREDICT))
    assert desc["EndpointStatus"] == "Failed"
    reason = desc["FailureReason"]
    assert "defines transform_fn together with predict_fn" in reason, reason
    assert "not both" in reason


def test_context_argument_on_every_hook(sm: Any, smr: Any, tmp_path: Path) -> None:
    name = up(sm, "with-context", handler_model(tmp_path, WITH_CONTEXT))
    body, content_type = call(smr, name, b"abc", ContentType="text/plain", Accept="application/json")
    assert content_type == "application/json"
    assert json.loads(body) == {
        "model_fn": True,
        "body": "abc",
        "input_fn": "text/plain",
        "predict_fn": [1, None],
        "output_fn": "application/json",
    }
    (tmp_path / "t").mkdir()
    name = up(sm, "transform-context", handler_model(tmp_path / "t", TRANSFORM_WITH_CONTEXT))
    body, _ = call(smr, name, b"x", ContentType="text/plain", CustomAttributes="trace=7")
    assert body == b"trace=7"


def test_sagemaker_program_in_a_subdirectory(sm: Any, smr: Any, tmp_path: Path) -> None:
    """The model.tar.gz holds the default code/inference.py too: the environment picks the other one."""
    url = handler_model(
        tmp_path,
        "def transform_fn(m, b, c, a):\n    return 'code/inference.py', 'text/plain'\n",
        {"src/entry.py": ANSWER.encode(), "src/helper.py": b"ANSWER = 'src/entry.py'\n"},
    )
    env = {"SAGEMAKER_PROGRAM": "entry.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/src"}
    name = up(sm, "program-subdir", url, environment=env)
    assert call(smr, name, b"?", ContentType="text/plain") == (b"src/entry.py", "text/plain")


def test_sourcedir_tarball_by_file_url(sm: Any, smr: Any, tmp_path: Path) -> None:
    """As the sagemaker SDK deploys: the code in its own sourcedir.tar.gz named by SUBMIT_DIRECTORY."""
    model = make_tar(tmp_path / "model.tar.gz", {"weights.txt": b"none"})
    source = make_tar(
        tmp_path / "sourcedir.tar.gz",
        {"serve.py": ANSWER.encode(), "helper.py": b"ANSWER = 'sourcedir.tar.gz'\n"},
    )
    env = {"SAGEMAKER_PROGRAM": "serve.py", "SAGEMAKER_SUBMIT_DIRECTORY": f"file://{source}"}
    name = up(sm, "sourcedir", f"file://{model}", environment=env)
    assert call(smr, name, b"?", ContentType="text/plain") == (b"sourcedir.tar.gz", "text/plain")


def test_missing_program_fails_the_deploy(sm: Any, tmp_path: Path) -> None:
    url = handler_model(tmp_path, "def model_fn(d):\n    return 1\n")
    desc = deploy(sm, "missing-program", url, environment={"SAGEMAKER_PROGRAM": "serve.py"})
    assert desc["EndpointStatus"] == "Failed"
    assert "SAGEMAKER_PROGRAM=serve.py not found" in desc["FailureReason"], desc["FailureReason"]
