"""A real server for the console's tests (one for the package), a small scikit-learn model, and Debian's
Chromium driven by Playwright (never skipped: ``make test`` installs the browser)."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path

import joblib
import numpy as np
import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright
from sklearn.linear_model import LogisticRegression

from console.chromium import chromium_path
from zeroscale.testing import ServerProcess


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    """Keep each phase's report on the test item, so a fixture can see whether the test failed."""
    report: pytest.TestReport = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="package")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("console-data")).start()
    yield server
    server.stop()


@pytest.fixture(scope="package")
def model_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A logistic regression on 4 features as model.tar.gz: [[0.9, ...]] -> [1], [[0.1, ...]] -> [0]."""
    root = tmp_path_factory.mktemp("console-model")
    rng = np.random.RandomState(3)
    X = rng.rand(200, 4)
    model = LogisticRegression().fit(X, (X[:, 0] > 0.5).astype(int))
    joblib.dump(model, root / "model.joblib")
    with tarfile.open(root / "model.tar.gz", "w:gz") as tar:
        tar.add(root / "model.joblib", arcname="model.joblib")
    return f"file://{root / 'model.tar.gz'}"


@pytest.fixture(scope="package")
def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where failing tests leave screenshots of the page they were on."""
    return tmp_path_factory.mktemp("console-artifacts")


@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """One Chromium for the package; each browser test module opens its own context (cookies, page)."""
    browser = playwright.chromium.launch(executable_path=chromium_path())
    yield browser
    browser.close()


@pytest.fixture(autouse=True)
def screenshot_on_failure(request: pytest.FixtureRequest, artifacts_dir: Path) -> Iterator[None]:
    """A browser test that fails leaves a screenshot of its page."""
    page: Page | None = request.getfixturevalue("page") if "page" in request.fixturenames else None
    yield
    report = getattr(request.node, "rep_call", None)
    if page is None or report is None or not report.failed:
        return
    shot = artifacts_dir / f"{request.node.name}.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot of the page: {shot}")
