"""Dynamic batching for one variant's pool, for a model that opted in (runtimes/batching.py has the
settings, the frames and the merge): requests that wait for a worker are sent to it together, as one
``POST /zeroscale/batch``, and each gets its own answer back.

- A request can join a batch when it is a plain ``POST /invocations`` with a body in memory, no target
  container or model, and a Content-Type the worker can merge (JSON, CSV, NPY). Requests are grouped by
  their exact Content-Type and Accept (and timeout); anything else takes the pool's ordinary path.
- One dispatcher per group holds at most one acquire at a time: when a worker comes free it takes up to
  ``max_size`` of the group's requests (having waited up to ``max_delay_s`` for more while the batch was
  not full). One request alone goes to the worker exactly as without batching.
- The worker merges what it can merge with certainty and invokes the rest one by one; if the batch call
  itself fails (an error answer, a broken connection, a malformed frame), the requests are invoked again
  one by one, each on a worker of its own. A batch that timed out is a timeout for each of its requests.
- Records stay one per request: each request's Invocation carries the batch's worker and model time (its
  ModelLatency), its own status and bytes; a cold start is reported by the batch's first request only.
- A wait for a worker that times out (Throttling) fails every request that waited through it; a worker
  that failed to start fails the batch that would have gone to it, as the pool fails one waiter.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from zeroscale.background import Background
from zeroscale.errors import ModelError, Throttling, ZeroscaleError
from zeroscale.router.invocation import Invocation
from zeroscale.router.pool import TIMED_OUT, VariantPool
from zeroscale.router.slots import Slot
from zeroscale.runtimes.batching import BATCH_PATH, BatchSettings, mergeable_type, pack_bodies, unpack_answers
from zeroscale.workers.client import WorkerResponse

_Key = tuple[bytes, bytes, float | None]  # Content-Type, Accept, timeout
_FRAMING = 2048  # room for an answer's frame in a batch's answer: its status, lengths and content type


@dataclass(slots=True)
class _Entry:
    inv: Invocation
    answer: asyncio.Future[WorkerResponse]
    seq: int  # arrival order
    at: float  # loop time it arrived


@dataclass(frozen=True, slots=True)
class _Before:
    """Requests that arrived before a point (their ``seq``)."""

    seq: int

    def __call__(self, entry: _Entry) -> bool:
        return entry.seq < self.seq


def batch_key(inv: Invocation) -> _Key | None:
    """The group a request can be batched in, or None when it cannot join a batch."""
    if (
        inv.method != b"POST"
        or inv.path != b"/invocations"
        or not isinstance(inv.body, bytes)
        or inv.container is not None
        or inv.target_model
    ):
        return None
    content_type = accept = b""
    for name, value in inv.headers:
        lower = name.lower()
        if lower == b"content-type":
            content_type = value
        elif lower == b"accept":
            accept = value
    if not mergeable_type(content_type):
        return None
    return content_type, accept, inv.timeout_s


class Batcher:
    """What ``VariantPool.invoke`` hands its requests to when the variant batches."""

    def __init__(self, pool: VariantPool, settings: BatchSettings) -> None:
        self._pool = pool
        self._max = settings.max_size
        self._delay_s = settings.max_delay_s
        self._queues: dict[_Key, deque[_Entry]] = {}
        self._full: dict[_Key, asyncio.Event] = {}  # set when a group's queue reaches max_size
        self._running: set[_Key] = set()  # groups with a dispatcher
        self._waiting = 0
        self._acquiring = 0  # dispatchers waiting in the pool's queue (one waiter each)
        self._seq = 0
        self._background = Background(f"batcher {pool.spec.endpoint}/{pool.spec.variant}")

    @property
    def waiting(self) -> int:
        """Requests waiting for a worker, less the pool's waiters that stand for them (the dispatchers'):
        what the queue gauge adds to the pool's count, so that it counts requests, not batches."""
        return self._waiting - self._acquiring

    async def invoke(self, inv: Invocation) -> WorkerResponse:
        pool = self._pool
        key = batch_key(inv)
        if key is None or (not self._delay_s and key not in self._running and pool.idle):
            # cannot join a batch; or nothing of its group waits and a worker is free: what a dispatcher
            # would do at once, without its two tasks
            return await pool.serve(await pool.acquire(), inv)
        if self._waiting >= pool.max_queue:
            raise pool.throttled("its queue is full")
        loop = asyncio.get_running_loop()
        entry = _Entry(inv, loop.create_future(), self._seq, loop.time())
        self._seq += 1
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
            self._full[key] = asyncio.Event()
        queue.append(entry)
        self._waiting += 1
        if key not in self._running:
            self._running.add(key)
            self._background.spawn(self._dispatch(key, queue))
        elif len(queue) >= self._max:
            self._full[key].set()
        return await entry.answer

    async def close(self) -> None:
        """The pool drained: end what is left (nothing, unless the drain timed out)."""
        await self._background.cancel()

    # ---- the dispatcher of one group ----
    async def _dispatch(self, key: _Key, queue: deque[_Entry]) -> None:
        pool = self._pool
        loop = asyncio.get_running_loop()
        try:
            while queue:
                if self._delay_s > 0 and len(queue) < self._max and not pool.draining:
                    wait_s = queue[0].at + self._delay_s - loop.time()
                    if wait_s > 0:
                        full = self._full[key]
                        full.clear()
                        if len(queue) < self._max:
                            try:
                                async with asyncio.timeout(wait_s):
                                    await full.wait()
                            except TimeoutError:
                                pass
                waited = _Before(self._seq)
                self._acquiring += 1
                try:
                    slot = await pool.acquire()
                except Throttling as exc:  # every request that waited through the whole wait
                    self._fail(queue, exc, waited)
                    continue
                except ZeroscaleError as exc:  # a worker failed to start: the batch it was for; or the pool
                    self._fail(queue, exc, limit=None if pool.draining else self._max)  # drained: all
                    continue
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise
                    self._fail(queue, None)  # the pool cancelled its waiters (a drain): so are these
                    continue
                finally:
                    self._acquiring -= 1
                entries = self._take(queue)
                if entries:
                    self._background.spawn(self._serve(slot, entries))
                else:
                    pool.release(slot)
        finally:
            self._running.discard(key)
            if queue:  # cancelled (the pool drained: they are told why)
                self._fail(queue, pool.ended() if pool.draining else None)
            if not queue:
                del self._queues[key], self._full[key]

    def _take(self, queue: deque[_Entry]) -> list[_Entry]:
        entries: list[_Entry] = []
        while queue and len(entries) < self._max:
            entry = queue.popleft()
            self._waiting -= 1
            if not entry.answer.done():  # not cancelled meanwhile
                entries.append(entry)
        return entries

    def _fail(
        self,
        queue: deque[_Entry],
        exc: BaseException | None,
        which: Callable[[_Entry], bool] | None = None,
        limit: int | None = None,
    ) -> None:
        """Fail waiting requests with ``exc`` (None: cancel them): those ``which`` accepts, else the first
        ``limit``, else all."""
        kept: deque[_Entry] = deque()
        failed = 0
        while queue:
            entry = queue.popleft()
            chosen = which(entry) if which is not None else limit is None or failed < limit
            if not chosen:
                kept.append(entry)
                continue
            self._waiting -= 1
            failed += 1
            _settle(entry, exc)
        queue.extend(kept)

    # ---- one batch ----
    async def _serve(self, slot: Slot, entries: list[_Entry]) -> None:
        pool = self._pool
        if len(entries) == 1:  # alone: exactly the ordinary path
            entry = entries[0]
            try:
                _settle(entry, await pool.serve(slot, entry.inv))
            except BaseException as exc:
                _settle(entry, exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
            return
        invs = [e.inv for e in entries]
        content_type, accept, timeout_s = batch_key(invs[0]) or (b"", b"", None)
        headers = [(b"Content-Type", content_type)] if content_type else []
        if accept:
            headers.append((b"Accept", accept))
        bodies = [i.body for i in invs if isinstance(i.body, bytes)]  # all of them: batch_key checked
        # the answers' limits together, with their framing (a batch answer over it: each request alone)
        limits = [i.max_answer for i in invs if i.max_answer is not None]
        most = sum(limits) + _FRAMING * len(limits) if len(limits) == len(invs) else None
        batch = Invocation(
            pack_bodies(bodies), headers, timeout_s=timeout_s, path=BATCH_PATH, max_answer=most
        )
        try:
            resp = await pool.serve(slot, batch)
        except ModelError as exc:
            if exc.original_status == 0 and exc.original_message == TIMED_OUT:
                _note(batch, invs)
                for entry in entries:
                    _settle(entry, exc)
            else:  # the batch call failed: each request alone, as if there were no batching
                await self._one_by_one(entries)
            return
        except BaseException as exc:
            for entry in entries:
                _settle(entry, exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        try:
            answers = unpack_answers(resp.body)
            if len(answers) != len(entries):
                raise ValueError(f"{len(answers)} answers for {len(entries)} requests")
        except ValueError:
            await self._one_by_one(entries)
            return
        _note(batch, invs)
        for entry, (status, body, kind) in zip(entries, answers, strict=True):
            entry.inv.model_status = status
            limit = entry.inv.max_answer
            if status >= 400:
                _settle(entry, pool.answered_error(batch.worker_id, status, body.decode("utf-8", "replace")))
            elif limit is not None and len(body) > limit:
                _settle(entry, pool.too_large(batch.worker_id, limit))
            else:
                _settle(entry, WorkerResponse(status, [(b"Content-Type", kind)], body))

    async def _one_by_one(self, entries: list[_Entry]) -> None:
        pool = self._pool

        async def alone(entry: _Entry) -> None:  # not noted as a batch's: billed and counted alone
            try:
                _settle(entry, await pool.serve(await pool.acquire(), entry.inv))
            except Exception as exc:
                _settle(entry, exc)

        await asyncio.gather(*(alone(e) for e in entries if not e.answer.done()))


def _note(batch: Invocation, invs: list[Invocation]) -> None:
    """Each request of a batch: the batch's worker and model time; its cold start, for the first only."""
    for i, inv in enumerate(invs):
        inv.worker_id = batch.worker_id
        inv.model_s = batch.model_s
        inv.batch_size = len(invs)
        inv.batch_first = i == 0
        inv.provisioned = batch.provisioned
        inv.model_status = batch.model_status
        inv.setup_s = batch.setup_s if i == 0 else None


def _settle(entry: _Entry, outcome: WorkerResponse | BaseException | None) -> None:
    answer = entry.answer
    if answer.done():  # the client went away
        return
    if outcome is None or isinstance(outcome, asyncio.CancelledError):
        answer.cancel()
    elif isinstance(outcome, BaseException):
        answer.set_exception(outcome)
    else:
        answer.set_result(outcome)
