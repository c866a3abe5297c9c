"""One streamed invocation after its head came in: parts handed on as they arrive, the worker busy until
the last one (``VariantPool.stream`` opens it).

The stream has the invocation's whole timeout (``deadline``): past it the worker is killed, as for a plain
invocation that does not answer, and the stream ends with ModelInvocationTimeExceeded. A worker that breaks
the connection, or ends the stream with its error trailer, ends it with StreamBroken. ``close`` (the client
went away) stops reading: the worker, writing its next part to a closed connection, stops its model and is
free again; its slot is released at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

from zeroscale.errors import ModelStreamError
from zeroscale.router.invocation import Invocation
from zeroscale.workers.client import WorkerConnectionError
from zeroscale.workers.stream import WorkerStream

_CONTAINER = "primary"


class PoolStream:
    def __init__(
        self,
        worker: WorkerStream,
        inv: Invocation,
        *,
        started: float,
        deadline: float,
        timeout_s: float,
        release: Callable[[bool], None],
        kill: Callable[[], None],
        death_reason: Callable[[], str],
        log_stream_arn: str,
    ) -> None:
        """``started``: ``time.perf_counter()`` when the request went to the worker; ``deadline``: the event
        loop's time by which the last part must be in; ``release(broken)`` hands the worker back."""
        self._worker = worker
        self._inv = inv
        self._started = started
        self._deadline = deadline
        self._timeout_s = timeout_s
        self._release = release
        self._kill = kill
        self._death_reason = death_reason
        self._arn = log_stream_arn
        self._open = True
        self.bytes_out = 0

    def header(self, name: bytes) -> bytes | None:
        return self._worker.header(name)

    async def parts(self) -> AsyncIterator[bytes]:
        """The parts as they arrive. Raises ModelStreamError when the stream fails after its start."""
        worker = self._worker
        while True:
            try:
                async with asyncio.timeout_at(self._deadline):
                    ready = await worker.next_parts()
            except TimeoutError:
                self._end(broken=True, kill=True)
                raise ModelStreamError(
                    f"The model did not finish sending its response within {self._timeout_s:g} s. "
                    f"See {self._arn} for more information.",
                    error_code="ModelInvocationTimeExceeded",
                ) from None
            except WorkerConnectionError:
                self._end(broken=True)
                raise ModelStreamError(
                    f'The stream from {_CONTAINER} broke with message "{self._death_reason()}". '
                    f"See {self._arn} for more information.",
                    error_code="StreamBroken",
                ) from None
            if not ready:
                break
            for part in ready:
                self.bytes_out += len(part)
                yield part
        error = worker.error
        self._end(broken=False)
        if error is not None:
            status, message = error
            self._inv.model_status = status
            raise ModelStreamError(
                f'Received server error ({status}) from {_CONTAINER} with message "{message}". '
                f"See {self._arn} for more information.",
                error_code="StreamBroken",
                original_status=status,
            )

    def close(self) -> None:
        """The client went away (or the caller stops early): stop reading and hand the worker back."""
        if self._open:
            self._worker.abort()
            self._end(broken=False)

    def _end(self, *, broken: bool, kill: bool = False) -> None:
        if not self._open:
            return
        self._open = False
        self._inv.model_s = time.perf_counter() - self._started
        if kill:
            self._kill()
        self._release(broken)
