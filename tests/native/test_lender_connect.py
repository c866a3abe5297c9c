"""How the lender connects the plane to a worker it lends (``dataplane.lender.connect_now``): at once, so the
lease reaches the plane before the answer that earned it; a TCP worker's connection begun and handed over
while it is being made (the plane waits for it); awaited only where it must be (a host name)."""

from __future__ import annotations

import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from zeroscale.dataplane.lender import connect_now


def handle(host: str = "", port: int = 0, socket_path: str = "") -> Any:
    return SimpleNamespace(host=host, port=port, socket_path=socket_path)


def test_a_unix_worker_is_connected_at_once_and_a_gone_one_is_an_error(tmp_path: Path) -> None:
    path = str(tmp_path / "w.sock")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen(1)
        sock = connect_now(handle(socket_path=path))
        assert sock is not None and not sock.getblocking()
        sock.sendall(b"x")
        accepted, _ = listener.accept()
        assert accepted.recv(1) == b"x"
        accepted.close()
        sock.close()
    with pytest.raises(OSError):
        connect_now(handle(socket_path=str(tmp_path / "none.sock")))


def test_a_tcp_worker_s_connection_is_begun_and_handed_over_a_host_name_awaited() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        host, port = listener.getsockname()
        sock = connect_now(handle(host, port))
        assert sock is not None and not sock.getblocking()
        accepted, _ = listener.accept()
        accepted.close()
        sock.close()
        assert connect_now(handle("localhost", port)) is None
