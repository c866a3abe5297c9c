"""Confine a worker after it is forked (or before a bring-your-own image's server is exec'd).

What a confined worker gets, all from the kernel with no root and no helper process:

- Landlock (filesystem, TCP and scope rules; ``landlock_*`` syscalls 444-446 through ctypes): it reads only
  the ``read`` roots (its model and code, its requirements environment, the Python it runs on and its
  libraries, the system's shared libraries and a few files of /etc), writes only its scratch directory,
  creates sockets only where told; binds TCP only on its own ports and connects nowhere (unless outbound
  access is allowed); cannot signal processes outside its sandbox or reach abstract Unix sockets (ABI 6).
  Everything else, the server's database and credentials, other models' artifacts, ``/etc/shadow``, is
  refused with EACCES, whatever the worker's uid.
- A uid of its own (a root server gives each worker one): the kernel counts a uid's processes and enforces
  ``RLIMIT_NPROC`` on them (a fork bomb gets EAGAIN), which it never does for root; the worker keeps only
  the capabilities to read and write files whatever their mode (Landlock decides which files), no others
  (no signalling other uids, no setuid back). Every process the worker starts has its uid, which is how the
  server finds and kills them when it exits. A server that is not root gives a worker a user namespace of
  its own instead, where ``RLIMIT_NPROC`` counts its processes only.
- Without outbound access, an empty network namespace (no interface but a down loopback: no UDP or TCP
  anywhere; a forked worker listens on a Unix socket).
- ``RLIMIT_NOFILE``; ``RLIMIT_FSIZE`` (no file larger than the worker's disk limit); ``no_new_privs``.

``confine`` runs in the child, after ``fork`` and before any of the model's code (a pickle is code). A
layer's rules can only narrow what the layers before allowed: a template (a process that loaded a model and
forks replicas of it) is confined once, and each replica adds a layer of its own (its scratch directory).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import signal
import stat
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import ModuleType
from typing import Any

_seccomp: ModuleType | None
try:  # imported before the fork, in the zygote; an image's exec shim runs this file alone and needs none
    from zeroscale.workers import seccomp as _seccomp
except ImportError:
    _seccomp = None

# ---- Landlock's ABI (include/uapi/linux/landlock.h) ----
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH, _RULE_NET_PORT = 1, 2
_PR_SET_NO_NEW_PRIVS = 38

FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1

_FS_ABI1 = (1 << 13) - 1
_READ = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
_FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE  # the rights a rule on a file may hold
_WRITE = _FS_ABI1 & ~(FS_MAKE_CHAR | FS_MAKE_BLOCK) | FS_REFER | FS_TRUNCATE

_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000

# Files outside the read roots that a Python worker (and the shared libraries it loads) reads.
SYSTEM_READ = (
    "/usr",
    "/lib",
    "/lib64",
    "/lib32",
    "/bin",
    "/sbin",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/mime.types",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    # Its own /proc/<pid> only (the rule is made by the child, where /proc/self resolves to it): other
    # processes' environ, maps and fds are not readable.
    "/proc/self",
    "/proc/cpuinfo",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/loadavg",
    "/proc/filesystems",
    "/proc/sys",
    "/sys/devices/system/cpu",
    "/sys/fs/cgroup",
)
NETWORK_READ = ("/etc/hosts", "/etc/resolv.conf", "/etc/host.conf", "/etc/gai.conf", "/etc/services")
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")

DEFAULT_NPROC = 64  # processes and threads of one worker
DEFAULT_NOFILE = 1024


class SandboxError(Exception):
    """The confinement could not be applied (the worker must not run unconfined)."""


@dataclass(frozen=True)
class Policy:
    read: tuple[str, ...] = ()  # read (and execute) beneath these paths
    write: tuple[str, ...] = ()  # everything beneath these (the scratch directory)
    sockets: tuple[str, ...] = ()  # may create Unix sockets in these directories
    devices: tuple[str, ...] = DEVICES  # read and write these files
    bind_ports: tuple[int, ...] = ()  # TCP ports it may bind
    outbound: bool = False  # connect anywhere (else: no TCP connect, and no network namespace shared)
    nproc: int = DEFAULT_NPROC  # 0: no process limit (and no user namespace)
    nofile: int = DEFAULT_NOFILE
    fsize: int = 0  # RLIMIT_FSIZE: the largest file it may write, bytes (0: no limit)
    net_ns: bool = False  # an empty network namespace
    uid: int = 0  # become this uid (and gid), keeping only CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH
    # A template: the uids (and gids) it and its replicas may take, inclusive; it keeps CAP_SETUID and
    # CAP_SETGID to give each replica one, and a seccomp filter holds every uid change inside this block.
    uid_block: tuple[int, int] | None = None
    deny_connect: bool = False  # seccomp: no connect at all, no datagram Unix sockets, no io_uring
    deny_shmem: bool = False  # seccomp: no memfd_create, memfd_secret or shmget (memory no RSS shows)
    # A compiled seccomp filter (hex) installed last: an image's server's (TCP only, seccomp.py), built by
    # the server because the image's exec shim runs this file alone.
    seccomp_filter: str = ""
    layer_only: bool = False  # a replica of a confined template: add a Landlock layer, nothing else
    landlock: bool = True
    # The first ``common`` paths of ``read`` are the same for every worker of its server (the system's): a
    # zygote's spare adds them, its devices and sockets to its Landlock ruleset before it waits.
    common: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Its fields as they are (tuples of strings and numbers: JSON as lists; ``asdict``'s deep copy
        took 60 us of a cold start)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Policy:
        fields: dict[str, Any] = {}
        for key, value in data.items():
            fields[key] = tuple(value) if isinstance(value, list) else value
        return cls(**fields)


_libc: Any = None


def libc() -> Any:
    """The C library (errno kept), loaded once per process and kept: a zygote's children inherit it and the
    functions it looked up, where a fresh fork's ``dlopen`` and first lookups cost it ~0.3 ms here."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def prime() -> None:
    """In a zygote, before it forks: look up the C functions ``confine`` calls and build the seccomp filter
    a forked worker installs, prepared for the kernel, so that no child does either on its way to its model
    (``seccomp.program`` and ``seccomp.prepared`` keep what they made). Where either cannot be had,
    ``confine`` does it, or fails, as before."""
    lib = libc()
    for name in ("prctl", "syscall", "unshare", "setns", "capset"):
        getattr(lib, name, None)
    if _seccomp is not None and _seccomp.supported():
        with contextlib.suppress(_seccomp.SeccompError):  # the arguments as confine passes them: the key
            _seccomp.prepared(_seccomp.program(deny_connect=True, id_range=None, deny_shmem=True))


# ---- probing (the server's side) ----
def _syscall() -> Any:
    return libc().syscall


def abi_version() -> int:
    """Landlock's ABI version here, or 0 when the kernel has none (or it is disabled)."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        syscall = _syscall()
        version = int(
            syscall(ctypes.c_long(_SYS_CREATE_RULESET), None, ctypes.c_size_t(0), ctypes.c_uint32(1))
        )
    except (OSError, AttributeError):
        return 0
    return max(version, 0)


@dataclass(frozen=True)
class HostSupport:
    landlock_abi: int
    user_ns: bool  # a worker can get a network namespace of its own (and, not root, a user namespace)
    problems: tuple[str, ...] = field(default_factory=tuple)
    seccomp: bool = False  # a seccomp filter can be installed (no connect, templates' uid blocks)

    @property
    def complete(self) -> bool:
        return not self.problems


def probe() -> HostSupport:
    """What this host can enforce: Landlock's ABI (4 and up: TCP rules, 6: scopes) and user namespaces
    (checked by forking a child that creates one)."""
    abi = abi_version()
    problems = []
    if abi == 0:
        problems.append("Landlock is not available: workers can read and write every file the server can")
    elif abi < 4:
        problems.append(f"Landlock ABI {abi} has no network rules: workers can open TCP connections")
    elif abi < 6:
        problems.append(f"Landlock ABI {abi} has no scopes: workers can signal other processes of their uid")
    user_ns = _probe_namespaces()
    if not user_ns:
        problems.append("namespaces are not available: workers share the host's network (UDP is open)")
    filters = _seccomp is not None and _seccomp.probe()
    if not filters:
        problems.append(
            "seccomp filters are not available: workers can connect to Unix sockets, and no templates "
            "(loaded models kept for fast scale-out) are forked"
        )
    return HostSupport(abi, user_ns, tuple(problems), seccomp=filters)


def _probe_namespaces() -> bool:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            if os.geteuid() != 0:
                _new_user_ns()
            _new_net_ns()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


# ---- building a policy (the server's side) ----
def python_read_roots(data_dir: Path) -> tuple[str, ...]:
    """The running Python, its standard library and every directory on ``sys.path``, except any that holds
    ``data_dir`` (e.g. the current directory, when the data directory is inside it)."""
    candidates: list[str] = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    candidates += [entry for entry in sys.path if entry]
    import zeroscale

    candidates.append(str(Path(zeroscale.__file__).parent))
    return _outside(candidates, data_dir)


def _outside(paths: Iterable[str], data_dir: Path) -> tuple[str, ...]:
    data = Path(os.path.realpath(data_dir))
    out: list[str] = []
    for path in paths:
        real = Path(os.path.realpath(path))
        if not real.exists() or real == data or real in data.parents or str(real) in out:
            continue
        out.append(str(real))
    return tuple(out)


def inside(path: str, root: Path) -> bool:
    real, base = Path(os.path.realpath(path)), Path(os.path.realpath(root))
    return real == base or base in real.parents


# ---- applying it (the child's side) ----
class _RulesetAttr(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _NetPort(ctypes.Structure):
    _fields_ = [("allowed", ctypes.c_uint64), ("port", ctypes.c_uint64)]


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise SandboxError(f"{what}: {os.strerror(err)}")
    return result


def _write(path: str, data: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)


def _new_user_ns() -> None:
    """A user namespace with this process's uid and gid mapped to themselves (so files keep their owners)."""
    uid, gid = os.geteuid(), os.getegid()
    _check(libc().unshare(_CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{uid} {uid} 1")
    _write("/proc/self/gid_map", f"{gid} {gid} 1")


_PR_SET_PDEATHSIG = 1
_PR_SET_KEEPCAPS = 8
_PR_SET_DUMPABLE = 4
_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_RAISE = 47, 2
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _CAP_SETGID, _CAP_SETUID = 1, 2, 6, 7
_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


_CapDataPair = _CapData * 2  # made once: a ctypes array type made in a fresh fork costs it ~0.17 ms


def _become(uid: int, *, setuid: bool = False) -> None:
    """Switch a root process (or a template, which holds CAP_SETUID) to ``uid``/``uid`` with no
    supplementary groups, keeping only the file-access capabilities (also across exec, as ambient
    capabilities), and with ``setuid`` CAP_SETUID and CAP_SETGID as well (not inheritable); dumpable, so
    /proc/<pid> shows its uid."""
    lib = libc()
    _check(lib.prctl(_PR_SET_KEEPCAPS, 1, 0, 0, 0), "prctl(PR_SET_KEEPCAPS)")
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    files = (1 << _CAP_DAC_OVERRIDE) | (1 << _CAP_DAC_READ_SEARCH)
    keep = files | ((1 << _CAP_SETGID) | (1 << _CAP_SETUID) if setuid else 0)
    header = _CapHeader(_CAPABILITY_VERSION_3, 0)
    data = _CapDataPair(_CapData(keep, keep, files), _CapData(0, 0, 0))
    _check(lib.capset(ctypes.byref(header), data), "capset")
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        _check(lib.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_RAISE, cap, 0, 0), "prctl(PR_CAP_AMBIENT_RAISE)")
    _check(lib.prctl(_PR_SET_KEEPCAPS, 0, 0, 0, 0), "prctl(PR_SET_KEEPCAPS)")
    _check(lib.prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0), "prctl(PR_SET_DUMPABLE)")


def _new_net_ns() -> None:
    _check(libc().unshare(_CLONE_NEWNET), "unshare(CLONE_NEWNET)")


# A zygote's spare (root) makes the empty network namespace its worker will run in before it waits for its
# request: unshare(CLONE_NEWNET) costs ~1.4 ms in a fresh fork here, off the cold start's path that way. It
# keeps a descriptor of the namespace it left, so that a request that wants none (``--worker-outbound``, or
# no sandbox) goes back there; ``confine`` or ``settle_net_ns`` closes it before any of the model's code runs.
_early_net_ns: tuple[int, int] | None = None  # (the pid that made it, descriptor of the namespace it left)


def prepare_net_ns() -> None:
    """Move this process into a new, empty network namespace ahead of ``confine`` (root only: a server that
    is not root makes a user namespace first, at ``confine``). Does nothing where that fails."""
    global _early_net_ns
    if _early_net_ns is not None or os.geteuid() != 0:
        return
    try:
        left = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        _new_net_ns()
    except SandboxError:
        os.close(left)
        return
    _early_net_ns = (os.getpid(), left)


def settle_net_ns(wanted: bool) -> bool:
    """Whether this process is in the empty network namespace ``prepare_net_ns`` made; unless ``wanted``, it
    goes back to the namespace it left (SandboxError if it cannot). The descriptor is closed either way. In
    a process that made none (or a child of one), False."""
    global _early_net_ns
    early, _early_net_ns = _early_net_ns, None
    if early is None:
        return False
    pid, left = early
    try:
        if pid != os.getpid():
            return False
        if not wanted:
            _check(libc().setns(left, _CLONE_NEWNET), "setns(CLONE_NEWNET) back to the host's network")
        return wanted
    finally:
        os.close(left)


def _handled(policy: Policy, abi: int) -> tuple[int, int, int]:
    """What a ruleset for ``policy`` handles at this ABI: file-system rights, TCP rights, scopes."""
    fs = _FS_ABI1
    if abi >= 2:
        fs |= FS_REFER
    if abi >= 3:
        fs |= FS_TRUNCATE
    net = 0
    if abi >= 4:
        net = NET_BIND_TCP | (0 if policy.outbound else NET_CONNECT_TCP)
    scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0
    return fs, net, scoped


def _rules(policy: Policy, *, common_only: bool = False) -> list[tuple[str, int]]:
    """The policy's path rules (path, rights); ``common_only``: the part every worker of its server shares."""
    read = policy.read[: policy.common] if common_only else policy.read
    rules: list[tuple[str, int]] = [(p, _READ) for p in read]
    rules += [(p, FS_READ_FILE | FS_WRITE_FILE | FS_TRUNCATE) for p in policy.devices]
    rules += [(p, FS_MAKE_SOCK) for p in policy.sockets]
    if not common_only:
        rules += [(p, _WRITE) for p in policy.write]
    return rules


def _new_ruleset(handled: tuple[int, int, int], abi: int) -> int:
    attr = _RulesetAttr(*handled)
    size = ctypes.sizeof(_RulesetAttr) if abi >= 6 else 16
    return _check(
        _syscall()(
            ctypes.c_long(_SYS_CREATE_RULESET), ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0)
        ),
        "landlock_create_ruleset",
    )


# A zygote's spare builds the common part of its worker's Landlock ruleset before it waits: a ruleset takes
# a rule per path (~45 here, ~40 us each in a fresh fork), and most are the same for every worker of a server
# (the Python installation, the system's libraries, devices, the socket directory). The zygote notes that
# part from the requests it is given (``note_common``), the spares it forks next add it
# (``prepare_landlock``), and ``confine`` adds only the rest, or builds its ruleset anew where the request's
# handles other rights or lacks one of those rules: the worker's ruleset holds exactly the rules it would
# have had. (A path that was missing when the spare prepared is tried again by ``confine``; one replaced
# while the spare waited, a new directory at the same path, keeps the rule on the one the spare opened.)
_common: Policy | None = None  # what the zygote noted
_early_ruleset: tuple[int, int, tuple[int, int, int], frozenset[tuple[str, int]]] | None = None
# (the pid that made it, its descriptor, what it handles, the rules added)


def note_common(policy: dict[str, Any]) -> None:
    """In a zygote, for each request it is given: the rules its workers share, for its next spares."""
    global _common
    noted = Policy.from_dict(policy)
    _common = noted if noted.landlock and not noted.layer_only and noted.common else None


def prepare_landlock(abi: int) -> None:
    """In a spare, before it waits: a ruleset with the common rules the zygote noted (nothing if none)."""
    global _early_ruleset
    if _common is None or _early_ruleset is not None or abi <= 0:
        return
    handled = _handled(_common, abi)
    fd = _new_ruleset(handled, abi)
    added = frozenset(r for r in _rules(_common, common_only=True) if _add_path(fd, r[0], r[1] & handled[0]))
    _early_ruleset = (os.getpid(), fd, handled, added)


def discard_prepared() -> None:
    """Close a ruleset ``prepare_landlock`` made and no ``confine`` took (a request without a sandbox)."""
    global _early_ruleset
    early, _early_ruleset = _early_ruleset, None
    if early is not None:
        os.close(early[1])


def _landlock(policy: Policy, abi: int) -> None:
    global _early_ruleset
    handled = _handled(policy, abi)
    fs, net, _ = handled
    rules = _rules(policy)
    early, _early_ruleset = _early_ruleset, None
    if early is not None and early[0] == os.getpid() and early[2] == handled and early[3] <= set(rules):
        fd, done = early[1], early[3]
    else:
        if early is not None:
            os.close(early[1])
        fd, done = _new_ruleset(handled, abi), frozenset()
    try:
        for path, rights in rules:
            if (path, rights) not in done:
                _add_path(fd, path, rights & fs)
        for port in policy.bind_ports:
            if net:
                rule = _NetPort(NET_BIND_TCP, port)
                _check(
                    _syscall()(ctypes.c_long(_SYS_ADD_RULE), fd, _RULE_NET_PORT, ctypes.byref(rule), 0),
                    f"landlock_add_rule(port {port})",
                )
        _check(libc().prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
        _check(_syscall()(ctypes.c_long(_SYS_RESTRICT_SELF), fd, 0), "landlock_restrict_self")
    finally:
        os.close(fd)


def _add_path(ruleset: int, path: str, rights: int) -> bool:
    """One path rule (False: the path does not exist, nothing to allow)."""
    try:
        pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return False  # e.g. /lib32 on this host
    try:
        if not stat.S_ISDIR(os.fstat(pfd).st_mode):
            rights &= _FILE_RIGHTS
        rule = _PathBeneath(rights, pfd)
        _check(
            _syscall()(ctypes.c_long(_SYS_ADD_RULE), ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0),
            f"landlock_add_rule({path})",
        )
    finally:
        os.close(pfd)
    return True


def confine(policy: Policy, abi: int | None = None) -> None:
    """Confine this process (single-threaded: after fork, before exec or any model code). Raises
    SandboxError when a part the policy asks for cannot be applied."""
    in_net_ns = settle_net_ns(policy.net_ns and not policy.layer_only)  # a spare's, made before it waited
    if not policy.layer_only:
        if os.geteuid() != 0 and (policy.nproc > 0 or policy.net_ns):
            # Not root: a user namespace of its own makes RLIMIT_NPROC count this worker's processes only,
            # and lets it make a network namespace. (The kernel never applies RLIMIT_NPROC to root.)
            try:
                _new_user_ns()
            except OSError as exc:
                raise SandboxError(f"user namespace: {exc}") from exc
        if policy.net_ns and not in_net_ns:
            _new_net_ns()
        if policy.nproc > 0 and os.geteuid() != 0:
            resource.setrlimit(resource.RLIMIT_NPROC, (policy.nproc, policy.nproc))
        if policy.nofile > 0:
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            limit = policy.nofile if hard == resource.RLIM_INFINITY else min(policy.nofile, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
        if policy.fsize > 0:  # a write past it fails with EFBIG (Python ignores SIGXFSZ)
            resource.setrlimit(resource.RLIMIT_FSIZE, (policy.fsize, policy.fsize))
    if policy.uid and os.geteuid() != policy.uid:
        # A root server's worker or template; or a template's replica (the template holds CAP_SETUID).
        parent = os.getppid()
        try:
            _become(policy.uid, setuid=policy.uid_block is not None)
        except OSError as exc:
            raise SandboxError(f"cannot become uid {policy.uid}: {exc}") from exc
        # A change of uid clears the parent-death signal: ask again, then check the parent did not die.
        libc().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            raise SandboxError("the parent exited while the worker was confined")
        if policy.nproc > 0:
            resource.setrlimit(resource.RLIMIT_NPROC, (policy.nproc, policy.nproc))
    if policy.landlock:
        version = abi_version() if abi is None else abi
        if version > 0:
            _landlock(policy, version)
    discard_prepared()  # a spare's ruleset this policy did not take: closed before any of the model's code
    if policy.deny_connect or policy.deny_shmem or policy.uid_block is not None:
        if _seccomp is None:
            raise SandboxError("no seccomp filter: zeroscale.workers.seccomp cannot be imported")
        try:
            code = _seccomp.program(
                deny_connect=policy.deny_connect, id_range=policy.uid_block, deny_shmem=policy.deny_shmem
            )
            _seccomp.install(code, libc())
        except _seccomp.SeccompError as exc:
            raise SandboxError(str(exc)) from exc
    if policy.seccomp_filter:
        _install_filter(bytes.fromhex(policy.seccomp_filter))


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _install_filter(code: bytes) -> None:
    """``seccomp.install`` for the exec shim (which cannot import the package): no_new_privs, then the
    filter (PR_SET_SECCOMP, SECCOMP_MODE_FILTER)."""
    _check(libc().prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    buf = ctypes.create_string_buffer(code, len(code))
    prog = _SockFprog(len(code) // 8, ctypes.cast(buf, ctypes.c_void_p))
    _check(libc().prctl(22, 2, ctypes.byref(prog), 0, 0), "prctl(PR_SET_SECCOMP)")


def encode(policy: Policy) -> str:
    return json.dumps(policy.to_dict())


def decode(text: str) -> Policy:
    return Policy.from_dict(json.loads(text))


def close_descriptors(keep: int = -1) -> None:
    """Close every open descriptor but the standard streams and ``keep``, before a process runs a model's
    code or forks children that will: the event loop's process spawn leaves copies of the standard streams
    open (a model could write to its zygote's log past every limit on its own output), and the server
    passes on whatever it was started with. Read from /proc, whatever the limit was when they opened."""
    for fd in [int(name) for name in os.listdir("/proc/self/fd")]:
        if fd > 2 and fd != keep:
            with contextlib.suppress(OSError):  # the listing's own, closed already
                os.close(fd)


UNCONFINED = "none"  # exec_main's policy argument for a server started without a sandbox


def environment_file(env: Mapping[str, str]) -> int:
    """A memory file holding ``env`` as JSON, at its start: ``exec_main``'s standard input. The caller
    closes it once the process is started."""
    fd = os.memfd_create("zeroscale-environment", os.MFD_CLOEXEC)
    with open(fd, "wb", closefd=False) as out:
        out.write(json.dumps(dict(env)).encode())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _read_environment() -> dict[str, str]:
    """The environment ``environment_file`` wrote, from standard input, which becomes /dev/null."""
    with open(0, "rb", closefd=False) as given:
        env: dict[str, str] = json.loads(given.read())
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    return env


def exec_main(argv: list[str]) -> None:
    """``python -I -S sandbox.py <parent pid or 0> <policy JSON or "none"> <command...>``, its standard
    input the command's environment (``environment_file``): ask for SIGKILL when the parent dies (checking
    it did not die already), confine this process, then become the command with that environment (the
    image's: never this process's own, in which a loader variable such as LD_PRELOAD would run before
    confinement, and never in its arguments, which any local user reads). How a bring-your-own image's
    server is started (with only the standard library on the path)."""
    libc().prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG, SIGKILL
    parent = int(argv[1])
    if parent and os.getppid() != parent:
        os._exit(70)
    close_descriptors()  # nothing past the standard streams reaches the image's server
    env = _read_environment()
    if argv[2] != UNCONFINED:
        try:
            confine(decode(argv[2]))
        except (SandboxError, OSError) as exc:
            sys.stderr.write(f"zeroscale: cannot confine the image's server: {exc}\n")
            os._exit(71)
    try:
        os.execvpe(argv[3], argv[3:], env)
    except OSError as exc:
        sys.stderr.write(f"zeroscale: cannot run {argv[3]!r}: {exc.strerror}\n")
        os._exit(127)


if __name__ == "__main__":
    exec_main(sys.argv)
