"""Calls between the front ends that share one database, through one internal route under ``PATH``: what
each holds on its own (its workers' log streams and workers, its autoscaling samples and 10-second
metrics, its bring-your-own images) is read by another, which may also ask it to copy or delete an image,
or to run an invocation it holds no share of (``api/forward.py``). See docs/frontends.md.

A call is a JSON document ``{"op": ..., "args": {...}}`` and its answer the operation's JSON result. It is
authenticated by ``X-Zeroscale-Peer: <front end id> <unix seconds> <boot>.<n> <hex HMAC-SHA256>``, the MAC
over the id, the time, the sequence (``<boot>``: random for each run of the calling process, ``<n>``: its
calls counted from 1), the method, the path, the body's SHA-256 and every header the callee acts on
(``covered``: a forwarded invocation's content type, accept and SageMaker headers, a spill's mark) under a
key derived from the IAM key that every front end on the database must share (``--iam-key-file``; the
database records which key that is and refuses a front end with another). So the database alone, which holds
no key, cannot forge a call, nobody can change what a call asks (another TargetModel or variant on a captured
forward), a call older or newer than ``MAX_SKEW_S`` is refused, and so is one sent again: the callee keeps,
per sender's run, the highest number seen and which of the ``REPLAY_WINDOW`` before it came (``Replays``;
calls over several connections arrive a little out of order), for as long as its calls can be timely.
Front ends on a network others can read should still talk over TLS (``--tls-cert``): the calls carry
tenants' payloads.

``PeerClient.gather`` blocks (the operations that fan out from a worker thread call it); ``ask`` is the same
from the event loop. Both answer a ``Gathered``: the answers, and the front ends asked that did not answer
(down, slow, refusing), so that a caller whose merged view is then partial can tell: the leader's
autoscaling takes no scale-in on it, ``zeroscale workers`` names them; the AWS-shaped reads (logs, metrics)
cannot say so on the wire, and the server's log does. ``open_stream`` reads an answer as it comes, on the
event loop, holding no thread (a forwarded invocation or response stream, which may last as long as the
model takes).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.client
import itertools
import json
import logging
import re
import secrets
import ssl
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11

PATH = "/zeroscale/peer/v1"
REPLAY_WINDOW = 4096  # a sender's calls that may arrive after a later one (more are refused: too late)
HEADER = "x-zeroscale-peer"
MAX_SKEW_S = 300
MAX_BODY_BYTES = 1024 * 1024
TIMEOUT_S = 5.0
SAY_EVERY_S = 60.0
KEY_LABEL = b"peer calls"  # the peer key is SecretBox.derive(KEY_LABEL) of the IAM key
_HEADER = HEADER.encode()
_COVERED = frozenset({b"content-type", b"accept"})  # and x-amzn-sagemaker-* and x-zeroscale-* (``covered``)
# Connections kept alive for forwarded calls: reused while idle less than this, well under the callee's
# keep-alive timeout (uvicorn's, 75 s), and at most this many idle per peer.
IDLE_REUSE_S = 30.0
MAX_IDLE = 8

log = logging.getLogger("zeroscale.peers")


class PeerRefused(Exception):
    """A peer call that is not authentic, or not well formed: its reason."""


class NotDelivered(Exception):
    """``open_stream``: the call provably never reached the peer whole, so it acted on nothing: the peer could
    not be connected to in time, or reset the connection before any answer (a front end reads a request
    whole before it acts on it, and a socket closed with everything sent to it read ends with a FIN, not a
    reset)."""


class BrokeOff(Exception):
    """``open_stream``: the call was sent, and the peer neither answered nor refused it (it closed the
    connection, answered no HTTP, or outlasted the deadline): it may have acted on it."""


@dataclass(frozen=True)
class Peer:
    id: str
    url: str  # where it serves: scheme://host:port (its --advertise-url)
    pid: int = 0  # its process now (frontends.pid): with its id, the run a call is signed for

    @property
    def run(self) -> str:
        return run_of(self.id, self.pid)


def run_of(ident: str, pid: int) -> str:
    """A front end's run: its id and its process. A call is signed for one run of one front end, so it can
    be taken by no other front end, nor by the same one restarted (whose memory of the calls it took is
    gone)."""
    return f"{ident}/{pid}"


@dataclass(frozen=True)
class Gathered:
    """The other live front ends' answers to one operation: ``answers`` (id, answer) of those that answered,
    in no particular order, and ``missing``, those asked that did not. A view merged from ``answers`` lacks
    whatever the missing ones hold (their traffic, their workers), so a caller that acts on it or shows it
    can tell that it is partial rather than take it for the whole."""

    answers: tuple[tuple[str, Any], ...] = ()
    missing: tuple[Peer, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.missing


# ``PeerClient.gather`` and ``PeerClient.ask``, as the modules that read the other front ends take them
Gather = Callable[[str, dict[str, Any]], Gathered]
Ask = Callable[[str, dict[str, Any]], Awaitable[Gathered]]


Headers = Iterable[tuple[bytes, bytes]]


def covered(headers: Headers) -> str:
    """The headers a peer call's MAC covers, as one text: those a callee acts on (the content type, accept,
    every SageMaker header, zeroscale's own but the MAC's), names lower-cased, in order of name and value.
    A transport's own (Host, Content-Length, a proxy's X-Forwarded-For) may change on the way."""
    picked = sorted(
        (name, value)
        for name, value in ((k.lower(), v) for k, v in headers)
        if name in _COVERED
        or name.startswith(b"x-amzn-sagemaker-")
        or (name.startswith(b"x-zeroscale-") and name != _HEADER)
    )
    return "\n".join(f"{k.decode('latin-1')}:{v.decode('latin-1')}" for k, v in picked)


def _mac(
    key: bytes, ident: str, ts: str, seq: str, to: str, method: str, path: str, body: bytes, headers: Headers
) -> str:
    digest = hashlib.sha256(body).hexdigest()
    message = f"{ident}\n{ts}\n{seq}\n{to}\n{method}\n{path}\n{digest}\n{covered(headers)}".encode()
    return hmac.digest(key, message, "sha256").hex()


class Sequence:
    """A calling process's numbers for its calls: ``<boot>.<n>``, ``boot`` random for this run (a restart
    counts from 1 again under another), ``n`` one more for each call. Thread-safe (``itertools.count``)."""

    def __init__(self) -> None:
        self.boot = secrets.token_hex(8)
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self.boot}.{next(self._counter)}"


_SEQUENCE = Sequence()  # this process's, for every call it signs


def sign(
    key: bytes,
    ident: str,
    body: bytes,
    *,
    now: float | None = None,
    path: str = PATH,
    method: str = "POST",
    headers: Headers = (),
    seq: str | None = None,
    to: str = "",
) -> str:
    """``to``: the run the call is for (``Peer.run``)."""
    ts = str(int(time.time() if now is None else now))
    seq = _SEQUENCE.next() if seq is None else seq
    return f"{ident} {ts} {seq} {_mac(key, ident, ts, seq, to, method, path, body, headers)}"


_SEQ = re.compile(r"([0-9a-f]{16})\.([1-9][0-9]{0,18})")


def timely(header: str, *, now: float | None = None) -> tuple[str, str, str, str]:
    """``header``'s (id, time, sequence, MAC) when it is well formed and its time within ``MAX_SKEW_S`` of
    this front end's clock: what can be checked before the body is read. Else PeerRefused."""
    parts = header.split(" ")
    if len(parts) == 3:
        raise PeerRefused("a peer signature without a sequence number (a front end of an older zeroscale?)")
    if len(parts) != 4 or not parts[1].isascii() or not parts[1].isdigit() or not _SEQ.fullmatch(parts[2]):
        raise PeerRefused("a malformed peer signature")
    ident, ts, seq, mac = parts
    if abs((time.time() if now is None else now) - int(ts)) > MAX_SKEW_S:
        raise PeerRefused(f"a peer signature more than {MAX_SKEW_S} s from this front end's clock")
    return ident, ts, seq, mac


@dataclass
class _Window:
    high: int  # the highest number seen
    seen: int  # bit k: number high - k was seen
    until: float  # after this, no call of this run is timely any more: forgotten


class Replays:
    """The peer calls this front end took, per sender's run, to refuse one sent again. Only authentic calls
    are noted (after their MAC), so only real front ends' runs take room, each for ``MAX_SKEW_S`` after its
    latest call's time. Thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._runs: dict[tuple[str, str], _Window] = {}
        self._lock = threading.Lock()
        self._next_sweep = 0.0

    def take(self, ident: str, ts: str, seq: str) -> None:
        """Note the call numbered ``seq`` of ``ident`` (signed at ``ts``); PeerRefused if it was seen, or is
        too far behind its sender's latest to tell."""
        boot, _, number = seq.partition(".")
        n, until = int(number), int(ts) + MAX_SKEW_S
        with self._lock:
            now = self._clock()
            if now >= self._next_sweep:
                self._runs = {k: w for k, w in self._runs.items() if w.until >= now}
                self._next_sweep = now + MAX_SKEW_S
            window = self._runs.get((ident, boot))
            if window is None:
                self._runs[(ident, boot)] = _Window(n, 1, until)
                return
            if n > window.high:
                window.seen = ((window.seen << (n - window.high)) | 1) & ((1 << REPLAY_WINDOW) - 1)
                window.high = n
            else:
                behind = window.high - n
                if behind >= REPLAY_WINDOW:
                    raise PeerRefused(f"a peer call {behind} behind its sender's latest: too late to tell")
                if window.seen >> behind & 1:
                    raise PeerRefused("a peer call sent again (its sequence number was seen)")
                window.seen |= 1 << behind
            window.until = max(window.until, until)


def verify(
    key: bytes,
    header: str,
    body: bytes,
    *,
    now: float | None = None,
    path: str = PATH,
    method: str = "POST",
    headers: Headers = (),
    replays: Replays | None = None,
    me: str = "",
) -> str:
    """The calling front end's id, when ``header`` authenticates ``body`` sent with ``method`` to ``path``
    with these ``headers`` (those it ``covered``) to the run ``me`` (``run_of`` this front end), and
    ``replays`` saw it never before; else PeerRefused."""
    ident, ts, seq, mac = timely(header, now=now)
    if me and ident == me.partition("/")[0]:
        raise PeerRefused("a peer call that names this front end as its sender")
    if not hmac.compare_digest(mac, _mac(key, ident, ts, seq, me, method, path, body, headers)):
        raise PeerRefused(
            "a peer signature that does not match (another IAM key, or a call signed for another front end "
            "or for this one before it restarted?)"
        )
    if replays is not None:
        replays.take(ident, ts, seq)
    return ident


def parse(body: bytes) -> tuple[str, dict[str, Any]]:
    try:
        doc = json.loads(body)
    except ValueError:
        raise PeerRefused("a peer call that is not JSON") from None
    if not (isinstance(doc, dict) and isinstance(doc.get("op"), str) and isinstance(doc.get("args"), dict)):
        raise PeerRefused('a peer call is {"op": name, "args": {...}}')
    return doc["op"], doc["args"]


def tls_context(cafile: Path | None) -> ssl.SSLContext | None:
    """For peers serving https: the system's certificates and ``cafile`` (a front end's own --tls-cert:
    front ends behind one name usually share it)."""
    if cafile is None:
        return None
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=str(cafile))
    return context


async def _request(
    connection: _Connection, path: str, headers: list[tuple[bytes, bytes]], body: bytes
) -> h11.Response:
    """Send a POST on ``connection`` and read its answer's status and headers: ``_Reset`` when the peer reset
    the connection before any answer, PeerRefused when it closed it or answered no HTTP."""
    conn, writer = connection.conn, connection.writer
    try:
        writer.write(conn.send(h11.Request(method="POST", target=path, headers=headers)) or b"")
        writer.write(conn.send(h11.Data(data=body)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()
        while True:
            event = await _next_event(connection.reader, conn)
            if isinstance(event, h11.Response):
                return event
            if not isinstance(event, h11.InformationalResponse):  # 100 Continue and the like: skipped
                raise PeerRefused("the peer closed the connection without an answer")
    except (ConnectionResetError, BrokenPipeError) as exc:
        raise _Reset(str(exc) or type(exc).__name__) from None


class _Reset(Exception):
    """The peer reset the connection before its answer (``_request``)."""


async def _next_event(reader: asyncio.StreamReader, conn: h11.Connection) -> Any:
    """The next HTTP event of ``conn``, reading as needed; PeerRefused when the peer breaks the protocol or
    the connection early."""
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise PeerRefused(f"the peer's answer is not HTTP/1.1: {exc}") from None
        if event is not h11.NEED_DATA:
            return event
        data = await reader.read(65536)
        try:
            conn.receive_data(data)  # b"": the connection closed (an error unless the answer had ended)
        except h11.RemoteProtocolError as exc:
            raise PeerRefused(f"the peer's answer broke off: {exc}") from None


@dataclass
class _Connection:
    """One HTTP/1.1 connection to a peer, kept alive between calls (``PeerClient.open_stream``)."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    conn: h11.Connection
    idle_since: float = 0.0


class PeerStream:
    """A peer's answer to ``PeerClient.open_stream``: its status and headers, then its body as it comes."""

    def __init__(self, client: PeerClient, url: str, connection: _Connection, response: h11.Response) -> None:
        self._client = client
        self._url = url
        self._connection = connection
        self._closed = False
        self.status = response.status_code
        self.headers: list[tuple[bytes, bytes]] = [(bytes(k), bytes(v)) for k, v in response.headers]

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive, cut anywhere. PeerRefused or OSError when it breaks off."""
        while True:
            event = await _next_event(self._connection.reader, self._connection.conn)
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return
            else:
                raise PeerRefused("the peer closed the connection before its answer ended")

    async def read(self, *, most: int | None = None) -> bytes:
        """The whole body (an invocation's answer, which the peer bounds), or its first ``most`` bytes."""
        out = bytearray()
        async for chunk in self.chunks():
            out += chunk
            if most is not None and len(out) >= most:
                return bytes(out[:most])
        return bytes(out)

    def close(self) -> None:
        """Done with the answer: its connection is kept for the next call when the answer was read to its
        end, else dropped (a peer still streaming sees its caller gone and stops)."""
        if not self._closed:
            self._closed = True
            self._client._give_back(self._url, self._connection)


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return str(exc) or type(exc).__name__


class PeerClient:
    """Calls the other live front ends, each in a thread of its own, and answers what each returned (a peer
    that fails or does not answer within ``timeout_s`` is named in the answer's ``missing``, and the log says
    why, once a minute per front end)."""

    def __init__(
        self,
        key: bytes,
        ident: str,
        peers: Callable[[], list[Peer]],
        *,
        ssl_context: ssl.SSLContext | None = None,
        timeout_s: float = TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._key = key
        self.id = ident
        self._peers = peers
        self._ssl = ssl_context
        self._timeout_s = timeout_s
        self._clock = clock
        self._said: dict[str, float] = {}  # peer id -> when its last failure was logged
        self._idle: dict[str, list[_Connection]] = {}  # peer URL -> connections between calls, newest last
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="zeroscale-peers")

    def _failed(self, peer: Peer, why: str) -> None:
        now = self._clock()
        if now - self._said.get(peer.id, -SAY_EVERY_S) >= SAY_EVERY_S:
            self._said[peer.id] = now
            log.warning(
                "front end %s at %s did not answer (%s): left out of this answer", peer.id, peer.url, why
            )

    def peers(self) -> list[Peer]:
        """The other live front ends (``peers``, as given: this one is not among them)."""
        return self._peers()

    def _connect(self, peer: Peer) -> http.client.HTTPConnection:
        url = urllib.parse.urlsplit(peer.url)
        host, port = url.hostname or "127.0.0.1", url.port
        if url.scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=self._timeout_s, context=self._ssl)
        return http.client.HTTPConnection(host, port, timeout=self._timeout_s)

    def download(self, peer: Peer, path: str, dest: Path, max_bytes: int) -> None:
        """``GET`` a file a peer serves under ``PATH`` + ``/``, into ``dest`` (at most ``max_bytes``)."""
        conn = self._connect(peer)
        try:
            signed = sign(self._key, self.id, b"", path=path, method="GET", to=peer.run)
            conn.request("GET", path, headers={HEADER: signed})
            resp = conn.getresponse()
            if resp.status != 200:
                raise PeerRefused(f"{resp.status} {resp.read(200).decode('utf-8', 'replace')}")
            size = 0
            with dest.open("wb") as out:
                while chunk := resp.read(1024 * 1024):
                    size += len(chunk)
                    if size > max_bytes:
                        raise PeerRefused(f"{peer.url}{path} is over {max_bytes} bytes")
                    out.write(chunk)
        finally:
            conn.close()

    async def open_stream(
        self,
        peer: Peer,
        path: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        *,
        deadline: float | None = None,
    ) -> PeerStream:
        """``POST`` ``body`` with ``headers`` to ``path`` under ``PATH`` on ``peer``, from the event loop: its
        answer once the status and headers came, the body still to read (``PeerStream``; close it), by
        ``deadline`` (the event loop's time; None: no bound). NotDelivered when the peer provably never had
        the call, BrokeOff when it may have acted on it without answering.

        A connection left idle by an earlier call is used when there is one (no new TCP or TLS handshake).
        When the peer closed it meanwhile (it closes idle ones: its keep-alive timeout, or a newcomer taking
        its slot), the call fails before any answer and is sent once more on a new connection: the peer had
        not read it, as it closes only connections between requests. If that new connection cannot be made,
        the peer went away just then, perhaps after reading the call: BrokeOff, never NotDelivered."""
        url = urllib.parse.urlsplit(peer.url)
        sent = [
            (b"host", url.netloc.encode("latin-1")),
            *headers,
            (
                HEADER.encode(),
                sign(self._key, self.id, body, path=path, headers=headers, to=peer.run).encode(),
            ),
            (b"content-length", str(len(body)).encode()),
        ]
        reused = self._take(peer.url)
        retried = False  # a reused connection failed before any answer: this is the call sent once more
        while True:
            connection: _Connection | None = reused
            try:
                async with asyncio.timeout_at(deadline):
                    if connection is None:
                        connection = await self._open(url)
                    response = await _request(connection, path, sent, body)
                return PeerStream(self, peer.url, connection, response)
            except BaseException as exc:
                if connection is not None:
                    connection.writer.close()
                if not isinstance(exc, (OSError, PeerRefused, _Reset)):
                    raise  # cancelled
                if reused is not None and not isinstance(exc, TimeoutError):
                    reused, retried = None, True
                    continue
                unsent = connection is None or isinstance(exc, _Reset)
                if unsent and not retried:
                    raise NotDelivered(_why(exc)) from None
                raise BrokeOff(_why(exc)) from None

    async def _open(self, url: urllib.parse.SplitResult) -> _Connection:
        host, port = url.hostname or "127.0.0.1", url.port or (443 if url.scheme == "https" else 80)
        tls: ssl.SSLContext | bool | None = (self._ssl or True) if url.scheme == "https" else None
        reader, writer = await asyncio.open_connection(host, port, ssl=tls)
        return _Connection(reader, writer, h11.Connection(h11.CLIENT))

    def _take(self, url: str) -> _Connection | None:
        """The most recently idle connection to ``url`` that is still open and young enough, if any."""
        idle = self._idle.get(url) or []
        now = self._clock()
        while idle:
            connection = idle.pop()
            fresh = now - connection.idle_since < IDLE_REUSE_S
            if fresh and not connection.reader.at_eof() and not connection.writer.is_closing():
                return connection
            connection.writer.close()
        return None

    def _give_back(self, url: str, connection: _Connection) -> None:
        """Keep ``connection`` for the next call to ``url`` when its exchange ended cleanly, else close it."""
        conn = connection.conn
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            connection.writer.close()
            return
        conn.start_next_cycle()
        connection.idle_since = self._clock()
        idle = self._idle.setdefault(url, [])
        idle.append(connection)
        if len(idle) > MAX_IDLE:
            idle.pop(0).writer.close()

    def call(self, peer: Peer, op: str, args: dict[str, Any]) -> Any:
        body = json.dumps({"op": op, "args": args}, separators=(",", ":")).encode()
        conn = self._connect(peer)
        try:
            json_type = [(b"content-type", b"application/json")]
            headers = {
                "content-type": "application/json",
                HEADER: sign(self._key, self.id, body, headers=json_type, to=peer.run),
            }
            conn.request("POST", PATH, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        if resp.status != 200:
            raise PeerRefused(f"{resp.status} {data[:200].decode('utf-8', 'replace')}")
        return json.loads(data)

    def gather(self, op: str, args: dict[str, Any]) -> Gathered:
        """Every live peer's id and answer to ``op``, and the peers that failed to answer."""
        peers = self.peers()
        if not peers:
            return Gathered()
        futures = [(peer, self._pool.submit(self.call, peer, op, args)) for peer in peers]
        answers: list[tuple[str, Any]] = []
        missing: list[Peer] = []
        for peer, future in futures:
            try:
                answers.append((peer.id, future.result()))
            except (OSError, PeerRefused, ValueError, http.client.HTTPException) as exc:
                self._failed(peer, f"{type(exc).__name__}: {exc}")
                missing.append(peer)
        return Gathered(tuple(answers), tuple(missing))

    async def ask(self, op: str, args: dict[str, Any]) -> Gathered:
        """``gather`` from the event loop: at once (no thread) while this front end is alone."""
        if not self.peers():
            return Gathered()
        return await asyncio.to_thread(self.gather, op, args)

    def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.writer.close()
        self._idle.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)
