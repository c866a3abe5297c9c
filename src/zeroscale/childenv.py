"""What of the server's environment a child process it starts may see: never all of it.

The server's environment holds its credentials (``ZEROSCALE_SECRET_ACCESS_KEY``, ``AWS_*``, a database
URL's password). A child gets the variables it needs to run, named here, and each kind of child
(``workers/environment.py``'s zygotes, ``artifacts/pyenv.py``'s pip) adds its own."""

from __future__ import annotations

from collections.abc import Mapping

# The process's own: where programs and home are, who it runs as, locale, time zone, temporary files.
BASE = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR"})
BASE_PREFIXES = ("LC_",)


def allowed(
    server_env: Mapping[str, str], names: frozenset[str], prefixes: tuple[str, ...] = ()
) -> dict[str, str]:
    """The variables of ``server_env`` in ``BASE`` or ``names``, or starting with ``BASE_PREFIXES`` or
    ``prefixes``."""
    starts = BASE_PREFIXES + prefixes
    return {k: v for k, v in server_env.items() if k in BASE or k in names or k.startswith(starts)}
