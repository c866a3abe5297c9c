"""VariantPool.stream and PoolStream as units: a fake manager whose streamed answers the test feeds.

The worker stays BUSY until the stream's last part; a client that goes away hands it back at once (not
stopped); the worker's error trailer ends the stream with StreamBroken and keeps the worker; a stream past the
invocation timeout kills the worker (ModelInvocationTimeExceeded); an error status before the stream is a
ModelError."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from zeroscale.errors import ModelError, ModelStreamError
from zeroscale.events import EventBus
from zeroscale.router.budget import MemoryBudget
from zeroscale.router.invocation import Invocation
from zeroscale.router.pool import VariantPool
from zeroscale.router.streams import PoolStream
from zeroscale.types import WorkerState

from .fakes import FakeClock, FakeManager, Recorder, settings, spec

S = WorkerState


def make_pool(tmp: Path, manager: FakeManager, **settings_kw: float) -> VariantPool:
    return VariantPool(
        spec(max_concurrency=1),
        manager.as_manager(),
        MemoryBudget(8192, lambda mb, who: 0),
        settings(tmp, **settings_kw),
        EventBus([Recorder()]),
        FakeClock(),
    )


async def collect(stream: PoolStream) -> list[bytes]:
    return [part async for part in stream.parts()]


async def test_the_worker_is_busy_until_the_last_part(tmp_path: Path) -> None:
    manager = FakeManager()
    pool = make_pool(tmp_path, manager)
    inv = Invocation(b"{}", [])
    stream = await pool.stream(inv)
    assert stream.header(b"Content-Type") == b"text/plain"
    (slot,) = pool.slots()
    reader = asyncio.ensure_future(collect(stream))
    manager.streams[0].send(b"a", b"b")
    await asyncio.sleep(0.01)
    assert slot.state is S.BUSY and not reader.done()
    manager.streams[0].end()
    assert await reader == [b"a", b"b"]
    assert slot.state is S.IDLE
    assert stream.bytes_out == 2 and inv.model_s > 0 and inv.worker_id == slot.worker_id
    stream.close()  # after the end: nothing more happens
    assert slot.state is S.IDLE and not manager.streams[0].aborted


async def test_a_client_that_goes_away_hands_the_worker_back(tmp_path: Path) -> None:
    manager = FakeManager()
    pool = make_pool(tmp_path, manager)
    stream = await pool.stream(Invocation(b"{}", []))
    (slot,) = pool.slots()
    manager.streams[0].send(b"a")
    parts = stream.parts()
    assert await anext(parts) == b"a"
    stream.close()
    assert manager.streams[0].aborted
    assert slot.state is S.IDLE and not manager.stops  # free for the next request, not stopped
    second = await pool.stream(Invocation(b"{}", []))  # the same worker serves again
    assert manager.requests == [slot.worker_id, slot.worker_id]
    second.close()


async def test_the_error_trailer_is_stream_broken_and_keeps_the_worker(tmp_path: Path) -> None:
    manager = FakeManager()
    pool = make_pool(tmp_path, manager)
    inv = Invocation(b"{}", [])
    stream = await pool.stream(inv)
    manager.streams[0].send(b"a")
    manager.streams[0].end(error=(500, "ValueError: no"))
    got: list[bytes] = []
    with pytest.raises(ModelStreamError) as err:
        async for part in stream.parts():
            got.append(part)
    assert got == [b"a"]
    assert err.value.error_code == "StreamBroken" and "ValueError: no" in err.value.message
    assert inv.model_status == 500
    assert pool.slots()[0].state is S.IDLE


async def test_a_broken_connection_stops_the_worker(tmp_path: Path) -> None:
    manager = FakeManager()
    pool = make_pool(tmp_path, manager)
    stream = await pool.stream(Invocation(b"{}", []))
    manager.streams[0].broken()
    with pytest.raises(ModelStreamError) as err:
        await collect(stream)
    assert err.value.error_code == "StreamBroken"
    assert pool.slots()[0].state is S.STOPPING  # a worker that broke its connection is not reused


async def test_a_stream_past_the_invocation_timeout_kills_the_worker(tmp_path: Path) -> None:
    manager = FakeManager()
    pool = make_pool(tmp_path, manager, invocation_timeout_s=0.05)
    stream = await pool.stream(Invocation(b"{}", []))
    (slot,) = pool.slots()
    manager.streams[0].send(b"a")
    got: list[bytes] = []
    with pytest.raises(ModelStreamError) as err:
        async for part in stream.parts():
            got.append(part)
    assert got == [b"a"]
    assert err.value.error_code == "ModelInvocationTimeExceeded"
    assert manager.kills == [(slot.worker_id, "timed_out")]


async def test_an_error_status_before_the_stream_is_a_model_error(tmp_path: Path) -> None:
    manager = FakeManager()
    manager.status = 503
    pool = make_pool(tmp_path, manager)
    with pytest.raises(ModelError) as err:
        await pool.stream(Invocation(b"{}", []))
    assert err.value.original_status == 503 and err.value.original_message == "boom"
    assert pool.slots()[0].state is S.IDLE
