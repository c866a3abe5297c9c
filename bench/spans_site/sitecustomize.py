"""Loaded by a zeroscale server whose PYTHONPATH starts with this directory (``bench/spans.py`` starts it so)
and whose environment names ``ZEROSCALE_SPANS_FILE``: it wraps three methods of the direct invoke path and
writes, per invocation, six CLOCK_MONOTONIC nanosecond stamps as a JSON line:

    [request bytes arrived, handler started, request written to the worker, worker's answer read,
     answer written to the client, handler ended]

With ``ZEROSCALE_SPANS_METHODS`` set, it also times five methods of the path in place (the answer's send,
the request's parse, the signature's two steps, the answer's parse) and writes their totals beside the
spans (``<file>.methods``). Nothing else changes; other processes that load it (zygotes, workers) are left
alone. An experiment's instrument: it wraps private methods, and ``bench/spans.py`` checks that records
come out."""

import os
import sys

if "serve" in sys.argv and os.environ.get("ZEROSCALE_SPANS_FILE"):
    import contextvars
    import json
    import time

    from zeroscale.api import direct
    from zeroscale.workers import client

    _path = os.environ["ZEROSCALE_SPANS_FILE"]
    _now = time.perf_counter_ns
    _current: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("span", default=None)
    _done: list[list[int]] = []
    _received = direct.DirectHttpTools.data_received
    _run = direct.DirectCycle.run
    _write = direct.DirectCycle._write
    _request = client.WorkerConnection.request

    def _flush() -> None:
        with open(_path, "a") as out:
            out.writelines(json.dumps(span) + "\n" for span in _done)
        _done.clear()

    def data_received(self, data):  # type: ignore[no-untyped-def]
        self._spans_arrived = _now()
        return _received(self, data)

    async def run(self, handler):  # type: ignore[no-untyped-def]
        span = [getattr(self._protocol, "_spans_arrived", 0), _now()]
        _current.set(span)
        try:
            return await _run(self, handler)
        finally:
            span.append(_now())
            if len(span) == 6:
                _done.append(span)
                if len(_done) >= 200:
                    _flush()

    def write(self, status, headers, body):  # type: ignore[no-untyped-def]
        span = _current.get()
        if span is not None:
            span.append(_now())
        return _write(self, status, headers, body)

    async def request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        span = _current.get()
        if span is not None:
            span.append(_now())
        try:
            return await _request(self, *args, **kwargs)
        finally:
            if span is not None:
                span.append(_now())

    direct.DirectHttpTools.data_received = data_received
    direct.DirectCycle.run = run
    direct.DirectCycle._write = write
    client.WorkerConnection.request = request

    if os.environ.get("ZEROSCALE_SPANS_METHODS"):
        # Opt-in: each call of these methods timed in place (wrapper included, about 1 us), totals written
        # beside the spans at each flush: {label: [ns, calls]}.
        from zeroscale.api import app, guard, sigv4

        _totals: dict[str, list[int]] = {}

        def _timed(owner: type, name: str, label: str) -> None:
            inner = getattr(owner, name)
            total = _totals.setdefault(label, [0, 0])

            def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
                start = _now()
                try:
                    return inner(*args, **kwargs)
                finally:
                    total[0] += _now() - start
                    total[1] += 1

            setattr(owner, name, timed)

        _timed(direct.DirectCycle, "_write", "DirectCycle._write: the answer's send, which wakes the client")
        _timed(guard.GuardedHttpTools, "data_received", "GuardedHttpTools.data_received: a request parsed")
        _timed(app.App, "admit", "App.admit: sigv4.prepare at the headers")
        _timed(sigv4.Signed, "finish", "Signed.finish: the signature over the body")
        _timed(client.WorkerConnection, "data_received", "WorkerConnection.data_received: an answer parsed")
        _flush_spans = _flush

        def _flush() -> None:
            _flush_spans()
            with open(_path + ".methods", "w") as out:
                json.dump(_totals, out)
