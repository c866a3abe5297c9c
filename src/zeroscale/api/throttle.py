"""How many control-plane calls each access key may make: a token bucket per key, ``rate`` calls a second
sustained and up to ``burst`` at once. A pure policy: the caller passes the time.

SageMaker throttles its API per account the same way (``ThrottlingException``, HTTP 400, "Rate exceeded",
which boto3 and the AWS CLI retry with a backoff). Here it keeps one caller that floods the control plane
from taking the server's event loop, which the invocations share, from everyone else, and from growing the
audit trail without end (a throttled call is recorded like a refusal: at most 60 a minute in all). Only
verified keys have a bucket, so what it holds is bounded by the keys that exist. Exempt keys (the admin's)
are never throttled.
"""

from __future__ import annotations

from collections.abc import Collection

from zeroscale.errors import Throttling


class KeyRates:
    def __init__(self, rate: float, burst: float, exempt: Collection[str] = ()) -> None:
        """``rate``: calls a second a key may make sustained (> 0); ``burst``: how many at once (>= 1)."""
        self.rate = rate
        self.burst = max(1.0, burst)
        self._exempt = frozenset(exempt)
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when they were counted)

    def wait_s(self, key: str, now: float) -> float:
        """Takes one call from ``key``'s bucket: 0.0 when it may be made now, else how long until it could
        (and nothing is taken)."""
        if key in self._exempt:
            return 0.0
        tokens, then = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens >= 1.0 - 1e-9:  # calls exactly at the rate pass, whatever the rounding of their times
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return max(1e-9, (1.0 - tokens) / self.rate)

    def check(self, key: str, now: float, *, code: str = "ThrottlingException") -> None:
        """Raises ``Throttling`` (HTTP 400, as SageMaker's control plane; ``code``: the protocol's) when
        ``key`` may not make a call now."""
        wait = self.wait_s(key, now)
        if wait > 0.0:
            raise Throttling(
                f"Rate exceeded: access key {key} may make {self.rate:g} control-plane calls a second, "
                f"{self.burst:g} at once; retry in {wait:.2f} s (zeroscale serve --api-rate-per-key).",
                code=code,
                status=400,
            )
