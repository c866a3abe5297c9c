"""The scikit-learn zygote preload: single-threaded, and a fork of it predicts at once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from zeroscale.workers.forkserver import THREAD_ENV

from .forkpair import rehearsed_handler, run_pair

PROBE = textwrap.dedent(
    """
    import os, sys, time
    from zeroscale.runtimes.registry import RUNTIMES
    RUNTIMES["sklearn"].preload()
    threads = len(os.listdir("/proc/self/task"))
    import numpy as np
    from sklearn.ensemble import RandomForestClassifier
    X = np.random.RandomState(0).rand(50, 4); y = (X[:, 0] > 0.5).astype(int)
    model = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)
    pid = os.fork()
    if pid == 0:
        started = time.perf_counter()
        model.predict(X[:1])
        os._exit(0 if time.perf_counter() - started < 5 else 3)
    _, status = os.waitpid(pid, 0)
    print(threads, os.waitstatus_to_exitcode(status))
    """
)


def test_preload_starts_no_thread_and_a_fork_predicts() -> None:
    env = {**os.environ, **THREAD_ENV}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    threads, child_status = out.stdout.split()
    assert threads == "1"
    assert child_status == "0"


WARM_PROBE = """
    import gc, sys
    import joblib, numpy as np
    from sklearn.ensemble import RandomForestClassifier
    from zeroscale.runtimes.registry import RUNTIMES
    from zeroscale.runtimes import joblib_reader
    runtime = RUNTIMES["sklearn"]
    runtime.preload()
    X = np.random.RandomState(0).rand(500, 10); y = (X[:, 0] + X[:, 3] > 1).astype(int)
    path = sys.argv[1]
    joblib.dump(RandomForestClassifier(n_estimators=30, random_state=0).fit(X, y), path)
    gc.collect(); gc.freeze()

    def untimed():
        return joblib_reader.load(path)

    def timed(model):
        return model.predict_proba(X[:5]).tolist()
    """


def test_a_warmed_fork_predicts_its_first_request_without_copying_the_zygotes_pages(tmp_path: Path) -> None:
    """What a zygote's spare runs before it waits (``warm``: the runtime's own two-tree forest through the
    reader and predict) leaves the fork single-threaded (it may become a template) and copies the pages a
    forest's first predict writes: in a fork that ran it, the first predict of another forest takes a
    fraction of the page faults, and answers the same."""
    (cold_faults, cold_answer, _), (warm_faults, warm_answer, threads) = run_pair(
        WARM_PROBE, str(tmp_path / "model.joblib")
    )
    assert warm_answer == cold_answer
    assert threads == 1  # a spare may become a template, which forks
    assert cold_faults > 100  # the zygote's pages a first predict writes
    assert warm_faults * 5 < cold_faults, (warm_faults, cold_faults)


REHEARSAL_PROBE = """
    import gc, os, sys
    import joblib, numpy as np
    from sklearn.ensemble import RandomForestClassifier
    from zeroscale.runtimes.registry import RUNTIMES
    from zeroscale.runtimes.worker import load_handler, rehearse
    RUNTIMES["sklearn"].preload()
    X = np.random.RandomState(0).rand(500, 10); y = (X[:, 0] + X[:, 3] > 1).astype(int)
    forest = RandomForestClassifier(n_estimators=30, random_state=0).fit(X, y)
    joblib.dump(forest, sys.argv[1] + "/model.joblib")
    calls = sys.argv[1] + "/predict_fn-calls-"
    if sys.argv[2:] == ["hooks"]:  # its own inference.py, whose predict_fn calls predict_proba and says so
        os.makedirs(sys.argv[1] + "/code")
        with open(sys.argv[1] + "/code/inference.py", "w") as f:
            f.write(
                "import json, os, joblib, numpy as np\\n"
                "def model_fn(model_dir):\\n"
                "    return joblib.load(os.path.join(model_dir, 'model.joblib'))\\n"
                "def input_fn(body, content_type):\\n"
                "    return np.asarray(json.loads(body), dtype=float)\\n"
                "def predict_fn(data, model):\\n"
                f"    open({calls!r} + str(os.getpid()), 'a').write('x')\\n"
                "    return model.predict_proba(data)\\n"
                "def output_fn(prediction, accept):\\n"
                "    return json.dumps(prediction.tolist())\\n"
            )
    """ + rehearsed_handler("sklearn")


@pytest.mark.parametrize("hooks", [(), ("hooks",)], ids=["runtime's hooks", "user's hooks"])
def test_a_rehearsed_replica_answers_its_first_request_without_copying_the_templates_pages(
    tmp_path: Path, hooks: tuple[str, ...]
) -> None:
    """In a fork of a process that loaded a forest (a template's replica), a first request writes to pages
    the two still share, each copied on a fault; ``rehearse`` (a parked replica's sample request: zeros as
    wide as the model) takes those copies ahead, so the first real request takes a fraction of the faults,
    and answers the same. A model with its own inference.py is never asked a sample through its hooks: when
    model_fn gave a forest that is scikit-learn's through and through, the runtime's own predict on zeros
    takes the copies instead (``Runtime.exercise``), the user's predict_fn never called, and the first real
    request through the user's hooks (predict_proba) takes a fraction of the faults."""
    cold, warm = run_pair(REHEARSAL_PROBE, str(tmp_path), *hooks)
    (cold_faults, cold_answer, _), (warm_faults, warm_answer, threads) = cold, warm
    assert warm_answer == cold_answer
    assert warm_answer[0] == 200
    assert threads == 1
    assert cold_faults > 100
    assert warm_faults * 5 < cold_faults, (warm_faults, cold_faults)


_USER_CALLS: list[str] = []


def _user_function(rows: object) -> object:
    _USER_CALLS.append("function")
    return rows


def _user_metric(a: object, b: object) -> float:
    _USER_CALLS.append("metric")
    return 0.0


def _fitted_models() -> dict[str, tuple[object, bool]]:
    """Fitted models, and whether each is scikit-learn's through and through."""
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    X = np.random.RandomState(0).rand(60, 4)
    y = (X[:, 0] > 0.5).astype(int)

    class Forest(RandomForestClassifier):  # a user's subclass
        pass

    columns = ColumnTransformer([("scaled", StandardScaler(), [0, 1])], remainder="passthrough")
    models: dict[str, tuple[Any, bool]] = {
        "forest": (RandomForestClassifier(n_estimators=3, random_state=0), True),
        "forest seeded by a RandomState": (
            RandomForestClassifier(n_estimators=3, random_state=np.random.RandomState(0)),
            True,
        ),
        "pipeline": (make_pipeline(StandardScaler(), LogisticRegression()), True),
        "column transformer": (make_pipeline(columns, LogisticRegression()), True),
        "numpy's function": (make_pipeline(FunctionTransformer(np.log1p), LogisticRegression()), True),
        "boosting": (HistGradientBoostingClassifier(max_iter=3), True),
        "a user's function": (
            make_pipeline(FunctionTransformer(_user_function), LogisticRegression()),
            False,
        ),
        "a user's metric": (KNeighborsClassifier(3, metric=_user_metric), False),
        "a user's subclass": (Forest(n_estimators=3, random_state=0), False),
    }
    fitted = {name: (model.fit(X, y), expected) for name, (model, expected) in models.items()}
    touched = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, y)
    touched.helper = object()  # an object of nobody's library, set on a fitted forest
    fitted["an object set on a fitted forest"] = (touched, False)
    return fitted


def test_only_a_model_that_is_scikit_learns_through_and_through_is_exercised() -> None:
    """``exercise`` predicts zeros only on a model in which no code of the user's can run: a user's function
    or metric anywhere inside, a subclass, an object of the user's set on it, and it does nothing."""
    from zeroscale.runtimes import sklearn

    for name, (model, expected) in _fitted_models().items():
        _USER_CALLS.clear()
        assert sklearn.library_only(model) is expected, name
        assert sklearn.exercise(model) is expected, name
        assert _USER_CALLS == [], name
    assert sklearn.exercise(object()) is False


def test_a_sample_is_a_row_of_zeros_as_wide_as_the_fitted_model() -> None:
    import json

    import numpy as np
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from zeroscale.runtimes import sklearn

    X, y = np.random.RandomState(0).rand(20, 3), np.arange(20.0)
    fitted = make_pipeline(StandardScaler(), LinearRegression()).fit(X, y)
    body, content_type = sklearn.sample(fitted) or (b"", "")
    assert (json.loads(body), content_type) == ([[0.0, 0.0, 0.0]], "application/json")
    assert sklearn.sample(LinearRegression()) is None  # not fitted: it does not say how wide
    assert sklearn.sample(object()) is None


class _Recording(type):
    """A user's metaclass whose every hook records that it ran."""

    def __eq__(cls, other: object) -> bool:
        _USER_CALLS.append("__eq__")
        return False

    def __hash__(cls) -> int:
        _USER_CALLS.append("__hash__")
        return 0

    def __getattribute__(cls, name: str) -> Any:
        _USER_CALLS.append(f"class.{name}")
        return super().__getattribute__(name)


class _Sneaky(metaclass=_Recording):
    def __getattr__(self, name: str) -> Any:
        _USER_CALLS.append(f"{name}")
        raise AttributeError(name)


class _NotAString:
    def split(self, sep: str) -> list[str]:
        _USER_CALLS.append("split")
        return ["sklearn"]


class _OddModule:
    pass


_OddModule.__module__ = _NotAString()  # type: ignore[assignment]


def test_asking_whether_a_model_is_scikit_learns_runs_none_of_the_users_code() -> None:
    """An attacker's objects, on their own or set on a fitted forest: a metaclass whose __eq__, __hash__ and
    attribute lookups are the user's, an object answering any attribute, a class whose module is not a
    string. None is exercised, and asking runs none of their code."""
    import numpy as np
    from sklearn.ensemble import RandomForestClassifier

    from zeroscale.runtimes import sklearn

    X = np.random.RandomState(0).rand(40, 3)
    y = (X[:, 0] > 0.5).astype(int)
    for odd in (_Sneaky(), _Sneaky, _OddModule(), _OddModule):
        forest = RandomForestClassifier(n_estimators=2, random_state=0).fit(X, y)
        forest.helper = odd
        _USER_CALLS.clear()
        assert sklearn.library_only(odd) is False
        assert sklearn.exercise(odd) is False
        assert sklearn.exercise(forest) is False
        assert sklearn.exercise({"model": forest, "odd": odd}) is False
        assert _USER_CALLS == [], odd
