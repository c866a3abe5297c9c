"""Run as a script by test_onnx.py: become an ONNX template (the zygote's preload, then the model loaded)
and fork children of it that use the loaded sessions, make new ones and exit; print a JSON report.

    python onnx_forks.py MODEL_DIR CHILDREN CHILD_TIMEOUT_S

The environment decides the rest (``ORT_DISABLE_TELEMETRY``). Forks come at different moments: right after
the parent ran the session, right after it made a new one, and back to back; at most 6 children at once.
Half of the children leave through ``sys.exit`` (the interpreter's exit: atexit, C++ static destructors),
half through ``os._exit`` (as a zeroscale worker does). A child still running after CHILD_TIMEOUT_S is hung:
it is killed and counted, so a hang fails a test instead of stalling it.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import numpy as np

from zeroscale.runtimes.registry import RUNTIMES
from zeroscale.workers.forkserver import thread_count

A = np.array([[0.5, 1.5], [2.0, -1.0], [3.25, 0.0]], np.float32)
B = np.array([[2, 3], [-4, 5], [7, -8]], np.int64)


def run(session: Any) -> list[np.ndarray]:
    return list(session.run(None, {"a": A, "b": B}))


def child(session: Any, model_dir: str, want: list[np.ndarray], exit_through_python: bool) -> None:
    code = 0
    try:
        for _ in range(30):
            assert all(np.array_equal(g, w) for g, w in zip(run(session), want, strict=True))
        fresh = RUNTIMES["onnx"].model_fn(model_dir)
        for _ in range(10):
            assert all(np.array_equal(g, w) for g, w in zip(run(fresh), want, strict=True))
        del fresh
    except BaseException as exc:
        print(f"child {os.getpid()}: {exc!r}", file=sys.stderr, flush=True)
        code = 5
    if exit_through_python:
        sys.exit(code)
    os._exit(code)


def main() -> None:
    model_dir, children, timeout_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    runtime = RUNTIMES["onnx"]
    runtime.preload()
    report: dict[str, Any] = {
        "zygote_threads": thread_count(),
        "zygote_imported": "onnxruntime" in sys.modules,
    }
    session = runtime.model_fn(model_dir)
    want = run(session)
    report["template_threads"] = thread_count()
    counts = {"ok": 0, "failed": 0, "hung": 0}
    live: dict[int, float] = {}
    forked = 0
    while forked < children or live:
        if forked < children and len(live) < 6:
            if forked % 3 == 0:
                run(session)
            elif forked % 3 == 1:
                runtime.model_fn(model_dir)
            pid = os.fork()
            if pid == 0:
                child(session, model_dir, want, exit_through_python=forked % 2 == 0)
            live[pid] = time.monotonic()
            forked += 1
        for pid, started in list(live.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                del live[pid]
                counts["ok" if os.waitstatus_to_exitcode(status) == 0 else "failed"] += 1
            elif time.monotonic() - started > timeout_s:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                del live[pid]
                counts["hung"] += 1
        time.sleep(0.002)
    report.update(counts)
    print(json.dumps(report), flush=True)
    os._exit(0)  # this process may hold the telemetry thread: its own exit() is not the subject


if __name__ == "__main__":
    main()
