"""Malformed requests generated from botocore's model for every operation zeroscale serves over JSON 1.1
(SageMaker, CloudWatch Logs, Application Auto Scaling): a well-formed skeleton of each input shape, then
every member at every depth given values of the wrong type, each required member dropped, unknown members,
and bodies cut short or replaced by junk bytes. A few thousand requests: none is a 5xx, every refusal is
``{"__type", "message"}``, none hangs, and the server serves normally afterwards."""

from __future__ import annotations

import http.client
import itertools
import json
import random
from collections.abc import Iterator
from typing import Any

import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from zeroscale.api import served
from zeroscale.testing import ACCESS_KEY, REGION, SECRET_KEY, ServerProcess

JSON_11 = "application/x-amz-json-1.1"
SERVICES = {
    "sagemaker": ("SageMaker", served.SAGEMAKER),
    "logs": ("Logs_20140328", served.LOGS),
    "application-autoscaling": ("AnyScaleFrontendService", served.APPLICATION_AUTOSCALING),
}
WRONG: list[Any] = [
    None,
    True,
    -1,
    1.5,
    2**70,
    "x",
    "",
    "\u0000\ud7ff",
    "a" * 70_000,
    [],
    {},
    [[[[]]]],
    {"a": {"b": [1, "2", None]}},
]
PER_OPERATION = 60


def skeleton(shape: Any, depth: int = 0) -> Any:
    """A plausible value of ``shape``: required members filled in, short lists and maps."""
    kind = shape.type_name
    if kind == "structure":
        required = shape.metadata.get("required", [])
        return {name: skeleton(shape.members[name], depth + 1) for name in required if depth < 6}
    if kind == "list":
        return [skeleton(shape.member, depth + 1)] if depth < 6 else []
    if kind == "map":
        return {"k": skeleton(shape.value, depth + 1)} if depth < 6 else {}
    if kind == "string":
        enum = shape.metadata.get("enum")
        return enum[0] if enum else "zs-fuzz"
    if kind in ("integer", "long"):
        return 1
    if kind in ("float", "double"):
        return 1.0
    if kind == "boolean":
        return True
    if kind == "timestamp":
        return 1_700_000_000
    if kind == "blob":
        return "eA=="
    return None


def member_paths(shape: Any, prefix: tuple[Any, ...] = (), depth: int = 0) -> Iterator[tuple[Any, ...]]:
    """Paths (keys and list indexes) to every member botocore knows, a few levels deep."""
    if depth > 4:
        return
    if shape.type_name == "structure":
        for name, member in shape.members.items():
            yield (*prefix, name)
            yield from member_paths(member, (*prefix, name), depth + 1)
    elif shape.type_name == "list":
        yield from member_paths(shape.member, (*prefix, 0), depth + 1)
    elif shape.type_name == "map":
        yield from member_paths(shape.value, (*prefix, "k"), depth + 1)


def place(body: Any, path: tuple[Any, ...], value: Any) -> Any:
    """``body`` with ``value`` at ``path``, creating the containers on the way."""
    root = json.loads(json.dumps(body))
    node = root
    for key, nxt in itertools.pairwise(path):
        want: Any = [] if isinstance(nxt, int) else {}
        if isinstance(key, int):
            while len(node) <= key:
                node.append(want)
            if not isinstance(node[key], type(want)):
                node[key] = want
        elif not isinstance(node.get(key), type(want)):
            node[key] = want
        node = node[key]
    last = path[-1]
    if isinstance(last, int):
        while len(node) <= last:
            node.append(None)
    node[last] = value
    return root


def bodies(shape: Any, rng: random.Random) -> Iterator[bytes]:
    base = skeleton(shape) if shape is not None else {}
    yield json.dumps(base).encode()
    paths = list(member_paths(shape)) if shape is not None else []
    rng.shuffle(paths)
    # every member once with a wrong value, then more wrong values for random members
    chosen = [(path, rng.choice(WRONG)) for path in paths]
    while paths and len(chosen) < PER_OPERATION:
        chosen.append((rng.choice(paths), rng.choice(WRONG)))
    for path, value in chosen[: max(PER_OPERATION, len(paths))]:
        yield json.dumps(place(base, path, value)).encode()
    for name in list(base)[:3]:  # each required member dropped
        yield json.dumps({k: v for k, v in base.items() if k != name}).encode()
    yield json.dumps({**base, "NotAMember": 1}).encode()
    text = json.dumps(base).encode()
    yield text[: max(1, len(text) // 2)]  # cut short
    yield bytes(rng.randrange(256) for _ in range(64))  # junk
    yield b'{"a": "\xff\xfe"}'  # invalid UTF-8
    yield b"[" * 100 + b"]" * 100
    yield text.replace(b"{", b"[", 1)


class Poster:
    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)

    def post(self, service: str, target: str, body: bytes) -> tuple[int, bytes]:
        headers = {"Content-Type": JSON_11, "X-Amz-Target": target}
        request = AWSRequest(method="POST", url=f"{self.server.url}/", data=body, headers=headers)
        SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), service, REGION).add_auth(request)
        for attempt in (0, 1):
            try:
                self.conn.request("POST", "/", body=body, headers=dict(request.headers.items()))
                resp = self.conn.getresponse()
                return resp.status, resp.read()
            except (ConnectionError, http.client.HTTPException):  # the server closed a keep-alive connection
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=20)
                if attempt:
                    raise
        raise AssertionError("unreachable")


def test_generated_malformed_requests_for_every_served_operation(server: ServerProcess) -> None:
    session = botocore.session.get_session()
    rng = random.Random(14)
    poster = Poster(server)
    failures: list[tuple[str, str, int, bytes]] = []
    count = 0
    for service, (prefix, table) in SERVICES.items():
        model = session.get_service_model(service)
        for operation in sorted(table):
            shape = model.operation_model(operation).input_shape
            for body in bodies(shape, rng):
                status, answer = poster.post(service, f"{prefix}.{operation}", body)
                count += 1
                if status >= 500:
                    failures.append((operation, body[:80].decode("latin-1"), status, answer[:200]))
                elif status != 200:
                    try:
                        doc = json.loads(answer)
                        ok = set(doc) == {"__type", "message"} and 400 <= status < 500
                    except ValueError:
                        ok = False
                    if not ok:
                        failures.append((operation, body[:80].decode("latin-1"), status, answer[:200]))
    print(f"{count} requests")
    assert count > 2000, count
    assert failures == [], "\n".join(map(str, failures[:20]))
    sm = server.client("sagemaker")
    assert "Endpoints" in sm.list_endpoints()  # still serving
