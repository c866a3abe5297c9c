"""Scale-out from a template: a loaded copy of the model forks further workers, so they skip the load."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import psutil

from zeroscale.testing import ServerProcess, deploy, wait_for

IDLE = [{"Key": "zeroscale:idle-timeout-s", "Value": "3"}]


def tree(server: ServerProcess) -> list[psutil.Process]:
    assert server.proc is not None
    return psutil.Process(server.proc.pid).children(recursive=True)


def templates(server: ServerProcess) -> list[psutil.Process]:
    """Template processes: children of a zygote that have children of their own (the replicas)."""
    found = []
    for proc in tree(server):
        try:
            if "zeroscale.workers.forkserver" in " ".join(proc.parent().cmdline()) and proc.children():
                found.append(proc)
        except psutil.NoSuchProcess:
            continue
    return found


def test_scale_out_forks_replicas_of_a_loaded_model_and_scales_back_to_zero(
    server: ServerProcess, sm: Any, smr: Any, sklearn_model: Any
) -> None:
    desc = deploy(sm, "templated", sklearn_model.url, max_concurrency=3, tags=IDLE)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    rows = sklearn_model.X[:50]
    want = sklearn_model.expected(rows)
    body = sklearn_model.json_body(rows)
    # The first worker comes from the zygote; the template loads the model beside it.
    assert (
        json.loads(
            smr.invoke_endpoint(EndpointName="templated", Body=body, ContentType="application/json")[
                "Body"
            ].read()
        )
        == want
    )
    logs = server.data_dir / "logs" / "templated" / "AllTraffic"
    wait_for(lambda: any(logs.glob("template-*.log")), timeout_s=20)
    time.sleep(1.0)  # it loads this small model in well under a second, in the background

    answers: list[list[int]] = []
    errors: list[BaseException] = []

    def hammer() -> None:
        client = server.client("sagemaker-runtime")
        try:
            for _ in range(15):
                resp = client.invoke_endpoint(
                    EndpointName="templated", Body=body, ContentType="application/json"
                )
                answers.append(json.loads(resp["Body"].read()))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # The replicas outlive the load by the idle timeout (3 s): they are the template's children.
    replicas = max((len(t.children()) for t in templates(server)), default=0)
    assert not errors, errors
    assert answers and all(a == want for a in answers)  # replicas answer exactly like the original
    assert replicas >= 1, "scale-out did not fork from the template"
    assert server.workers("templated") <= 3

    # Back to zero: no worker, and no template holding the model either.
    wait_for(lambda: server.workers("templated") == 0, timeout_s=20)
    wait_for(
        lambda: (
            not templates(server)
            and not any("template" in " ".join(p.cmdline()) for p in tree(server) if p.is_running())
        ),
        timeout_s=10,
    )
    assert smr.invoke_endpoint(EndpointName="templated", Body=body, ContentType="application/json")
