"""The environment a zygote is started with: an allowlist of the server's, never all of it.

Whatever a process is exec'd with stays readable to it and to every process forked from it for their whole
lives: the kernel copies the strings onto the new stack, ``/proc/self/environ`` shows that area, and
clearing ``os.environ`` after a fork changes only the pointer array, not the strings. A zygote's children
run the models' code, so a zygote gets only what it needs to run the server's Python and import the
runtimes (the search path, home, locale, temporary directory, the dynamic loader's and the accelerators'
settings), and ``THREAD_ENV`` over them: no credential of the server's (``ZEROSCALE_SECRET_ACCESS_KEY``,
``AWS_*``, ``ZEROSCALE_DATABASE_URL``, ...) is ever in a worker's memory. A variable that is not listed here
does not reach a zygote; a model that needs one sets it in its own ``Environment``."""

from __future__ import annotations

from collections.abc import Mapping

from zeroscale import childenv
from zeroscale.workers.forkserver import THREAD_ENV

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Taken from the server's environment when set there, besides ``childenv.BASE``.
ZYGOTE_ENV = frozenset(
    {
        # tests and benchmarks run servers from another checkout's sources
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONPYCACHEPREFIX",
        "PYTHONUNBUFFERED",
        "PYTHONIOENCODING",
        "PYTHONUTF8",
        "PYTHONWARNINGS",
        "PYTHONFAULTHANDLER",
        "LD_LIBRARY_PATH",
        "CUDA_VISIBLE_DEVICES",
        "NVIDIA_VISIBLE_DEVICES",
    }
)


def zygote_environment(server_env: Mapping[str, str]) -> dict[str, str]:
    """What of ``server_env`` (the server's ``os.environ``) a zygote is started with, ``THREAD_ENV`` over
    it, and a default ``PATH`` where the server has none."""
    env = childenv.allowed(server_env, ZYGOTE_ENV)
    env.setdefault("PATH", DEFAULT_PATH)
    env.update(THREAD_ENV)
    return env
