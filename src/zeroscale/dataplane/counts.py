"""The native data plane on /metrics: requests it answered itself and requests it relayed to the Python
server, as ``zeroscale_native_requests_total{path="served"|"relayed"}``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, Metric

_NAME = "zeroscale_native_requests"
_DOC = (
    "Requests on the native data plane's port: answered by the plane itself (served) or by the Python server"
)


class NativeRequests:
    def __init__(self, counts: Callable[[], Mapping[str, int]]) -> None:
        self._counts = counts

    def describe(self) -> Iterable[Metric]:
        return [CounterMetricFamily(_NAME, _DOC, labels=["path"])]

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(_NAME, _DOC, labels=["path"])
        for path, count in sorted(self._counts().items()):
            family.add_metric([path], float(count))
        yield family
