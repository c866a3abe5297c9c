"""``GET /zeroscale/v1/workers[?endpoint=NAME]``: the live workers (starting, idle, busy or stopping) of this
front end and of every other live front end on its database (asked through ``zeroscale.peers``), one JSON
object each: endpoint, variant, worker id, node, front end, state, pid, resident MB, and whether its pool is
draining (an update replaced it, or the endpoint is being deleted).

``Unreachable`` lists the live front ends that did not answer, ``{"Frontend": id, "Url": url}`` each: their
workers are not in the list, and an operator reading it should know that it is not the whole cluster's
(``zeroscale workers`` says so on stderr)."""

from __future__ import annotations

import json
from typing import Any, Protocol

from zeroscale.errors import UnknownOperationException, ValidationException
from zeroscale.peers import Ask
from zeroscale.router.fleet import Fleet


def _order(worker: dict[str, Any]) -> tuple[str, str, str, str]:
    return (worker["EndpointName"].lower(), worker["VariantName"], worker["Frontend"], worker["WorkerId"])


class Request(Protocol):
    @property
    def method(self) -> str: ...

    @property
    def path(self) -> str: ...

    @property
    def query(self) -> dict[str, list[str]]: ...


class WorkersApi:
    def __init__(
        self,
        fleet: Fleet,
        node: str,
        frontend: str,
        others: Ask | None = None,
    ) -> None:
        """``node``: this front end's host, where its workers run unless they are on a cluster's nodes
        (then each worker's handle names its node). ``others``: the other front ends' answers to a peer
        operation (``zeroscale.peers.PeerClient.ask``)."""
        self._fleet = fleet
        self._node = node
        self._frontend = frontend
        self._others = others

    async def listed(self, args: dict[str, Any]) -> dict[str, Any]:
        """The peer operation ``workers.list``: this front end's own workers (read on the event loop,
        where the pools change)."""
        endpoint = args.get("endpoint")
        return {"Workers": self.workers(endpoint if isinstance(endpoint, str) else None)}

    def workers(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for pool in self._fleet.pools():
            spec = pool.spec
            if endpoint is not None and spec.endpoint.lower() != endpoint.lower():
                continue
            for slot in pool.slots():
                handle = slot.handle
                out.append(
                    {
                        "EndpointName": spec.endpoint,
                        "VariantName": spec.variant,
                        "WorkerId": slot.worker_id,
                        "Node": (handle.node if handle is not None else "") or self._node,
                        "Frontend": self._frontend,
                        "State": slot.state.value,
                        "Pid": handle.pid if handle is not None else None,
                        "ResidentMB": round(handle.rss_mb, 1) if handle is not None else None,
                        "Draining": pool.draining,
                    }
                )
        out.sort(key=_order)
        return out

    async def handle(self, request: Request) -> tuple[int, str, bytes]:
        if request.method != "GET":
            raise ValidationException(f"{request.method} is not supported on workers; use GET.")
        if request.path != "workers":  # what the endpoint's read was authorized on: the path names nothing
            raise UnknownOperationException(
                f"No zeroscale API at {request.path}: use workers[?endpoint=NAME]."
            )
        names = request.query.get("endpoint")
        endpoint = names[-1] if names else None
        rows = self.workers(endpoint)
        unreachable: list[dict[str, str]] = []
        if self._others is not None:
            gathered = await self._others("workers.list", {"endpoint": endpoint})
            rows += [row for _, answer in gathered.answers for row in answer["Workers"]]
            rows.sort(key=_order)
            unreachable = [{"Frontend": p.id, "Url": p.url} for p in gathered.missing]
            unreachable.sort(key=lambda u: u["Frontend"])
        return 200, "application/json", json.dumps({"Workers": rows, "Unreachable": unreachable}).encode()
