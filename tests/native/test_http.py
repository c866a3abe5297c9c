"""The native data plane's HTTP/1.1 heads (src/native/http.c), compiled on its own and called through
ctypes: requests built at random parse into exactly what was built, and whatever the C parser takes of a
mutated request, httptools (the main port's parser, llhttp) reads the same way: the same method, target,
version and header names and values. The C parser may refuse more than llhttp does (it is the stricter by
design: a refused request gets a 400), never read a request differently (what request smuggling is made of).
Worker answers (``zs_parse_response``) and chunked bodies (``zs_chunked_scan``) the same way."""

from __future__ import annotations

import ctypes
import random
from typing import Any

import httptools
import pytest

from zeroscale.testing import mutate

from .cc import compile_native

MAX_HEADERS = 64
MORE, BAD, TOO_LARGE = 0, -1, -2


class Header(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p),
        ("name_len", ctypes.c_size_t),
        ("value", ctypes.c_void_p),
        ("value_len", ctypes.c_size_t),
    ]


class Request(ctypes.Structure):
    _fields_ = [
        ("method", ctypes.c_void_p),
        ("method_len", ctypes.c_size_t),
        ("target", ctypes.c_void_p),
        ("target_len", ctypes.c_size_t),
        ("minor", ctypes.c_int),
        ("headers", Header * MAX_HEADERS),
        ("n_headers", ctypes.c_size_t),
    ]


class Response(ctypes.Structure):
    _fields_ = [
        ("status", ctypes.c_int),
        ("minor", ctypes.c_int),
        ("headers", Header * MAX_HEADERS),
        ("n_headers", ctypes.c_size_t),
    ]


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    """http.c compiled on its own, with the extension's flags and warnings as errors."""
    out = compile_native("http.c", tmp_path_factory.mktemp("http") / "libzs_http.so", "-Wno-unused-parameter")
    found = ctypes.CDLL(str(out))
    size, text, at = ctypes.c_size_t, ctypes.c_char_p, ctypes.POINTER
    signatures: dict[str, tuple[Any, list[Any]]] = {
        "zs_parse_request": (ctypes.c_long, [text, size, size, at(Request)]),
        "zs_parse_response": (ctypes.c_long, [text, size, size, at(Response)]),
        "zs_chunked_scan": (ctypes.c_long, [text, size, size, size, at(size), at(ctypes.c_void_p), at(size)]),
        "zs_chunked_copy": (None, [text, size, text]),
    }
    for name, (restype, argtypes) in signatures.items():
        fn = getattr(found, name)
        fn.restype, fn.argtypes = restype, argtypes
    return found


def _slice(buf: ctypes.Array[ctypes.c_char], ptr: int | None, length: int) -> bytes:
    base = ctypes.addressof(buf)
    assert ptr is not None and base <= ptr and ptr + length <= base + len(buf)
    return bytes(buf[ptr - base : ptr - base + length])


def c_request(lib: ctypes.CDLL, data: bytes, max_head: int = 64 * 1024) -> tuple[int, dict[str, Any]]:
    buf = ctypes.create_string_buffer(data, len(data))
    req = Request()
    got = int(lib.zs_parse_request(buf, len(data), max_head, ctypes.byref(req)))
    if got <= 0:
        return got, {}
    headers = [
        (_slice(buf, h.name, h.name_len), _slice(buf, h.value, h.value_len))
        for h in list(req.headers)[: req.n_headers]
    ]
    return got, {
        "method": _slice(buf, req.method, req.method_len),
        "target": _slice(buf, req.target, req.target_len),
        "version": f"1.{req.minor}",
        "headers": headers,
    }


class _Seen:
    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.done = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.done = True


def llhttp_request(head: bytes) -> dict[str, Any] | None:
    """What httptools reads of a request head (None: it refuses it, or wants more)."""
    seen = _Seen()
    parser = httptools.HttpRequestParser(seen)
    try:
        parser.feed_data(head)
    except httptools.HttpParserError:
        return None
    if not seen.done:
        return None
    return {
        "method": parser.get_method(),
        "target": seen.url,
        "version": parser.get_http_version(),
        "headers": [(n, v.strip(b" \t")) for n, v in seen.headers],
    }


TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
PATH = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~/%?=&"
VALUE = "".join(chr(c) for c in range(0x20, 0x7F))


def random_request(rng: random.Random) -> tuple[bytes, dict[str, Any]]:
    method = rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]).encode()
    target = ("/" + "".join(rng.choice(PATH) for _ in range(rng.randint(0, 40)))).encode()
    version = rng.choice(["1.0", "1.1"])
    headers = []
    for _ in range(rng.randint(0, 12)):
        name = "".join(rng.choice(TCHAR) for _ in range(rng.randint(1, 20))).encode()
        value = "".join(rng.choice(VALUE) for _ in range(rng.randint(0, 40))).strip(" ").encode()
        lead, trail = rng.choice(["", " ", "  ", "\t"]), rng.choice(["", " ", "\t "])
        headers.append((name, value, lead.encode(), trail.encode()))
    lines = [method + b" " + target + b" HTTP/" + version.encode()]
    lines += [n + b":" + lead + v + trail for n, v, lead, trail in headers]
    data = b"\r\n".join(lines) + b"\r\n\r\n"
    expected = {
        "method": method,
        "target": target,
        "version": version,
        "headers": [(n, v) for n, v, _, _ in headers],
    }
    return data, expected


def test_random_requests_parse_into_what_was_built(lib: ctypes.CDLL) -> None:
    rng = random.Random(2024)
    for _ in range(2000):
        data, expected = random_request(rng)
        got, parsed = c_request(lib, data + b"BODY")
        assert got == len(data), data
        assert parsed == expected, data
        assert llhttp_request(data) == expected, data  # the test's own requests are plain HTTP


def test_every_prefix_of_a_request_wants_more_and_a_tiny_limit_is_too_large(lib: ctypes.CDLL) -> None:
    data, _ = random_request(random.Random(7))
    for end in range(len(data)):
        assert c_request(lib, data[:end])[0] == MORE, data[:end]
    assert c_request(lib, data, max_head=len(data) - 1)[0] == TOO_LARGE
    assert c_request(lib, data, max_head=len(data))[0] == len(data)


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\nHost: a\n\n",  # bare LF
        b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",  # space before the colon
        b"GET / HTTP/1.1\r\n: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\x7fb\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
        b"GET  / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/2.0\r\n\r\n",
        b"GET / http/1.1\r\n\r\n",
        b"G\xc3T / HTTP/1.1\r\n\r\n",
        b"GET /a b HTTP/1.1\r\n\r\n",
        b"GET /\xff HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1 \r\n\r\n",
        b"HEAD / HTTP/1.1\r\n\r\n",  # its answer has no body: refused, not relayed
        b"PROPFIND / HTTP/1.1\r\n\r\n",
        b"GET * HTTP/1.1\r\n\r\n",  # origin-form targets only
        b"GET http://a/ HTTP/1.1\r\n\r\n",
        b"GET /a#b HTTP/1.1\r\n\r\n",
        b"GET /a{b} HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + b"X: 1\r\n" * 65 + b"\r\n",  # past ZS_MAX_HEADERS
    ],
)
def test_what_the_parser_refuses(lib: ctypes.CDLL, head: bytes) -> None:
    assert c_request(lib, head)[0] == BAD


def test_mutated_requests_are_refused_or_read_as_llhttp_reads_them(lib: ctypes.CDLL) -> None:
    """Twenty thousand mutations (flipped bits, bytes cut, CR, LF, NUL, spaces, colons and tabs put in): the C
    parser takes a mutant only where llhttp reads the same request from the same bytes."""
    rng = random.Random(99)
    specials = [b"\r", b"\n", b"\x00", b" ", b"\t", b":", b"\r\n", b"\x7f", b"\x80", b"/", b"HTTP/1.1"]
    accepted = 0
    for _ in range(20_000):
        data, _ = random_request(rng)
        mutant = mutate(rng, data, specials)
        got, parsed = c_request(lib, mutant)
        if got > 0:
            accepted += 1
            assert llhttp_request(mutant[:got]) == parsed, mutant
    assert accepted > 2000  # the mutants it takes are a real share: the property is not vacuous


def c_response(lib: ctypes.CDLL, data: bytes) -> tuple[int, int, list[tuple[bytes, bytes]]]:
    buf = ctypes.create_string_buffer(data, len(data))
    resp = Response()
    got = int(lib.zs_parse_response(buf, len(data), 64 * 1024, ctypes.byref(resp)))
    if got <= 0:
        return got, 0, []
    headers = [
        (_slice(buf, h.name, h.name_len), _slice(buf, h.value, h.value_len))
        for h in list(resp.headers)[: resp.n_headers]
    ]
    return got, resp.status, headers


def test_worker_answer_heads(lib: ctypes.CDLL) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\n"
    assert c_response(lib, head + b"abc") == (
        len(head),
        200,
        [(b"Content-Type", b"text/plain"), (b"Content-Length", b"3")],
    )
    assert c_response(lib, b"HTTP/1.0 404\r\n\r\n")[:2] == (16, 404)  # no reason phrase
    for bad in (
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200OK\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
    ):
        assert c_response(lib, bad)[0] == BAD, bad
    assert c_response(lib, head[:-1])[0] == MORE


def c_chunked(lib: ctypes.CDLL, data: bytes, max_body: int = 1 << 20) -> tuple[int, bytes, bytes]:
    buf = ctypes.create_string_buffer(data, len(data))
    body_len, trailer, trailer_len = ctypes.c_size_t(), ctypes.c_void_p(), ctypes.c_size_t()
    got = int(
        lib.zs_chunked_scan(
            buf,
            len(data),
            max_body,
            64 * 1024,
            ctypes.byref(body_len),
            ctypes.byref(trailer),
            ctypes.byref(trailer_len),
        )
    )
    if got <= 0:
        return got, b"", b""
    out = ctypes.create_string_buffer(max(1, body_len.value))
    lib.zs_chunked_copy(buf, len(data), out)
    return got, out.raw[: body_len.value], _slice(buf, trailer.value, trailer_len.value)


def test_chunked_bodies(lib: ctypes.CDLL) -> None:
    rng = random.Random(5)
    for _ in range(500):
        parts = [
            bytes(rng.randrange(256) for _ in range(rng.randint(1, 300))) for _ in range(rng.randint(0, 8))
        ]
        trailer = b"X-Zeroscale-Stream-Error: 500 boom\r\n" if rng.random() < 0.3 else b""
        data = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in parts) + b"0\r\n" + trailer + b"\r\n"
        assert c_chunked(lib, data + b"NEXT") == (len(data), b"".join(parts), trailer)
        for end in range(0, len(data), 7):  # every prefix wants more
            assert c_chunked(lib, data[:end])[0] == MORE
    assert c_chunked(lib, b"zz\r\n")[0] == BAD
    assert c_chunked(lib, b"5\r\nabcdeXY0\r\n\r\n")[0] == BAD  # no CRLF after a chunk's data
    assert c_chunked(lib, b"10\r\n" + b"a" * 16 + b"\r\n0\r\n\r\n", max_body=8)[0] == TOO_LARGE
    assert c_chunked(lib, b"ffffffffffffffffff\r\n")[0] == BAD  # a size past 15 hex digits
