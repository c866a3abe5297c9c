"""The native data plane's SigV4 check (src/native/sigv4.c, through ``zeroscale._dataplane.sigv4_check``)
held to the Python verifier (api/sigv4.py) on requests botocore signed, as they are and mutated.

The rule: whatever the C check accepts, ``sigv4.prepare(...).finish(body)`` accepts, with the same access
key id. The C check may refuse more (a refusal hands the request to Python), but never the common case: a
boto3 ``sagemaker-runtime`` invoke_endpoint request.

SHA-256 and HMAC (src/native/sha256.c) are held to hashlib and hmac directly, through ctypes over a copy
compiled here, each test on both ways of processing blocks (the CPU's SHA extensions where it has them, and
the portable C that ZS_SHA256_PORTABLE keeps), and end to end by every signature checked."""

from __future__ import annotations

import calendar
import ctypes
import datetime
import hashlib
import hmac
import inspect
import platform
import random
import re
import shutil
import string
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.config import Config
from botocore.credentials import Credentials

from zeroscale import _dataplane as dataplane
from zeroscale.api import sigv4
from zeroscale.errors import ZeroscaleError

from .cc import NATIVE, compile_native

REGION = "us-east-1"
SERVICE = "sagemaker"
AKID = "AKIAZEROSCALENATIVE1"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
WHEN = datetime.datetime(2026, 12, 5, 12, 34, 56)  # botocore's clock while it signs (naive UTC)
SKEW_S = 900
SEED = 20261205


@dataclass
class Req:
    """A request as the native plane hands it over: raw method, path, query, header lines and body, plus
    what the server checks it against."""

    method: bytes
    path: bytes
    query: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    now: int
    secrets: dict[str, str] = field(default_factory=lambda: {AKID: SECRET})
    region: str = REGION
    service: str = SERVICE
    signed_with: dict[str, Any] = field(default_factory=dict)  # boto_sign's arguments, to sign a variant


def native(r: Req) -> str | None:
    result: str | None = dataplane.sigv4_check(
        r.method, r.path, r.query, list(r.headers), r.body, r.region, r.service, r.now, r.secrets
    )
    return result


def python(r: Req) -> str | None:
    try:
        return sigv4.prepare(
            method=r.method.decode("latin-1"),
            raw_path=r.path,
            query_string=r.query,
            headers=list(r.headers),
            lookup=r.secrets.get,
            service=r.service,
            region=r.region,
            now=float(r.now),
        ).finish(r.body)
    except ZeroscaleError:
        return None


def epoch(amz_date: str) -> int:
    return calendar.timegm(datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").timetuple())


def header(r: Req, name: str) -> bytes:
    found = [v for n, v in r.headers if n.lower() == name.encode()]
    assert len(found) == 1, (name, r.headers)
    return found[0]


def with_header(r: Req, name: str, value: bytes) -> Req:
    """``r`` with its one ``name`` header's value replaced (the name as it was sent)."""
    lname = name.encode()
    return replace(r, headers=[(n, value if n.lower() == lname else v) for n, v in r.headers])


def without(r: Req, name: str) -> Req:
    return replace(r, headers=[(n, v) for n, v in r.headers if n.lower() != name.encode()])


def signed_names(r: Req) -> list[str]:
    match = re.search(rb"SignedHeaders=([^,]*)", header(r, "authorization"))
    assert match is not None
    return match.group(1).decode().split(";")


# ---------------------------------------------------------------------------------------------------------
# signing: botocore as boto3 does it, and an independent signer for the requests botocore cannot make


def wire(url: str, method: str, headers: Any, body: bytes, *, now: int, **kw: Any) -> Req:
    """A request botocore prepared, as its HTTP stack puts it on the wire: the header names as botocore
    spells them, Host first (from the URL, without a default port, as botocore signs it), str values as
    UTF-8 (how botocore signs them), Accept-Encoding as http.client adds it."""
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}[parts.scheme]
    host = parts.hostname if parts.port in (None, default) else f"{parts.hostname}:{parts.port}"
    assert host is not None
    lines: list[tuple[bytes, bytes]] = [(b"Host", host.encode())]
    for name, value in headers.items():
        lines.append((name.encode("latin-1"), value if isinstance(value, bytes) else value.encode("utf-8")))
    lines.append((b"Accept-Encoding", b"identity"))
    return Req(method.encode(), parts.path.encode(), parts.query.encode(), lines, body, now, **kw)


def boto_sign(
    body: bytes = b"[[1, 2]]",
    *,
    headers: dict[str, str] | None = None,
    url: str = "https://localhost:8443/endpoints/my-ep/invocations",
    method: str = "POST",
    akid: str = AKID,
    secret: str = SECRET,
    token: str | None = None,
    region: str = REGION,
    service: str = SERVICE,
    when: datetime.datetime = WHEN,
) -> Req:
    """An invoke_endpoint request signed by botocore's SigV4Auth (what boto3's sagemaker-runtime client signs
    with), checked at the time it was signed."""
    signed_with = dict(
        body=body,
        headers=headers,
        url=url,
        method=method,
        akid=akid,
        secret=secret,
        token=token,
        region=region,
        service=service,
        when=when,
    )
    if headers is None:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
    request = AWSRequest(method=method, url=url, data=body, headers=headers)
    with mock.patch("botocore.auth.get_current_datetime", return_value=when):
        SigV4Auth(Credentials(akid, secret, token), service, region).add_auth(request)
    prepared = request.prepare()
    return wire(
        prepared.url,
        prepared.method,
        prepared.headers,
        body,
        now=calendar.timegm(when.timetuple()),
        secrets={akid: secret},
        region=region,
        service=service,
        signed_with=signed_with,
    )


def boto_resign(r: Req, **changes: Any) -> Req:
    """The request ``r`` was made from, signed by botocore with ``changes`` to what it was signed with."""
    return boto_sign(**{**r.signed_with, **changes})


_BOTO_UNSIGNED = {b"authorization", b"user-agent", b"x-amzn-trace-id", b"expect", b"accept-encoding"}


def default_names(lines: list[tuple[bytes, bytes]]) -> list[str]:
    """The headers botocore would sign of these (all but its unsigned ones), as spec_sign signs them."""
    return sorted({n.decode().lower() for n, _ in lines if n.lower() not in _BOTO_UNSIGNED})


def spec_sign(
    r: Req,
    *,
    amz_date: str,
    scope_date: str | None = None,
    names: list[str] | None = None,
    akid: str = AKID,
    secret: str = SECRET,
    region: str = REGION,
    service: str = SERVICE,
) -> Req:
    """``r`` signed anew, from the specification alone (no botocore, no api/sigv4.py): X-Amz-Date set to
    ``amz_date`` as given (a malformed one too), the credential scoped to ``scope_date`` (its first 8
    characters by default), over ``names`` (lower case, by default every header botocore would sign),
    the raw path taken as the canonical URI."""
    lines = [(n, v) for n, v in r.headers if n.lower() not in (b"authorization", b"x-amz-date")]
    lines.append((b"X-Amz-Date", amz_date.encode()))
    if names is None:
        names = default_names(lines)
    canonical_headers = ""
    for name in names:
        values = [v.decode("utf-8") for n, v in lines if n.decode().lower() == name]
        canonical_headers += name + ":" + ",".join(" ".join(v.split()) for v in values) + "\n"
    creq = "\n".join(
        [
            r.method.decode(),
            r.path.decode(),
            "",
            canonical_headers,
            ";".join(names),
            hashlib.sha256(r.body).hexdigest(),
        ]
    )
    scope_date = scope_date if scope_date is not None else amz_date[:8]
    scope = f"{scope_date}/{region}/{service}/aws4_request"
    sts = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(creq.encode()).hexdigest()}"
    key = ("AWS4" + secret).encode()
    for part in (scope_date, region, service, "aws4_request"):
        key = hmac.digest(key, part.encode(), "sha256")
    signature = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
    auth = (
        f"AWS4-HMAC-SHA256 Credential={akid}/{scope}, SignedHeaders={';'.join(names)}, Signature={signature}"
    )
    lines.append((b"Authorization", auth.encode()))
    return replace(r, headers=lines, secrets={akid: secret}, region=region, service=service)


# ---------------------------------------------------------------------------------------------------------
# SHA-256 and HMAC, held to hashlib and hmac


@pytest.fixture(scope="module")
def sha_so(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """src/native/sha256.c compiled on its own, with the extension's flags and warnings as errors."""
    return compile_native("sha256.c", tmp_path_factory.mktemp("sha256") / "libzs_sha256.so")


def load_sha(so: Path, portable: str | None) -> ctypes.CDLL:
    """A fresh copy of the library (ctypes loads a path once, and the way blocks are processed is chosen once
    per copy), loaded and made to choose with ZS_SHA256_PORTABLE set to ``portable`` (None: unset)."""
    copy = so.with_name(f"{so.stem}-{len(list(so.parent.iterdir()))}.so")
    shutil.copyfile(so, copy)
    with pytest.MonkeyPatch.context() as mp:
        if portable is None:
            mp.delenv("ZS_SHA256_PORTABLE", raising=False)
        else:
            mp.setenv("ZS_SHA256_PORTABLE", portable)
        lib = ctypes.CDLL(str(copy))
        c_impl(lib)  # chosen now, while the variable is set as asked
    return lib


def c_impl(lib: ctypes.CDLL) -> str:
    f = lib.zs_sha256_impl
    f.argtypes = []
    f.restype = ctypes.c_char_p
    impl: bytes = f()
    return impl.decode()


def cpu_has_sha_ni() -> bool:
    """Whether this machine is x86-64 with the SHA extensions and the SSSE3 and SSE4.1 they are used with."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return False
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        pytest.skip("no /proc/cpuinfo to tell whether the CPU has SHA-NI")
    flags = re.search(r"^flags\s*:(.*)$", cpuinfo, re.MULTILINE)
    return flags is not None and {"sha_ni", "ssse3", "sse4_1"} <= set(flags.group(1).split())


@pytest.fixture(scope="module", params=["default", "portable"])
def sha(request: pytest.FixtureRequest, sha_so: Path) -> ctypes.CDLL:
    """The library as a process uses it by default (SHA-NI where the CPU has it), and its portable C."""
    return load_sha(sha_so, None if request.param == "default" else "1")


def _fn(lib: ctypes.CDLL, name: str, *argtypes: Any) -> Any:
    f = getattr(lib, name)
    f.argtypes = list(argtypes)
    f.restype = None
    return f


def c_sha256(lib: ctypes.CDLL, data: bytes) -> bytes:
    out = ctypes.create_string_buffer(32)
    _fn(lib, "zs_sha256", ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p)(data, len(data), out)
    return out.raw


def c_sha256_chunks(lib: ctypes.CDLL, chunks: list[bytes]) -> bytes:
    ctx, out = ctypes.create_string_buffer(512), ctypes.create_string_buffer(32)
    _fn(lib, "zs_sha256_init", ctypes.c_char_p)(ctx)
    update = _fn(lib, "zs_sha256_update", ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t)
    for chunk in chunks:
        update(ctx, chunk, len(chunk))
    _fn(lib, "zs_sha256_final", ctypes.c_char_p, ctypes.c_char_p)(ctx, out)
    return out.raw


def c_hmac(lib: ctypes.CDLL, key: bytes, data: bytes) -> bytes:
    out = ctypes.create_string_buffer(32)
    f = _fn(
        lib,
        "zs_hmac_sha256",
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_char_p,
    )
    f(key, len(key), data, len(data), out)
    return out.raw


def c_hmac_chunks(lib: ctypes.CDLL, key: bytes, chunks: list[bytes]) -> bytes:
    ctx, out = ctypes.create_string_buffer(1024), ctypes.create_string_buffer(32)
    _fn(lib, "zs_hmac_sha256_init", ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t)(ctx, key, len(key))
    update = _fn(lib, "zs_hmac_sha256_update", ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t)
    for chunk in chunks:
        update(ctx, chunk, len(chunk))
    _fn(lib, "zs_hmac_sha256_final", ctypes.c_char_p, ctypes.c_char_p)(ctx, out)
    return out.raw


def c_sha256_at(lib: ctypes.CDLL, data: bytes, sizes: list[int], offset: int) -> bytes:
    """The digest of ``data`` fed in pieces of ``sizes`` from a buffer where it starts ``offset`` bytes in (so
    that the pieces start at any alignment)."""
    assert sum(sizes) == len(data)
    buf = ctypes.create_string_buffer(b"\xa5" * offset + data + b"\x5a" * 16)
    ctx, out = ctypes.create_string_buffer(512), ctypes.create_string_buffer(32)
    _fn(lib, "zs_sha256_init", ctypes.c_char_p)(ctx)
    update = _fn(lib, "zs_sha256_update", ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t)
    at = ctypes.addressof(buf) + offset
    for size in sizes:
        update(ctx, at, size)
        at += size
    _fn(lib, "zs_sha256_final", ctypes.c_char_p, ctypes.c_char_p)(ctx, out)
    return out.raw


def split(rng: random.Random, data: bytes) -> list[bytes]:
    cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randrange(6)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def test_sha256_known_answers(sha: ctypes.CDLL) -> None:
    """FIPS 180-4's examples (NIST's SHA256.pdf): one block, two blocks, 896 bits, a million 'a'."""
    vectors = {
        b"": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        b"abc": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq": (
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        ),
        b"abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrs"
        b"mnopqrstnopqrstu": "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1",
        b"a" * 1_000_000: "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0",
    }
    for message, digest in vectors.items():
        assert c_sha256(sha, message).hex() == digest == hashlib.sha256(message).hexdigest()


def test_sha256_against_hashlib(sha: ctypes.CDLL) -> None:
    """Every length through three blocks (each padding case: the length fits after the 0x80 or takes a block
    of its own), longer ones, and the same messages fed in random pieces."""
    rng = random.Random(SEED)
    for n in [*range(0, 200), 447, 448, 511, 512, 513, 4095, 65536, 1 << 20]:
        message = rng.randbytes(n)
        expected = hashlib.sha256(message).digest()
        assert c_sha256(sha, message) == expected, n
        assert c_sha256_chunks(sha, split(rng, message)) == expected, n


def test_sha256_path(sha: ctypes.CDLL, request: pytest.FixtureRequest) -> None:
    """ZS_SHA256_PORTABLE keeps the portable C; without it the SHA extensions are used where the CPU has
    them (so the tests here run on both where it does)."""
    if request.node.callspec.params["sha"] == "portable":
        assert c_impl(sha) == "portable"
    else:
        assert c_impl(sha) == ("sha-ni" if cpu_has_sha_ni() else "portable")


def test_sha256_portable_variable(sha_so: Path) -> None:
    """ZS_SHA256_PORTABLE set to anything but "" or "0" keeps the portable C."""
    default = "sha-ni" if cpu_has_sha_ni() else "portable"
    for value, expected in [("1", "portable"), ("yes", "portable"), ("0", default), ("", default)]:
        assert c_impl(load_sha(sha_so, value)) == expected, value


def test_sha256_long_inputs(sha: ctypes.CDLL) -> None:
    """A megabyte and more, whole and in pieces that split blocks every way (a byte, a block and one over or
    under, many blocks and one over, at random), from every alignment in memory."""
    rng = random.Random(SEED)
    for n in [1 << 20, (1 << 20) + 55, (1 << 20) + 56, (1 << 20) + 63, 3 * (1 << 20) + 1]:
        message = rng.randbytes(n)
        expected = hashlib.sha256(message).digest()
        assert c_sha256(sha, message) == expected, n
        cycle = [1, 7, 63, 64, 65, 127, 128, 129, 1000, 4097, 65537, 64 * 1000 + 1]
        cuts = sorted(rng.randrange(n + 1) for _ in range(40))
        chunkings = {
            "whole": [n],
            "a byte first": [1, n - 1],
            "a block under": [63, n - 63],
            "a block over": [65, n - 65],
            "the last byte alone": [n - 1, 1],
            "cycled": _cycled(cycle, n),
            "random": [b - a for a, b in zip([0, *cuts], [*cuts, n], strict=True)],
        }
        for offset in range(0, 17, 1 if n == 1 << 20 else 5):
            for name, sizes in chunkings.items():
                assert c_sha256_at(sha, message, sizes, offset) == expected, (n, name, offset)
    key = rng.randbytes(32)
    message = rng.randbytes(1 << 20)
    assert c_hmac(sha, key, message) == hmac.digest(key, message, "sha256")
    assert c_hmac_chunks(sha, key, split(rng, message)) == hmac.digest(key, message, "sha256")


def _cycled(sizes: list[int], n: int) -> list[int]:
    """Pieces of the given sizes in turn, to ``n`` bytes in all."""
    out: list[int] = []
    while n > 0:
        out.append(min(sizes[len(out) % len(sizes)], n))
        n -= out[-1]
    return out


def test_hmac_against_hmac_module(sha: ctypes.CDLL) -> None:
    """RFC 4231's test keys and messages (keys under, at and over the 64-byte block: hashed first), then
    random keys of every length to 200 bytes, whole and in pieces."""
    rfc4231 = [
        (b"\x0b" * 20, b"Hi There"),
        (b"Jefe", b"what do ya want for nothing?"),
        (b"\xaa" * 20, b"\xdd" * 50),
        (bytes(range(1, 26)), b"\xcd" * 50),
        (b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First"),
        (
            b"\xaa" * 131,
            b"This is a test using a larger than block-size key and a larger than block-size data. The key "
            b"needs to be hashed before being used by the HMAC algorithm.",
        ),
    ]
    assert (
        c_hmac(sha, *rfc4231[1]).hex() == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )
    rng = random.Random(SEED)
    cases = rfc4231 + [(rng.randbytes(k), rng.randbytes(rng.randrange(300))) for k in range(0, 201)]
    for key, message in cases:
        expected = hmac.digest(key, message, "sha256")
        assert c_hmac(sha, key, message) == expected, (len(key), len(message))
        assert c_hmac_chunks(sha, key, split(rng, message)) == expected, (len(key), len(message))


# ---------------------------------------------------------------------------------------------------------
# what boto3 sends: accepted by both, with the same key


def test_the_skew_is_the_servers() -> None:
    """ZS_SIGV4_SKEW_S is prepare()'s default, which the server's own call of prepare (api/app.py) keeps."""
    match = re.search(r"#define ZS_SIGV4_SKEW_S (\d+)\b", (NATIVE / "sigv4.h").read_text())
    assert match is not None
    assert int(match.group(1)) == SKEW_S == inspect.signature(sigv4.prepare).parameters["max_skew_s"].default
    app = (Path(sigv4.__file__).parent / "app.py").read_text()
    assert "sigv4.prepare(" in app
    assert "max_skew_s" not in app


@pytest.fixture(scope="module")
def boto3_requests() -> list[tuple[str, Req]]:
    """invoke_endpoint requests as boto3's sagemaker-runtime clients send them (captured before they leave:
    botocore's own headers, amz-sdk-* and User-Agent added after signing, Content-Length)."""
    big = random.Random(SEED).randbytes(1 << 20)
    clients = [
        ("https://localhost:8443", REGION, AKID, SECRET),
        ("http://127.0.0.1:8080", "eu-west-3", "test", "test"),
        ("https://runtime.sagemaker.us-east-1.amazonaws.com", REGION, "AKIA" + "Q" * 16, "s" * 100),
    ]
    calls: list[tuple[str, dict[str, Any]]] = [
        ("an empty body", {"EndpointName": "my-ep", "Body": b""}),
        ("JSON", {"EndpointName": "my-ep", "Body": b"[[1, 2]]", "ContentType": "application/json"}),
        (
            "every header",
            {
                "EndpointName": "Ep-2",
                "Body": b"1,2,3\n4,5,6\n",
                "ContentType": "text/csv",
                "Accept": "application/json",
                "CustomAttributes": "trace=on;  model = a  b",
                "TargetVariant": "AllTraffic",
                "InferenceId": "req-0001",
                "EnableExplanations": "`true`",
            },
        ),
        ("1 MB", {"EndpointName": "e", "Body": big, "ContentType": "application/octet-stream"}),
    ]
    out: list[tuple[str, Req]] = []
    for endpoint_url, region, akid, secret in clients:
        session = boto3.session.Session(
            aws_access_key_id=akid, aws_secret_access_key=secret, region_name=region
        )
        client = session.client(
            "sagemaker-runtime", endpoint_url=endpoint_url, config=Config(retries={"total_max_attempts": 1})
        )
        sent: list[Any] = []

        def before_send(request: Any, _sent: list[Any] = sent, **_: Any) -> AWSResponse:
            _sent.append(request)
            return AWSResponse(request.url, 200, {"Content-Type": "application/json"}, None)

        client.meta.events.register("before-send", before_send)
        with mock.patch("botocore.auth.get_current_datetime", return_value=WHEN):
            for label, kwargs in calls:
                client.invoke_endpoint(**kwargs)
                request = sent.pop()
                body = request.body or b""
                assert body == kwargs["Body"]
                r = wire(
                    request.url,
                    request.method,
                    request.headers,
                    body,
                    now=calendar.timegm(WHEN.timetuple()),
                    secrets={akid: secret},
                    region=region,
                )
                out.append((f"{label} to {endpoint_url}", r))
    return out


def test_boto3_requests_are_accepted(boto3_requests: list[tuple[str, Req]]) -> None:
    assert len(boto3_requests) == 12
    for label, r in boto3_requests:
        names = {n.lower() for n, _ in r.headers}
        assert {b"authorization", b"x-amz-date", b"user-agent", b"amz-sdk-invocation-id"} <= names, label
        (akid,) = r.secrets
        assert python(r) == akid, label
        assert native(r) == akid, label
        # the signature's every part counts: one byte of the body, one of the signature
        assert native(replace(r, body=r.body + b" ")) is None, label
        auth = header(r, "authorization")
        tampered = auth[:-1] + (b"0" if auth[-1:] != b"0" else b"1")
        assert native(with_header(r, "authorization", tampered)) is None, label


def test_bodies_of_every_length_to_three_blocks() -> None:
    """The body's SHA-256, end to end: botocore's signature holds over it at every padding case."""
    rng = random.Random(SEED)
    for n in [*range(0, 200), 1000, 65536]:
        r = boto_sign(rng.randbytes(n))
        assert native(r) == python(r) == AKID, n


@pytest.mark.parametrize("secret_len", [0, 1, 40, 59, 60, 61, 100, 256])
def test_secrets_of_any_length(secret_len: int) -> None:
    """'AWS4' + secret is the first HMAC's key: at 61 bytes and more of secret it is longer than a block."""
    r = boto_sign(secret="k" * secret_len)
    assert native(r) == python(r) == AKID


def test_signing_keys_are_cached_by_secret() -> None:
    """A key derived once is used again only for the same key id, secret, date, region and service."""
    r = boto_sign()
    assert native(r) == AKID
    assert native(replace(r, secrets={AKID: SECRET + "x"})) is None  # rotated: the cached key is not used
    rotated = boto_resign(r, secret="rotated")
    assert native(rotated) == AKID
    assert native(replace(rotated, secrets={AKID: SECRET})) is None
    assert native(r) == AKID
    # more keys than the table holds, twice over: each still verifies (derived again once evicted)
    many = [boto_sign(akid=f"KEY{i:03d}", secret=f"secret-{i}") for i in range(40)]
    for _ in range(2):
        for i, each in enumerate(many):
            assert native(each) == f"KEY{i:03d}"
            other = f"KEY{(i + 1) % 40:03d}"
            assert (
                native(replace(each, secrets={f"KEY{i:03d}": f"secret-{(i + 1) % 40}", other: "x"})) is None
            )


def test_argument_types_are_checked() -> None:
    r = boto_sign()
    good: list[Any] = [r.method, r.path, r.query, r.headers, r.body, REGION, SERVICE, r.now, r.secrets]
    assert dataplane.sigv4_check(*good) == AKID
    bad: list[tuple[int, Any]] = [
        (0, "POST"),
        (1, "/endpoints/my-ep/invocations"),
        (3, tuple(r.headers)),
        (3, [*r.headers, (b"x-a", "str")]),
        (3, [*r.headers, (b"x-a",)]),
        (3, [*r.headers, [b"x-a", b"b"]]),
        (3, [*r.headers, b"x-a: b"]),
        (4, "body"),
        (5, b"us-east-1"),
        (7, "now"),
        (8, {AKID: b"secret"}),
        (8, {b"key": "secret"}),
        (8, [(AKID, SECRET)]),
    ]
    for at, value in bad:
        args = list(good)
        args[at] = value
        with pytest.raises(TypeError):
            dataplane.sigv4_check(*args)
    with pytest.raises(TypeError):
        dataplane.sigv4_check(*good[:-1])
    with pytest.raises(ValueError):  # a str with a NUL cannot be a C string
        dataplane.sigv4_check(*good[:5], "us-east-1\0", *good[6:])


def test_no_reference_or_memory_leaks() -> None:
    import tracemalloc

    r = boto_sign()
    refused = replace(r, secrets={})
    objects: list[Any] = [r.body, r.secrets, r.secrets[AKID], *[v for _, v in r.headers]]
    before = [sys.getrefcount(o) for o in objects]
    tracemalloc.start()
    try:
        for _ in range(50):
            native(r), native(refused)
        start, _ = tracemalloc.get_traced_memory()
        for _ in range(2000):
            native(r), native(refused), native(with_header(r, "x-amz-date", b"junk"))
        end, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [sys.getrefcount(o) for o in objects] == before
    assert end - start < 64 * 1024


# ---------------------------------------------------------------------------------------------------------
# the differential fuzz: botocore-signed requests, mutated; whatever C accepts, Python accepts, same key

AGREE = "agree"  # inside what the C check takes: its answer is Python's, accepted or refused
CONSERVATIVE = "conservative"  # a request Python accepts that the C check hands to Python by design
RULE = "rule"  # anything: only the rule holds (C accepts => Python accepts, the same key)

Mutation = Callable[[random.Random, Req], Req | None]
MUTATIONS: list[tuple[str, str, Mutation]] = []


def mutation(kind: str) -> Callable[[Mutation], Mutation]:
    def register(fn: Mutation) -> Mutation:
        MUTATIONS.append((fn.__name__, kind, fn))
        return fn

    return register


def insert(rng: random.Random, r: Req, *lines: tuple[bytes, bytes]) -> Req:
    headers = list(r.headers)
    for line in lines:
        headers.insert(rng.randrange(len(headers) + 1), line)
    return replace(r, headers=headers)


def auth_parts(r: Req) -> tuple[str, str, str]:
    match = re.fullmatch(
        r"AWS4-HMAC-SHA256 Credential=(\S+), SignedHeaders=(\S+), Signature=(\S+)",
        header(r, "authorization").decode(),
    )
    assert match is not None
    credential, names, signature = match.groups()
    return credential, names, signature


def with_auth(r: Req, value: str) -> Req:
    return with_header(r, "authorization", value.encode())


def signed_lines(r: Req) -> list[int]:
    names = set(signed_names(r))
    return [i for i, (n, _) in enumerate(r.headers) if n.decode().lower() in names]


def flip_case(rng: random.Random, text: bytes) -> bytes:
    return bytes(c ^ 0x20 if chr(c).isalpha() and rng.random() < 0.5 else c for c in text)


@mutation(AGREE)
def header_name_case(rng: random.Random, r: Req) -> Req:
    return replace(r, headers=[(flip_case(rng, n), v) for n, v in r.headers])


@mutation(AGREE)
def headers_reordered(rng: random.Random, r: Req) -> Req:
    headers = list(r.headers)
    rng.shuffle(headers)
    return replace(r, headers=headers)


@mutation(AGREE)
def value_whitespace(rng: random.Random, r: Req) -> Req:
    """Leading, trailing and inner whitespace in one header's value (the Authorization header's too)."""
    i = rng.randrange(len(r.headers))
    name, value = r.headers[i]
    inner = value.replace(b" ", rng.choice([b" ", b"  ", b"\t", b" \t ", b"\t\t"]))
    value = rng.choice([b"", b" ", b"\t", b" \t "]) + inner + rng.choice([b"", b" ", b"\t", b"  "])
    return replace(r, headers=[*r.headers[:i], (name, value), *r.headers[i + 1 :]])


@mutation(AGREE)
def signed_headers_spelled_otherwise(rng: random.Random, r: Req) -> Req:
    """SignedHeaders in another case and order, repeated, spaced and with empty entries: the same list."""
    credential, names, signature = auth_parts(r)
    parts = names.split(";")
    parts += rng.sample(parts, rng.randrange(3))
    rng.shuffle(parts)
    parts = [
        rng.choice(["", " ", "\t"]) + flip_case(rng, p.encode()).decode() + rng.choice(["", " "])
        for p in parts
    ]
    if rng.random() < 0.5:
        parts.insert(rng.randrange(len(parts) + 1), "")
    return with_auth(
        r, f"AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders={';'.join(parts)}, Signature={signature}"
    )


@mutation(AGREE)
def authorization_spelled_otherwise(rng: random.Random, r: Req) -> Req:
    c, s, g = auth_parts(r)
    forms = [
        # accepted by api/sigv4.py
        f"AWS4-HMAC-SHA256 Credential={c},SignedHeaders={s},Signature={g}",
        f"  AWS4-HMAC-SHA256   Credential={c} ,  SignedHeaders={s} ,Signature={g} ,",
        f"AWS4-HMAC-SHA256 Signature={g}, Credential={c}, SignedHeaders={s}",
        f"AWS4-HMAC-SHA256 ,Credential={c},, SignedHeaders={s}, Signature= {g}\t",
        f"AWS4-HMAC-SHA256 \tCredential=\t{c}\t,\tSignedHeaders={s},Signature={g}",
        # refused
        f"AWS4-HMAC-SHA256\tCredential={c}, SignedHeaders={s}, Signature={g}",
        f"aws4-hmac-sha256 Credential={c}, SignedHeaders={s}, Signature={g}",
        f"AWS4-HMAC-SHA1 Credential={c}, SignedHeaders={s}, Signature={g}",
        f"AWS4-HMAC-SHA256x Credential={c}, SignedHeaders={s}, Signature={g}",
        f"AWS4-HMAC-SHA256,Credential={c}, SignedHeaders={s}, Signature={g}",
        f"AWS4-HMAC-SHA256 Credential ={c}, SignedHeaders={s}, Signature={g}",
        f"AWS4-HMAC-SHA256 credential={c}, SignedHeaders={s}, Signature={g}",
        f"AWS4-HMAC-SHA256 Credential={c}, SignedHeaders={s}, Signature={g}, Signature={g}",
        f"AWS4-HMAC-SHA256 Credential={c}, Credential={c}, SignedHeaders={s}, Signature={g}",
        f"AWS4-HMAC-SHA256 Credential={c}, SignedHeaders={s}",
        f"AWS4-HMAC-SHA256 Credential={c}, SignedHeaders={s}, Signature={g}, junk",
        f"AWS4-HMAC-SHA256 Credential={c}, SignedHeaders=, Signature={g}",
        f"AWS4-HMAC-SHA256 Credential={c} SignedHeaders={s}, Signature={g}",
        f"AWS4-HMAC-SHA256 Credential={c}; SignedHeaders={s}; Signature={g}",
        "AWS4-HMAC-SHA256",
        "AWS4-HMAC-SHA256 ",
        "",
        f"Credential={c}, SignedHeaders={s}, Signature={g}",
    ]
    return with_auth(r, rng.choice(forms))


@mutation(CONSERVATIVE)
def authorization_with_another_part(rng: random.Random, r: Req) -> Req:
    c, s, g = auth_parts(r)
    extra = rng.choice(["Foo=bar", "=x", "X-Note=a=b", "Credential2=x"])
    return with_auth(r, f"AWS4-HMAC-SHA256 Credential={c}, SignedHeaders={s}, Signature={g}, {extra}")


@mutation(AGREE)
def credential_altered(rng: random.Random, r: Req) -> Req:
    c, s, g = auth_parts(r)
    akid, date, region, service, terminator = c.split("/")
    forms = [
        f"/{date}/{region}/{service}/{terminator}",
        f"{akid}/x/{date}/{region}/{service}/{terminator}",
        f"{akid}/{date}/{region}/{service}/{terminator}/",
        f"{akid}/{date}/{region}/{service}/aws4_requesT",
        f"{akid}/{date}/{region}/{service}",
        f"{akid}/{date[:7]}/{region}/{service}/{terminator}",
        f"{akid}/{date[:7]}a/{region}/{service}/{terminator}",
        f"{akid}/{int(date) + 1}/{region}/{service}/{terminator}",
        f"{akid}/{date}/{region.upper()}/{service}/{terminator}",
        f"{akid}/{date}/{region}/{service}x/{terminator}",
        f"{akid}/{date}//{service}/{terminator}",
        f"{akid}x/{date}/{region}/{service}/{terminator}",
        f"{akid[:-1]}/{date}/{region}/{service}/{terminator}",
    ]
    return with_auth(r, f"AWS4-HMAC-SHA256 Credential={rng.choice(forms)}, SignedHeaders={s}, Signature={g}")


@mutation(AGREE)
def signing_time_against_now(rng: random.Random, r: Req) -> Req:
    delta = rng.choice([-SKEW_S - 1, -SKEW_S, -SKEW_S + 1, -1, 0, 1, SKEW_S - 1, SKEW_S, SKEW_S + 1, 86400])
    return replace(r, now=r.now + rng.choice([delta, -delta, rng.choice([10**10, -(10**9), 0])]))


@mutation(AGREE)
def unsigned_amz_header_added(rng: random.Random, r: Req) -> Req:
    line = rng.choice(
        [
            (b"X-Amz-Target", b"SageMaker.ListModels"),
            (b"x-amz-meta-a", b"1"),
            (b"X-Amzn-SageMaker-Target-Model", b"model.tar.gz"),
            (b"X-AMZN-SAGEMAKER-INFERENCE-COMPONENT", b"ic"),
            (b"x-amzn-sagemaker-custom-attributes", b"admin=1"),
            (b"X-Amz-Security-Token", b"token"),
            (b"X-Amz-Content-SHA256", hashlib.sha256(r.body).hexdigest().encode()),
            (b"X-Amz-Content-SHA256", b"UNSIGNED-PAYLOAD"),
            (b"x-amz-", b""),
            (b"x-amzn-", b"x"),
        ]
    )
    return insert(rng, r, line)


@mutation(AGREE)
def unsigned_ordinary_header_added(rng: random.Random, r: Req) -> Req:
    lines = [
        (b"User-Agent", b"Boto3/1.34 md/Botocore#1.34 ua/2.0 os/linux"),
        (b"X-Amzn-Trace-Id", b"Root=1-5759e988-bd862e3fe1be46a994272793"),
        (b"x-amzn-trace-id", b""),
        (b"X-Forwarded-For", b"10.0.0.1"),
        (b"Expect", b"100-continue"),
        (b"amz-sdk-invocation-id", b"93106998-c1bc-4f25-9051-0058e696daf1"),
        (b"amz-sdk-request", b"attempt=1; max=3"),
        (b"Date", b"Sat, 05 Dec 2026 12:34:56 GMT"),
        (b"Connection", b"keep-alive"),
        (b"Accept-Encoding", b"gzip"),
        (b"X-Amz", b"not a prefix"),
        (b"X-Amzn", b"nor this"),
        (b"Content-Typo", b"x"),
    ]
    return insert(rng, r, *rng.sample(lines, rng.randrange(1, 4)))


@mutation(AGREE)
def unsigned_header_removed(rng: random.Random, r: Req) -> Req:
    return without(r, "accept-encoding")


@mutation(AGREE)
def unsigned_header_repeated(rng: random.Random, r: Req) -> Req:
    return insert(rng, r, (b"Accept-Encoding", b"identity"))


@mutation(AGREE)
def signed_header_removed(rng: random.Random, r: Req) -> Req:
    i = rng.choice(signed_lines(r))
    return replace(r, headers=r.headers[:i] + r.headers[i + 1 :])


@mutation(AGREE)
def signed_header_repeated(rng: random.Random, r: Req) -> Req:
    name, value = r.headers[rng.choice(signed_lines(r))]
    return insert(rng, r, (flip_case(rng, name), rng.choice([value, b"", b"other"])))


@mutation(AGREE)
def authorization_or_date_repeated(rng: random.Random, r: Req) -> Req:
    name = rng.choice(["authorization", "x-amz-date"])
    return insert(rng, r, (name.encode(), header(r, name)))


@mutation(AGREE)
def authorization_or_date_missing(rng: random.Random, r: Req) -> Req:
    return without(r, rng.choice(["authorization", "x-amz-date"]))


@mutation(AGREE)
def signed_value_altered(rng: random.Random, r: Req) -> Req:
    i = rng.choice(signed_lines(r))
    name, value = r.headers[i]
    spots = [k for k, c in enumerate(value) if c not in b" \t"]
    k = rng.choice(spots)
    new = rng.choice([c for c in string.printable[:94].encode() if c != value[k]])
    value = value[:k] + bytes([new]) + value[k + 1 :]
    return replace(r, headers=[*r.headers[:i], (name, value), *r.headers[i + 1 :]])


@mutation(AGREE)
def body_altered(rng: random.Random, r: Req) -> Req:
    body = bytearray(r.body)
    if body and rng.random() < 0.6:
        body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
    elif body and rng.random() < 0.5:
        del body[rng.randrange(len(body))]
    else:
        body.insert(rng.randrange(len(body) + 1), rng.randrange(256))
    return replace(r, body=bytes(body))


@mutation(AGREE)
def signature_altered(rng: random.Random, r: Req) -> Req:
    c, s, g = auth_parts(r)
    k = rng.randrange(len(g))
    forms = [
        g[:k] + rng.choice([d for d in "0123456789abcdef" if d != g[k]]) + g[k + 1 :],
        g[:-1],
        g + "0",
        g[:k] + "g" + g[k + 1 :],
        "",
        g[:k] + " " + g[k + 1 :],
    ]
    return with_auth(r, f"AWS4-HMAC-SHA256 Credential={c}, SignedHeaders={s}, Signature={rng.choice(forms)}")


@mutation(CONSERVATIVE)
def signature_in_upper_case(rng: random.Random, r: Req) -> Req | None:
    c, s, g = auth_parts(r)
    if g == g.upper():
        return None
    return with_auth(r, f"AWS4-HMAC-SHA256 Credential={c}, SignedHeaders={s}, Signature={g.upper()}")


@mutation(AGREE)
def another_method(rng: random.Random, r: Req) -> Req:
    return replace(r, method=rng.choice([b"PUT", b"GET", b"DELETE", b"PATCH", b"POSTX", b"P"]))


@mutation(CONSERVATIVE)
def method_in_lower_case(rng: random.Random, r: Req) -> Req:
    method = flip_case(rng, r.method)
    return replace(r, method=method if method != r.method else r.method.lower())


@mutation(AGREE)
def another_server_scope(rng: random.Random, r: Req) -> Req:
    if rng.random() < 0.5:
        return replace(r, region=rng.choice(["us-west-2", r.region.upper(), r.region + " ", "eu-west-3x"]))
    return replace(r, service=rng.choice(["sagemaker-runtime", "iam", "SageMaker", "s3"]))


@mutation(AGREE)
def key_unknown_or_another_secret(rng: random.Random, r: Req) -> Req:
    (akid,) = r.secrets
    secret = r.secrets[akid]
    return replace(
        r,
        secrets=rng.choice([{}, {akid.lower() + "x": secret}, {akid: secret + "x"}, {akid: secret[:-1]}]),
    )


@mutation(AGREE)
def query_added(rng: random.Random, r: Req) -> Req:
    return replace(r, query=rng.choice([b"a=b", b"x", b"=", b"a=b&c=d", b"X-Amz-Signature=abc", b"%20"]))


@mutation(CONSERVATIVE)
def query_of_empty_pairs(rng: random.Random, r: Req) -> Req:
    return replace(r, query=rng.choice([b"&", b"&&"]))


@mutation(AGREE)
def path_altered(rng: random.Random, r: Req) -> Req:
    path = r.path
    spots = [k for k, c in enumerate(path) if c != ord("/")]
    k = rng.choice(spots)
    unreserved = (string.ascii_letters + string.digits + "-._~").encode()
    new = rng.choice([c for c in unreserved if c != path[k]])
    forms = [path[:k] + bytes([new]) + path[k + 1 :], path + b"/", path.rstrip(b"/") + b"x", path[:-1]]
    return replace(r, path=rng.choice(forms))


@mutation(CONSERVATIVE)
def path_with_dot_or_empty_segments(rng: random.Random, r: Req) -> Req:
    """Segments that botocore and api/sigv4.py remove before signing: the C check hands these to Python."""
    slashes = [k for k, c in enumerate(r.path) if c == ord("/")]
    k = rng.choice(slashes)
    insertion = rng.choice([b"/.", b"/", b"/zz/..", b"/./.", b"//"])
    path = r.path[:k] + insertion + r.path[k:]
    return replace(r, path=rng.choice([path, r.path + b"/.", r.path + b"?", r.path + b"?x=1"]))


@mutation(RULE)
def path_odd(rng: random.Random, r: Req) -> Req:
    """Paths outside the common case: sent in place of the signed one, or signed by botocore (which
    normalizes and quotes them as api/sigv4.py does), or signed over the raw path by spec_sign."""
    odd = [
        b"",
        b"endpoints/my-ep/invocations",
        b"/endpoints/my%2Dep/invocations",
        b"/endpoints/my ep/invocations",
        b"/endpoints/my-ep/invocations;x",
        b"/endpoints/\xc3\xa9/invocations",
        b"/..",
        b"/.",
        b"/",
        b"//",
        b"/endpoints/%7E/invocations",
        b"/endpoints/my-ep/invocations#f",
        b"/endpoints/my-ep/...",
        b"/endpoints/my-ep/invocations/",
        b"/endpoints/a:b@c/invocations",
        b"/endpoints/a+b/invocations",
    ]
    path = rng.choice(odd)
    how = rng.randrange(3)
    if how == 0:
        return replace(r, path=path)
    if how == 1 and path.startswith(b"/"):
        parts = urlsplit(r.signed_with["url"])
        return boto_resign(r, url=f"{parts.scheme}://{parts.netloc}{path.decode()}")
    return _dated(replace(r, path=path), header(r, "x-amz-date").decode())


@mutation(AGREE)
def content_type_unsigned(rng: random.Random, r: Req) -> Req:
    """Signed without Content-Type, then sent with one."""
    bare = spec_sign(
        without(r, "content-type"),
        amz_date=header(r, "x-amz-date").decode(),
        akid=next(iter(r.secrets)),
        secret=next(iter(r.secrets.values())),
        region=r.region,
    )
    return insert(rng, bare, (rng.choice([b"Content-Type", b"content-type"]), b"application/json"))


@mutation(AGREE)
def spec_signed(rng: random.Random, r: Req) -> Req:
    """Signed anew by this file's own signer over the same headers: both accept (a third implementation)."""
    return spec_sign(
        r,
        amz_date=header(r, "x-amz-date").decode(),
        akid=next(iter(r.secrets)),
        secret=next(iter(r.secrets.values())),
        region=r.region,
    )


@mutation(AGREE)
def repeated_signed_header(rng: random.Random, r: Req) -> Req:
    """Two lines of one signed header, joined with ',' in the canonical request: both accept."""
    lines = [
        (b"X-Amzn-SageMaker-Custom-Attributes", b"a=1"),
        (b"x-amzn-sagemaker-custom-attributes", b" b =  2 "),
    ]
    return spec_sign(
        insert(rng, r, *lines),
        amz_date=header(r, "x-amz-date").decode(),
        akid=next(iter(r.secrets)),
        secret=next(iter(r.secrets.values())),
        region=r.region,
    )


def _dated(r: Req, amz_date: str, **kw: Any) -> Req:
    return spec_sign(
        r,
        amz_date=amz_date,
        akid=next(iter(r.secrets)),
        secret=next(iter(r.secrets.values())),
        region=r.region,
        **kw,
    )


@mutation(AGREE)
def valid_dates(rng: random.Random, r: Req) -> Req:
    amz_date = rng.choice(
        [
            "20280229T000000Z",
            "20000229T120000Z",
            "20261231T235959Z",
            "19700101T000000Z",
            "21000228T235959Z",
            "99991231T235959Z",
            "20270101T000000Z",
        ]
    )
    return replace(_dated(r, amz_date), now=epoch(amz_date) + rng.randint(-SKEW_S, SKEW_S))


@mutation(CONSERVATIVE)
def dates_python_rolls_over(rng: random.Random, r: Req) -> Req:
    """Dates that do not exist, which calendar.timegm turns into others (Nov 31 into Dec 1)."""
    amz_date = rng.choice(
        [
            "20261131T120000Z",
            "20270229T000000Z",
            "21000229T000000Z",
            "20261205T240000Z",
            "20261205T126000Z",
            "20261205T123460Z",
            "20261200T120000Z",
            "20261299T995999Z",
            "19691231T235959Z",
        ]
    )
    fields = [amz_date[0:4], amz_date[4:6], amz_date[6:8], amz_date[9:11], amz_date[11:13], amz_date[13:15]]
    now = calendar.timegm((*(int(f) for f in fields), 0, 0, 0))  # as api/sigv4.py computes it
    return replace(_dated(r, amz_date), now=now)


@mutation(AGREE)
def dates_malformed(rng: random.Random, r: Req) -> Req:
    amz_date = rng.choice(
        [
            "20261305T120000Z",
            "00001205T120000Z",
            "2026-12-05T12:34:56Z",
            "20261205 123456Z",
            "20261205T123456",
            "20261205t123456z",
            "20261205T123456ZZ",
            "",
            "2026120\uff15T123456Z",  # a fullwidth digit: str.isdigit() takes it, isascii() does not
            "+0261205T123456Z",
            "2026120",
        ]
    )
    return _dated(r, amz_date)


@mutation(AGREE)
def scope_date_not_the_signing_date(rng: random.Random, r: Req) -> Req:
    amz_date = header(r, "x-amz-date").decode()
    scope_date = rng.choice([str(int(amz_date[:8]) - 1), str(int(amz_date[:8]) + 1), "20000101"])
    return _dated(r, amz_date, scope_date=scope_date)


@mutation(CONSERVATIVE)
def signed_header_absent(rng: random.Random, r: Req) -> Req:
    """SignedHeaders names a header the request lacks (Python signs it with an empty value)."""
    names = sorted({*signed_names(r), rng.choice(["x-absent", "zz", "a"])})
    return _dated(r, header(r, "x-amz-date").decode(), names=names)


def _padded(r: Req, signed: int) -> list[tuple[bytes, bytes]]:
    """Lines of x-amzn-pad-* headers to bring the signed names to ``signed``."""
    count = signed - len(default_names(without(r, "authorization").headers))
    return [(f"X-Amzn-Pad-{i:03d}".encode(), f"v{i}".encode()) for i in range(count)]


@mutation(AGREE)
def the_most_signed_headers(rng: random.Random, r: Req) -> Req:
    return _dated(insert(rng, r, *_padded(r, 64)), header(r, "x-amz-date").decode())


@mutation(CONSERVATIVE)
def too_many_signed_headers(rng: random.Random, r: Req) -> Req:
    return _dated(insert(rng, r, *_padded(r, 65)), header(r, "x-amz-date").decode())


@mutation(CONSERVATIVE)
def too_many_headers(rng: random.Random, r: Req) -> Req:
    return insert(rng, r, *[(b"X-Note", b"n")] * (129 - len(r.headers)))


@mutation(CONSERVATIVE)
def value_too_long(rng: random.Random, r: Req) -> Req:
    return insert(rng, r, (b"X-Note", b"n" * 8193))


@mutation(CONSERVATIVE)
def value_not_ascii_or_control(rng: random.Random, r: Req) -> Req:
    value = rng.choice(
        [b"caf\xe9", b"caf\xc3\xa9", b"a\x00b", b"a\x01", b"\x7f", b"a\rb", b"a\nb", b"\x1c", b"\x0b"]
    )
    return insert(rng, r, (rng.choice([b"User-Agent", b"X-Note"]), value))


@mutation(CONSERVATIVE)
def name_not_a_token(rng: random.Random, r: Req) -> Req:
    return insert(
        rng, r, (rng.choice([b"X-\xe9t\xe9", b"X Note", b"X-Note:", b"", b"X\tNote", b"(x)"]), b"1")
    )


@mutation(CONSERVATIVE)
def signed_value_not_ascii(rng: random.Random, r: Req) -> Req:
    headers = dict(r.signed_with["headers"] or {"Content-Type": "application/json"})
    headers["X-Amzn-SageMaker-Custom-Attributes"] = rng.choice(["café=ü", "naïve", "\u2603"])
    return boto_resign(r, headers=headers)


@mutation(CONSERVATIVE)
def signed_with_date_header(rng: random.Random, r: Req) -> Req:
    headers = dict(r.signed_with["headers"] or {"Content-Type": "application/json"})
    headers["Date"] = "replaced by botocore"
    return boto_resign(r, headers=headers)


@mutation(CONSERVATIVE)
def signed_content_sha256(rng: random.Random, r: Req) -> Req:
    headers = dict(r.signed_with["headers"] or {"Content-Type": "application/json"})
    headers["X-Amz-Content-SHA256"] = hashlib.sha256(r.body).hexdigest()
    return boto_resign(r, headers=headers)


@mutation(CONSERVATIVE)
def signed_security_token(rng: random.Random, r: Req) -> Req:
    return boto_resign(r, token="session-token")


@mutation(CONSERVATIVE)
def secret_too_long(rng: random.Random, r: Req) -> Req:
    return boto_resign(r, secret="s" * 257)


@mutation(RULE)
def random_bytes(rng: random.Random, r: Req) -> Req:
    """A few bytes anywhere in the header lines, the path, the method or the body, set to any value."""
    for _ in range(rng.randrange(1, 4)):
        where = rng.randrange(10)
        if where < 7:
            i = rng.randrange(len(r.headers))
            name, value = r.headers[i]
            if where < 2:
                name = _poke(rng, name)
            else:
                value = _poke(rng, value)
            r = replace(r, headers=[*r.headers[:i], (name, value), *r.headers[i + 1 :]])
        elif where == 7:
            r = replace(r, path=_poke(rng, r.path))
        elif where == 8:
            r = replace(r, method=_poke(rng, r.method))
        else:
            r = replace(r, body=_poke(rng, r.body))
    return r


def _poke(rng: random.Random, data: bytes) -> bytes:
    k = rng.randrange(len(data) + 1)
    byte = bytes([rng.choice([rng.randrange(256), rng.choice(b" \t,;=/:\x00\x80\xff")])])
    op = rng.randrange(3)
    if op == 0 and k < len(data):
        return data[:k] + byte + data[k + 1 :]
    if op == 1 and k < len(data):
        return data[:k] + data[k + 1 :]
    return data[:k] + byte + data[k:]


def bases(rng: random.Random) -> Iterator[Req]:
    """botocore-signed invoke_endpoint requests of every shape boto3 sends, and a 1 MB one."""
    alphabet = string.ascii_letters + string.digits + "-"
    for n in range(60):
        body = rng.choice(
            [
                b"",
                b"[[1, 2]]",
                rng.randbytes(rng.randrange(1, 300)),
                rng.randbytes(rng.choice([55, 56, 63, 64, 65])),
            ]
        )
        headers = {"Content-Type": rng.choice(["application/json", "text/csv", "application/x-npy"])}
        optional = {
            "Accept": rng.choice(["application/json", "*/*", "text/csv"]),
            "X-Amzn-SageMaker-Custom-Attributes": rng.choice(["a=b", "trace=1;  model = x  y", " c=d "]),
            "X-Amzn-SageMaker-Target-Variant": "AllTraffic",
            "X-Amzn-SageMaker-Inference-Id": f"req-{n}",
            "X-Amzn-SageMaker-Enable-Explanations": "`true`",
        }
        headers.update(rng.sample(sorted(optional.items()), rng.randrange(len(optional) + 1)))
        host = rng.choice(["https://localhost:8443", "http://127.0.0.1:8080", "https://runtime.example.com"])
        name = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 24)))
        yield boto_sign(
            body,
            headers=headers,
            url=f"{host}/endpoints/{name}/invocations",
            akid=rng.choice(
                [AKID, "AKIA" + "".join(rng.choices(string.ascii_uppercase, k=16)), "test", "k.e-y_1"]
            ),
            secret=rng.choice(
                [SECRET, "x", "".join(rng.choices(string.printable[:94], k=rng.randrange(1, 120)))]
            ),
            region=rng.choice([REGION, "eu-west-3"]),
            when=WHEN + datetime.timedelta(seconds=rng.randrange(-(10**8), 10**8)),
        )
    yield boto_sign(rng.randbytes(1 << 20), headers={"Content-Type": "application/octet-stream"})


def test_differential_fuzz() -> None:
    rng = random.Random(SEED)
    cases = Counter[str]()
    accepted = Counter[tuple[str, str]]()  # (mutation, which accepted): "both", "python", "native"
    failures: list[str] = []
    unmutated = 0
    for base in bases(rng):
        (akid,) = base.secrets
        assert native(base) == akid and python(base) == akid, base.headers
        unmutated += 1
        plan = [m for m in MUTATIONS if m[1] != RULE] + [m for m in MUTATIONS if m[1] == RULE] * 8
        for name, kind, fn in plan:
            r = fn(rng, base)
            if r is None:
                continue
            c, p = native(r), python(r)
            cases[name] += 1
            accepted[name, "both" if c and p else "native" if c else "python" if p else "neither"] += 1
            if c is not None and c != p:
                failures.append(f"{name}: C accepted ({c!r}), Python {p!r}: {r}")
            elif kind == AGREE and c != p:
                failures.append(f"{name}: C {c!r}, Python {p!r}, expected to agree: {r}")
            elif kind == CONSERVATIVE and not (c is None and p == next(iter(r.secrets))):
                failures.append(f"{name}: C {c!r}, Python {p!r}, expected Python alone to accept: {r}")
    assert not failures, "\n".join(failures[:5]) + f"\n({len(failures)} in all)"
    assert unmutated == 61
    assert sum(cases.values()) >= 3000
    assert set(cases) == {name for name, _, _ in MUTATIONS}
    # the mutations that keep a request good are accepted by both; the rest are refused by both, each often
    for name, kind, _ in MUTATIONS:
        if kind == AGREE:
            assert accepted[name, "both"] + accepted[name, "neither"] == cases[name], name
    for name in [
        "header_name_case",
        "headers_reordered",
        "signed_headers_spelled_otherwise",
    ]:
        assert accepted[name, "both"] == cases[name], name
    # (both refuse when a tab takes the place of the space after AWS4-HMAC-SHA256)
    assert accepted["value_whitespace", "both"] > cases["value_whitespace"] * 0.8
    for name in ["spec_signed", "repeated_signed_header", "the_most_signed_headers", "valid_dates"]:
        assert accepted[name, "both"] == cases[name], name
    for name in ["body_altered", "signed_value_altered", "signed_header_removed", "another_method"]:
        assert accepted[name, "neither"] == cases[name], name
    assert accepted["authorization_spelled_otherwise", "both"] > 0
    assert accepted["authorization_spelled_otherwise", "neither"] > 0
    assert accepted["random_bytes", "both"] > 0  # some pokes land where nothing is signed


def test_paths_the_check_takes_are_their_own_canonical_uri() -> None:
    """Random paths signed with the raw path as the canonical URI: the C check accepts exactly those of
    unreserved characters with no empty, '.' or '..' segment; each is what _canonical_uri makes of it."""
    rng = random.Random(SEED)
    base = boto_sign()
    taken = 0
    for _ in range(600):
        path = rng.choice([b"/", b""]) + bytes(rng.choices(b"/a.~-_Z9%?; ", k=rng.randrange(12)))
        r = _dated(replace(base, path=path), header(base, "x-amz-date").decode())
        segments = path.split(b"/")[1:]
        plain = (
            path.startswith(b"/")
            and re.fullmatch(rb"[A-Za-z0-9._~/-]*", path) is not None
            and all(s not in (b".", b"..") for s in segments)
            and all(segments[:-1])
        )
        c = native(r)
        assert (c == AKID) == plain, path
        if c is not None:
            taken += 1
            assert sigv4._canonical_uri(path, True) == path.decode()
            assert python(r) == AKID, path
    assert taken > 50
