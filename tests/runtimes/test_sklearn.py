"""The scikit-learn zygote preload: single-threaded, and a fork of it predicts at once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from zeroscale.workers.forkserver import THREAD_ENV

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
