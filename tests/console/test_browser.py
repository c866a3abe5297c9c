"""The console in a real browser (Debian's Chromium, driven by Playwright), against a real server with real
workers: sign-in (a wrong secret first), the seed's three steps (model -> endpoint configuration ->
endpoint) ending InService, a test invocation and a ModelError, logs appearing live, a chart drawn from the
metric history, the one-click serverless -> real-time update, deletes, and sign-out leaving no page open.

The tests run in order on one page, as one person would click through."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from console.ui import T, nav, sign_in
from zeroscale.testing import ACCESS_KEY, SECRET_KEY, ServerProcess


@pytest.fixture(scope="module")
def page(browser: Browser, console_server: ServerProcess) -> Iterator[Page]:
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, base_url=console_server.url, locale="en-US"
    )
    page = context.new_page()
    page.set_default_timeout(T)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def test_sign_in_refuses_a_wrong_secret_then_lets_the_right_one_in(page: Page) -> None:
    page.goto("/console/models")
    expect(page).to_have_url(re.compile(r"/console/signin\?next=%2Fconsole%2Fmodels$"))
    sign_in(page, "not-the-secret")
    expect(page.get_by_role("alert")).to_contain_text(
        "The access key ID or the secret access key is not correct."
    )
    expect(page.get_by_label("Secret access key")).to_have_value("")
    expect(page.get_by_label("Secret access key")).to_be_focused()
    sign_in(page, SECRET_KEY, keyboard=True)
    expect(page.get_by_role("heading", name="Models", exact=True)).to_be_visible()
    expect(page).to_have_url(re.compile(r"/console/models$"))
    expect(page.get_by_text(ACCESS_KEY)).to_be_visible()


def test_the_seeds_three_steps_end_in_service(
    page: Page, model_url: str, console_server: ServerProcess
) -> None:
    # 1. a model from a container definition
    page.get_by_role("link", name="Create model").click()
    expect(page.get_by_role("group", name="Container input options")).to_be_visible()
    expect(page.get_by_label("Provide model artifacts and inference image location")).to_be_checked()
    expect(page.get_by_label("Use a model package resource")).to_be_enabled()
    expect(page.get_by_label("Model package", exact=True)).to_be_hidden()
    expect(page.get_by_label("Use a single model")).to_be_checked()
    page.get_by_label("Model name").fill("console-demo")
    page.get_by_label("Location of inference code image").fill(
        "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
    )
    artifacts = page.get_by_label("Location of model artifacts - optional")
    expect(artifacts).to_have_accessible_description(
        re.compile(r"single gzip compressed tar archive \(\.tar\.gz")
    )
    artifacts.fill(model_url)
    page.get_by_role("button", name="Add environment variable").click()
    page.get_by_label("Environment variable key").fill("GREETING")
    page.get_by_label("Environment variable value").fill("hello")
    page.get_by_role("button", name="Create model").click()
    expect(page.get_by_role("heading", name="console-demo")).to_be_visible()
    expect(page.get_by_role("cell", name="GREETING")).to_be_visible()

    # 2. two endpoint configurations: serverless, and real-time instances for the update later
    for name, serverless in (("console-serverless", True), ("console-realtime", False)):
        nav(page, "Endpoint configurations")
        page.get_by_role("link", name="Create endpoint configuration").click()
        page.get_by_label("Endpoint configuration name").fill(name)
        page.get_by_label("Model", exact=True).select_option("console-demo")
        if serverless:
            expect(page.get_by_label("Serverless")).to_be_checked()
            page.get_by_label("Memory size").select_option("1024")
            page.get_by_label("Max concurrency").fill("2")
        else:
            page.get_by_label("Provisioned instances").check()
            page.get_by_label("Instance type").fill("ml.m5.large")
            page.get_by_label("Initial instance count").fill("1")
        page.get_by_role("button", name="Create endpoint configuration").click()
        expect(page.get_by_role("heading", name=name)).to_be_visible()
    expect(page.get_by_role("cell", name="1 x ml.m5.large")).to_be_visible()

    # 3. an endpoint from the serverless configuration
    nav(page, "Endpoints")
    page.get_by_role("link", name="Create endpoint").click()
    page.get_by_label("Endpoint name").fill("console-demo")
    page.get_by_label("Endpoint configuration").select_option("console-serverless")
    page.get_by_role("button", name="Create endpoint").click()
    expect(page).to_have_url(re.compile(r"/console/endpoints/console-demo$"))
    expect(page.locator("h1 [data-status]")).to_have_attribute("data-status", "InService")
    assert console_server.client("sagemaker").describe_endpoint(EndpointName="console-demo")[
        "EndpointStatus"
    ] == ("InService")
    expect(page.get_by_role("cell", name="1024 MB, max concurrency 2")).to_be_visible()


def test_a_test_invocation_answers_and_a_model_error_shows_its_details(page: Page) -> None:
    page.get_by_label("Request body").fill("[[0.95, 0.1, 0.2, 0.3], [0.05, 0.5, 0.5, 0.5]]")
    page.get_by_label("Content type").fill("application/json")
    page.get_by_label("Accept").fill("application/json")
    page.get_by_role("button", name="Send request").click()
    result = page.locator(".result")
    expect(result.locator("[data-status]")).to_have_attribute("data-status", "200")
    expect(page.get_by_label("Response body")).to_have_text("[1, 0]")
    expect(page.get_by_test_id("latency")).to_contain_text(re.compile(r"\d+(\.\d)? ms on the server"))
    expect(result).to_contain_text("AllTraffic")

    page.get_by_label("Request body").fill("this is not json")
    page.get_by_role("button", name="Send request").click()
    expect(result.locator("[data-status]")).to_have_attribute("data-status", "424")
    alert = result.get_by_role("alert")
    expect(alert).to_contain_text("ModelError")
    expect(alert).to_contain_text("Original status code")
    expect(alert).to_contain_text("Could not decode the request body as application/json")
    expect(alert).to_contain_text(re.compile(r"log-stream:AllTraffic/"))


def test_logs_appear_live(page: Page) -> None:
    lines = page.get_by_role("list", name="Log events")
    expect(lines).to_contain_text("started: cold start took")
    # the worker's own line about the bad request, printed after the page opened: followed, not reloaded
    expect(lines).to_contain_text("Could not decode the request body")


def test_a_chart_renders_the_metric_history(page: Page) -> None:
    chart = page.locator("figure[data-chart=invocations]")
    expect(chart).to_have_attribute("data-total", "2")
    expect(chart.locator("figcaption")).to_contain_text("total 2")
    errors = page.locator("figure[data-chart=errors]")
    expect(errors).to_have_attribute("data-total", "1")
    canvas = chart.locator("canvas")
    expect(canvas).to_be_visible()
    drawn = canvas.evaluate(
        """c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                  let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }"""
    )
    assert drawn > 100  # the series is drawn, not just an empty frame
    page.get_by_label("Time range").select_option("15m")
    expect(chart).to_have_attribute("data-total", "2")


def test_usage_and_cost_of_the_endpoint_and_the_account(page: Page) -> None:
    expect(page.get_by_test_id("endpoint-cost")).to_contain_text("Cost so far: duration")
    usage = page.locator("section", has=page.get_by_role("heading", name="Usage and cost", exact=True))
    expect(usage.get_by_role("cell", name="AllTraffic")).to_be_visible()
    nav(page, "Usage and cost")
    expect(page.get_by_role("heading", name="Usage and cost", exact=True)).to_be_visible()
    expect(page.get_by_role("cell", name="console-demo")).to_be_visible()
    expect(
        page.get_by_text(re.compile(r"150,000 seconds of on-demand inference duration free"))
    ).to_be_visible()
    expect(page.get_by_test_id("total-cost")).to_contain_text("USD")
    page.go_back()
    expect(page.get_by_role("heading", name="console-demo")).to_be_visible()


def test_one_click_update_from_serverless_to_real_time(page: Page, console_server: ServerProcess) -> None:
    page.get_by_label("New endpoint configuration").select_option("console-realtime")
    page.get_by_role("button", name="Update endpoint").click()
    expect(page.get_by_test_id("current-config")).to_have_text("console-realtime")
    expect(page.locator("h1 [data-status]")).to_have_attribute("data-status", "InService")
    variants = page.locator("section", has=page.get_by_role("heading", name="Production variants"))
    expect(variants.get_by_role("cell", name="Instances", exact=True)).to_be_visible()
    expect(variants.get_by_role("cell", name="1 instance(s)")).to_be_visible()
    desc = console_server.client("sagemaker").describe_endpoint(EndpointName="console-demo")
    assert desc["EndpointConfigName"] == "console-realtime"
    assert desc["ProductionVariants"][0]["CurrentInstanceCount"] == 1
    page.get_by_label("Request body").fill("[[0.95, 0.1, 0.2, 0.3]]")
    page.get_by_role("button", name="Send request").click()
    expect(page.get_by_label("Response body")).to_have_text("[1]")


def test_delete_endpoint_configurations_and_model(page: Page, console_server: ServerProcess) -> None:
    page.get_by_role("button", name="Delete").click()
    dialog = page.get_by_role("dialog", name="Delete endpoint")
    dialog.get_by_role("button", name="Delete").click()
    expect(page).to_have_url(re.compile(r"/console/endpoints$"))
    expect(page.get_by_role("cell", name="No endpoints yet.")).to_be_visible()
    for name in ("console-serverless", "console-realtime"):
        page.goto(f"/console/endpoint-configs/{name}")
        page.get_by_role("button", name="Delete").click()
        page.get_by_role("dialog").get_by_role("button", name="Delete").click()
        expect(page).to_have_url(re.compile(r"/console/endpoint-configs$"))
        expect(page.get_by_role("link", name=name)).to_have_count(0)
    page.goto("/console/models/console-demo")
    page.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
    expect(page.get_by_role("heading", name="console-demo")).to_be_visible()
    page.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(page).to_have_url(re.compile(r"/console/models$"))
    sm: Any = console_server.client("sagemaker")
    assert not sm.list_endpoints()["Endpoints"] and not sm.list_endpoint_configs()["EndpointConfigs"]
    assert "console-demo" not in [m["ModelName"] for m in sm.list_models()["Models"]]


def test_a_model_from_a_model_package_group(
    page: Page, console_server: ServerProcess, model_url: str
) -> None:
    sm: Any = console_server.client("sagemaker")
    sm.create_model_package_group(ModelPackageGroupName="console-group")
    spec = {"Containers": [{"Image": "sklearn", "ModelDataUrl": model_url}]}
    arn = sm.create_model_package(
        ModelPackageGroupName="console-group", InferenceSpecification=spec, ModelApprovalStatus="Approved"
    )["ModelPackageArn"]
    nav(page, "Models")
    page.get_by_role("link", name="Create model").click()
    page.get_by_label("Use a model package resource").check()
    expect(page.get_by_label("Location of inference code image")).to_be_hidden()
    page.get_by_label("Model name").fill("console-from-package")
    page.get_by_label("Model package", exact=True).fill("console-group")
    page.get_by_role("button", name="Create model").click()
    expect(page.get_by_role("heading", name="console-from-package")).to_be_visible()
    expect(page.get_by_text("console-group", exact=True)).to_be_visible()
    assert sm.describe_model(ModelName="console-from-package")["PrimaryContainer"] == {
        "ModelPackageName": "console-group"
    }
    sm.delete_model(ModelName="console-from-package")
    sm.delete_model_package(ModelPackageName=arn)
    sm.delete_model_package_group(ModelPackageGroupName="console-group")


def test_without_a_session_no_page_shows_data(page: Page) -> None:
    # the session ends under the page (as on expiry): the next call sends the user to sign in
    page.context.clear_cookies()
    nav(page, "Endpoints")
    expect(page).to_have_url(re.compile(r"/console/signin\?next="))
    expect(page.get_by_role("status")).to_contain_text("Your session has ended")
    sign_in(page, SECRET_KEY)
    expect(page.get_by_role("heading", name="Endpoints", exact=True)).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/console/signin$"))
    for path in (
        "/console/endpoints",
        "/console/models",
        "/console/usage",
        "/console/endpoints/console-demo",
        "/console/transform-jobs",
    ):
        page.goto(path)
        expect(page).to_have_url(re.compile(r"/console/signin\?next="))
        expect(page.get_by_role("heading", name="Sign in to zeroscale")).to_be_visible()
        expect(page.get_by_role("navigation", name="Console")).to_be_hidden()
