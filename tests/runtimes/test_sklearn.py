"""The scikit-learn zygote preload: single-threaded, and a fork of it predicts at once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from zeroscale.workers.forkserver import THREAD_ENV

from .forkpair import run_pair

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
    import gc, sys
    import joblib, numpy as np
    from sklearn.ensemble import RandomForestClassifier
    from zeroscale.runtimes.registry import RUNTIMES
    from zeroscale.runtimes.worker import load_handler, rehearse
    RUNTIMES["sklearn"].preload()
    X = np.random.RandomState(0).rand(500, 10); y = (X[:, 0] + X[:, 3] > 1).astype(int)
    forest = RandomForestClassifier(n_estimators=30, random_state=0).fit(X, y)
    joblib.dump(forest, sys.argv[1] + "/model.joblib")
    handler = load_handler("sklearn", sys.argv[1])  # a template: the model loaded before the fork
    gc.collect(); gc.freeze()

    class runtime:
        @staticmethod
        def warm():
            assert rehearse(handler, "sklearn")

    def timed(state):
        status, body, content_type = handler.invoke(b"[[0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 0.5]]",
                                                    {"content-type": "application/json"})
        return [status, body.decode(), content_type]
    """


def test_a_rehearsed_replica_answers_its_first_request_without_copying_the_templates_pages(
    tmp_path: Path,
) -> None:
    """In a fork of a process that loaded a forest (a template's replica), a first request writes to pages
    the two still share, each copied on a fault; ``rehearse`` (a parked replica's sample request: zeros as
    wide as the model) takes those copies ahead, so the first real request takes a fraction of the faults,
    and answers the same."""
    cold, warm = run_pair(REHEARSAL_PROBE, str(tmp_path))
    (cold_faults, cold_answer, _), (warm_faults, warm_answer, threads) = cold, warm
    assert warm_answer == cold_answer
    assert warm_answer[0] == 200
    assert threads == 1
    assert cold_faults > 100
    assert warm_faults * 5 < cold_faults, (warm_faults, cold_faults)


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
