"""The artifact cache's capacity through a real server and real boto3 (``--artifact-cache-mb 0``: only what is
in use is kept): a deleted endpoint's artifact goes when the next one arrives, those of the endpoints that
serve (at zero too) stay, a model deployed again is fetched again and answers the same, and a restart keeps
what its endpoints use."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from zeroscale.testing import ServerProcess, deploy, make_tar, wait_for

from .conftest import SklearnModel

ROWS = np.array([[0.9, 0.8, 0.1, 0.2], [0.1, 0.05, 0.5, 0.5]])


def metric(server: ServerProcess, name: str) -> float:
    for line in server.metrics().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not on /metrics")


def cached(server: ServerProcess) -> set[str]:
    """The entries on disk (content-addressed directories)."""
    root = server.data_dir / "artifacts"
    return {p.name for p in root.iterdir() if len(p.name) == 64}


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory, sklearn_model: SklearnModel) -> dict[str, str]:
    """The same model in four archives of different contents (each its own cache entry)."""
    root = tmp_path_factory.mktemp("archives")
    joblib_file = Path(sklearn_model.tar).parent / "model.joblib"
    out = {}
    for name in ("a", "b", "c"):
        files = {"model.joblib": joblib_file, "note.txt": name.encode()}
        out[name] = f"file://{make_tar(root / f'{name}.tar.gz', files)}"
    return out


def test_only_what_endpoints_use_is_kept_at_capacity_zero(
    server_factory: Callable[..., ServerProcess], archives: dict[str, str], sklearn_model: SklearnModel
) -> None:
    server = server_factory(artifact_cache_mb=0)
    sm, smr = server.client("sagemaker"), server.client("sagemaker-runtime")
    want = sklearn_model.expected(ROWS)

    def answer(endpoint: str) -> Any:
        body = smr.invoke_endpoint(
            EndpointName=endpoint, Body=sklearn_model.json_body(ROWS), ContentType="application/json"
        )["Body"].read()
        return json.loads(body)

    for name in ("a", "b"):
        assert deploy(sm, f"cache-{name}", archives[name])["EndpointStatus"] == "InService"
        assert answer(f"cache-{name}") == want
    assert metric(server, "zeroscale_artifact_cache_capacity_bytes") == 0
    assert metric(server, "zeroscale_artifact_cache_entries") == 2  # both in use: kept past the capacity
    first = cached(server)
    assert len(first) == 2

    # cache-a goes; its artifact is evicted when the next artifact arrives (cache-c's)
    sm.delete_endpoint(EndpointName="cache-a")
    wait_for(lambda: not sm.list_endpoints(NameContains="cache-a")["Endpoints"])
    assert deploy(sm, "cache-c", archives["c"])["EndpointStatus"] == "InService"
    assert metric(server, "zeroscale_artifact_cache_entries") == 2
    assert metric(server, "zeroscale_artifact_cache_evictions_total") == 1
    assert metric(server, "zeroscale_artifact_cache_evicted_bytes_total") > 0
    now = cached(server)
    assert len(now) == 2 and len(now & first) == 1  # cache-b's stayed
    assert answer("cache-b") == want and answer("cache-c") == want

    # the evicted model deployed again is fetched and extracted again, and answers the same
    assert deploy(sm, "cache-a2", archives["a"])["EndpointStatus"] == "InService"
    assert answer("cache-a2") == want
    assert cached(server) == now | (first - now)

    # a restart at the same capacity: every endpoint's artifact is in use again, none is evicted
    server.restart()
    smr = server.client("sagemaker-runtime")
    for endpoint in ("cache-b", "cache-c", "cache-a2"):
        assert answer(endpoint) == want
    assert len(cached(server)) == 3
    assert metric(server, "zeroscale_artifact_cache_evictions_total") == 0
