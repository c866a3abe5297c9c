"""The native data plane on /metrics: requests it answered itself and requests it relayed to the Python
server (``zeroscale_native_requests_total{path="served"|"relayed"}``), requests waiting in it now for one of
the workers it holds (``zeroscale_native_waiting_requests``), and the workers it holds
(``zeroscale_native_lent_workers``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

_NAME = "zeroscale_native_requests"
_DOC = (
    "Requests on the native data plane's port: answered by the plane itself (served) or by the Python server"
)
_WAITING = "zeroscale_native_waiting_requests"
_WAITING_DOC = "Requests waiting in the native data plane for one of the workers it holds (all endpoints)"
_LENT = "zeroscale_native_lent_workers"
_LENT_DOC = "Workers lent to the native data plane now (counted busy in their pool only while it serves them)"


class NativeRequests:
    def __init__(self, counts: Callable[[], Mapping[str, int]], lent: Callable[[], int]) -> None:
        self._counts = counts
        self._lent = lent

    def describe(self) -> Iterable[Metric]:
        return [
            CounterMetricFamily(_NAME, _DOC, labels=["path"]),
            GaugeMetricFamily(_WAITING, _WAITING_DOC),
            GaugeMetricFamily(_LENT, _LENT_DOC),
        ]

    def collect(self) -> Iterator[Metric]:
        counts = self._counts()
        family = CounterMetricFamily(_NAME, _DOC, labels=["path"])
        for path in ("relayed", "served"):
            family.add_metric([path], float(counts.get(path, 0)))
        yield family
        yield GaugeMetricFamily(_WAITING, _WAITING_DOC, value=float(counts.get("waiting", 0)))
        yield GaugeMetricFamily(_LENT, _LENT_DOC, value=float(self._lent()))
