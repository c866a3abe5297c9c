"""A zygote's spare makes its worker's empty network namespace before it waits (``sandbox.prepare_net_ns``):
the request's confinement keeps it (no second namespace) or, for a request that wants the host's network,
goes back to the namespace it left; no descriptor of the host's namespace is left for the model's code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a spare makes its namespace early only as root")

PROBE = textwrap.dedent(
    """
    import json, os, sys
    from zeroscale.workers import sandbox

    def netns():
        return os.readlink("/proc/self/ns/net")

    def netns_fds():
        found = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                if os.readlink(f"/proc/self/fd/{fd}").startswith("net:["):
                    found.append(fd)
            except OSError:
                pass
        return found

    def child(case):
        out = {"host": netns()}
        sandbox.prepare_net_ns()
        out["early"] = netns()
        out["fds_early"] = len(netns_fds())
        if case == "confine-wanted":
            sandbox.confine(sandbox.Policy(net_ns=True, nproc=0, nofile=0, landlock=False))
        elif case == "confine-outbound":
            sandbox.confine(sandbox.Policy(net_ns=False, outbound=True, nproc=0, nofile=0, landlock=False))
        elif case == "unconfined":
            sandbox.settle_net_ns(False)
        out["after"] = netns()
        out["fds_after"] = len(netns_fds())
        return out

    results = {}
    for case in sys.argv[1:]:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                os.write(w, json.dumps(child(case)).encode())
            finally:
                os._exit(0)
        os.close(w)
        results[case] = json.loads(os.read(r, 65536))
        os.waitpid(pid, 0)
    print(json.dumps(results))
    """
)


def test_the_early_namespace_is_kept_or_left_and_no_descriptor_of_the_hosts_remains() -> None:
    cases = ["confine-wanted", "confine-outbound", "unconfined"]
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *cases], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout)
    for case in cases:
        r = results[case]
        assert r["early"] != r["host"], case  # the spare's own, empty namespace
        assert r["fds_early"] == 1, case  # the namespace it left, held while it waits
        assert r["fds_after"] == 0, case  # closed before any of the model's code could use it
    # A sandboxed worker stays in the namespace made early: confine made no second one.
    assert results["confine-wanted"]["after"] == results["confine-wanted"]["early"]
    # --worker-outbound, or no sandbox at all: back in the host's network.
    assert results["confine-outbound"]["after"] == results["confine-outbound"]["host"]
    assert results["unconfined"]["after"] == results["unconfined"]["host"]
