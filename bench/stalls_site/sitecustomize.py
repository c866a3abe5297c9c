"""Loaded by a zeroscale server whose PYTHONPATH starts with this directory (``bench/stalls.py`` starts it
so) and whose environment names ``ZEROSCALE_STALLS_FILE``: a thread of the server posts a callback to the
event loop every millisecond. When one has not run after ``ZEROSCALE_STALLS_AFTER_US`` (default 600), it
records what every busy thread is doing then (the loop's thread marked ``LOOP``), and, once the callback
ran, how late it was. One JSON line per late callback:

    {"late_us": ..., "loop": "<innermost frame>;<caller>;...", "others": ["<frames>", ...]}

Nothing else changes; other processes that load it (zygotes, workers) are left alone. An experiment's
instrument: the thread takes the GIL about a thousand times a second."""

import os
import sys

if "serve" in sys.argv and os.environ.get("ZEROSCALE_STALLS_FILE"):
    import asyncio
    import json
    import threading
    import time
    import traceback

    _out = open(os.environ["ZEROSCALE_STALLS_FILE"], "a", buffering=1)  # noqa: SIM115
    _after = int(os.environ.get("ZEROSCALE_STALLS_AFTER_US", "600")) / 1e6
    _IDLE = ("/threading.py:wait", "/queue.py:get", "futures/thread.py:_worker", "/selectors.py:select")

    def _frames(frame):  # type: ignore[no-untyped-def]
        stack = traceback.walk_stack(frame)
        return ["/".join(f.f_code.co_filename.rsplit("/", 2)[-2:]) + ":" + f.f_code.co_name for f, _ in stack]

    def _probe(loop, loop_tid):  # type: ignore[no-untyped-def]
        me = threading.get_ident()
        while not loop.is_closed():
            ran = threading.Event()
            started = time.perf_counter()
            try:
                loop.call_soon_threadsafe(ran.set)
            except RuntimeError:
                return
            if ran.wait(_after):
                time.sleep(0.001)
                continue
            seen = {"loop": "", "others": []}
            for tid, frame in sys._current_frames().items():
                if tid == me:
                    continue
                frames = _frames(frame)
                if tid == loop_tid:
                    seen["loop"] = ";".join(frames[:12])
                elif frames and not any(idle in frames[0] for idle in _IDLE):
                    seen["others"].append(";".join(frames[:8]))
            ran.wait()
            seen["late_us"] = round((time.perf_counter() - started) * 1e6)
            _out.write(json.dumps(seen) + "\n")
            time.sleep(0.001)

    _run = asyncio.runners.Runner.run

    def run(self, coro, **kwargs):  # type: ignore[no-untyped-def]
        async def probed():  # type: ignore[no-untyped-def]
            loop = asyncio.get_running_loop()
            args = (loop, threading.get_ident())
            threading.Thread(target=_probe, args=args, name="zeroscale-stalls", daemon=True).start()
            return await coro

        return _run(self, probed(), **kwargs)

    asyncio.runners.Runner.run = run
