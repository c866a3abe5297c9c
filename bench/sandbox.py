"""What confining a worker costs its cold start: fork a process that imported numpy and scikit-learn (as a
zygote did), confine the child with the policy a worker gets, and time each part in the child.

    .venv/bin/python -m bench.sandbox [--forks N] [--images N]

Parts: Landlock (ruleset, rules for every read root, restrict), the network namespace, the worker's own
uid (setresuid, capabilities, RLIMIT_NPROC; as root), and all of them together; plus a bare fork and exit
for scale. Forks are spaced ``--gap`` seconds apart, as cold starts are (some kernel work, e.g. an RCU grace
period, is only cheap when it follows another within milliseconds). Prints a table (milliseconds, median
and max).

With bubblewrap, also what a bring-your-own image's start costs (``--images`` runs of each, 0 to skip):
bwrap running the confining exec shim on ``true``, over the host's file system (as with outbound access)
or a view of only what the policy grants, with and without the image's seccomp filter (TCP only).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import sklearn.ensemble  # noqa: F401 - a zygote's size

from zeroscale.workers import process, sandbox
from zeroscale.workers.confinement import Confinement, SandboxSettings
from zeroscale.workers.sandbox import Policy


def _timed_fork(policy: Policy | None, gap_s: float) -> tuple[float, float]:
    """(ms in the child to confine, ms for the parent from fork to the child's exit)."""
    time.sleep(gap_s)
    r, w = os.pipe()
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        t = time.perf_counter()
        if policy is not None:
            sandbox.confine(policy)
        os.write(w, repr(time.perf_counter() - t).encode())
        os._exit(0)
    os.close(w)
    child = float(os.read(r, 100))
    os.close(r)
    os.waitpid(pid, 0)
    return child * 1000, (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--forks", type=int, default=30)
    parser.add_argument("--gap", type=float, default=0.1, help="seconds between forks")
    parser.add_argument("--images", type=int, default=30, help="image starts per case (0: none)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="zs-sandbox-bench-"))
    (root / "model").mkdir()
    conf = Confinement(SandboxSettings(root), root / "workers")
    print("\n".join(conf.announce()))
    seq = iter(range(1_000_000))

    def policy(**parts: bool) -> Callable[[], Policy]:
        def make() -> Policy:
            i = next(seq)
            p = conf.policy(
                model_dir=str(root / "model"),
                env={},
                scratch=conf.scratch(f"w{i}"),
                uid=conf.uid() if parts.get("uid", True) else 0,
            )
            return dataclasses.replace(
                p,
                net_ns=p.net_ns and parts.get("netns", True),
                landlock=parts.get("landlock", True),
                deny_connect=p.deny_connect and parts.get("seccomp", True),
            )

        return make

    cases: dict[str, Callable[[], Policy | None]] = {
        "bare fork (no confinement)": lambda: None,
        "Landlock": policy(netns=False, uid=False, seccomp=False),
        "network namespace": policy(landlock=False, uid=False, seccomp=False),
        "own uid": policy(landlock=False, netns=False, seccomp=False),
        "seccomp filter": policy(landlock=False, netns=False, uid=False),
        "all of it (a worker's)": policy(),
    }
    print(f"{'part':28} {'child ms p50':>12} {'max':>8} {'fork..exit p50':>15}")
    for name, make in cases.items():
        child, total = zip(*(_timed_fork(make(), args.gap) for _ in range(args.forks)), strict=True)
        p50, worst, whole = statistics.median(child), max(child), statistics.median(total)
        print(f"{name:28} {p50:12.2f} {worst:8.2f} {whole:15.2f}")
    bwrap = shutil.which("bwrap")
    if bwrap and args.images:
        _images(conf, root, bwrap, args.images, args.gap)
    conf.close()
    shutil.rmtree(root, ignore_errors=True)


def _images(conf: Confinement, root: Path, bwrap: str, runs: int, gap_s: float) -> None:
    image = root / "images" / "img" / "1" / "sha"
    image.mkdir(parents=True)
    model = str(root / "model")
    policy = conf.image_policy(model, str(image), {}, conf.scratch("image"), conf.uid())
    no_filter = dataclasses.replace(policy, seccomp_filter="")
    host = process.bwrap_args(bwrap, model, str(image))
    view = process.confined_view(bwrap, policy, model, str(image))
    cases = {
        "host view, no filter": (host, no_filter),
        "host view + filter": (host, policy),
        "confined view, no filter": (view, no_filter),
        "confined view + filter": (view, policy),
    }
    filtered = bool(policy.seccomp_filter)
    print(f"\nimage start (bwrap + exec shim + true), {runs} runs; seccomp filter: {filtered}")
    print(f"{'case':28} {'ms p50':>12} {'max':>8}")
    argvs = {
        name: [*args, "--", sys.executable, "-I", "-S", sandbox.__file__, "0", sandbox.encode(pol), "true"]
        for name, (args, pol) in cases.items()
    }
    took: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):  # the cases take turns, so a busy moment of the machine falls on each alike
        for name, argv in argvs.items():
            time.sleep(gap_s)
            start = time.perf_counter()
            subprocess.run(argv, check=True, cwd=image)
            took[name].append((time.perf_counter() - start) * 1000)
    for name, times in took.items():
        print(f"{name:28} {statistics.median(times):12.2f} {max(times):8.2f}")


if __name__ == "__main__":
    main()
