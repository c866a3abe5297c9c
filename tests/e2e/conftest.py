from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier

from zeroscale.testing import ServerProcess, make_tar

# The end of an image's server written as a test fixture (a Python ``http.server`` whose ``Handler`` class
# answers with ``self.answer(body)``): the answer, and serving on the port SageMaker's contract gives it.
IMAGE_SERVER_END = """
    def answer(self, body):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


HTTPServer(("127.0.0.1", int(os.environ["SAGEMAKER_BIND_TO_PORT"])), Handler).serve_forever()
"""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A module that sets ``BACKENDS = ("sqlite", "postgresql")`` runs all its tests once per database."""
    backends = getattr(metafunc.module, "BACKENDS", None)
    if backends and "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", backends, indirect=True, scope="module")


@pytest.fixture(scope="module", autouse=True)
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """The database the module's servers keep their state in: SQLite in each data directory, or a fresh
    PostgreSQL database per data directory on the session's PostgreSQL server."""
    name: str = getattr(request, "param", "sqlite")
    if name != "postgresql":
        yield name
        return
    pg = request.getfixturevalue("postgres")
    urls: dict[Path, str] = {}

    def database(data_dir: Path) -> str:
        key = data_dir.resolve()
        if key not in urls:
            urls[key] = pg.create_database("e2e")
        return urls[key]

    ServerProcess.databases = database
    yield name
    ServerProcess.databases = None


@pytest.fixture(scope="module")
def server_factory(
    tmp_path_factory: pytest.TempPathFactory, backend: str
) -> Iterator[Callable[..., ServerProcess]]:
    """Start real servers (each on a free port, own data dir); all are stopped at the end of the module."""
    started: list[ServerProcess] = []

    def start(data_dir: Path | None = None, **flags: Any) -> ServerProcess:
        server = ServerProcess(data_dir or tmp_path_factory.mktemp("data"), flags).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return server_factory()


@pytest.fixture(scope="module")
def sm(server: ServerProcess) -> Any:
    return server.client("sagemaker")


@pytest.fixture(scope="module")
def smr(server: ServerProcess) -> Any:
    return server.client("sagemaker-runtime")


class SklearnModel:
    def __init__(self, root: Path) -> None:
        rng = np.random.RandomState(7)
        self.X = rng.rand(200, 4)
        y = (self.X[:, 0] + self.X[:, 1] > 1).astype(int)
        self.model = RandomForestClassifier(n_estimators=10, random_state=0).fit(self.X, y)
        joblib.dump(self.model, root / "model.joblib")
        self.tar = make_tar(root / "model.tar.gz", {"model.joblib": root / "model.joblib"})
        self.url = f"file://{self.tar}"

    def expected(self, rows: np.ndarray) -> list[int]:
        return [int(v) for v in self.model.predict(rows)]

    def json_body(self, rows: np.ndarray) -> bytes:
        return json.dumps(rows.tolist()).encode()


@pytest.fixture(scope="session")
def sklearn_model(tmp_path_factory: pytest.TempPathFactory) -> SklearnModel:
    return SklearnModel(tmp_path_factory.mktemp("sklearn"))


def handler_model(root: Path, inference_py: str, extra: dict[str, bytes] | None = None) -> str:
    """A model.tar.gz with code/inference.py (and optional files); returns its file:// URL."""
    files: dict[str, bytes | Path] = {"code/inference.py": inference_py.encode()}
    files.update(extra or {})
    return f"file://{make_tar(root / 'model.tar.gz', files)}"


def s3_tenant(server: ServerProcess, name: str, prefix: str) -> dict[str, str]:
    """An IAM user allowed every SageMaker action, files on the server's disk, and s3:GetObject and
    s3:PutObject under ``prefix`` (``bucket/path``) only; its access key."""
    iam = server.client("iam")
    iam.create_user(UserName=name)
    own = f"arn:aws:s3:::{prefix}/*"
    policy = {
        "Statement": [
            {"Effect": "Allow", "Action": ["sagemaker:*", "zeroscale:ReadLocalFile"], "Resource": "*"},
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": own},
        ]
    }
    iam.put_user_policy(UserName=name, PolicyName="own", PolicyDocument=json.dumps(policy))
    key: dict[str, str] = iam.create_access_key(UserName=name)["AccessKey"]
    return key
