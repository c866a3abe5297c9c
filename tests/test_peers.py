"""Calls between front ends: what authenticates one, and what the route answers to calls that are not
authentic or not well formed (as another process on the network could send them)."""

from __future__ import annotations

import asyncio
import http.server
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from zeroscale import peers
from zeroscale.api.peer import PeerRoute
from zeroscale.iam.secrets import SecretBox
from zeroscale.images.registry import MB, ImageRegistry
from zeroscale.images.sharing import FILES, SharedImages
from zeroscale.images.tags import TagLedger
from zeroscale.logs.sources import LocalLogs
from zeroscale.logs.store import LogStore
from zeroscale.store import Store

KEY = SecretBox(b"k" * 32).derive(peers.KEY_LABEL)
NOW = 1_800_000_000.0


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed): a connection to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[str]:
    """A front end's peer route over real HTTP (the standard library's server in a thread), holding one
    log stream; its URL."""
    store = LogStore(tmp_path)
    store.remember("Shared")
    store.append("Shared", "AllTraffic/0001-b", 1000, ["from b"])
    route = PeerRoute(KEY, LocalLogs(store, "fe-b").ops, ident="fe-b")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            headers = [(k.lower().encode(), v.encode()) for k, v in self.headers.items()]
            status, answer = asyncio.run(route.handle(self.headers[peers.HEADER], body, headers))
            self.send_response(status)
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_signature_holds_for_its_body_key_and_time_only() -> None:
    body = b'{"op": "logs.groups", "args": {}}'
    header = peers.sign(KEY, "fe-a", body, now=NOW)
    assert peers.verify(KEY, header, body, now=NOW + 299) == "fe-a"
    other_key = SecretBox(b"j" * 32).derive(peers.KEY_LABEL)
    assert other_key != KEY and SecretBox(b"k" * 32).derive(b"other use") != KEY
    for key, sent, at, why in [
        (KEY, body + b" ", NOW, "does not match"),
        (other_key, body, NOW, "does not match"),
        (KEY, body, NOW + 301, "clock"),
        (KEY, body, NOW - 301, "clock"),
    ]:
        with pytest.raises(peers.PeerRefused, match=why):
            peers.verify(key, header, sent, now=at)
    ident, ts, seq, mac = header.split(" ")
    boot, _, n = seq.partition(".")
    for forged in [
        "",
        "fe-a",
        f"fe-b {ts} {seq} {mac}",  # another front end's name on this one's MAC
        f"{ident} {int(ts) + 1} {seq} {mac}",
        f"{ident} {ts} {boot}.{int(n) + 1} {mac}",  # another number: a call not sent
        f"{ident} {ts} {mac}",  # no number (an older zeroscale's form)
        f"{ident} {ts} {seq} {mac} extra",
        f"{ident} -{ts} {seq} {mac}",
        f"{ident} \u0661\u0662 {seq} {mac}",  # digits that are not ASCII
        f"{ident} {ts} {boot}.0{n} {mac}",
    ]:
        with pytest.raises(peers.PeerRefused):
            peers.verify(KEY, forged, body, now=NOW)


def test_a_call_is_for_one_run_of_one_front_end() -> None:
    """A probe's captured call, refused when sent again to its front end, ran again at another (or the
    sender itself), and at its own after a restart (whose memory of the calls it took is gone): a call is
    signed for the run it goes to, the callee's id and process."""
    body = b'{"op": "workers.list", "args": {}}'
    for_b = peers.sign(KEY, "fe-a", body, now=NOW, to=peers.run_of("fe-b", 4242))
    assert peers.verify(KEY, for_b, body, now=NOW, me=peers.run_of("fe-b", 4242)) == "fe-a"
    for elsewhere in (peers.run_of("fe-c", 4242), peers.run_of("fe-b", 4243)):  # another, or b restarted
        with pytest.raises(peers.PeerRefused, match="signed for another front end"):
            peers.verify(KEY, for_b, body, now=NOW, me=elsewhere)
    own = peers.sign(KEY, "fe-b", body, now=NOW, to=peers.run_of("fe-b", 4242))
    with pytest.raises(peers.PeerRefused, match="names this front end as its sender"):
        peers.verify(KEY, own, body, now=NOW, me=peers.run_of("fe-b", 4242))


def test_a_call_is_taken_once_and_its_senders_calls_may_come_out_of_order() -> None:
    """A captured call sent again within its time window was run again (a forwarded invocation run twice,
    a copy of an image deleted again): the callee now notes each sender's numbers."""
    clock = [NOW]
    replays = peers.Replays(clock=lambda: clock[0])
    body = b'{"op": "logs.groups", "args": {}}'
    sequence = peers.Sequence()
    headers = [peers.sign(KEY, "fe-a", body, now=NOW, seq=sequence.next()) for _ in range(5)]
    for i in (0, 3, 1, 4, 2):  # over several connections: in any order
        assert peers.verify(KEY, headers[i], body, now=NOW, replays=replays) == "fe-a"
    for header in headers:
        with pytest.raises(peers.PeerRefused, match="sent again"):
            peers.verify(KEY, header, body, now=NOW, replays=replays)
    # another run of the same front end (restarted) counts from 1 again, apart
    again = peers.sign(KEY, "fe-a", body, now=NOW, seq=peers.Sequence().next())
    assert peers.verify(KEY, again, body, now=NOW, replays=replays) == "fe-a"
    # far behind its sender's latest: not known any more, refused rather than taken
    late = peers.sign(KEY, "fe-a", body, now=NOW, seq=f"{sequence.boot}.{peers.REPLAY_WINDOW + 10}")
    assert peers.verify(KEY, late, body, now=NOW, replays=replays) == "fe-a"
    with pytest.raises(peers.PeerRefused, match="too late to tell"):
        peers.verify(KEY, headers[4], body, now=NOW, replays=replays)
    # a run's numbers are forgotten once none of its calls can be timely: nothing grows with the calls
    clock[0] = NOW + 2 * peers.MAX_SKEW_S
    peers.verify(KEY, peers.sign(KEY, "fe-b", body, now=clock[0]), body, now=clock[0], replays=replays)
    assert list(replays._runs) == [("fe-b", peers._SEQUENCE.boot)]


def test_a_signature_covers_the_method_and_every_header_the_callee_acts_on() -> None:
    """A security review's finding: the MAC covered the body but no header, so a captured forwarded
    invocation could be sent again with another TargetModel, variant, content type or spill mark."""
    body = b'{"rows": [1]}'
    sent = [
        (b"content-type", b"application/json"),
        (b"X-Amzn-SageMaker-Target-Model", b"m0.tar.gz"),
        (b"x-amzn-sagemaker-target-variant", b"A"),
    ]
    header = peers.sign(KEY, "fe-a", body, now=NOW, headers=sent)
    # what a transport adds or changes is not covered; the names' case and order are not either
    received = [(b"host", b"10.0.0.7:8080"), (b"x-forwarded-for", b"10.0.0.9"), *reversed(sent)]
    assert peers.verify(KEY, header, body, now=NOW, headers=received) == "fe-a"
    for changed in [
        [(b"x-amzn-sagemaker-target-model", b"m1.tar.gz"), *sent[::2]],
        [*sent[:2], (b"x-amzn-sagemaker-target-variant", b"B")],
        [(b"content-type", b"text/csv"), *sent[1:]],
        [*sent, (b"x-zeroscale-spill", b"1")],
        [*sent, (b"x-amzn-sagemaker-custom-attributes", b"x")],
        [*sent, (b"accept", b"text/csv")],
    ]:
        with pytest.raises(peers.PeerRefused, match="does not match"):
            peers.verify(KEY, header, body, now=NOW, headers=changed)
    with pytest.raises(peers.PeerRefused, match="does not match"):
        peers.verify(KEY, header, body, now=NOW, headers=sent, method="GET")


def test_the_route_answers_authentic_reads_and_refuses_the_rest(tmp_path: Path) -> None:
    store = LogStore(tmp_path)
    store.remember("Shared")
    store.append("Shared", "AllTraffic/0001-a", 1000, ["hello"])
    route = PeerRoute(KEY, LocalLogs(store, "fe-b").ops)

    def call(body: bytes, header: str | None = None) -> tuple[int, dict[str, object]]:
        status, answer = asyncio.run(route.handle(header or peers.sign(KEY, "fe-a", body), body))
        return status, json.loads(answer)

    ok = json.dumps({"op": "logs.search", "args": {"group": "/aws/sagemaker/Endpoints/Shared"}}).encode()
    status, answer = call(ok)
    assert status == 200 and answer["events"] == [[1000, "AllTraffic/0001-a", 0, "hello"]]
    captured = peers.sign(KEY, "fe-a", ok)
    assert call(ok, captured)[0] == 200
    assert call(ok, captured) == (403, {"message": "a peer call sent again (its sequence number was seen)"})
    assert call(ok, peers.sign(SecretBox(b"j" * 32).derive(peers.KEY_LABEL), "fe-a", ok))[0] == 403
    assert route.precheck("fe-a 1 0123456789abcdef.1 00") is not None  # stale: refused before the body
    assert route.precheck(peers.sign(KEY, "fe-a", b"")) is None  # the MAC needs the body
    for bad in [
        b"[]",
        b"not json",
        b'{"op": "logs.search"}',
        b'{"op": "shell", "args": {}}',
        b'{"op": "logs.search", "args": {"group": 7}}',
        b'{"op": "logs.page", "args": {"group": "/aws/sagemaker/Endpoints/Shared",'
        b' "stream": "AllTraffic/0001-a", "offsets": {"fe-b": "0"}}}',
        b'{"op": "logs.page", "args": {"group": "/aws/sagemaker/Endpoints/Shared"}}',
    ]:
        status, answer = call(bad)
        assert status == 400, (bad, answer)
        assert answer["message"]


def test_an_images_archive_goes_only_to_a_signed_get_of_a_valid_name(tmp_path: Path) -> None:
    registry = ImageRegistry(tmp_path / "images")
    source = tmp_path / "src"
    source.mkdir()
    (source / "serve").write_text("#!/bin/sh\n")
    (source / "serve").chmod(0o755)
    (source / "manifest.json").write_text('{"entrypoint": ["./serve"]}')
    pushed = registry.push("shared", "1", source)
    tags = TagLedger(Store(f"sqlite:///{tmp_path / 'z.db'}"), time.time)
    shared = SharedImages(registry, tags, None, max_archive_bytes=MB)
    route = PeerRoute(KEY, {}, files={FILES: shared.archive_file})

    def get(path: str, header: str | None = None) -> tuple[int, object]:
        return asyncio.run(route.file(header or peers.sign(KEY, "fe-a", b"", path=path, method="GET"), path))

    base = peers.PATH + "/images"
    status, found = get(f"{base}/shared/1")
    assert status == 200 and isinstance(found, Path)
    copy = ImageRegistry(tmp_path / "copy").push("shared", "1", found)
    assert copy.digest == pushed.digest  # the same content, whatever the archive's own bytes
    found.unlink()
    assert (
        get(f"{base}/shared/1", peers.sign(KEY, "fe-a", b"", path=f"{base}/other/1", method="GET"))[0] == 403
    )
    assert get(f"{base}/shared/1", peers.sign(KEY, "fe-a", b"", method="GET"))[0] == 403  # another path
    assert (
        get(f"{base}/shared/1", peers.sign(KEY, "fe-a", b"", path=f"{base}/shared/1"))[0] == 403
    )  # a POST's
    assert get(f"{base}/shared/2")[0] == 404
    assert get(f"{base}/shared")[0] == 404
    assert get(f"{peers.PATH}/logs/x/y")[0] == 404
    assert get(f"{base}/..%2Fetc/1")[0] == 400
    assert get(f"{base}/Bad Name/1")[0] == 400
    assert not list((tmp_path / "images" / ".tmp").iterdir())  # no archive left behind by the refusals


def test_gather_names_the_front_ends_that_did_not_answer(
    serving: str, caplog: pytest.LogCaptureFixture
) -> None:
    """One peer answers over HTTP; another is live in the database but nothing listens where it serves (its
    connection is refused): the answer holds the first's and names the second as missing, so a caller can
    tell a partial view from the whole (before, it was left out without a trace but the log)."""
    down = peers.Peer("fe-c", f"http://127.0.0.1:{closed_port()}")
    up = peers.Peer("fe-b", serving, os.getpid())  # its route serves in this process
    listed = [up, down]
    client = peers.PeerClient(KEY, "fe-a", lambda: listed, timeout_s=2.0)
    try:
        args = {"group": "/aws/sagemaker/Endpoints/Shared"}
        gathered = client.gather("logs.search", args)
        assert [ident for ident, _ in gathered.answers] == ["fe-b"]
        assert gathered.answers[0][1]["events"] == [[1000, "AllTraffic/0001-b", 0, "from b"]]
        assert gathered.missing == (down,) and not gathered.complete
        assert "front end fe-c at http://127.0.0.1:" in caplog.text  # the server's log says so too
        asked = asyncio.run(client.ask("logs.search", args))  # the same from the event loop
        assert asked.missing == (down,) and [i for i, _ in asked.answers] == ["fe-b"]
        listed.remove(down)
        assert client.gather("logs.search", args).complete
        listed.clear()  # alone: nothing asked, nothing missing
        assert asyncio.run(client.ask("logs.search", args)) == peers.Gathered()
    finally:
        client.close()


def test_refused_calls_are_said_in_the_log_first_then_one_in_a_thousand(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An outsider's junk headers, 2,000 a second, each wrote a warning: the log grew 210 KB a second."""
    route = PeerRoute(KEY, LocalLogs(LogStore(tmp_path), "fe-b").ops, ident="fe-b")
    body = b"{}"
    with caplog.at_level(logging.WARNING, logger="zeroscale.peers"):
        for _ in range(2000):
            assert asyncio.run(route.handle(peers.sign(KEY, "fe-a", body, to="nobody/1"), body))[0] == 403
    assert len(caplog.records) == 10 + 2  # the first ten, the 1000th and the 2000th
