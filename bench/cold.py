"""Cold start: endpoint at zero workers -> first response, against a fresh Python process; and its breakdown.

Three endpoints, each with an idle timeout of 0.05 s (scale-in happens on the server's 0.5 s reconcile tick;
``bench/run.py`` serves ``rf`` and ``echo`` from a server with the default warm-model cache, ``probe`` and
``echo`` from one with none, whose cold starts are forks of a zygote's spare that load the model):
- ``rf``: the reference RandomForest with the sklearn runtime's default hooks (the headline figure);
- ``probe``: the same model behind an inference.py that prints CLOCK_MONOTONIC timestamps (on import, around
  the model's load with the sklearn runtime's joblib reader, around the first predict) into the worker log;
  the breakdown comes from it;
- ``echo``: the trivial model (transform_fn echo), with the same timestamps.
Before every measured request every endpoint is at zero (``/metrics`` zeroscale_workers), so no scale-in runs
during a measurement. The request is signed before the timer starts (signing is reported under overhead).

The breakdown adds a direct experiment with the zygote (``zygote_experiment``): the server's own zygote
module, started by this script, asked to fork the same models, with the socket polled every 1 ms.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench.common import (
    IDLE_TAG,
    ROW,
    Models,
    ServerProcess,
    SignedClient,
    deploy,
    metric,
    parse_probe,
    ping_unix,
    probe_lines,
    wait_zero,
)

ECHO_BODY = b'{"echo": 1}'
ENDPOINTS = ("rf", "probe", "echo")


@dataclass
class ColdResult:
    latency_s: dict[str, list[float]] = field(default_factory=dict)  # endpoint -> client-side cold starts
    setup_s: dict[str, list[float]] = field(default_factory=dict)  # server: fork request -> /ping OK
    sent_at: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # (t_send, t_recv) monotonic
    probes: dict[str, list[dict[str, float]]] = field(
        default_factory=dict
    )  # per cold start, from worker logs
    naive_rf_s: list[float] = field(default_factory=list)
    naive_echo_s: list[float] = field(default_factory=list)
    zygote: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    zygote_rss_mb: float = 0.0
    server_cpu_s: float = 0.0
    first_predict: dict[str, Any] = field(default_factory=dict)  # first_predict_experiment


def deploy_cold(srv: ServerProcess, models: Models, names: tuple[str, ...] = ENDPOINTS) -> None:
    sm = srv.client("sagemaker")
    idle = [{"Key": IDLE_TAG, "Value": "0.05"}]
    tars = {"rf": models.rf, "probe": models.probe, "echo": models.echo}
    for name in names:
        deploy(sm, name, f"file://{tars[name]}", memory_mb=1024, max_concurrency=1, tags=idle)


def measure(
    srv: ServerProcess,
    rounds: int,
    result: ColdResult,
    names: tuple[str, ...] = ENDPOINTS,
    keys: dict[str, str] | None = None,
) -> None:
    """``rounds`` cold starts of each endpoint of ``names``; appends to ``result`` under ``keys[name]``
    (default: the name). Call ``collect_probes`` at the end."""
    client = SignedClient(srv.url)
    bodies = {"rf": ROW, "probe": ROW, "echo": ECHO_BODY}
    for _ in range(rounds):
        for name in names:
            key = (keys or {}).get(name, name)
            wait_zero(srv, list(names))
            before = metric(srv.metrics(), "zeroscale_model_setup_seconds_sum", name)
            headers = client.signed_headers(name, bodies[name])
            client.conn.close()
            client.conn.connect()  # a fresh connection, outside the timer (uvicorn drops idle ones)
            t0 = time.monotonic()
            client.send(name, bodies[name], headers)
            t1 = time.monotonic()
            result.latency_s.setdefault(key, []).append(t1 - t0)
            result.sent_at.setdefault(key, []).append((t0, t1))
            setup = metric(srv.metrics(), "zeroscale_model_setup_seconds_sum", name) - before
            result.setup_s.setdefault(key, []).append(setup)
    client.close()


def collect_probes(srv: ServerProcess, result: ColdResult) -> None:
    """Match each measured cold start of the probed endpoints to its worker log's timestamps."""
    for name in ("probe", "echo"):
        records = probe_lines(srv.data_dir, name)
        matched = []
        for t0, t1 in result.sent_at.get(name, []):
            rec = next((r for r in records if t0 <= r.get("import", 0.0) <= t1), None)
            if rec is not None:
                matched.append({**rec, "send": t0, "recv": t1})
        result.probes[name] = matched


def naive(models: Models, rounds: int, result: ColdResult) -> None:
    """The naive approach: a fresh Python process that imports, loads and predicts (one per request)."""
    rf_code = (
        "import json, joblib, numpy as np, sklearn.ensemble\n"
        f"m = joblib.load({str(models.rf_joblib)!r})\n"
        f"print(json.dumps(m.predict(np.asarray(json.loads({ROW!r}))).tolist()))\n"
    )
    # The trivial model the same way: a fresh interpreter that imports the inference.py and calls it.
    echo_code = (
        "import importlib.util\n"
        "spec = importlib.util.spec_from_file_location("
        f"'inference', {str(models.echo_dir / 'code' / 'inference.py')!r})\n"
        "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)\n"
        f"print(mod.transform_fn(mod.model_fn('.'), {ECHO_BODY!r}, 'application/json', 'application/json'))\n"
    )
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    for code, out in ((rf_code, result.naive_rf_s), (echo_code, result.naive_echo_s)):
        for _ in range(rounds):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, env=env, stdout=subprocess.DEVNULL)
            out.append(time.perf_counter() - t)


def zygote_experiment(models: Models, work: Path, rounds: int, result: ColdResult) -> None:
    """Drive ``python -m zeroscale.workers.forkserver sklearn`` directly, as the server's WorkerManager does.

    Per fork, on CLOCK_MONOTONIC: ``request`` (fork request written), ``forked`` (the zygote's reply with the
    pid: fork() returned in the parent), ``import`` (the child runs the model's inference.py: fork + child
    set-up), ``load0``/``load1`` (model_fn), ``ready`` (the socket answered /ping; polled every 1 ms)."""
    from zeroscale.workers.forkserver import THREAD_ENV
    from zeroscale.workers.zygotes import request_file

    work.mkdir(parents=True, exist_ok=True)
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen(
        [sys.executable, "-m", "zeroscale.workers.forkserver", "sklearn", str(theirs.fileno())],
        pass_fds=(theirs.fileno(),),
        env={**os.environ, **THREAD_ENV},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    theirs.close()
    ours.settimeout(60)
    reader = ours.makefile("rb")
    try:
        assert json.loads(reader.readline())["op"] == "ready"
        result.zygote_rss_mb = psutil.Process(proc.pid).memory_info().rss / 2**20
        env = {**THREAD_ENV, "PATH": os.environ.get("PATH", "")}
        for name, model_dir in (("echo", models.echo_dir), ("probe", models.probe_dir)):
            records = []
            for i in range(rounds):
                sock_path = str(work / f"{name}-{i}.sock")
                log_path = work / f"{name}-{i}.log"
                rid = f"{name}-{i}"
                line = {
                    "op": "fork",
                    "id": rid,
                    "runtime": "sklearn",
                    "log_path": str(log_path),
                    "log_fd": True,
                    "request_fd": True,
                }
                # as the server sends it: the log file and the whole request (read by the child alone) as
                # descriptors beside the line
                request = {**line, "model_dir": str(model_dir), "socket_path": sock_path, "env": env}
                log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                request_fd = request_file(json.dumps(request).encode())
                t_req = time.monotonic()
                try:
                    socket.send_fds(ours, [json.dumps(line).encode() + b"\n"], [log_fd, request_fd])
                finally:
                    os.close(log_fd)
                    os.close(request_fd)
                msg = json.loads(reader.readline())
                while msg.get("op") != "forked":
                    msg = json.loads(reader.readline())
                t_forked = time.monotonic()
                pid = int(msg["pid"])
                deadline = t_forked + 30
                # 1 ms polling: a tighter loop takes CPU from the child on a 2-core machine
                while not (os.path.exists(sock_path) and ping_unix(sock_path)):
                    if not psutil.pid_exists(pid) or time.monotonic() > deadline:
                        raise RuntimeError(f"zygote child did not start: {log_path.read_text()[-2000:]}")
                    time.sleep(0.001)
                t_ready = time.monotonic()
                rec: dict[str, float] = {"request": t_req, "forked": t_forked, "ready": t_ready}
                rec.update(parse_probe(log_path.read_text()))
                records.append(rec)
                os.kill(pid, signal.SIGTERM)
                msg = json.loads(reader.readline())
                while msg.get("op") != "exit":
                    msg = json.loads(reader.readline())
                time.sleep(0.05)
            result.zygote[name] = records
    finally:
        reader.close()
        ours.close()  # the zygote returns when its control socket closes
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_FIRST_PREDICT_CODE = r"""
import json, os, resource, sys, time
from zeroscale.workers.forkserver import THREAD_ENV
os.environ.update(THREAD_ENV)
from zeroscale.runtimes.registry import get_runtime
runtime = get_runtime("sklearn")
runtime.preload()
import numpy as np
from zeroscale.runtimes import joblib_reader
path, rounds = sys.argv[1], int(sys.argv[2])
x = np.full((1, 10), 0.5)

def fork(fn):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.write(w, json.dumps(fn()).encode())
        os._exit(0)
    os.close(w)
    data = os.read(r, 65536)
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(data)

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def load_predict():
    t0 = time.perf_counter(); m = joblib_reader.load(path); t1 = time.perf_counter(); f1 = faults()
    m.predict(x); t2 = time.perf_counter(); f2 = faults(); m.predict(x); t3 = time.perf_counter()
    return [t1 - t0, t2 - t1, t3 - t2, f2 - f1]

def warmed_load_predict():
    runtime.warm()  # what a zygote's spare runs before it waits
    return load_predict()

def entry_points():
    import importlib.metadata
    t = time.perf_counter(); importlib.metadata.entry_points(); return time.perf_counter() - t

out = {"as_is": [fork(load_predict) for _ in range(rounds)],
       "spare": [fork(warmed_load_predict) for _ in range(rounds)],
       "entry_points_s": [fork(entry_points) for _ in range(rounds)]}
print(json.dumps(out))
"""


def first_predict_experiment(models: Models, rounds: int, result: ColdResult) -> None:
    """Why the first predict after a fork is slow, and what a spare's warm-up saves: a process that preloads
    the sklearn runtime like a zygote forks children that load the RandomForest and predict twice (with the
    page faults of the first predict); then children that first run the runtime's ``warm``, as a zygote's
    spare does before it waits. Also times
    ``importlib.metadata.entry_points()`` in a fresh fork (scikit-learn's input validation reaches it
    through narwhals' plugin discovery on the first call in a process)."""
    proc = subprocess.run(
        [sys.executable, "-c", _FIRST_PREDICT_CODE, str(models.rf_joblib), str(rounds)],
        capture_output=True,
        check=True,
        timeout=300,
    )
    result.first_predict = json.loads(proc.stdout)
