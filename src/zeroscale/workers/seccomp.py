"""A seccomp filter for confined workers and templates: what Landlock and the uid cannot express.

- **No outgoing connections, Unix sockets included.** Landlock (ABI 7 here) rules TCP but not pathname Unix
  sockets, and a worker keeps ``CAP_DAC_OVERRIDE``, so a socket file's mode would not stop it either: without
  this filter a model could connect to another worker's socket, a template's control socket, the server's
  PostgreSQL or any daemon's socket on the host. A forked worker never needs ``connect``: it listens on its
  own socket and the server connects to it. So ``connect`` is refused outright (``EACCES``), and so are the
  ways around it: a datagram Unix socket (``sendto`` names its peer without ``connect``; ``socket`` and
  ``socketpair`` of that type are refused), and io_uring (whose ``IORING_OP_CONNECT`` and
  ``IORING_OP_SOCKET`` would not pass through this filter). Abstract Unix sockets are also out of reach
  through Landlock's scope (ABI 6) and the worker's own network namespace.
- **A template's uid changes stay within its block.** A template runs the model's unpickling (code) but must
  give each replica it forks a uid of its own, so it keeps ``CAP_SETUID``/``CAP_SETGID``; this filter lets
  ``set*uid``/``set*gid`` name only uids of its block (its own and its replicas') and ``setgroups`` only clear
  the groups, so neither it nor its replicas can become root, the server or another endpoint's worker.
- **An image's server makes no user namespace** (``tcp_only``): ``unshare`` or ``clone`` with
  ``CLONE_NEWUSER`` is ``EPERM``, and ``clone3`` (whose flags this filter cannot read) ``ENOSYS``, which libc
  answers with ``clone``. Inside one, the server held every capability (over that namespace), and many
  kernel privilege escalations begin there; a forked worker could not make one already.
- **An image's server speaks TCP only** (``tcp_only``). It shares the host's network, where Landlock rules TCP
  ``bind``/``connect`` but nothing else: UDP (``sendto`` names any peer: DNS to a resolver, or straight out),
  ICMP ping sockets, MPTCP (a stream socket Landlock's TCP rules do not see) and TCP Fast Open (``sendto``
  or ``sendmsg`` with ``MSG_FASTOPEN`` connects without ``connect``, so the LSM hook never runs). So
  ``socket`` is allowed for Unix and netlink sockets and for plain TCP (``SOCK_STREAM``, protocol 0 or
  ``IPPROTO_TCP``) only, ``MSG_FASTOPEN`` is refused, and so is io_uring. Not applied with outbound access.
- **No memory that no resident set shows** (``deny_shmem``, every forked worker and template, with or without
  outbound access). The memory watchdog counts resident sets; a ``memfd_create`` file that is written or
  ``fallocate``d but never mapped is shmem in no process's RSS (an audit held 3000 MB this way on a 1024 MB
  endpoint), a ``memfd_secret`` area likewise once unmapped, and a SysV segment (``shmget``) even outlives
  the worker. So these three calls fail with ``ENOSYS``, as on a kernel built without them, which is what
  libraries that probe ``memfd_create`` fall back on. (POSIX shared memory is files in /dev/shm, which
  Landlock keeps read-only; shared anonymous mappings are counted by the watchdog, ``workers/shmem.py``.)
- Any other architecture's system calls (e.g. 32-bit ``int 0x80`` from a 64-bit process, or the x32 ABI,
  which would bypass the numbers checked here) are refused.

Built as classic BPF by hand (standard library only) and installed with ``prctl(PR_SET_SECCOMP)`` after
``no_new_privs``; filters are inherited across fork and can only be narrowed, so a replica keeps its
template's.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import platform
import struct
from dataclasses import dataclass
from typing import Any

_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2

# classic BPF
_LD_W_ABS = 0x20
_JEQ, _JGE, _JGT, _JSET = 0x15, 0x35, 0x25, 0x45
_AND = 0x54
_RET = 0x06
_ALLOW = 0x7FFF0000
_ERRNO = 0x00050000

_AF_UNIX, _AF_INET, _AF_INET6, _AF_NETLINK = 1, 2, 10, 16
_IPPROTO_TCP = 6
_MSG_FASTOPEN = 0x20000000
_SOCK_TYPE_MASK = 0xF
_SOCK_STREAM, _SOCK_SEQPACKET = 1, 5
_CLONE_NEWUSER = 0x10000000
_NO_ID = 0xFFFFFFFF  # -1: "leave unchanged" for setre*id/setres*id, a query for setfs*id


@dataclass(frozen=True)
class _Arch:
    audit: int
    socket: int
    socketpair: int
    connect: int
    sendto: int
    sendmsg: int
    sendmmsg: int
    io_uring_setup: int
    ids: dict[int, int]  # set*id syscall -> how many id arguments it takes
    setgroups: int
    shmem: tuple[int, ...]  # memfd_create, memfd_secret, shmget
    namespaces: tuple[int, int, int]  # unshare, clone (flags: argument 0), clone3 (flags in memory)
    x32_bit: int = 0  # numbers with this bit set are another ABI of the same architecture


_ARCHES = {
    "x86_64": _Arch(
        audit=0xC000003E,
        socket=41,
        socketpair=53,
        connect=42,
        sendto=44,
        sendmsg=46,
        sendmmsg=307,
        io_uring_setup=425,
        # setuid, setgid, setreuid, setregid, setresuid, setresgid, setfsuid, setfsgid
        ids={105: 1, 106: 1, 113: 2, 114: 2, 117: 3, 119: 3, 122: 1, 123: 1},
        setgroups=116,
        shmem=(319, 447, 29),
        namespaces=(272, 56, 435),
        x32_bit=0x40000000,
    ),
    "aarch64": _Arch(
        audit=0xC00000B7,
        socket=198,
        socketpair=199,
        connect=203,
        sendto=206,
        sendmsg=211,
        sendmmsg=269,
        io_uring_setup=425,
        ids={146: 1, 144: 1, 145: 2, 143: 2, 147: 3, 149: 3, 151: 1, 152: 1},
        setgroups=159,
        shmem=(279, 447, 194),
        namespaces=(97, 220, 435),
    ),
}


class SeccompError(Exception):
    pass


def supported() -> bool:
    """Whether this architecture's system call numbers are known here (the kernel's support is probed by
    ``sandbox.probe`` by installing a filter in a child)."""
    return platform.machine() in _ARCHES


def _arg(index: int) -> int:
    """Offset of the low 32 bits of argument ``index`` in struct seccomp_data (little-endian)."""
    return 16 + 8 * index


class _Program:
    """Instructions with symbolic jump targets, resolved when assembled (BPF jumps only go forward)."""

    def __init__(self) -> None:
        self._code: list[tuple[int, object, object, int]] = []
        self._labels: dict[str, int] = {}

    def label(self, name: str) -> None:
        self._labels[name] = len(self._code)

    def load(self, offset: int) -> None:
        self._code.append((_LD_W_ABS, 0, 0, offset))

    def jump(self, op: int, k: int, true: object, false: object) -> None:
        """``true``/``false``: a label, or 0 for the next instruction."""
        self._code.append((op, true, false, k))

    def op(self, code: int, k: int) -> None:
        self._code.append((code, 0, 0, k))

    def ret(self, value: int) -> None:
        self._code.append((_RET, 0, 0, value))

    def assemble(self) -> bytes:
        out = b""
        for at, (code, true, false, k) in enumerate(self._code):
            jt, jf = (self._offset(at, t) for t in (true, false))
            out += struct.pack("=HBBI", code, jt, jf, k)
        return out

    def _offset(self, at: int, target: object) -> int:
        if target == 0:
            return 0
        offset = self._labels[str(target)] - at - 1
        if not 0 <= offset <= 255:
            raise SeccompError(f"jump to {target} out of range")
        return offset


@functools.lru_cache(maxsize=16)
def program(
    *,
    deny_connect: bool,
    id_range: tuple[int, int] | None,
    tcp_only: bool = False,
    deny_shmem: bool = False,
    machine: str | None = None,
) -> bytes:
    """The filter's instructions for this machine (raises SeccompError on an unknown architecture).

    ``deny_connect``: a forked worker's (no connect, no datagram Unix sockets, no io_uring). ``tcp_only``: an
    image's server's (sockets: Unix, netlink and plain TCP only; no MSG_FASTOPEN; no io_uring).
    ``deny_shmem``: no memfd_create, memfd_secret or shmget (ENOSYS)."""
    arch = _ARCHES.get(machine or platform.machine())
    if arch is None:
        raise SeccompError(f"no seccomp filter for {machine or platform.machine()}")
    if deny_connect and tcp_only:
        raise SeccompError("deny_connect and tcp_only are two different filters")
    p = _Program()
    p.load(4)  # arch
    p.jump(_JEQ, arch.audit, 0, "eperm")
    p.load(0)  # nr
    if arch.x32_bit:
        p.jump(_JGE, arch.x32_bit, "eperm", 0)
    if deny_connect:
        p.jump(_JEQ, arch.connect, "eacces", 0)
        p.jump(_JEQ, arch.io_uring_setup, "eperm", 0)
        p.jump(_JEQ, arch.socket, "socket", 0)
        p.jump(_JEQ, arch.socketpair, "socket", 0)
    if tcp_only:
        p.jump(_JEQ, arch.io_uring_setup, "eperm", 0)
        unshare, clone, clone3 = arch.namespaces
        p.jump(_JEQ, unshare, "newuser", 0)
        p.jump(_JEQ, clone, "newuser", 0)
        p.jump(
            _JEQ, clone3, "enosys", 0
        )  # its flags are in memory, out of the filter's sight: libc falls back
        p.jump(_JEQ, arch.socket, "family", 0)
        p.jump(_JEQ, arch.sendto, "flags3", 0)
        p.jump(_JEQ, arch.sendmsg, "flags2", 0)
        p.jump(_JEQ, arch.sendmmsg, "flags3", 0)
    if deny_shmem:
        for nr in arch.shmem:
            p.jump(_JEQ, nr, "enosys", 0)
    if id_range is not None:
        for nr, count in arch.ids.items():
            p.jump(_JEQ, nr, f"ids{count}", 0)
        p.jump(_JEQ, arch.setgroups, "setgroups", 0)
    p.ret(_ALLOW)
    if deny_connect:
        # socket/socketpair(AF_UNIX, type): stream and seqpacket only (they cannot name a peer without
        # connect); datagram sockets could sendto any path.
        p.label("socket")
        p.load(_arg(0))
        p.jump(_JEQ, _AF_UNIX, 0, "allow")
        p.load(_arg(1))
        p.op(_AND, _SOCK_TYPE_MASK)
        p.jump(_JEQ, _SOCK_STREAM, "allow", 0)
        p.jump(_JEQ, _SOCK_SEQPACKET, "allow", "eacces")
    if tcp_only:
        p.label("family")
        p.load(_arg(0))
        p.jump(_JEQ, _AF_UNIX, "allow", 0)
        p.jump(_JEQ, _AF_NETLINK, "allow", 0)
        p.jump(_JEQ, _AF_INET, "inet", 0)
        p.jump(_JEQ, _AF_INET6, "inet", "eacces")
        p.label("inet")
        p.load(_arg(1))
        p.op(_AND, _SOCK_TYPE_MASK)
        p.jump(_JEQ, _SOCK_STREAM, 0, "eacces")
        p.load(_arg(2))
        p.jump(_JEQ, 0, "allow", 0)
        p.jump(_JEQ, _IPPROTO_TCP, "allow", "eacces")
        p.label("newuser")  # a user namespace: full capabilities in it, the kernel's surface widened
        p.load(_arg(0))
        p.jump(_JSET, _CLONE_NEWUSER, "eperm", "allow")
        for index in (3, 2):  # sendto's and sendmmsg's flags are argument 3, sendmsg's argument 2
            p.label(f"flags{index}")
            p.load(_arg(index))
            p.jump(_JSET, _MSG_FASTOPEN, "eacces", "allow")
    if id_range is not None:
        low, high = id_range
        for count in (3, 2, 1):  # ids3 checks arg 2 then falls into ids2 (arg 1), then ids1 (arg 0)
            p.label(f"ids{count}")
            p.load(_arg(count - 1))
            p.jump(_JEQ, _NO_ID, f"ok{count}", 0)
            p.jump(_JGE, low, 0, "eperm")
            p.jump(_JGT, high, "eperm", 0)
            p.label(f"ok{count}")
        p.ret(_ALLOW)
        p.label("setgroups")
        p.load(_arg(0))  # size: only clearing the supplementary groups
        p.jump(_JEQ, 0, "allow", "eperm")
    p.label("allow")
    p.ret(_ALLOW)
    p.label("eacces")
    p.ret(_ERRNO | errno.EACCES)
    p.label("eperm")
    p.ret(_ERRNO | errno.EPERM)
    p.label("enosys")
    p.ret(_ERRNO | errno.ENOSYS)
    return p.assemble()


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


@functools.lru_cache(maxsize=16)
def prepared(code: bytes) -> tuple[_SockFprog, ctypes.Array[ctypes.c_char]]:
    """``code`` as the kernel takes it (a ``sock_fprog`` and the buffer it points to, kept together). Kept:
    a zygote prepares its workers' filter once, where a fresh fork's first ctypes buffer and cast cost it
    ~0.24 ms."""
    buf = ctypes.create_string_buffer(code, len(code))
    return _SockFprog(len(code) // 8, ctypes.cast(buf, ctypes.c_void_p)), buf


def install(code: bytes, lib: Any) -> None:
    """Set no_new_privs and install ``code`` on this thread (call it single-threaded, after fork), through
    ``lib``, the process's C library handle (``ctypes.CDLL(None, use_errno=True)``: ``sandbox.libc``)."""
    if lib.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise SeccompError(f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(ctypes.get_errno())}")
    prog, _ = prepared(code)
    if lib.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise SeccompError(f"prctl(PR_SET_SECCOMP): {os.strerror(ctypes.get_errno())}")


def probe() -> bool:
    """Whether a filter can be installed here (tried in a forked child)."""
    if not supported():
        return False
    code = program(deny_connect=True, id_range=(1, 1))
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            install(code, ctypes.CDLL(None, use_errno=True))
            status = 0
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0
