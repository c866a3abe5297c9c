"""SageMaker's runtime on a port of its own, served by the native data plane (``zeroscale serve
--native-port``; docs/dataplane.md).

The plane (``zeroscale._dataplane``, C, its own thread) reads every request on the port. It answers
InvokeEndpoint itself when the request is signed by a key it holds a grant for, to an endpoint it holds an
idle worker's lease for (``lender.py``), and relays everything else here whole: the app answers it as it
answers the same request on the main port, and a successful invocation earns its key a grant and its
endpoint a lease. A request the plane sent to a worker that did not end in a plain success (an error the
model answered, a timeout, a crash, an answer the plane does not relay itself) comes here too, with what
the worker did, and is answered as the Python path answers it (``InvokeApi.lent``).

The port serves the runtime's paths (``/endpoints/...``) and ``GET /ping``; the control plane, the console
and ``/metrics`` stay on the main port. A boto3 ``sagemaker-runtime`` client points its ``endpoint_url``
here, as on AWS, where the runtime has a host name of its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zeroscale.api import sigv4
from zeroscale.api.app import QUEUED_S, new_request_id, runtime_failure
from zeroscale.api.invoke import InvokeApi
from zeroscale.background import Background
from zeroscale.config import HttpLimits
from zeroscale.dataplane.answer import RelayedAnswer, Scope, scope_of
from zeroscale.dataplane.lender import Lender, Limits, Rights
from zeroscale.errors import ZeroscaleError
from zeroscale.events import EventBus
from zeroscale.router.fleet import Fleet
from zeroscale.runtimes.streaming import ERROR_TRAILER
from zeroscale.workers.client import WorkerResponse

if TYPE_CHECKING:
    from zeroscale._dataplane import Plane

log = logging.getLogger("zeroscale.dataplane")

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

KEEP_ALIVE_S = 75.0  # as the main port's (uvicorn's timeout_keep_alive)
LEASE_IDLE_S = 1.0  # a lent worker idle this long goes back to its pool (its scale-in timers then run)


def available() -> str | None:
    """Why the native plane cannot run here (its extension was not built), or None."""
    try:
        from zeroscale import _dataplane  # noqa: F401
    except ImportError as exc:
        return (
            f"the native data plane is not built ({exc}): install zeroscale from source with a C compiler "
            "at hand (pip install -e ., which builds src/native)"
        )
    return None


def _signer(headers: list[tuple[bytes, bytes]]) -> str:
    """The access key id a request's Authorization header names, or ""."""
    try:
        claim = sigv4.parse_claim(sigv4.header_map(headers), b"")
    except ZeroscaleError:
        return ""
    return claim.credential.partition("/")[0]


class NativeRuntime:
    def __init__(
        self,
        app: AsgiApp,
        invoke: InvokeApi,
        fleet: Fleet,
        rights: Rights,
        events: EventBus,
        limits: Limits,
        *,
        region: str,
        main_port: int,
        is_async: Callable[[str], bool] | None = None,
        unavailable: Callable[[], str | None] | None = None,
        journal: Callable[[], tuple[Path, int] | None] = lambda: None,
        http: HttpLimits | None = None,
    ) -> None:
        """``journal``: where the plane journals the usage of what it answers (metering's directory for it
        and the segment to go on from, once metering folded what it held), None without a journal."""
        self._app = app
        self._journal = journal
        self._http = http or HttpLimits()  # the main port's: what one client may hold
        self._invoke = invoke
        self._fleet = fleet
        self._rights = rights
        self._events = events
        self._limits = limits
        self._region = region
        self._main_port = main_port
        self._is_async = is_async
        self._unavailable = unavailable
        self.sock: socket.socket | None = None  # bound and listening: set before ``start``
        self._plane: Plane | None = None
        self.lender: Lender | None = None
        self._answers: dict[int, RelayedAnswer] = {}
        self._tasks = Background("native data plane relays")

    @property
    def port(self) -> int:
        assert self.sock is not None
        return int(self.sock.getsockname()[1])

    def start(self) -> None:
        """On the event loop: the plane's thread starts serving the socket."""
        from zeroscale._dataplane import Plane

        assert self.sock is not None
        self.sock.setblocking(False)
        prefix = uuid.uuid4().hex[:20]
        journal = self._journal()
        if journal is not None:
            journal[0].mkdir(parents=True, exist_ok=True)
        http = self._http
        plane = Plane(
            listen_fd=self.sock.fileno(),
            region=self._region,
            service="sagemaker",
            payload_limit=self._limits.request,
            request_id_prefix=f"{prefix[:8]}-{prefix[8:12]}-{prefix[12:16]}-{prefix[16:20]}-",
            error_trailer=ERROR_TRAILER.decode().lower(),
            keep_alive_s=KEEP_ALIVE_S,
            lease_idle_s=LEASE_IDLE_S,
            header_timeout_s=http.header_timeout_s,
            body_timeout_s=http.body_timeout_s,
            max_header_bytes=http.max_header_bytes,
            max_connections=http.max_connections,
            max_connections_per_client=http.max_connections_per_client,
            journal_dir=str(journal[0]) if journal is not None else "",
            journal_segment=journal[1] if journal is not None else 0,
            queue_wait_s=self._limits.queue_wait_s,
            max_queue=self._limits.max_queue,
        )
        self._plane = plane
        self.lender = Lender(
            plane,
            self._fleet,
            self._rights,
            self._events,
            self._limits,
            is_async=self._is_async,
            unavailable=self._unavailable,
        )
        asyncio.get_running_loop().add_reader(plane.fileno(), self._on_events)
        plane.start()

    async def stop(self, grace_s: float = 5.0) -> None:
        """Every lease back to its pool (the requests in flight on them answered first, within ``grace_s``),
        every connection closed, every relay ended."""
        plane, lender = self._plane, self.lender
        if plane is None or lender is None:
            return
        lender.closed = True  # lends nothing more
        lender.recall_all()
        deadline = time.monotonic() + grace_s
        while lender.lent and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        asyncio.get_running_loop().remove_reader(plane.fileno())
        plane.stop()  # its thread returns every lease and closes every connection first
        self._on_events()
        await self._tasks.cancel()
        await lender.close()
        self._plane = None

    def collect(self) -> None:
        """On the event loop: the plane's events taken now, the records of what it answered among them
        (they reach Python in batches, within 10 ms): for a usage report that must hold every answer."""
        self._on_events()

    def counts(self) -> dict[str, int]:
        """Requests the plane answered itself, and those it relayed, so far; those waiting in it now."""
        if self._plane is None:
            return {"served": 0, "relayed": 0, "waiting": 0}
        return dict(self._plane.counts())

    def lent(self) -> int:
        """Workers the plane holds now."""
        return self.lender.lent if self.lender is not None else 0

    # ---- events ----
    def _on_events(self) -> None:
        plane = self._plane
        if plane is None or self.lender is None:
            return
        for event in plane.take():
            try:
                self._on_event(event)
            except Exception:  # one event's bug never costs the others (a lease given back, a record)
                log.exception("the native data plane's event %s failed", event[0])

    def _on_event(self, event: tuple[Any, ...]) -> None:
        lender = self.lender
        assert lender is not None
        kind = event[0]
        if kind == "done":
            lender.done(*event[1:])
        elif kind == "request":
            _, conn_id, request, client, akid, endpoint, queued_s = event
            self._tasks.spawn(self._relay(conn_id, request, client, akid, endpoint, queued_s))
        elif kind == "returned":
            lender.returned(event[1], bool(event[2]))
        elif kind == "failed":
            self._tasks.spawn(self._failed(*event[1:]))
        elif kind == "gone":
            answer = self._answers.get(event[1])
            if answer is not None:
                answer.client_gone()
        elif kind in ("full", "drained"):
            answer = self._answers.get(event[1])
            if answer is not None:
                answer.hold(kind == "full")

    def _writer(self, conn_id: int) -> Callable[[bytes, bool, bool], None]:
        def write(data: bytes, end: bool, close: bool) -> None:
            if self._plane is not None:
                self._plane.respond(conn_id, data, end, close)

        return write

    async def _relay(
        self,
        conn_id: int,
        request: tuple[bytes, bytes, int, list[tuple[bytes, bytes]], bytes],
        client: tuple[str, int],
        access_key_id: str,
        endpoint: str,
        queued_s: float = 0.0,
    ) -> None:
        """``queued_s``: how long it waited in the plane for a worker the plane holds (the pool's queue wait
        counts it)."""
        method, target, minor, headers, body = request

        def earned(status: int) -> None:
            """A success: its signature held, and the key that signed it (the plane names it only when it
            holds the key already) earns a grant and the endpoint a lease, both with the plane before this
            answer's end, so that the client's next request finds them."""
            if status == 200 and endpoint and self.lender is not None:
                signer = access_key_id or _signer(headers)
                try:
                    if signer:
                        self.lender.answered(signer, endpoint)
                except Exception:  # the answer goes out whatever the plane is given
                    log.exception("a grant or lease for %s could not be given to the plane", endpoint)

        answer = RelayedAnswer(self._writer(conn_id), body, minor, earned)
        self._answers[conn_id] = answer
        try:
            if target.startswith(b"/endpoints/") or (method == b"GET" and target == b"/ping"):
                scope = scope_of(method, target, minor, headers, client, ("127.0.0.1", self.port))
                if queued_s:
                    scope["extensions"] = {QUEUED_S: queued_s}
                await self._app(scope, answer.receive, answer.send)
            else:
                await self._elsewhere(answer.send, method, target)
        except Exception:
            log.exception("a relayed request failed")
        finally:
            self._answers.pop(conn_id, None)
            answer.fail()  # a no-op once it was answered

    async def _elsewhere(self, send: Send, method: bytes, target: bytes) -> None:
        message = (
            f"No runtime operation at {method.decode('latin-1')} {target.decode('latin-1')[:200]}: this "
            "port serves SageMaker's runtime (/endpoints/{name}/...) and GET /ping; the control plane, the "
            f"console and /metrics are on port {self._main_port}."
        )
        body = json.dumps({"message": message}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"x-amzn-errortype", b"UnknownOperationException"),
        ]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 404, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _failed(
        self,
        conn_id: int,
        lease_id: int,
        kind: str,
        status: int,
        request: tuple[bytes, bytes, int, list[tuple[bytes, bytes]], bytes] | None,
        worker_answer: tuple[list[tuple[bytes, bytes]], bytes] | None,
        model_s: float,
        waited_s: float,
        client: tuple[str, int],
    ) -> None:
        """A request the plane sent to a lent worker that did not end in a success it answered itself."""
        lender = self.lender
        lent = lender.failed(lease_id) if lender is not None else None
        if request is None:
            headers: list[tuple[bytes, bytes]] = []
            minor, body = 1, b""
        else:
            _, _, minor, headers, body = request
        answer = RelayedAnswer(self._writer(conn_id), body, minor)
        if request is None:
            answer.client_gone()  # its client left: the worker's outcome is still settled and recorded
        if lent is None:  # the lease was settled already (a stop): the request is answered as a relay's
            if request is not None:
                await self._relay(conn_id, request, client, "", "")
            return
        if kind == "not_delivered":  # it never reached its worker: it goes to another, as the pool would
            lent.pool.release(lent.slot, broken=True)
            if request is not None:
                await self._relay(conn_id, request, client, "", "")
            return
        self._answers[conn_id] = answer
        request_id = new_request_id()
        started = time.perf_counter() - waited_s
        got = WorkerResponse(status, *worker_answer) if worker_answer is not None else None
        outcome = (kind, got, model_s, self._limits.timeout_s)
        try:
            await self._invoke.lent(
                answer.send, request_id, lent.pool, lent.slot, outcome, headers, body, started
            )
        except Exception as exc:
            try:
                await runtime_failure(answer.send, request_id, exc)
            except Exception:
                log.exception("a native invocation's failure could not be answered")
        finally:
            self._answers.pop(conn_id, None)
            answer.fail()
