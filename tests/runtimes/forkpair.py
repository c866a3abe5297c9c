"""Test helper: a zygote-like process forks two children, one without and one after the runtime's ``warm``
(what a zygote's spare runs before it waits), and reports the page faults of each one's first request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

from zeroscale.workers.forkserver import THREAD_ENV

# Appended to a setup script that defines ``runtime`` and ``timed(state)`` (the work whose page faults are
# counted, returning something JSON-able), may define ``untimed()`` (done before, its result given to
# ``timed``), and froze the GC like a zygote. Each child answers [page faults, timed's answer, threads].
_FORK_PAIR = textwrap.dedent(
    """
    import gc as _gc, json as _json, os as _os, resource as _resource, time as _time

    def _faults():
        return _resource.getrusage(_resource.RUSAGE_SELF).ru_minflt

    def _threads():
        # A thread joined a moment ago may still be listed while the kernel ends it: one left running is not.
        deadline = _time.monotonic() + 2.0
        while (n := len(_os.listdir("/proc/self/task"))) > 1 and _time.monotonic() < deadline:
            _time.sleep(0.001)
        return n

    def _child(warm):
        if warm:
            runtime.warm()
        threads = _threads()
        state = untimed() if "untimed" in globals() else None
        before = _faults()
        answer = timed(state)
        return [_faults() - before, answer, threads]

    _out = {}
    for _warm in (False, True):
        _r, _w = _os.pipe()
        _pid = _os.fork()
        if _pid == 0:
            _os.close(_r); _gc.unfreeze()
            _os.write(_w, _json.dumps(_child(_warm)).encode()); _os._exit(0)
        _os.close(_w)
        _out[str(_warm)] = _json.loads(_os.read(_r, 1 << 20))
        _os.waitpid(_pid, 0)
    print(_json.dumps(_out))
    """
)


def rehearsed_handler(runtime: str) -> str:
    """The end of a setup script that wrote a model into ``sys.argv[1]`` (and maybe an inference.py whose
    predict_fn writes to ``calls`` + its pid): the model loaded as a template has it, the warmed child
    rehearses (``runtimes.worker.rehearse``), which must not call the user's predict_fn, and each child's
    first request is a JSON row of ten values."""
    return f"""
    handler = load_handler("{runtime}", sys.argv[1])  # a template: the model loaded before the fork
    gc.collect(); gc.freeze()

    class runtime:
        @staticmethod
        def warm():
            assert rehearse(handler, "{runtime}")
            assert not os.path.exists(calls + str(os.getpid())), "the user's predict_fn was called"

    def timed(state):
        status, body, content_type = handler.invoke(b"[[0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 0.5]]",
                                                    {{"content-type": "application/json"}})
        return [status, body.decode(), content_type]
    """


def run_pair(setup: str, *args: str) -> tuple[Any, Any]:
    """The cold child's and the warmed child's [page faults, answer, threads], ``setup`` run with the zygote's
    thread settings."""
    env = {**os.environ, **THREAD_ENV}
    code = textwrap.dedent(setup) + _FORK_PAIR
    out = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    return result["False"], result["True"]
