"""What the native data plane may serve by itself: grants (an access key may invoke an endpoint) and leases
(an idle worker of the endpoint's pool, lent to the plane on a connection of its own), decided here in
Python from what the Python server decides per request, and taken back the moment they no longer hold.

- **Grants.** After the Python server answered a relayed invocation with a success, the key that signed it
  is authorized again for the endpoint, and the plane gets the key's secret and the grant. Any change to
  users, keys or policies (this front end's writes, or another's read from the database) drops every grant
  at once: a revoked right is never served from a stale grant.
- **Leases.** After the same success (before its answer's last bytes go out, so that the client's next
  request finds it), when the endpoint is one the plane serves whole (production variants only, no shadow,
  canary, batching, multi-model or pipeline; not asynchronous), one of its pool's idle workers is lent; none
  idle, and the next worker a request frees goes to the plane, as long as another serves the pool's waiters
  (``VariantPool.lend_wanted``): under more load than workers, the plane comes to hold them and its
  requests wait for them there, rather than each relayed to wait here. A lent worker counts as busy in its
  pool (MaxConcurrency, scale-in), so nothing else reaches it. The plane gives it back when it stayed idle
  for a moment, when the pool has a request waiting (``Borrower.give_one_back``), and when it is recalled: the
  endpoint updated or deleted, the pool drained, this front end unavailable.
- **Records.** The plane reports every request it served (``done``): an ``InvocationRecord`` from what the
  lease says (endpoint, variant, worker, memory size), metered, counted and logged as the Python path's.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import itertools
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from zeroscale.api.hosts import is_address
from zeroscale.background import Background
from zeroscale.errors import ZeroscaleError
from zeroscale.events import EventBus, InvocationRecord
from zeroscale.iam.authz import Access
from zeroscale.router.fleet import Fleet
from zeroscale.router.pool import VariantPool
from zeroscale.router.slots import Slot
from zeroscale.workers.manager import WorkerHandle

if TYPE_CHECKING:
    from zeroscale._dataplane import Plane

log = logging.getLogger("zeroscale.dataplane")

_CHECK_S = 0.1  # how often leases are held to their endpoint's route while any is out
_WANT_S = 1.0  # how long the plane's want of a worker (none idle as it earned one) holds


class Rights(Protocol):
    """IAM as the lender asks it (``iam.authz.Authorizer``)."""

    @property
    def generation(self) -> int: ...

    def on_change(self, callback: Callable[[], None]) -> None: ...

    def lookup_secret(self, access_key_id: str) -> str | None: ...

    def authorize(self, access: Access) -> None: ...


@dataclass(frozen=True, slots=True)
class Limits:
    """The invoke path's limits a lease carries: the invocation timeout, the largest answer, the largest
    request body (a serverless variant's, and any other's); and the pools' queue (how long a request waits
    for a worker, how many of a variant's wait), which the plane's own waiting for a lease keeps."""

    timeout_s: float
    max_answer: int
    serverless_request: int
    request: int
    queue_wait_s: float
    max_queue: int


@dataclass(slots=True)
class Lent:
    pool: VariantPool
    slot: Slot
    provisioned: bool
    recalled: bool = False


def _servable(pool: object) -> VariantPool | None:
    """``pool`` when the plane may serve its variant whole."""
    if not isinstance(pool, VariantPool) or pool.batcher is not None or pool.draining:
        return None
    spec = pool.spec
    if spec.multi_model or spec.containers or spec.max_concurrency <= 0:
        return None
    return pool


def _socket(handle: WorkerHandle) -> tuple[socket.socket, tuple[str, int] | str]:
    if handle.port:
        sock = socket.socket(socket.AF_INET6 if ":" in handle.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        return sock, (handle.host, handle.port)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    return sock, handle.socket_path


def connect_now(handle: WorkerHandle) -> socket.socket | None:
    """A connection to the worker for the plane, at once: on this host's Unix socket, made (non-blocking:
    its backlog has room); to a TCP worker at an IP address, begun (the plane sends its first request once
    it is made, and a connection refused is a request not delivered). None where it must be awaited (a
    full backlog, a host name): ``connect``."""
    if handle.port and not is_address(handle.host):
        return None
    sock, address = _socket(handle)
    try:
        err = sock.connect_ex(address)
    except BaseException:
        sock.close()
        raise
    if err == 0 or (handle.port and err == errno.EINPROGRESS):
        return sock
    sock.close()
    if err in (errno.EAGAIN, errno.EINPROGRESS):
        return None
    raise OSError(err, os.strerror(err))


async def connect(handle: WorkerHandle) -> socket.socket:
    """A new connection to the worker's server, non-blocking, for the plane to own."""
    sock, address = _socket(handle)
    try:
        await asyncio.get_running_loop().sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock


class Lender:
    def __init__(
        self,
        plane: Plane,
        fleet: Fleet,
        rights: Rights,
        events: EventBus,
        limits: Limits,
        *,
        is_async: Callable[[str], bool] | None = None,
        unavailable: Callable[[], str | None] | None = None,
    ) -> None:
        self._plane = plane
        self._fleet = fleet
        self._rights = rights
        self._events = events
        self._limits = limits
        self._is_async = is_async
        self._unavailable = unavailable
        self._ids = itertools.count(1)
        self._lent: dict[int, Lent] = {}
        self._granted: set[tuple[str, str]] = set()
        # what the plane was told, by endpoint: (variant, share, MaxConcurrency)
        self._routes: dict[str, tuple[tuple[str, float, int], ...]] = {}
        self._generation = rights.generation
        self._background = Background("native data plane leases")
        self._timer: asyncio.TimerHandle | None = None
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        rights.on_change(self._rights_changed)

    def _rights_changed(self) -> None:
        """IAM changed: the grants go before anything else is served (on the event loop's thread, at once: the
        write's answer goes out after this; from another thread, as soon as the loop runs)."""
        if threading.get_ident() == self._loop_thread:
            self.check_rights()
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.check_rights)

    # ---- what the Python server decided ----
    def answered(self, access_key_id: str, endpoint: str) -> None:
        """A relayed invocation of ``endpoint`` signed by ``access_key_id`` was answered with a success: grant
        the key, and lend the plane a worker when one is idle."""
        if self.closed or (self._unavailable is not None and self._unavailable() is not None):
            return
        self.check_rights()
        if (access_key_id, endpoint) not in self._granted and not self._grant(access_key_id, endpoint):
            return
        pools = self._pools(endpoint)
        if pools is None:
            return
        self._route(endpoint, pools)
        for pool in pools:  # one worker more for the plane, from the first variant with one idle
            slot = pool.lend()
            if slot is not None:
                self._lend(pool, slot)
                return
        wanted = functools.partial(self._take_freed, until=self._loop.time() + _WANT_S)
        for pool in pools:  # none idle: the next one freed, if soon
            pool.lend_wanted = wanted

    def _take_freed(self, pool: VariantPool, slot: Slot, *, until: float) -> bool:
        """``pool`` freed ``slot`` while it has requests waiting, and the plane wanted one (``until``): taken
        while the plane serves the pool still."""
        if self.closed or self._loop.time() > until or pool not in (self._pools(pool.spec.endpoint) or ()):
            return False
        self._lend(pool, slot)
        return True

    def _grant(self, access_key_id: str, endpoint: str) -> bool:
        secret = self._rights.lookup_secret(access_key_id)
        if secret is None:
            return False
        try:
            self._rights.authorize(Access(access_key_id, "runtime", "sagemaker", "", endpoint))
        except ZeroscaleError:
            return False
        self._plane.grant(access_key_id, secret, endpoint)
        self._granted.add((access_key_id, endpoint))
        return True

    def check_rights(self) -> None:
        """Users, keys or policies changed since the grants were given (or this front end serves nothing
        now): every grant is dropped."""
        generation = self._rights.generation
        if generation != self._generation or (self._unavailable is not None and self._unavailable()):
            self._generation = generation
            if self._granted:
                self._plane.clear_grants()
                self._granted.clear()

    def _pools(self, endpoint: str) -> list[VariantPool] | None:
        """The pools of ``endpoint``'s production variants when the plane may serve them whole (no shadow
        or canary; each a plain pool), else None."""
        route = self._fleet.route(endpoint)
        if route is None or route.canary is not None or route.shadows:
            return None
        if self._is_async is not None and self._is_async(endpoint):
            return None
        pools = [_servable(pool) for pool in route.production]
        return [pool for pool in pools if pool is not None] if all(pools) else None

    def _route(self, endpoint: str, pools: list[VariantPool] | None) -> None:
        """The plane told ``endpoint``'s variants, their shares and MaxConcurrency, where they changed (none:
        it serves the endpoint no more)."""
        route = self._fleet.route(endpoint) if pools is not None else None
        shares: tuple[tuple[str, float, int], ...] = ()
        if route is not None:
            shares = tuple(
                (variant, share, pool.spec.max_concurrency)
                for (variant, share), pool in zip(route.shares(), route.production, strict=True)
            )
        if self._routes.get(endpoint, ()) != shares:
            self._plane.route(endpoint, list(shares))
            if shares:
                self._routes[endpoint] = shares
            else:
                self._routes.pop(endpoint, None)

    def _lend(self, pool: VariantPool, slot: Slot) -> None:
        """``slot``, taken busy from ``pool``, to the plane: at once (its lease then reaches the plane before
        the answer that earned it), else once connected."""
        handle = slot.handle
        assert handle is not None  # a busy slot's worker is ready
        try:
            sock = connect_now(handle)
        except OSError:
            pool.release(slot)  # its worker is going: the pool learns it from its exit
            return
        if sock is None:
            self._background.spawn(self._connect_and_lease(pool, slot, handle))
        else:
            self._lease(pool, slot, sock)

    async def _connect_and_lease(self, pool: VariantPool, slot: Slot, handle: WorkerHandle) -> None:
        try:
            sock = await connect(handle)
        except OSError:
            pool.release(slot)
            return
        if self.closed or pool not in (self._pools(pool.spec.endpoint) or ()):
            sock.close()
            pool.release(slot)
            return
        self._lease(pool, slot, sock)

    def _lease(self, pool: VariantPool, slot: Slot, sock: socket.socket) -> None:
        lease_id = next(self._ids)
        lent = self._lent[lease_id] = Lent(pool, slot, pool.provisioned_now())
        pool.borrower = self
        spec, limits = pool.spec, self._limits
        max_request = (
            limits.request if spec.instance_count else min(limits.request, limits.serverless_request)
        )
        fd = sock.detach()
        self._plane.lease(
            lease_id,
            fd,
            spec.endpoint,
            spec.variant,
            slot.worker_id,
            spec.memory_mb,
            lent.provisioned,
            limits.timeout_s,
            limits.max_answer,
            max_request,
        )
        self._watch()

    # ---- taking leases back ----
    def give_one_back(self, pool: VariantPool) -> None:
        """A request waits in ``pool``: one of its workers the plane holds comes back (at once if idle)."""
        for lease_id, lent in self._lent.items():
            if lent.pool is pool and not lent.recalled:
                self._recall(lease_id, lent)
                return

    def _recall(self, lease_id: int, lent: Lent) -> None:
        lent.recalled = True
        self._plane.recall(lease_id)

    @property
    def lent(self) -> int:
        """Workers the plane holds now."""
        return len(self._lent)

    def recall_all(self) -> None:
        for lease_id, lent in self._lent.items():
            if not lent.recalled:
                self._recall(lease_id, lent)

    def _watch(self) -> None:
        if self._timer is None and self._lent:
            self._timer = asyncio.get_running_loop().call_later(_CHECK_S, self._check_leases)

    def _check_leases(self) -> None:
        """Each lease still the endpoint's serving pool's, and this front end still serving: else recalled."""
        self._timer = None
        self.check_rights()
        down = self._unavailable is not None and self._unavailable() is not None
        # the endpoints the plane holds workers of (a route without any serves nothing: it is relayed)
        held = {lent.pool.spec.endpoint for lent in self._lent.values()}
        serving = {endpoint: None if down else self._pools(endpoint) for endpoint in held}
        for endpoint, pools in serving.items():
            self._route(endpoint, pools)  # weights changed, or the endpoint is served no more
        for lease_id, lent in self._lent.items():
            pools = serving.get(lent.pool.spec.endpoint)
            if not lent.recalled and (pools is None or lent.pool not in pools):
                self._recall(lease_id, lent)
        self._watch()

    # ---- what the plane reports ----
    def done(
        self,
        lease_id: int,
        at: float,
        model_s: float,
        total_s: float,
        bytes_in: int,
        bytes_out: int,
        status: int,
        position: tuple[int, int],
    ) -> None:
        """The plane answered a request with its lease's worker, its usage in the plane's journal up to
        ``position`` (written before the answer): its record, as the Python path makes it."""
        lent = self._lent.get(lease_id)
        if lent is None:
            return
        spec = lent.pool.spec
        record = InvocationRecord(
            endpoint=spec.endpoint,
            variant=spec.variant,
            worker_id=lent.slot.worker_id,
            at=at,
            model_s=model_s,
            total_s=total_s,
            bytes_in=bytes_in,
            bytes_out=bytes_out,
            status=200,
            error_code="",
            memory_mb=spec.memory_mb,
            setup_s=None,
            provisioned=lent.provisioned,
            model_status=status,
        )
        self._events.invocation_journaled(record, position)

    def failed(self, lease_id: int) -> Lent | None:
        """The lease's request did not end in a success the plane answered: the lease is the caller's to
        settle (``InvokeApi.lent``, which releases its worker), and the plane's return of it is ignored."""
        lent = self._lent.pop(lease_id, None)
        self._forget(lent)
        return lent

    def returned(self, lease_id: int, broken: bool) -> None:
        lent = self._lent.pop(lease_id, None)
        if lent is None:
            return  # settled as a failure already
        self._forget(lent)
        lent.pool.release(lent.slot, broken=broken)

    def _forget(self, lent: Lent | None) -> None:
        if lent is not None and not any(other.pool is lent.pool for other in self._lent.values()):
            lent.pool.borrower = None

    def idle(self, pool: VariantPool) -> int:
        """``pool``'s workers the plane holds with no request on them now (they count free in its load: its
        gauges, CloudWatch's concurrency and utilization, and the autoscaling that reads them)."""
        idle = set(self._plane.idle_leases())
        return sum(1 for lease_id, lent in self._lent.items() if lent.pool is pool and lease_id in idle)

    def waiting(self, pool: VariantPool) -> int:
        """Requests waiting in the plane for ``pool``'s workers it holds (they count queued in its load)."""
        return self._plane.waiting().get((pool.spec.endpoint, pool.spec.variant), 0)

    async def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self._background.cancel()
