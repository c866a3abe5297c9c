"""``GET /zeroscale/v1/workers[?endpoint=NAME]``: this front end's live workers (starting, idle, busy or
stopping), one JSON object each: endpoint, variant, worker id, node, front end, state, pid, resident MB,
and whether its pool is draining (an update replaced it, or the endpoint is being deleted)."""

from __future__ import annotations

import json
from typing import Any, Protocol

from zeroscale.errors import ValidationException
from zeroscale.router.fleet import Fleet


class Request(Protocol):
    @property
    def method(self) -> str: ...

    @property
    def query(self) -> dict[str, list[str]]: ...


class WorkersApi:
    def __init__(self, fleet: Fleet, node: str, frontend: str) -> None:
        """``node``: this front end's host, where its workers run unless they are on a cluster's nodes
        (then each worker's handle names its node)."""
        self._fleet = fleet
        self._node = node
        self._frontend = frontend

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
        out.sort(key=lambda w: (w["EndpointName"].lower(), w["VariantName"], w["WorkerId"]))
        return out

    async def handle(self, request: Request) -> tuple[int, str, bytes]:
        if request.method != "GET":
            raise ValidationException(f"{request.method} is not supported on workers; use GET.")
        names = request.query.get("endpoint")
        body = {"Workers": self.workers(names[-1] if names else None)}
        return 200, "application/json", json.dumps(body).encode()
