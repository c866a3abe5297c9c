"""``zeroscale serve --ray-address``: a head that does not answer is a clear error at start, not a hang."""

from __future__ import annotations

from pathlib import Path

import pytest

from zeroscale.testing import ServerProcess, free_port


def test_an_unreachable_ray_head_stops_serve_with_a_clear_error(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    server = ServerProcess(tmp_path / "data", {"ray_address": address})
    with pytest.raises(RuntimeError, match="server exited"):
        server.start(timeout_s=60)
    assert f"Could not connect to the Ray cluster at {address}" in server.log()


def test_a_ray_address_that_is_not_host_and_port_is_refused(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", {"ray_address": "head-without-port"})
    with pytest.raises(RuntimeError, match="server exited"):
        server.start(timeout_s=60)
    assert "--ray-address must be the Ray head's HOST:PORT" in server.log()
