"""An invocation that this front end holds no share of: sent to a front end that holds one, and its answer
relayed as it came (status, headers, body).

With several front ends on one database each serves its share of a variant's MaxConcurrency
(``control/cluster.py``); with MaxConcurrency below the number of front ends, some hold none. Such a front end
has already checked the request (signature, IAM, endpoint, headers, size) and chosen its variant; it sends the
body with the headers the worker gets and the chosen variant to a holder, picked at random, through the peer
route (``POST /zeroscale/peer/v1/invoke/<endpoint>``, authenticated as every peer call: ``zeroscale.peers``).
The holder runs it as its own invocation (metered, measured and logged there) and never forwards it again;
a holder that cannot be reached leaves the invocation to this front end, which answers ThrottlingException.

A response stream (InvokeEndpointWithResponseStream) goes the same way to ``.../invoke-stream/<endpoint>`` and
is relayed as it comes, whole event-stream messages at a time: one that breaks off after it began ends with
an InternalStreamFailure event, and a client that goes away closes the connection to the holder, which
stops its worker. Asynchronous requests are not forwarded: their queue is in the database, and a front end
that holds a share dispatches them.

Spill-over: a front end whose own share of the variant is saturated (no idle worker, and none it may start
within its share: ``saturated`` of the variant's pool) sends the invocation the same way, marked with
``X-Zeroscale-Spill: 1``, to a holder it has not recently seen refuse (``api/refusals.py``), so that a
client whose connection sticks to one front end gets the endpoint's whole MaxConcurrency, as on SageMaker.
The holder runs it under its own share only if it has spare capacity at that instant; otherwise it answers
at once ``429`` with ``X-Zeroscale-Spill: refused`` (``refuse_spill``; never the invocation's own answer,
which never carries that header) and this front end queues the invocation itself, as without spill-over.
The shares still add up to MaxConcurrency, so the total holds. A refusal, or a holder that cannot be
reached, is remembered for a moment (no round trip per request while every front end is saturated) and
leaves the invocation to the local queue: spill-over never gives an error that the local path would not.
A spilled invocation is never forwarded or spilled again.

An invocation runs at most once. One that provably never reached the holder (it could not be connected to,
or reset the connection with the call unread: ``peers.NotDelivered``) stays here, as if not sent. One the
holder had and did not answer whole (it died, closed the connection, or outlasted ``timeout_s``) may have
run there, so it is not run again here: the client gets 500 InternalFailure saying so (a response stream
whose parts had begun ends with an InternalStreamFailure event instead), and may send it again, as after
any failure. The origin counts what it sent on
(``counts``: forwarded, spilled, refused; ``zeroscale_peer_invocations_total`` on /metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter
from collections.abc import Callable

from zeroscale.api import eventstream
from zeroscale.api.refusals import Refusals
from zeroscale.api.wire import Headers, Receive, Send, respond, watch_disconnect
from zeroscale.errors import InternalFailure
from zeroscale.peers import PATH, BrokeOff, NotDelivered, Peer, PeerClient, PeerRefused, PeerStream

log = logging.getLogger("zeroscale.peers")

INVOKE = "invoke"  # POST /zeroscale/peer/v1/invoke/<endpoint>
INVOKE_STREAM = "invoke-stream"  # POST /zeroscale/peer/v1/invoke-stream/<endpoint>
_ERROR_BYTES = 64 * 1024  # the most of an error's answer relayed (its JSON)
_TARGET_VARIANT = b"x-amzn-sagemaker-target-variant"
_SENT = (b"content-type", b"accept")  # and every x-amzn-sagemaker-* header but the target variant
_NOT_RELAYED = frozenset({b"content-length", b"date", b"server", b"connection", b"transfer-encoding"})
SPILL = b"x-zeroscale-spill"  # on a spilled invocation: b"1"; on the holder's refusal: b"refused"
_REFUSED = b"refused"
# How an invocation went to another front end, as counted (``Forwarder.counts``)
FORWARDED, SPILLED, REFUSED = "forwarded", "spilled", "refused"


def invoke_path(endpoint: str) -> str:
    return f"{PATH}/{INVOKE}/{endpoint}"


def stream_path(endpoint: str) -> str:
    return f"{PATH}/{INVOKE_STREAM}/{endpoint}"


def spilled(headers: Headers) -> bool:
    """Whether a call on the peer route is a spilled invocation (run it only with spare capacity)."""
    return any(k == SPILL for k, _ in headers)


async def refuse_spill(send: Send) -> None:
    """A holder's answer to a spilled invocation it has no spare capacity for: the origin queues it."""
    await respond(send, 429, b"", [(SPILL, _REFUSED)])


class Forwarder:
    def __init__(
        self,
        client: PeerClient,
        holders: Callable[[str, str], list[Peer]],
        timeout_s: float,
        refusals: Refusals | None = None,
    ) -> None:
        """``holders``: the live front ends that hold a share of (endpoint, variant); ``timeout_s``: the most
        an invocation may take there (queue wait, cold start and the model's own time); ``refusals``: which
        holders refused a spilled invocation of late."""
        self._client = client
        self._holders = holders
        self._timeout_s = timeout_s
        self._refusals = refusals or Refusals()
        self.counts: Counter[tuple[str, str, str]] = Counter()  # (endpoint, variant, how) -> invocations

    async def forward(
        self, endpoint: str, variant: str, headers: Headers, body: bytes, *, spill: bool = False
    ) -> tuple[int, Headers, bytes] | None:
        """The answer of a front end holding a share, or None when none does or can be reached; with
        ``spill``, also None when the one asked has no spare capacity (the module's doc)."""
        peer = self._peer(endpoint, variant, spill)
        if peer is None:
            return None
        deadline = asyncio.get_running_loop().time() + self._timeout_s
        answer = await self._open(peer, endpoint, variant, headers, body, spill, deadline, stream=False)
        if answer is None:
            return None
        try:
            payload = await self._body(endpoint, variant, peer, spill, answer, deadline, most=None)
        finally:
            answer.close()
        return None if payload is None else (answer.status, _relayed(answer.headers), payload)

    async def forward_stream(
        self,
        endpoint: str,
        variant: str,
        headers: Headers,
        body: bytes,
        send: Send,
        receive: Receive,
        *,
        spill: bool = False,
    ) -> bool:
        """A response stream run by a front end holding a share, relayed to ``send`` as it comes: False when
        none does or can be reached before it answers, or (``spill``) the one asked has no spare capacity
        (nothing was sent then)."""
        peer = self._peer(endpoint, variant, spill)
        if peer is None:
            return False
        deadline = asyncio.get_running_loop().time() + self._timeout_s  # the whole stream's
        answer = await self._open(peer, endpoint, variant, headers, body, spill, deadline, stream=True)
        if answer is None:
            return False
        try:
            if answer.status == 200:
                self._taken(endpoint, variant, peer, spill, answer)
                await self._relay(endpoint, peer, answer, send, receive, deadline)
                return True
            # the invocation's error, before any part (its JSON), or the peer's refusal
            error = await self._body(endpoint, variant, peer, spill, answer, deadline, most=_ERROR_BYTES)
            if error is None:
                return False
            start = {
                "type": "http.response.start",
                "status": answer.status,
                "headers": _relayed(answer.headers),
            }
            await send(start)
            await send({"type": "http.response.body", "body": error, "more_body": False})
            return True
        finally:
            answer.close()

    async def _relay(
        self, endpoint: str, peer: Peer, answer: PeerStream, send: Send, receive: Receive, deadline: float
    ) -> None:
        """The stream's head, then its messages as they complete; a stream that breaks off (or outlasts the
        invocation's time) ends with an InternalStreamFailure event."""
        await send({"type": "http.response.start", "status": 200, "headers": _relayed(answer.headers)})
        gone = asyncio.Event()
        watcher = asyncio.ensure_future(watch_disconnect(receive, answer.close, gone))
        frames, tail = eventstream.Frames(), b""
        try:
            async with asyncio.timeout_at(deadline):
                async for chunk in answer.chunks():
                    messages = frames.feed(chunk)
                    if messages:
                        await send({"type": "http.response.body", "body": messages, "more_body": True})
            if frames.partial:
                raise PeerRefused("the stream ended inside a message")
        except (OSError, PeerRefused, ValueError) as exc:
            if not gone.is_set():
                log.warning(
                    "the response stream of %s from front end %s broke off: %s", endpoint, peer.id, exc
                )
                tail = eventstream.exception(
                    "InternalStreamFailure", {"Message": "The stream failed on the front end that ran it."}
                )
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await send({"type": "http.response.body", "body": tail, "more_body": False})

    async def _open(
        self,
        peer: Peer,
        endpoint: str,
        variant: str,
        headers: Headers,
        body: bytes,
        spill: bool,
        deadline: float,
        *,
        stream: bool,
    ) -> PeerStream | None:
        """The peer's answer, its head come; None when the call provably never reached it (it is not taken,
        and the invocation stays here); InternalFailure when it may have run the invocation without
        answering."""
        path = stream_path(endpoint) if stream else invoke_path(endpoint)
        try:
            return await self._client.open_stream(
                peer, path, _sent(headers, variant, spill), body, deadline=deadline
            )
        except NotDelivered as exc:
            log.warning("an invocation of %s was not forwarded to front end %s: %s", endpoint, peer.id, exc)
            self._not_taken(endpoint, variant, peer, spill)
            return None
        except BrokeOff as exc:
            self.counts[endpoint, variant, SPILLED if spill else FORWARDED] += 1  # sent, and perhaps run
            raise self._broke_off(endpoint, peer, exc) from None

    async def _body(
        self,
        endpoint: str,
        variant: str,
        peer: Peer,
        spill: bool,
        answer: PeerStream,
        deadline: float,
        *,
        most: int | None,
    ) -> bytes | None:
        """The body of the peer's answer (its first ``most`` bytes) when it took the invocation; None when it
        refused the call itself (403: another key) or the spill, which then stays here. InternalFailure when
        the body of a taken one breaks off."""
        refused = answer.status == 403
        taken = not refused and self._taken(endpoint, variant, peer, spill, answer)
        try:
            async with asyncio.timeout_at(deadline):
                payload = await answer.read(most=most if taken else _ERROR_BYTES)
        except (OSError, PeerRefused) as exc:
            if taken:
                raise self._broke_off(endpoint, peer, exc) from None
            payload = b""
        if refused:
            log.warning("front end %s refused a forwarded invocation: %r", peer.id, payload[:200])
            self._not_taken(endpoint, variant, peer, spill)
        return payload if taken else None

    @staticmethod
    def _broke_off(endpoint: str, peer: Peer, exc: BaseException) -> InternalFailure:
        """The error for an invocation the peer took and did not answer whole: it may have run, so it is not
        run here too (a client that knows it safe to repeat sends it again, as after any failure)."""
        log.warning("front end %s broke off an invocation of %s: %s", peer.id, endpoint, exc)
        return InternalFailure(
            f"The front end that ran this invocation of endpoint {endpoint} stopped before it answered "
            "whole; the model may have run it. Send it again if it is safe to repeat."
        )

    def forget(self, endpoint: str, variant: str) -> None:
        """Drop the counts of a variant that is gone (counted under the endpoint's name as each client wrote
        it: any case)."""
        name = endpoint.lower()
        for key in [k for k in self.counts if k[0].lower() == name and k[1] == variant]:
            del self.counts[key]

    def _peer(self, endpoint: str, variant: str, spill: bool) -> Peer | None:
        """A live front end holding a share of the variant, at random (None: none); to spill to, one that
        has not refused of late."""
        holders = self._holders(endpoint, variant)
        if spill:
            holders = [p for p in holders if self._refusals.open((p.id, endpoint, variant))]
        return random.choice(holders) if holders else None

    def _taken(self, endpoint: str, variant: str, peer: Peer, spill: bool, answer: PeerStream) -> bool:
        """Whether the peer took the invocation (its answer is the invocation's), counted; a spill it
        refused is remembered (``_not_taken``)."""
        if spill and (SPILL, _REFUSED) in answer.headers:
            self._not_taken(endpoint, variant, peer, spill)
            return False
        if spill:
            self._refusals.accepted((peer.id, endpoint, variant))
        self.counts[endpoint, variant, SPILLED if spill else FORWARDED] += 1
        return True

    def _not_taken(self, endpoint: str, variant: str, peer: Peer, spill: bool) -> None:
        """A spill refused, or a peer that could not be reached or refused the call: remembered and counted
        for a spill (which then queues here)."""
        if spill:
            self._refusals.refused((peer.id, endpoint, variant))
            self.counts[endpoint, variant, REFUSED] += 1


def _sent(headers: Headers, variant: str, spill: bool) -> Headers:
    """What the holder gets of the request's headers: its content type, accept and every SageMaker header,
    with the variant this front end chose as the target (so that a weighted choice is made once), and the
    spill's mark."""
    sent = [
        (k.lower(), v)
        for k, v in headers
        if k.lower() in _SENT or (k.lower().startswith(b"x-amzn-sagemaker-") and k.lower() != _TARGET_VARIANT)
    ]
    sent.append((_TARGET_VARIANT, variant.encode()))
    if spill:
        sent.append((SPILL, b"1"))
    return sent


def _relayed(headers: Headers) -> Headers:
    return [(k, v) for k, v in headers if k not in _NOT_RELAYED]
