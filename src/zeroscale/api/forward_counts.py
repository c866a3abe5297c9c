"""``zeroscale_peer_invocations_total``: the invocations this front end sent to another (``api/forward.py``),
by endpoint, variant and how: ``forwarded`` (this front end holds no share of the variant), ``spilled`` (its
share was saturated and a holder with spare capacity ran it) or ``refused`` (a spill the holder refused or
that could not reach it: it queued here). Counted where the invocation arrived; the front end that ran it
counts it as its own invocation too (``zeroscale_invocations_total``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, Metric

_NAME = "zeroscale_peer_invocations"
_DOC = "Invocations sent to another front end: forwarded (no share here), spilled, refused (queued here)"
_LABELS = ("endpoint_name", "variant_name", "how")


class PeerInvocations:
    def __init__(self, counts: Mapping[tuple[str, str, str], int]) -> None:
        self._counts = counts

    def describe(self) -> Iterable[Metric]:
        return [CounterMetricFamily(_NAME, _DOC, labels=_LABELS)]

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(_NAME, _DOC, labels=_LABELS)
        for labels, count in list(self._counts.items()):
            family.add_metric(labels, float(count))
        yield family
