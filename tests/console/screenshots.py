"""Screenshots of the console's main pages for the README: ``python -m tests.console.screenshots [OUT_DIR]``
(default ``docs/console``). Starts a real server, deploys a small model through the console, sends some
traffic over a little more than a minute (so the charts have more than one point), then photographs the
pages in Debian's Chromium."""

from __future__ import annotations

import contextlib
import json
import sys
import tarfile
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

import joblib  # noqa: E402
import numpy as np  # noqa: E402
from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402
from sklearn.ensemble import RandomForestClassifier  # noqa: E402

from console.chromium import chromium_path  # noqa: E402
from zeroscale.testing import ACCESS_KEY, SECRET_KEY, ServerProcess  # noqa: E402

IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"


def model_tar(root: Path) -> str:
    rng = np.random.RandomState(0)
    X = rng.rand(300, 4)
    y = (X[:, 0] + X[:, 1] > 1).astype(int)
    model = RandomForestClassifier(n_estimators=30, random_state=0).fit(X, y)
    joblib.dump(model, root / "model.joblib")
    with tarfile.open(root / "model.tar.gz", "w:gz") as tar:
        tar.add(root / "model.joblib", arcname="model.joblib")
    return f"file://{root / 'model.tar.gz'}"


def shot(page: Page, out: Path, name: str, full: bool = False) -> None:
    page.wait_for_timeout(300)
    page.screenshot(path=str(out / f"{name}.png"), full_page=full)
    print(f"wrote {out / name}.png")


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/console").resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        url = model_tar(root)
        server = ServerProcess(root / "data").start()
        try:
            run(server, url, out)
        finally:
            server.stop()


def run(server: ServerProcess, model_url: str, out: Path) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path())
        page = browser.new_page(viewport={"width": 1280, "height": 860}, base_url=server.url)
        page.set_default_timeout(30_000)
        page.goto("/console/endpoints")
        page.get_by_label("Access key ID").fill(ACCESS_KEY)
        shot(page, out, "signin")
        page.get_by_label("Secret access key").fill(SECRET_KEY)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="Endpoints", exact=True)).to_be_visible()

        page.goto("/console/models/create")
        page.get_by_label("Model name").fill("churn-forest")
        page.get_by_label("Location of inference code image").fill(IMAGE)
        page.get_by_label("Location of model artifacts - optional").fill(model_url)
        page.get_by_role("button", name="Add environment variable").click()
        page.get_by_label("Environment variable key").fill("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT")
        page.get_by_label("Environment variable value").fill("application/json")
        shot(page, out, "create-model", full=True)
        page.get_by_role("button", name="Create model").click()
        expect(page.get_by_role("heading", name="churn-forest")).to_be_visible()

        page.goto("/console/endpoint-configs/create")
        page.get_by_label("Endpoint configuration name").fill("churn-serverless")
        page.get_by_label("Model", exact=True).select_option("churn-forest")
        page.get_by_label("Memory size").select_option("2048")
        page.get_by_label("Max concurrency").fill("4")
        shot(page, out, "create-endpoint-config", full=True)
        page.get_by_role("button", name="Create endpoint configuration").click()
        expect(page.get_by_role("heading", name="churn-serverless")).to_be_visible()

        page.goto("/console/endpoints/create")
        page.get_by_label("Endpoint name").fill("churn")
        page.get_by_label("Endpoint configuration").select_option("churn-serverless")
        page.get_by_role("button", name="Create endpoint").click()
        expect(page.locator("h1 [data-status]")).to_have_attribute("data-status", "InService")

        runtime = server.client("sagemaker-runtime")
        rng = np.random.RandomState(1)
        deadline = time.monotonic() + 75
        while time.monotonic() < deadline:
            rows = rng.rand(int(rng.randint(1, 20)), 4).tolist()
            body = json.dumps(rows)
            runtime.invoke_endpoint(EndpointName="churn", ContentType="application/json", Body=body)
            time.sleep(0.4)
        with contextlib.suppress(Exception):  # one ModelError, for the error chart and the logs
            runtime.invoke_endpoint(EndpointName="churn", ContentType="text/csv", Body=b"not,a,number,row")

        page.goto("/console/endpoints")
        shot(page, out, "endpoints")
        page.goto("/console/endpoints/churn")
        page.get_by_label("Time range").select_option("15m")
        page.get_by_label("Request body").fill("[[0.9, 0.4, 0.1, 0.3]]")
        page.get_by_role("button", name="Send request").click()
        expect(page.get_by_label("Response body")).to_be_visible()
        expect(page.locator("figure[data-chart=invocations] canvas")).to_be_visible()
        page.wait_for_timeout(2000)
        shot(page, out, "endpoint", full=True)

        page.goto("/console/usage")
        expect(page.get_by_test_id("total-cost")).to_be_visible()
        shot(page, out, "usage", full=True)
        browser.close()


if __name__ == "__main__":
    main()
