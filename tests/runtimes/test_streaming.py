"""Streaming inside the worker: which hook results stream, how parts are encoded, errors before and after
the first part; the container server's chunked answer read back by the server's stream reader
(``workers/stream.py``) on a real Unix socket, and a reader that goes away stopping the model."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from zeroscale.runtimes.container import ContainerServer
from zeroscale.runtimes.handler import Handler
from zeroscale.runtimes.streaming import StreamFailed
from zeroscale.runtimes.worker import bind
from zeroscale.workers.client import WorkerConnection
from zeroscale.workers.stream import MAX_PART_BYTES, open_stream

JSON = {"content-type": "application/json", "accept": "application/json"}


@pytest.fixture(autouse=True)
def _isolate_imports() -> Iterator[None]:
    path = list(sys.path)
    yield
    sys.path[:] = path
    sys.modules.pop("inference", None)


def load(model_dir: Path, source: str) -> Handler:
    code = model_dir / "code"
    code.mkdir(parents=True, exist_ok=True)
    (code / "inference.py").write_text(textwrap.dedent(source))
    return Handler.load(str(model_dir), lambda d: None, {})


def test_a_generator_predict_fn_streams_each_prediction_through_the_default_output_fn(tmp_path: Path) -> None:
    handler = load(
        tmp_path,
        """
        def model_fn(model_dir):
            return 3

        def predict_fn(data, model):
            for i in range(model):
                yield {"i": i, "x": data["x"]}
        """,
    )
    status, body, content_type = handler.invoke(b'{"x": 7}', JSON)
    assert (status, content_type) == (200, "application/json")
    assert not isinstance(body, bytes)
    assert [json.loads(p) for p in body] == [{"i": 0, "x": 7}, {"i": 1, "x": 7}, {"i": 2, "x": 7}]


def test_output_fn_and_transform_fn_iterators_stream_and_whole_answers_do_not(tmp_path: Path) -> None:
    handler = load(
        tmp_path,
        """
        def model_fn(model_dir):
            return None

        def transform_fn(model, body, content_type, accept):
            if body == b"whole":
                return [1, 2], "application/json"
            return iter(["a", b"b", "", [1]]), "application/json"
        """,
    )
    status, body, content_type = handler.invoke(b"parts", JSON)
    assert (status, content_type) == (200, "application/json")
    assert list(body) == [b"a", b"b", b"[1]"]  # str and bytes as they are, the rest encoded; empty skipped
    assert handler.invoke(b"whole", JSON) == (200, b"[1, 2]", "application/json")


def test_errors_before_and_after_the_first_part(tmp_path: Path) -> None:
    handler = load(
        tmp_path,
        """
        class Teapot(Exception):
            status_code = 418

        def model_fn(model_dir):
            return None

        def predict_fn(data, model):
            for i in range(3):
                if i == data["fail_at"]:
                    raise (Teapot if data.get("teapot") else ValueError)(f"failed at {i}")
                yield [i]
        """,
    )
    status, body, _ = handler.invoke(b'{"fail_at": 0, "teapot": true}', JSON)
    assert (status, body) == (418, b"failed at 0")  # before any part: a plain error answer
    status, body, _ = handler.invoke(b'{"fail_at": 1}', JSON)
    assert status == 200 and not isinstance(body, bytes)
    parts = iter(body)
    assert next(parts) == b"[0]"
    with pytest.raises(StreamFailed) as err:
        next(parts)
    assert (err.value.status, err.value.message) == (500, "ValueError: failed at 1")


class Slow:
    """invoke(): streams ``parts`` parts ``delay_s`` apart; notes when each was made and when it stopped."""

    def __init__(self) -> None:
        self.made: list[float] = []
        self.closed = threading.Event()

    def __call__(self, body: bytes, headers: object) -> tuple[int, bytes | Iterator[bytes], str]:
        spec = json.loads(body)

        def parts() -> Iterator[bytes]:
            try:
                for i in range(spec["parts"]):
                    if i:
                        time.sleep(spec["delay"])
                    self.made.append(time.monotonic())
                    if i == spec.get("fail_at"):
                        raise StreamFailed(500, "broke\r\nhere")
                    yield b"x" * spec.get("size", 1)
            finally:
                self.closed.set()

        return 200, parts(), "text/plain"


@pytest.fixture
def slow(tmp_path: Path) -> Iterator[tuple[str, Slow]]:
    path = str(tmp_path / "w.sock")
    invoke = Slow()
    server = ContainerServer(bind(path, None, ""), invoke)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield path, invoke
    server.drain(5)
    thread.join(5)


def test_parts_are_read_as_they_come_and_the_connection_is_reused(slow: tuple[str, Slow]) -> None:
    path, invoke = slow

    async def main() -> None:
        conn = await WorkerConnection.open_unix(path)
        for _ in range(2):  # the same keep-alive connection, twice
            stream = await open_stream(conn, b"POST", b"/invocations", [], b'{"parts": 3, "delay": 0.2}')
            assert stream.status == 200 and stream.header(b"content-type") == b"text/plain"
            arrived = []
            while parts := await stream.next_parts():
                arrived += [(time.monotonic(), p) for p in parts]
            assert [p for _, p in arrived] == [b"x"] * 3
            assert arrived[0][0] < invoke.made[-1]  # the first part was read before the last was made
            assert stream.error is None and not conn.closed
            invoke.made.clear()
        big = await open_stream(
            conn, b"POST", b"/invocations", [], b'{"parts": 1, "delay": 0, "size": 2500000}'
        )
        sizes: list[int] = []
        while parts := await big.next_parts():
            sizes += [len(p) for p in parts]
        assert sum(sizes) == 2500000 and max(sizes) <= MAX_PART_BYTES
        failed = await open_stream(
            conn, b"POST", b"/invocations", [], b'{"parts": 3, "delay": 0, "fail_at": 1}'
        )
        assert await failed.read_all() == b"x"
        assert failed.error == (500, "broke here")
        conn.close()

    asyncio.run(main())


def test_a_reader_that_goes_away_stops_the_model_at_its_next_part(slow: tuple[str, Slow]) -> None:
    path, invoke = slow

    async def main() -> None:
        conn = await WorkerConnection.open_unix(path)
        stream = await open_stream(conn, b"POST", b"/invocations", [], b'{"parts": 50, "delay": 0.1}')
        assert await stream.next_parts()
        stream.abort()
        assert conn.closed

    asyncio.run(main())
    assert invoke.closed.wait(2.0)  # well before the 5 s the 50 parts would take
    assert len(invoke.made) < 10
