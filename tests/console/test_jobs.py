"""The console's asynchronous inference and batch transform views in a real browser, against a real server
reading and writing a real S3 (SeaweedFS): an endpoint configuration with AsyncInferenceConfig from the
form, an async request submitted from an S3 input and looked up by InferenceId, a batch transform job created
from the form and followed to Completed with its progress, and a running job stopped with the Stop button.

The tests run in order on one page, as one person would click through."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from console.ui import T, nav, sign_in
from s3server import SeaweedS3
from zeroscale.testing import SECRET_KEY, ServerProcess, make_tar

BUCKET = "console-jobs"

# Echoes each request after sleeping its first CSV value in seconds (a job slow enough to stop).
SLOW_ECHO = """
import time

def model_fn(model_dir):
    return None

def transform_fn(model, body, content_type, accept):
    text = body.decode() if isinstance(body, bytes) else body
    time.sleep(float(text.split(",")[0]))
    return text, "text/csv"
"""


@pytest.fixture(scope="module")
def s3(s3_server: SeaweedS3) -> Any:
    client = s3_server.client()
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture(scope="module")
def server(
    s3_server: SeaweedS3, tmp_path_factory: pytest.TempPathFactory, model_url: str
) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("console-jobs")
    proc = ServerProcess(
        root / "data", flags={"s3_endpoint_url": s3_server.endpoint_url}, env=s3_server.env()
    ).start()
    sm = proc.client("sagemaker")
    sm.create_model(ModelName="jobs-model", PrimaryContainer={"Image": "sklearn", "ModelDataUrl": model_url})
    slow = make_tar(root / "slow.tar.gz", {"code/inference.py": SLOW_ECHO.encode()})
    sm.create_model(
        ModelName="jobs-slow", PrimaryContainer={"Image": "sklearn", "ModelDataUrl": f"file://{slow}"}
    )
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def page(browser: Browser, server: ServerProcess) -> Iterator[Page]:
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, base_url=server.url, locale="en-US"
    )
    page = context.new_page()
    page.set_default_timeout(T)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto("/console/endpoint-configs")
    sign_in(page, SECRET_KEY)
    expect(page.get_by_role("heading", name="Endpoint configurations", exact=True)).to_be_visible()
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def test_an_async_endpoint_configuration_from_the_form(page: Page, server: ServerProcess) -> None:
    topic = server.client("sns").create_topic(Name="console-done")["TopicArn"]
    page.get_by_role("link", name="Create endpoint configuration").click()
    page.get_by_label("Endpoint configuration name").fill("jobs-async")
    page.get_by_label("Model", exact=True).select_option("jobs-model")
    page.get_by_label("Memory size").select_option("1024")
    page.get_by_label("Max concurrency").fill("2")
    expect(page.get_by_label("S3 output path")).to_be_hidden()
    page.get_by_label("Asynchronous invocation").check()
    # the server's own rule, shown where it happened: the output path must be s3://
    page.get_by_label("S3 output path").fill(f"https://{BUCKET}/out")
    page.get_by_role("button", name="Create endpoint configuration").click()
    expect(page.get_by_role("alert")).to_contain_text("AsyncInferenceConfig.OutputConfig.S3OutputPath")
    page.get_by_label("S3 output path").fill(f"s3://{BUCKET}/async/out")
    page.get_by_label("S3 failure path - optional").fill(f"s3://{BUCKET}/async/failed")
    page.get_by_label("Success notification topic - optional").fill(topic)
    page.get_by_label("Error notification topic - optional").fill(topic)
    page.get_by_label("Max concurrent invocations per instance - optional").fill("2")
    page.get_by_role("button", name="Create endpoint configuration").click()
    expect(page.get_by_role("heading", name="jobs-async")).to_be_visible()
    shown = page.locator("section", has=page.get_by_role("heading", name="Async invocation config"))
    expect(shown).to_contain_text(f"s3://{BUCKET}/async/failed")
    expect(shown).to_contain_text("Max concurrent invocations per instance2")
    config = server.client("sagemaker").describe_endpoint_config(EndpointConfigName="jobs-async")
    assert config["AsyncInferenceConfig"] == {
        "OutputConfig": {
            "S3OutputPath": f"s3://{BUCKET}/async/out",
            "S3FailurePath": f"s3://{BUCKET}/async/failed",
            "NotificationConfig": {"SuccessTopic": topic, "ErrorTopic": topic},
        },
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 2},
    }


def test_an_async_request_from_s3_listed_and_looked_up(page: Page, server: ServerProcess, s3: Any) -> None:
    server.client("sagemaker").create_endpoint(EndpointName="jobs-async", EndpointConfigName="jobs-async")
    s3.put_object(Bucket=BUCKET, Key="async/in/rows.json", Body=b"[[0.95, 0.1, 0.2, 0.3]]")
    page.goto("/console/endpoints/jobs-async")
    panel = page.locator("section", has=page.get_by_role("heading", name="Asynchronous inference"))
    expect(panel).to_be_visible()
    expect(page.get_by_role("heading", name="Test inference")).to_be_hidden()  # InvokeEndpoint is refused
    panel.get_by_label("Input location").fill(f"s3://{BUCKET}/async/in/rows.json")
    panel.get_by_label("Inference ID - optional").fill("console-req-1")
    panel.get_by_role("button", name="Submit async request").click()
    expect(panel.get_by_test_id("inference-id")).to_have_text("console-req-1")
    looked_up = panel.get_by_test_id("async-request")
    expect(looked_up.locator("[data-status]")).to_have_attribute("data-status", "Completed")
    expect(looked_up).to_contain_text(f"s3://{BUCKET}/async/out/console-req-1.out")
    body = s3.get_object(Bucket=BUCKET, Key="async/out/console-req-1.out")["Body"].read()
    assert body == b"[1]"
    # the endpoint's latest requests (GET /zeroscale/v1/async?endpoint=NAME)
    row = panel.get_by_role("row", name=re.compile("console-req-1"))
    expect(row.locator("[data-status]")).to_have_attribute("data-status", "Completed")
    # a missing input fails the request (its reason is shown); an unknown id is an error where it was asked
    panel.get_by_label("Input location").fill(f"s3://{BUCKET}/async/in/missing.json")
    panel.get_by_label("Inference ID - optional").fill("console-req-2")
    panel.get_by_role("button", name="Submit async request").click()
    expect(looked_up.locator("[data-status]")).to_have_attribute("data-status", "Failed")
    expect(looked_up).to_contain_text(f"s3://{BUCKET}/async/failed/console-req-2-error.out")
    panel.get_by_role("button", name="console-req-1").click()
    expect(panel.get_by_label("Inference ID to look up")).to_have_value("console-req-1")
    expect(looked_up.locator("[data-status]")).to_have_attribute("data-status", "Completed")
    panel.get_by_label("Inference ID to look up").fill("nobody")
    panel.get_by_role("button", name="Look up").click()
    expect(panel.get_by_role("alert")).to_contain_text("No asynchronous request with InferenceId nobody")


def test_a_transform_job_from_the_form_to_completed_with_progress(
    page: Page, server: ServerProcess, s3: Any
) -> None:
    s3.put_object(Bucket=BUCKET, Key="batch/in/a.csv", Body=b"0.9,0.1,0.2,0.3\n0.1,0.5,0.5,0.5\n")
    s3.put_object(Bucket=BUCKET, Key="batch/in/b.csv", Body=b"0.8,0.1,0.1,0.1\n")
    nav(page, "Batch transform jobs")
    page.get_by_role("link", name="Create batch transform job").click()
    page.get_by_label("Job name").fill("jobs-batch")
    page.get_by_label("Model name").select_option("jobs-model")
    page.get_by_label("S3 location").fill(f"s3://{BUCKET}/batch/in/")
    page.get_by_label("Content type").fill("text/csv")
    page.get_by_label("Split type").select_option("Line")
    page.get_by_label("S3 output path").fill(f"s3://{BUCKET}/batch/out")
    page.get_by_label("Instance type").fill("ml.m5.large")
    page.get_by_label("Instance count").fill("1")
    page.get_by_label("Batch strategy").select_option("SingleRecord")
    page.get_by_role("button", name="Create batch transform job").click()
    expect(page).to_have_url(re.compile(r"/console/transform-jobs/jobs-batch$"))
    expect(page.locator("h1 [data-status]")).to_have_attribute("data-status", "Completed")
    progress = page.get_by_test_id("transform-progress")
    expect(progress).to_have_attribute("data-files-done", "2")
    expect(progress).to_have_attribute("data-records-done", "3")
    expect(page.get_by_role("progressbar", name="Files transformed")).to_have_attribute("value", "2")
    expect(page.get_by_role("button", name="Stop")).to_be_disabled()
    assert s3.get_object(Bucket=BUCKET, Key="batch/out/a.csv.out")["Body"].read().split() == [b"[1]", b"[0]"]
    desc = server.client("sagemaker").describe_transform_job(TransformJobName="jobs-batch")
    assert desc["BatchStrategy"] == "SingleRecord"
    assert desc["TransformResources"] == {"InstanceType": "ml.m5.large", "InstanceCount": 1}
    nav(page, "Batch transform jobs")
    row = page.get_by_role("row", name=re.compile("jobs-batch"))
    expect(row.locator("[data-status]")).to_have_attribute("data-status", "Completed")


def test_stop_a_running_transform_job(page: Page, server: ServerProcess, s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key="slow/in/a.csv", Body=b"30,1\n")
    sm = server.client("sagemaker")
    for name in ("jobs-slow", "jobs-slow-2"):
        sm.create_transform_job(
            TransformJobName=name,
            ModelName="jobs-slow",
            TransformInput={
                "DataSource": {
                    "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/slow/in/"}
                },
                "ContentType": "text/csv",
                "SplitType": "Line",
            },
            TransformOutput={"S3OutputPath": f"s3://{BUCKET}/{name}/out"},
            TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1},
        )
    nav(page, "Endpoints")
    nav(page, "Batch transform jobs")
    first = page.get_by_role("row", name=re.compile(r"jobs-slow\b(?!-)"))
    second = page.get_by_role("row", name=re.compile("jobs-slow-2"))
    expect(first.locator("[data-status]")).to_have_attribute("data-status", "InProgress")
    expect(second.locator("[data-status]")).to_have_attribute("data-status", "InProgress")
    # the list refreshes by itself while a job runs: a job stopped elsewhere shows Stopped
    sm.stop_transform_job(TransformJobName="jobs-slow-2")
    expect(second.locator("[data-status]")).to_have_attribute("data-status", "Stopped")
    first.get_by_role("link", name="jobs-slow").click()
    expect(page.get_by_test_id("transform-progress")).to_contain_text("0 of 1 done")
    page.get_by_role("button", name="Stop").click()
    page.get_by_role("dialog", name="Stop batch transform job").get_by_role("button", name="Stop").click()
    expect(page.locator("h1 [data-status]")).to_have_attribute("data-status", "Stopped")
    expect(page.get_by_role("button", name="Stop")).to_be_disabled()
    assert sm.describe_transform_job(TransformJobName="jobs-slow")["TransformJobStatus"] == "Stopped"
