"""The native data plane (src/native, built by setup.py): its loop, for ``zeroscale.dataplane``."""

from typing import Any

def sigv4_check(
    method: bytes,
    raw_path: bytes,
    query: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    region: str,
    service: str,
    now: int,
    secrets: dict[str, str],
    /,
) -> str | None: ...

class Plane:
    def __init__(
        self,
        listen_fd: int,
        region: str,
        service: str,
        payload_limit: int,
        request_id_prefix: str,
        error_trailer: str,
        keep_alive_s: float,
        lease_idle_s: float,
        header_timeout_s: float,
        body_timeout_s: float,
        max_header_bytes: int,
        max_connections: int,
        max_connections_per_client: int,
        journal_dir: str,
        journal_segment: int,
        queue_wait_s: float,
        max_queue: int,
    ) -> None: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def fileno(self) -> int: ...
    def take(self) -> list[tuple[Any, ...]]: ...
    def respond(self, conn_id: int, data: bytes, end: bool, close: bool, /) -> None: ...
    def lease(
        self,
        lease_id: int,
        fd: int,
        endpoint: str,
        variant: str,
        worker_id: str,
        memory_mb: int,
        provisioned: bool,
        timeout_s: float,
        max_answer: int,
        max_request: int,
        /,
    ) -> None: ...
    def recall(self, lease_id: int, /) -> None: ...
    def grant(self, access_key_id: str, secret: str, endpoint: str, /) -> None: ...
    def clear_grants(self) -> None: ...
    def route(self, endpoint: str, variants: list[tuple[str, float, int]], /) -> None: ...
    def counts(self) -> dict[str, int]: ...
    def idle_leases(self) -> list[int]: ...
    def waiting(self) -> dict[tuple[str, str], int]: ...
