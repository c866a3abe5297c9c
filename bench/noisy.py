"""A noisy neighbour: what one endpoint's worker spinning on every core costs another endpoint's requests,
with each worker in a cpu cgroup weighted by its MemorySizeInMB (the default where the host has cgroup v1's
cpu controller) and without (``ZEROSCALE_WORKER_CGROUPS=false``).

    .venv/bin/python -m bench.noisy [--neighbours 3] [--threads 8] [--quiet-mb 3072] [--seconds 4]

Each server runs, each with one warm worker:
- ``quiet`` (``--quiet-mb``): the reference RandomForest, driven by one closed-loop client
  (``bench/loadgen.py``, pre-signed requests), whose p50 and p99 are the figures;
- ``--neighbours`` endpoints ``noisy-N`` of 1024 MB: a model whose invocation spins ``--threads`` threads
  for the window (SHA-256 over a 1 MB buffer, which releases the GIL: every thread is runnable at once).

Per round: ``quiet`` alone, then ``quiet`` while every neighbour spins. The two servers alternate round by
round. Prints, per server, the medians over the rounds and ``quiet``'s slowdown (p50 beside the spinners /
p50 alone). With the weights, each worker's group gets the cores in proportion to its MemorySizeInMB,
whatever its number of threads: 3072 against three times 1024 is half of two cores, the one core the
RandomForest's one thread can use. Without them, the kernel shares the cores per thread, or, where
``kernel.sched_autogroup_enabled`` is 1 (this machine), per session: each worker's session is a group of
its own, of equal weight, so the quiet worker gets a quarter of them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
from pathlib import Path

from bench import throughput as tp
from bench.common import ROW, Models, build_models, deploy
from zeroscale.testing import ServerProcess, make_tar

NOISY_INFERENCE = """
import hashlib, json, threading, time


def model_fn(model_dir):
    return None


def transform_fn(model, body, content_type, accept):
    ask = json.loads(body)
    until = time.monotonic() + float(ask["seconds"])
    block = b"x" * (1 << 20)

    def spin():
        while time.monotonic() < until:
            hashlib.sha256(block).digest()

    threads = [threading.Thread(target=spin) for _ in range(int(ask["threads"]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return json.dumps({"spun": len(threads)}), "application/json"
"""


class Side:
    def __init__(
        self,
        name: str,
        root: Path,
        env: dict[str, str],
        models: Models,
        noisy: Path,
        args: argparse.Namespace,
    ) -> None:
        self.name = name
        self.server = ServerProcess(root / name.split()[0], env=env).start()
        sm = self.server.client("sagemaker")
        rf = f"file://{models.rf}"
        deploy(sm, "quiet", rf, memory_mb=args.quiet_mb, max_concurrency=1, provisioned=1)
        self.neighbours = [f"noisy-{n}" for n in range(args.neighbours)]
        for name in self.neighbours:
            deploy(sm, name, f"file://{noisy}", max_concurrency=1, provisioned=1)
        self.request = tp._through_request(self.server, "quiet", ROW)
        self.alone: list[tuple[float, float]] = []
        self.beside: list[tuple[float, float]] = []

    def round(self, tmp: Path, threads: int, seconds: float) -> None:
        target = [f"tcp:127.0.0.1:{self.server.port}"]
        out = tp._loadgen(target, self.request, 1, seconds, tmp)
        self.alone.append((out["p50_s"], out["p99_s"]))
        ask = json.dumps({"threads": threads, "seconds": seconds + 1.5}).encode()

        def spin(name: str) -> None:
            rt = self.server.client("sagemaker-runtime", read_timeout=seconds + 60)
            rt.invoke_endpoint(EndpointName=name, Body=ask, ContentType="application/json")

        spinners = [threading.Thread(target=spin, args=(name,)) for name in self.neighbours]
        for t in spinners:
            t.start()
        out = tp._loadgen(target, self.request, 1, seconds, tmp)  # its 0.5 s warm-up: the spin under way
        for t in spinners:
            t.join()
        self.beside.append((out["p50_s"], out["p99_s"]))

    def figures(self) -> dict[str, float]:
        """Medians over the rounds, in ms: quiet's p50 and p99 alone and beside the spinners."""
        med = statistics.median
        return {
            "alone_p50_ms": med(p for p, _ in self.alone) * 1e3,
            "alone_p99_ms": med(p for _, p in self.alone) * 1e3,
            "beside_p50_ms": med(p for p, _ in self.beside) * 1e3,
            "beside_p99_ms": med(p for _, p in self.beside) * 1e3,
        }

    def report(self) -> str:
        f = self.figures()
        keys = ("alone_p50_ms", "alone_p99_ms", "beside_p50_ms", "beside_p99_ms")
        a50, a99, b50, b99 = (f[k] for k in keys)
        return (
            f"{self.name:22} quiet alone p50 {a50:6.2f} ms p99 {a99:6.2f} ms | beside the spinner "
            f"p50 {b50:7.2f} ms p99 {b99:7.2f} ms | slowdown p50 x{b50 / a50:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--neighbours", type=int, default=3, help="noisy endpoints of 1024 MB")
    parser.add_argument("--threads", type=int, default=8, help="each noisy worker's spinning threads")
    parser.add_argument("--quiet-mb", type=int, default=3072, help="the quiet endpoint's MemorySizeInMB")
    parser.add_argument("--seconds", type=float, default=4.0, help="each measured window")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, help="write the figures as JSON here too")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="zeroscale-bench-noisy-"))
    models = build_models(root)
    noisy = make_tar(root / "noisy.tar.gz", {"code/inference.py": NOISY_INFERENCE.encode()})
    sides = [
        Side("weighted (cgroups)", root, {}, models, noisy, args),
        Side("unweighted", root, {"ZEROSCALE_WORKER_CGROUPS": "false"}, models, noisy, args),
    ]
    tmp = root / "loadgen"
    tmp.mkdir()
    try:
        for _ in range(args.rounds):
            for side in sides:
                side.round(tmp, args.threads, args.seconds)
        for side in sides:
            print(side.report())
        if args.out:
            figures = {"weighted": sides[0].figures(), "unweighted": sides[1].figures()}
            args.out.write_text(json.dumps({**figures, "args": vars(args) | {"out": str(args.out)}}))
        print(
            f"(quiet {args.quiet_mb} MB beside {args.neighbours} x 1024 MB, {args.threads} spinning threads "
            f"each; {args.rounds} rounds of {args.seconds:g} s, medians)"
        )
    finally:
        for side in sides:
            side.server.stop()


if __name__ == "__main__":
    main()
