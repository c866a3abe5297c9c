"""The seccomp filter, installed for real in a forked child: what it refuses, and what it leaves alone."""

from __future__ import annotations

import ctypes
import errno
import json
import mmap
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from zeroscale.workers import seccomp

pytestmark = pytest.mark.skipif(not seccomp.probe(), reason="needs seccomp filters")

LOW, HIGH = 2_000_000_000, 2_000_000_010


def in_child(code: bytes, attempts: dict[str, Callable[[], Any]]) -> dict[str, str]:
    """Run ``attempts`` in a forked child under the filter ``code``: "ok" or the errno's name for each."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            seccomp.install(code, ctypes.CDLL(None, use_errno=True))
            out = {}
            for name, fn in attempts.items():
                try:
                    fn()
                    out[name] = "ok"
                except OSError as exc:
                    out[name] = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        data = f.read()
    os.waitpid(pid, 0)
    result: dict[str, str] = json.loads(data)
    return result


def test_no_connect_and_no_datagram_unix_sockets(tmp_path: Path) -> None:
    path = str(tmp_path / "daemon.sock")
    daemon = socket.socket(socket.AF_UNIX)
    daemon.bind(path)
    daemon.listen()
    code = seccomp.program(deny_connect=True, id_range=None)
    out = in_child(
        code,
        {
            "unix": lambda: socket.socket(socket.AF_UNIX).connect(path),
            "tcp": lambda: socket.socket().connect(("127.0.0.1", 9)),
            "dgram": lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM),
            "dgram_pair": lambda: socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM),
            "listen": lambda: socket.socket(socket.AF_UNIX).bind(str(tmp_path / "own.sock")),
            "stream_pair": lambda: socket.socketpair(),
            "seqpacket": lambda: socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET),
            "udp": lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
            "setuid": lambda: os.setresuid(0, 0, 0),  # not filtered here (root may; the uid rules are apart)
        },
    )
    daemon.settimeout(0.1)
    with pytest.raises(TimeoutError):
        daemon.accept()
    assert out == {
        "unix": "EACCES",
        "tcp": "EACCES",
        "dgram": "EACCES",
        "dgram_pair": "EACCES",
        "listen": "ok",
        "stream_pair": "ok",
        "seqpacket": "ok",
        "udp": "ok",
        "setuid": "ok",
    }


def _io_uring() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    params = ctypes.create_string_buffer(120)
    fd = libc.syscall(425, 1, params)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "io_uring_setup")
    os.close(fd)


def _libc_call(name: str, *args: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    result = getattr(libc, name)(*args)
    if result < 0:
        raise OSError(ctypes.get_errno(), name)
    if name == "syscall" and result == 0:  # a clone's child: gone at once
        os._exit(0)


def _thread() -> None:
    import threading

    ran: list[bool] = []
    thread = threading.Thread(target=lambda: ran.append(True))
    thread.start()
    thread.join()
    assert ran


def _tcp_then_send(addr: tuple[str, int]) -> None:
    with socket.create_connection(addr, timeout=2) as s:
        s.sendto(b"x", 0, addr)
        s.sendmsg([b"x"], [], 0)


def test_an_image_server_speaks_tcp_only(tmp_path: Path) -> None:
    path = str(tmp_path / "own.sock")
    own = socket.socket(socket.AF_UNIX)
    own.bind(path)
    own.listen()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    addr = listener.getsockname()
    flags = socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC

    def fast_open(msg: bool) -> None:
        with socket.socket() as s:
            if msg:
                s.sendmsg([b"x"], [], socket.MSG_FASTOPEN, addr)
            else:
                s.sendto(b"x", socket.MSG_FASTOPEN, addr)

    out = in_child(
        seccomp.program(deny_connect=False, id_range=None, tcp_only=True),
        {
            "tcp": lambda: _tcp_then_send(addr),
            "tcp_proto": lambda: socket.socket(
                socket.AF_INET, socket.SOCK_STREAM | flags, socket.IPPROTO_TCP
            ),
            "tcp6": lambda: socket.socket(socket.AF_INET6, socket.SOCK_STREAM),
            "unix": lambda: socket.socket(socket.AF_UNIX).connect(path),
            "unix_dgram": lambda: socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM),
            "pair": lambda: socket.socketpair(),
            "netlink": lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0),
            "udp": lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
            "udp_flags": lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM | flags),
            "udp6": lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM),
            "raw": lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP),
            "mptcp": lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262),
            "sctp": lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM, 132),
            "vsock": lambda: socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM),
            "fast_open": lambda: fast_open(False),
            "fast_open_msg": lambda: fast_open(True),
            "io_uring": _io_uring,
            "user_namespace": lambda: _libc_call("unshare", 0x10000000),  # CLONE_NEWUSER
            "clone_user_namespace": lambda: _libc_call("syscall", 56, 0x10000000 | 17, 0, 0, 0, 0),
            "clone3": lambda: _libc_call("syscall", 435, 0, 0),
            "thread": _thread,  # libc's pthread_create tries clone3, then clone
        },
    )
    listener.settimeout(1)
    conn, _ = listener.accept()  # the plain TCP connection, and no other
    conn.close()
    listener.settimeout(0.1)
    with pytest.raises(TimeoutError):
        listener.accept()
    allowed = {"tcp", "tcp_proto", "tcp6", "unix", "unix_dgram", "pair", "netlink", "thread"}
    assert {key: value for key, value in out.items() if key in allowed} == dict.fromkeys(allowed, "ok")
    refused = {key: value for key, value in out.items() if key not in allowed}
    namespaces = {"user_namespace": "EPERM", "clone_user_namespace": "EPERM", "clone3": "ENOSYS"}
    assert refused == {**dict.fromkeys(refused, "EACCES"), "io_uring": "EPERM", **namespaces}
    with pytest.raises(seccomp.SeccompError):
        seccomp.program(deny_connect=True, id_range=None, tcp_only=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="changing uids needs root")
def test_uid_changes_stay_inside_the_block() -> None:
    code = seccomp.program(deny_connect=False, id_range=(LOW, HIGH))
    out = in_child(
        code,
        {
            "groups": lambda: os.setgroups([0]),
            "no_groups": lambda: os.setgroups([]),
            "gid_outside": lambda: os.setresgid(5, 5, 5),
            "gid_inside": lambda: os.setresgid(LOW + 1, LOW + 1, LOW + 1),
            "uid_mixed": lambda: os.setresuid(LOW + 1, 0, LOW + 1),
            "uid_above": lambda: os.setreuid(HIGH + 1, -1),
            "uid_inside": lambda: os.setresuid(LOW + 1, -1, LOW + 1),
            "back_to_root": lambda: os.setuid(0),
        },
    )
    assert out == {
        "groups": "EPERM",
        "no_groups": "ok",
        "gid_outside": "EPERM",
        "gid_inside": "ok",
        "uid_mixed": "EPERM",
        "uid_above": "EPERM",
        "uid_inside": "ok",
        "back_to_root": "EPERM",
    }


def _libc_call(name: str, *args: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) < 0:
        raise OSError(ctypes.get_errno(), name)


def test_no_memory_that_no_resident_set_shows() -> None:
    """memfd_create, memfd_secret and SysV shmget fail as on a kernel without them (ENOSYS: what libraries
    fall back on); shared anonymous mappings and files stay (the watchdog counts those, ``shmem.py``)."""
    secret = 447  # memfd_secret, the same number on x86_64 and aarch64
    out = in_child(
        seccomp.program(deny_connect=False, id_range=None, deny_shmem=True),
        {
            "memfd": lambda: os.close(os.memfd_create("hog")),
            "memfd_secret": lambda: _libc_call("syscall", secret, 0),
            "shmget": lambda: _libc_call("shmget", 0, 1 << 20, 0o1600),  # IPC_PRIVATE, IPC_CREAT | 0600
            "shared_anon": lambda: mmap.mmap(-1, 1 << 20).close(),
            "pipe": lambda: [os.close(fd) for fd in os.pipe()],
        },
    )
    assert out == {
        "memfd": "ENOSYS",
        "memfd_secret": "ENOSYS",
        "shmget": "ENOSYS",
        "shared_anon": "ok",
        "pipe": "ok",
    }
    assert seccomp.program(deny_connect=True, id_range=None) != seccomp.program(
        deny_connect=True, id_range=None, deny_shmem=True
    )


def test_an_unknown_architecture_gets_no_filter() -> None:
    with pytest.raises(seccomp.SeccompError):
        seccomp.program(deny_connect=True, id_range=None, machine="sparc64")


PRIMED = """
import json, os, sys
from zeroscale.workers import sandbox, seccomp

sandbox.prime()  # what a zygote does before it forks
built = seccomp.program.cache_info().misses
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    try:
        inherited = sandbox._libc is not None
        sandbox.confine(sandbox.Policy(deny_connect=True, deny_shmem=True, nproc=0, nofile=0, landlock=False))
        info, ready = seccomp.program.cache_info(), seccomp.prepared.cache_info()
        seen = {"inherited": inherited, "misses": info.misses, "hits": info.hits}
        seen["prepared"] = [ready.misses, ready.hits]
        os.write(w, json.dumps(seen).encode())
    finally:
        os._exit(0)
os.close(w)
print(json.dumps({"built": built, "child": json.loads(os.read(r, 4096))}))
os.waitpid(pid, 0)
"""


def test_a_primed_zygotes_child_builds_no_filter_and_loads_no_libc() -> None:
    """``sandbox.prime`` in the zygote: its child's ``confine`` finds the worker's filter built and prepared
    for the kernel (the cache is keyed on the arguments as confine passes them) and the C library loaded."""
    out = subprocess.run([sys.executable, "-c", PRIMED], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen["built"] == 1
    assert seen["child"] == {"inherited": True, "misses": 1, "hits": 1, "prepared": [1, 1]}
