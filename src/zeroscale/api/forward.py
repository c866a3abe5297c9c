"""An invocation that this front end holds no share of: sent to a front end that holds one, and its answer
relayed as it came (status, headers, body).

With several front ends on one database each serves its share of a variant's MaxConcurrency
(``control/cluster.py``); with MaxConcurrency below the number of front ends, some hold none. Such a front end
has already checked the request (signature, IAM, endpoint, headers, size) and chosen its variant; it sends the
body with the headers the worker gets and the chosen variant to a holder, picked at random, through the peer
route (``POST /zeroscale/peer/v1/invoke/<endpoint>``, authenticated as every peer call: ``zeroscale.peers``).
The holder runs it as its own invocation (metered, measured and logged there) and never forwards it again;
a holder that cannot be reached leaves the invocation to this front end, which answers ThrottlingException.
InvokeEndpoint only: a response stream and asynchronous requests are not forwarded.
"""

from __future__ import annotations

import http.client
import logging
import random
from collections.abc import Callable

from zeroscale.api.wire import Headers
from zeroscale.peers import PATH, Peer, PeerClient

log = logging.getLogger("zeroscale.peers")

INVOKE = "invoke"  # POST /zeroscale/peer/v1/invoke/<endpoint>
_TARGET_VARIANT = b"x-amzn-sagemaker-target-variant"
_SENT = (b"content-type", b"accept")  # and every x-amzn-sagemaker-* header but the target variant
_NOT_RELAYED = frozenset({b"content-length", b"date", b"server", b"connection", b"transfer-encoding"})


def invoke_path(endpoint: str) -> str:
    return f"{PATH}/{INVOKE}/{endpoint}"


class Forwarder:
    def __init__(
        self, client: PeerClient, holders: Callable[[str, str], list[Peer]], timeout_s: float
    ) -> None:
        """``holders``: the live front ends that hold a share of (endpoint, variant); ``timeout_s``: the most
        an invocation may take there (queue wait, cold start and the model's own time)."""
        self._client = client
        self._holders = holders
        self._timeout_s = timeout_s

    async def forward(
        self, endpoint: str, variant: str, headers: Headers, body: bytes
    ) -> tuple[int, Headers, bytes] | None:
        """The answer of a front end holding a share, or None when none does or can be reached."""
        holders = self._holders(endpoint, variant)
        if not holders:
            return None
        peer = random.choice(holders)
        sent = [
            (k.lower(), v)
            for k, v in headers
            if k.lower() in _SENT
            or (k.lower().startswith(b"x-amzn-sagemaker-") and k.lower() != _TARGET_VARIANT)
        ]
        sent.append((_TARGET_VARIANT, variant.encode()))
        try:
            status, got, answer = await self._client.post(
                peer, invoke_path(endpoint), sent, body, self._timeout_s
            )
        except (OSError, http.client.HTTPException) as exc:
            log.warning("an invocation of %s was not forwarded to front end %s: %s", endpoint, peer.id, exc)
            return None
        if status == 403:  # the peer refused the call itself (another key): not the invocation's answer
            log.warning("front end %s refused a forwarded invocation: %s", peer.id, answer[:200])
            return None
        return status, [(k, v) for k, v in got if k not in _NOT_RELAYED], answer
