"""InvokeEndpointWithResponseStream through the real server and real boto3 (botocore's own event-stream
parser reads every frame): parts that arrive while the model is still running, the join on a plain
InvokeEndpoint, an error mid-stream, a whole answer as one part, a bring-your-own container that answers
chunked, a client that goes away mid-stream, and the headers served or refused by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.eventstream import EventStreamBuffer
from botocore.exceptions import ClientError, EventStreamError

from e2e.conftest import SklearnModel, handler_model
from e2e.test_metering import usage
from zeroscale.metering.ledger import Ledger
from zeroscale.testing import ACCESS_KEY, REGION, SECRET_KEY, ServerProcess, deploy, make_tar, wait_for

# predict_fn yields one prediction per part, sleeping between them; each goes through output_fn.
STREAMING = """
import json
import time


def model_fn(model_dir):
    return "counter"


def predict_fn(data, model):
    for i in range(int(data["parts"])):
        if i:
            time.sleep(float(data.get("delay", 0)))
        if i == data.get("fail_at"):
            raise ValueError(f"the model failed at part {i}")
        yield {"part": i, "at": time.time()}


def output_fn(prediction, accept):
    return json.dumps(prediction) + "\\n", "application/jsonlines"
"""

# A container server (standard library) whose /invocations answers chunked: one chunk per line, with a
# pause between them; it writes the time it sent each chunk into the chunk.
CHUNKED_SERVER = """#!/usr/bin/env python3
import os, sys, time, json
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(body["parts"]):
            if i:
                time.sleep(body["delay"])
            data = ("data: " + json.dumps({"part": i, "at": time.time()}) + "\\n\\n").encode()
            self.wfile.write(b"%x\\r\\n%s\\r\\n" % (len(data), data))
            self.wfile.flush()
        self.wfile.write(b"0\\r\\n\\r\\n")
        self.wfile.flush()


HTTPServer(("127.0.0.1", int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080"))), Handler).serve_forever()
"""


@pytest.fixture(scope="module")
def streaming(sm: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    url = handler_model(tmp_path_factory.mktemp("streaming"), STREAMING)
    desc = deploy(sm, "streamer", url, max_concurrency=1)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    return "streamer"


def request(**body: Any) -> bytes:
    return json.dumps(body).encode()


def stream(
    smr: Any, endpoint: str, body: bytes, **kwargs: Any
) -> tuple[dict[str, Any], list[tuple[float, bytes]]]:
    """The response and its parts, each with the time it came out of botocore's event stream."""
    resp = smr.invoke_endpoint_with_response_stream(
        EndpointName=endpoint, Body=body, ContentType="application/json", **kwargs
    )
    parts = []
    for event in resp["Body"]:
        assert set(event) == {"PayloadPart"}, event
        parts.append((time.time(), event["PayloadPart"]["Bytes"]))
    return resp, parts


def test_parts_arrive_while_the_model_is_still_running(smr: Any, streaming: str) -> None:
    resp, parts = stream(smr, streaming, request(parts=4, delay=0.4))
    assert resp["ContentType"] == "application/jsonlines"
    assert resp["InvokedProductionVariant"] == "AllTraffic"
    headers = resp["ResponseMetadata"]["HTTPHeaders"]
    assert headers["content-type"] == "application/vnd.amazon.eventstream"
    assert headers["x-amzn-sagemaker-content-type"] == "application/jsonlines"
    docs = [json.loads(data) for _, data in parts]
    assert [d["part"] for d in docs] == [0, 1, 2, 3]  # one PayloadPart per yield, in order
    first_received = parts[0][0]
    last_yielded = docs[-1]["at"]
    # The first part was in the client's hands before the model had even produced its last one (>= 1.2 s
    # of sleeps later): it was flushed when yielded, not when the model finished.
    assert first_received < last_yielded, (first_received, last_yielded)
    for (received, _), doc in zip(parts, docs, strict=True):
        assert received >= doc["at"]


def test_plain_invoke_joins_the_parts(smr: Any, streaming: str) -> None:
    resp = smr.invoke_endpoint(
        EndpointName=streaming, Body=request(parts=3, delay=0), ContentType="application/json"
    )
    assert resp["ContentType"] == "application/jsonlines"
    lines = resp["Body"].read().decode().splitlines()
    assert [json.loads(line)["part"] for line in lines] == [0, 1, 2]


def test_an_error_mid_stream_is_a_model_stream_error(server: ServerProcess, smr: Any, streaming: str) -> None:
    resp = smr.invoke_endpoint_with_response_stream(
        EndpointName=streaming, Body=request(parts=5, delay=0, fail_at=2), ContentType="application/json"
    )
    got = []
    with pytest.raises(EventStreamError) as err:
        for event in resp["Body"]:
            got.append(json.loads(event["PayloadPart"]["Bytes"])["part"])
    assert got == [0, 1]
    error = err.value.response["Error"]
    assert error["Code"] == "ModelStreamError"
    assert "ValueError: the model failed at part 2" in error["Message"]
    # botocore's exception keeps Code and Message only: read the frames themselves for the ErrorCode.
    resp = smr.invoke_endpoint_with_response_stream(
        EndpointName=streaming, Body=request(parts=5, delay=0, fail_at=2), ContentType="application/json"
    )
    frames = EventStreamBuffer()
    for chunk in resp["Body"]._raw_stream.stream(4096):
        frames.add_data(chunk)
    messages = list(frames)
    assert [m.headers[":message-type"] for m in messages] == ["event", "event", "exception"]
    assert messages[2].headers[":exception-type"] == "ModelStreamError"
    assert json.loads(messages[2].payload)["ErrorCode"] == "StreamBroken"

    # The model's traceback is in the endpoint's logs, where the error's log stream ARN points.
    logs = server.client("logs")

    def logged() -> bool:
        found = logs.filter_log_events(
            logGroupName=f"/aws/sagemaker/Endpoints/{streaming}", filterPattern='"the model failed at part 2"'
        )["events"]
        return bool(found)

    wait_for(logged, timeout_s=10)

    # The same failure on a plain InvokeEndpoint (the parts joined) is a ModelError.
    with pytest.raises(ClientError) as plain:
        smr.invoke_endpoint(
            EndpointName=streaming, Body=request(parts=5, fail_at=2), ContentType="application/json"
        )
    assert plain.value.response["Error"]["Code"] == "ModelError"
    assert plain.value.response["OriginalStatusCode"] == 500
    assert "the model failed at part 2" in plain.value.response["OriginalMessage"]

    # Failing before the first part: no stream starts, a plain ModelError.
    with pytest.raises(ClientError) as early:
        stream(smr, streaming, request(parts=3, fail_at=0))
    assert early.value.response["Error"]["Code"] == "ModelError"
    assert "the model failed at part 0" in early.value.response["Error"]["Message"]


def test_a_client_that_goes_away_frees_the_worker(server: ServerProcess, smr: Any, streaming: str) -> None:
    """MaxConcurrency 1: a stream of 40 parts 0.25 s apart (10 s) is abandoned after its first part; the
    next request is served at once, by the same single worker."""
    resp = smr.invoke_endpoint_with_response_stream(
        EndpointName=streaming, Body=request(parts=40, delay=0.25), ContentType="application/json"
    )
    first = next(iter(resp["Body"]))
    assert json.loads(first["PayloadPart"]["Bytes"])["part"] == 0
    resp["Body"].close()
    started = time.monotonic()
    answer = smr.invoke_endpoint(
        EndpointName=streaming, Body=request(parts=1), ContentType="application/json"
    )
    assert json.loads(answer["Body"].read())["part"] == 0
    assert time.monotonic() - started < 3.0  # not the 10 s the abandoned stream would have taken
    assert server.workers(streaming) == 1


def test_streams_are_counted_like_invocations(server: ServerProcess, smr: Any, streaming: str) -> None:
    def counter(name: str) -> float:
        prefix = f'{name}{{endpoint_name="{streaming}",variant_name="AllTraffic"}} '
        line = next((x for x in server.metrics().splitlines() if x.startswith(prefix)), None)
        return float(line[len(prefix) :]) if line else 0.0

    invocations = counter("zeroscale_invocations_total")
    errors = counter("zeroscale_invocation_5xx_errors_total")
    latency = counter("zeroscale_model_latency_seconds_sum")
    _, parts = stream(smr, streaming, request(parts=3, delay=0.3))
    with pytest.raises(EventStreamError):
        stream(smr, streaming, request(parts=3, fail_at=1))
    wait_for(lambda: counter("zeroscale_invocations_total") == invocations + 2)
    assert counter("zeroscale_invocation_5xx_errors_total") == errors + 1
    # ModelLatency covers the whole stream, up to its last part (0.6 s of sleeps)
    assert counter("zeroscale_model_latency_seconds_sum") - latency >= 0.6

    # Metering: the worker's time until the last part, the parts' bytes, the failure's code.
    since = time.time() - 60
    assert usage(server)[0] == 200  # the report writes what is queued
    led = Ledger(server.db_url)
    records = [r for r in led.invocations(since=since) if r.endpoint == streaming][-2:]
    led.close()
    ok, failed = records
    assert ok.status == 200 and ok.error_code == "" and ok.billed_ms >= 600
    assert ok.bytes_out == sum(len(data) for _, data in parts)
    assert (failed.status, failed.error_code) == (424, "ModelStreamError")


def test_a_whole_answer_streams_as_one_part(sm: Any, smr: Any, sklearn_model: SklearnModel) -> None:
    desc = deploy(sm, "rf-whole", sklearn_model.url)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    body = sklearn_model.json_body(sklearn_model.X[:5])
    resp, parts = stream(smr, "rf-whole", body, Accept="text/csv")
    plain = smr.invoke_endpoint(
        EndpointName="rf-whole", Body=body, ContentType="application/json", Accept="text/csv"
    )
    assert [data for _, data in parts] == [plain["Body"].read()]
    assert resp["ContentType"] == plain["ContentType"] == "text/csv"


def test_headers_served_and_refused_by_name(smr: Any, streaming: str) -> None:
    _, parts = stream(
        smr,
        streaming,
        request(parts=1),
        CustomAttributes="trace=1",
        InferenceId="abc",
        TargetVariant="AllTraffic",
    )
    assert len(parts) == 1
    for member, header in [
        ("SessionId", "X-Amzn-SageMaker-Session-Id"),
        ("InferenceComponentName", "X-Amzn-SageMaker-Inference-Component"),
        ("TargetContainerHostname", "X-Amzn-SageMaker-Target-Container-Hostname"),
    ]:
        with pytest.raises(ClientError) as err:
            stream(smr, streaming, request(parts=1), **{member: "x1"})
        assert err.value.response["Error"]["Code"] == "ValidationError"
        assert f"{member} (header {header})" in err.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as missing:
        stream(smr, "nope", request(parts=1))
    assert missing.value.response["Error"]["Code"] == "ValidationError"
    assert "Endpoint nope of account" in missing.value.response["Error"]["Message"]


def test_a_container_that_answers_chunked_streams(
    server: ServerProcess, sm: Any, smr: Any, tmp_path: Path
) -> None:
    image = tmp_path / "image"
    image.mkdir()
    serve = image / "serve"
    serve.write_text(CHUNKED_SERVER.replace("#!/usr/bin/env python3", f"#!{sys.executable}", 1))
    serve.chmod(0o755)
    (image / "manifest.json").write_text(json.dumps({"entrypoint": ["./serve"], "workdir": "."}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_DEFAULT_REGION=REGION)
    zeroscale = Path(sys.executable).parent / "zeroscale"
    pushed = subprocess.run(
        [str(zeroscale), "images", "push", "chunked:1", str(image), "--endpoint-url", server.url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert pushed.returncode == 0, pushed.stderr
    (tmp_path / "empty").write_text("{}")
    url = f"file://{make_tar(tmp_path / 'model.tar.gz', {'empty': tmp_path / 'empty'})}"
    desc = deploy(sm, "chunked", url, image="chunked:1")
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")

    resp, parts = stream(smr, "chunked", request(parts=4, delay=0.4))
    assert resp["ContentType"] == "text/event-stream"
    docs = [json.loads(data.decode().removeprefix("data: ")) for _, data in parts]
    assert [d["part"] for d in docs] == [0, 1, 2, 3]  # one part per HTTP chunk
    assert parts[0][0] < docs[-1]["at"]  # received before the container sent its last chunk
    joined = smr.invoke_endpoint(
        EndpointName="chunked", Body=request(parts=3, delay=0), ContentType="application/json"
    )
    assert joined["Body"].read().decode().count("data: ") == 3


def test_wire_format_is_what_botocore_parses(tmp_path: Path) -> None:
    """The framing on its own, through botocore's parser: prelude, headers, both CRCs, big payloads."""
    from zeroscale.api import eventstream

    buf = EventStreamBuffer()
    big = os.urandom(1024 * 1024)
    buf.add_data(eventstream.payload_part(b"hello") + eventstream.payload_part(big))
    buf.add_data(eventstream.exception("ModelStreamError", {"Message": "m", "ErrorCode": "StreamBroken"}))
    messages = list(buf)
    assert [m.payload for m in messages[:2]] == [b"hello", big]
    assert messages[0].headers == {
        ":event-type": "PayloadPart",
        ":content-type": "application/octet-stream",
        ":message-type": "event",
    }
    assert messages[2].headers[":exception-type"] == "ModelStreamError"
    assert json.loads(messages[2].payload) == {"Message": "m", "ErrorCode": "StreamBroken"}
    corrupt = bytearray(eventstream.payload_part(b"x"))
    corrupt[-5] ^= 1
    bad = EventStreamBuffer()
    bad.add_data(bytes(corrupt))
    with pytest.raises(Exception, match=r"[Cc]hecksum"):
        list(bad)


def test_the_worker_stays_busy_until_the_last_part(smr: Any, streaming: str) -> None:
    """MaxConcurrency 1: a plain request sent while a stream is still coming waits for its last part."""
    resp = smr.invoke_endpoint_with_response_stream(
        EndpointName=streaming, Body=request(parts=4, delay=0.3), ContentType="application/json"
    )
    events = iter(resp["Body"])
    next(events)
    answered: list[float] = []
    waiter = threading.Thread(
        target=lambda: answered.append(
            smr.invoke_endpoint(EndpointName=streaming, Body=request(parts=1), ContentType="application/json")
            and time.time()
        )
    )
    waiter.start()
    rest = [json.loads(e["PayloadPart"]["Bytes"]) for e in events]
    waiter.join(10)
    assert [d["part"] for d in rest] == [1, 2, 3]
    assert answered and answered[0] >= rest[-1]["at"]


def test_a_stream_past_the_invocation_timeout(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """The whole stream has the invocation timeout: past it, ModelInvocationTimeExceeded, and the stuck
    worker is replaced."""
    server = server_factory(invocation_timeout_s=1.5)
    sm, smr = server.client("sagemaker"), server.client("sagemaker-runtime")
    desc = deploy(sm, "slow-stream", handler_model(tmp_path, STREAMING), max_concurrency=1)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    resp = smr.invoke_endpoint_with_response_stream(
        EndpointName="slow-stream", Body=request(parts=20, delay=0.5), ContentType="application/json"
    )
    frames = EventStreamBuffer()
    for chunk in resp["Body"]._raw_stream.stream(4096):
        frames.add_data(chunk)
    messages = list(frames)
    assert 1 <= len(messages) - 1 <= 4  # the parts made within 1.5 s, then the error
    assert messages[-1].headers[":exception-type"] == "ModelStreamError"
    assert json.loads(messages[-1].payload)["ErrorCode"] == "ModelInvocationTimeExceeded"
    answer = smr.invoke_endpoint(
        EndpointName="slow-stream", Body=request(parts=1), ContentType="application/json"
    )
    assert json.loads(answer["Body"].read())["part"] == 0  # a new worker answers
