"""Verify AWS Signature Version 4 on incoming requests.

Pure functions, no I/O and no web framework: the caller hands over the raw ASGI pieces of a request
(method, raw path, raw query string, raw header pairs, body) and a ``lookup`` from access key id to secret.

The canonical request is rebuilt the way botocore's ``SigV4Auth`` builds it on the client side
(``botocore/auth.py``), so unmodified boto3 requests verify byte for byte:

- canonical URI: the wire path (still percent-encoded), dot segments and empty segments removed, then
  percent-encoded once more with ``safe='/~'`` (S3 alone skips both steps);
- canonical query string: ``name=value`` pairs, URI-encoded with ``safe='-_.~'``, sorted by name then value
  (``X-Amz-Signature`` left out for presigned URLs);
- canonical headers: the names listed in ``SignedHeaders``, lower-cased and sorted, each value trimmed and
  inner runs of whitespace collapsed, repeated headers joined with ``,``. ``Content-Type`` and every
  ``x-amz-*`` / ``x-amzn-*`` header the request carries (``X-Amz-Target`` included, ``X-Amzn-Trace-Id``
  aside, as botocore leaves it unsigned) must be among them, else the request is refused;
- payload hash: ``sha256(body)`` of the body received, always (a presigned URL too: no zeroscale
  operation takes an unsigned payload). An ``x-amz-content-sha256`` header must equal it:
  ``UNSIGNED-PAYLOAD`` or any other value is refused (S3's XAmzContentSHA256Mismatch, in the service's
  InvalidSignature shape).

The check comes in two steps, so that a server reads no body for a request it can refuse without one:
``prepare`` checks all the headers say (the claim, a known key, freshness, and the signature itself when
the request declares its body's hash in ``x-amz-content-sha256``), ``Signed.finish`` the body.

Both forms of SigV4 are accepted: the ``Authorization`` header and presigned query parameters
(``X-Amz-Algorithm``, ``X-Amz-Credential``, ``X-Amz-Date``, ``X-Amz-Expires``, ``X-Amz-SignedHeaders``,
``X-Amz-Signature``).
"""

from __future__ import annotations

import calendar
import functools
import hashlib
import hmac
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import parsedate_tz
from urllib.parse import quote, unquote

from zeroscale.api.wire import header_text
from zeroscale.errors import InvalidSignature, MissingAuthenticationToken, UnrecognizedClient

__all__ = [
    "ALGORITHM",
    "Claim",
    "Signed",
    "canonical_request",
    "header_map",
    "parse_claim",
    "prepare",
    "string_to_sign",
    "verify",
]

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
MAX_PRESIGN_EXPIRES_S = 604800  # one week, as AWS enforces

MSG_MISSING = "Missing Authentication Token"
MSG_UNKNOWN_KEY = "The security token included in the request is invalid."
MSG_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your AWS "
    "Secret Access Key and signing method. Consult the service documentation for details."
)

_SIG_QUERY_MARKER = b"X-Amz-Signature="


# ---------------------------------------------------------------------------------------------------------
# cached building blocks


@functools.lru_cache(maxsize=1024)
def _signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    k = hmac.digest(("AWS4" + secret).encode("utf-8"), date.encode("utf-8"), "sha256")
    k = hmac.digest(k, region.encode("utf-8"), "sha256")
    k = hmac.digest(k, service.encode("utf-8"), "sha256")
    return hmac.digest(k, b"aws4_request", "sha256")


def _remove_dot_segments(path: str) -> str:
    # botocore.utils.remove_dot_segments: RFC 3986 5.2.4 plus removal of empty segments.
    if not path:
        return "/"
    out: list[str] = []
    for seg in path.split("/"):
        if seg and seg != ".":
            if seg == "..":
                if out:
                    out.pop()
            else:
                out.append(seg)
    first = "/" if path[0] == "/" else ""
    last = "/" if path[-1] == "/" and out else ""
    return first + "/".join(out) + last


@functools.lru_cache(maxsize=4096)
def _canonical_uri(raw_path: bytes, normalize: bool) -> str:
    # The wire path is ASCII in practice; surrogateescape round-trips any other byte unchanged.
    path = raw_path.decode("utf-8", "surrogateescape") or "/"
    if not normalize:  # S3: the path is used exactly as sent
        return path
    return quote(_remove_dot_segments(path), safe="/~", encoding="utf-8", errors="surrogateescape")


def _split_query(query: str) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for part in query.split("&"):
        if part:
            key, _, value = part.partition("=")
            pairs.append((key, value))
    return pairs


def _canonical_query(pairs: list[tuple[str, str]]) -> str:
    """Spec form: decode, re-encode each name and value with the unreserved set, sort."""
    encoded = sorted((quote(unquote(k), safe="-_.~"), quote(unquote(v), safe="-_.~")) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def _raw_sorted_query(pairs: list[tuple[str, str]]) -> str:
    """botocore's form for a query taken from the URL: the wire pairs, sorted, not re-encoded."""
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def _parse_amz_date(value: str) -> float | None:
    """``YYYYMMDDTHHMMSSZ`` -> epoch seconds, or None when malformed."""
    if len(value) != 16 or value[8] != "T" or value[15] != "Z":
        return None
    digits = value[:8] + value[9:15]
    if not digits.isdigit() or not digits.isascii():
        return None
    try:
        return float(
            calendar.timegm(
                (
                    int(value[0:4]),
                    int(value[4:6]),
                    int(value[6:8]),
                    int(value[9:11]),
                    int(value[11:13]),
                    int(value[13:15]),
                    0,
                    0,
                    0,
                )
            )
        )
    except (ValueError, OverflowError):
        return None


def _amz_date_from_http_date(value: str) -> str | None:
    """An RFC 1123 ``Date`` header -> ``YYYYMMDDTHHMMSSZ`` (botocore signs with that form either way)."""
    parsed = parsedate_tz(value)
    if parsed is None:
        return None
    epoch = calendar.timegm(parsed[:9]) - (parsed[9] or 0)
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch))


def _fmt(epoch: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch))


def _skew_text(seconds: float) -> str:
    minutes = seconds / 60.0
    if minutes == int(minutes):
        return f"{int(minutes)} min."
    return f"{seconds:g} sec."


def _check_time(amz_date: str, signed_at: float, now: float, max_skew_s: float) -> None:
    if signed_at < now - max_skew_s:
        raise InvalidSignature(
            f"Signature expired: {amz_date} is now earlier than {_fmt(now - max_skew_s)} "
            f"({_fmt(now)} - {_skew_text(max_skew_s)})"
        )
    if signed_at > now + max_skew_s:
        raise InvalidSignature(
            f"Signature not yet current: {amz_date} is still later than {_fmt(now + max_skew_s)} "
            f"({_fmt(now)} + {_skew_text(max_skew_s)})"
        )


# ---------------------------------------------------------------------------------------------------------
# parsing the two auth forms


@dataclass(slots=True)
class Claim:
    """What a request says about its signature, from either auth form."""

    credential: str  # AKID/date/region/service/aws4_request
    signed_headers: str  # as sent: names separated by ';'
    signature: str
    amz_date: str  # YYYYMMDDTHHMMSSZ, as sent (not yet checked)
    pairs: list[tuple[str, str]]  # the query string's pairs that were signed, as on the wire
    presigned: bool = False
    expires: int = 0  # presigned only: X-Amz-Expires


def header_map(headers: Sequence[tuple[bytes, bytes]]) -> dict[str, list[str]]:
    """Lower-cased name -> values in arrival order. A value is decoded as UTF-8, which is how botocore puts
    a str value on the wire and into the string it signs (``CustomAttributes="ä"``), else as latin-1, how
    http.client puts one (the same for ASCII)."""
    hmap: dict[str, list[str]] = {}
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1").lower()
        value = header_text(raw_value)
        got = hmap.get(name)
        if got is None:
            hmap[name] = [value]
        else:
            got.append(value)
    return hmap


def parse_claim(hmap: dict[str, list[str]], query_string: bytes) -> Claim:
    """The ``Authorization`` header's claim, else the presigned query's; MissingAuthenticationToken when
    the request carries neither, InvalidSignature when it carries both or a malformed one."""
    auth_values = hmap.get("authorization")
    has_query_sig = bool(query_string) and _SIG_QUERY_MARKER in query_string
    query = query_string.decode("latin-1") if query_string else ""
    pairs = _split_query(query) if query else []
    if auth_values is None:
        return _presigned_claim(pairs if has_query_sig else [], pairs)
    if has_query_sig and any(k == "X-Amz-Signature" for k, _ in pairs):
        raise InvalidSignature(
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature "
            "query string parameter or the Authorization header should be specified"
        )
    credential, signed_headers, signature = _parse_authorization(",".join(auth_values))
    return Claim(credential, signed_headers, signature, _request_date(hmap, auth_values[0]), pairs)


def _parse_authorization(value: str) -> tuple[str, str, str]:
    """-> (credential, signed_headers, signature) from an ``Authorization`` header value."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise InvalidSignature(f"Unsupported AWS 'algorithm': '{algorithm}'. Expected '{ALGORITHM}'.")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, sep, val = part.strip().partition("=")
        if not sep:
            if part.strip():
                raise InvalidSignature(
                    f"Authorization header requires each component to be of the form name=value: "
                    f"'{part.strip()}'."
                )
            continue
        if name in fields:  # e.g. a header repeated into itself: which one was meant is anyone's guess
            raise InvalidSignature(f"Authorization header has '{name}' more than once.")
        fields[name] = val.strip()
    missing = [n for n in ("Credential", "SignedHeaders", "Signature") if not fields.get(n)]
    if missing:
        raise InvalidSignature(
            " ".join(f"Authorization header requires '{n}' parameter." for n in missing)
            + f" Authorization={value}"
        )
    return fields["Credential"], fields["SignedHeaders"], fields["Signature"]


def _request_date(hmap: dict[str, list[str]], authorization: str) -> str:
    """The signing time of a header-signed request: ``X-Amz-Date``, else the ``Date`` header converted."""
    amz_date_values = hmap.get("x-amz-date")
    if amz_date_values:
        return amz_date_values[0].strip()
    date_values = hmap.get("date")
    converted = _amz_date_from_http_date(date_values[0]) if date_values else None
    if converted is None:
        raise InvalidSignature(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. "
            f"Authorization={authorization}"
        )
    return converted


def _presigned_claim(signed_pairs: list[tuple[str, str]], pairs: list[tuple[str, str]]) -> Claim:
    """The claim of a presigned URL from its ``X-Amz-*`` query parameters (``signed_pairs``: the pairs when
    the query carries a signature, else none)."""
    q = {k: unquote(v) for k, v in signed_pairs if k.startswith("X-Amz-")}
    if "X-Amz-Signature" not in q:
        raise MissingAuthenticationToken(MSG_MISSING)
    missing = [
        n
        for n in ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders")
        if not q.get(n)
    ]
    if missing:
        raise InvalidSignature(
            " ".join(f"AWS query-string parameters must include '{n}'." for n in missing)
            + " Re-examine the query-string parameters."
        )
    if q["X-Amz-Algorithm"] != ALGORITHM:
        raise InvalidSignature(
            f"Unsupported AWS 'algorithm': '{q['X-Amz-Algorithm']}'. Expected '{ALGORITHM}'."
        )
    return Claim(
        credential=q["X-Amz-Credential"],
        signed_headers=q["X-Amz-SignedHeaders"],
        signature=q["X-Amz-Signature"],
        amz_date=q["X-Amz-Date"],
        # The signature itself is not part of what was signed.
        pairs=[(k, v) for k, v in pairs if k != "X-Amz-Signature"],
        presigned=True,
        expires=_presign_expires(q.get("X-Amz-Expires")),
    )


def _presign_expires(raw_expires: str | None) -> int:
    if raw_expires is None:
        raise InvalidSignature("AWS query-string parameters must include 'X-Amz-Expires'.")
    if not raw_expires.isdigit() or not raw_expires.isascii():
        raise InvalidSignature(f"X-Amz-Expires should be a number, got '{raw_expires}'.")
    expires = int(raw_expires)
    if expires > MAX_PRESIGN_EXPIRES_S:
        raise InvalidSignature(
            f"X-Amz-Expires must be less than a week (in seconds) that is {MAX_PRESIGN_EXPIRES_S}"
        )
    return expires


# ---------------------------------------------------------------------------------------------------------
# scope and time


# The parts below depend only on their strings, which a client repeats from one request to the next (its
# credential scope and signed headers all day, its signing time for a second): cached, bounded. A cached
# part is one the request's signature is still checked against; errors are raised again, never cached.
@functools.lru_cache(maxsize=1024)
def _parse_scope(credential: str, service: str, region: str | None) -> tuple[str, str, str, str]:
    """``AKID/date/region/service/aws4_request`` -> (akid, date, region, scope-after-akid); the scope's
    region must be ``region`` (the server's) unless that is None."""
    parts = credential.split("/")
    if len(parts) != 5 or not all(parts):
        raise InvalidSignature(
            f"Credential should be of the form <access key>/<date>/<region>/<service>/aws4_request, "
            f"got '{credential}'."
        )
    akid, date, scope_region, scope_service, terminator = parts
    if terminator != "aws4_request":
        raise InvalidSignature(
            f"Credential should be scoped with a valid terminator: 'aws4_request', not '{terminator}'."
        )
    if scope_service != service:
        raise InvalidSignature(f"Credential should be scoped to correct service: '{service}'. ")
    if region is not None and scope_region != region:
        raise InvalidSignature(
            f"Credential should be scoped to a valid region, not '{scope_region}'. "
            f"This server's region is '{region}': sign for it (region_name, --region, AWS_DEFAULT_REGION)."
        )
    if len(date) != 8 or not date.isdigit():
        raise InvalidSignature(f"Credential should be scoped to a valid date, not '{date}'.")
    return akid, date, scope_region, f"{date}/{scope_region}/{scope_service}/aws4_request"


@functools.lru_cache(maxsize=1024)
def _signed_header_names(signed_headers: str) -> tuple[str, ...]:
    names = tuple(sorted({n.strip().lower() for n in signed_headers.split(";") if n.strip()}))
    if "host" not in names:
        raise InvalidSignature("'Host' must be a 'SignedHeader' in the AWS Authorization.")
    return names


# Headers that must be signed when present: they choose the operation (X-Amz-Target), how the body is read
# (Content-Type) and what an invocation reaches (X-Amzn-SageMaker-*). botocore signs every header but its
# UNSIGNED_HEADERS (expect, transfer-encoding, user-agent, x-amzn-trace-id), so its requests always pass.
_MUST_SIGN_PREFIXES = ("x-amz-", "x-amzn-")
_MAY_GO_UNSIGNED = "x-amzn-trace-id"


def _check_all_signed(hmap: dict[str, list[str]], names: tuple[str, ...]) -> None:
    unsigned = _unsigned(tuple(hmap), names)  # a client sends the same headers request after request
    if unsigned:
        raise InvalidSignature(
            "There were headers present in the request which were not signed: "
            + ", ".join(f"'{n}'" for n in sorted(unsigned))
            + ". Content-Type, X-Amz-Target and every other x-amz-* and x-amzn-* header (X-Amzn-Trace-Id "
            "aside) must be in SignedHeaders."
        )


@functools.lru_cache(maxsize=1024)
def _unsigned(present: tuple[str, ...], names: tuple[str, ...]) -> tuple[str, ...]:
    """Of the header names ``present``, those that must be signed and are not among ``names``."""
    return tuple(
        name
        for name in present
        if (name == "content-type" or name.startswith(_MUST_SIGN_PREFIXES))
        and name not in names
        and name != _MAY_GO_UNSIGNED
    )


@functools.lru_cache(maxsize=1024)
def _check_date(amz_date: str, scope_date: str) -> float:
    """The signing time in epoch seconds, which must fall on the credential scope's date."""
    signed_at = _parse_amz_date(amz_date)
    if signed_at is None:
        raise InvalidSignature(f"Date must be in ISO-8601 'basic format'. Got '{amz_date}'.")
    if amz_date[:8] != scope_date:
        raise InvalidSignature(
            f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
            f"'{scope_date}' != '{amz_date[:8]}', from '{amz_date}'."
        )
    return signed_at


def _check_fresh(claim: Claim, signed_at: float, now: float, max_skew_s: float) -> None:
    """A header signature is good within ``max_skew_s`` of now; a presigned one until it expires (and not
    from further in the future than the skew)."""
    if not claim.presigned:
        _check_time(claim.amz_date, signed_at, now, max_skew_s)
        return
    if now > signed_at + claim.expires:
        raise InvalidSignature(
            f"Signature expired: {claim.amz_date} is now earlier than {_fmt(now - claim.expires)} "
            f"({_fmt(now)} - {claim.expires} sec.)"
        )
    if signed_at > now + max_skew_s:
        _check_time(claim.amz_date, signed_at, now, max_skew_s)


# ---------------------------------------------------------------------------------------------------------
# canonical request, string to sign, comparison


def _canonical_headers(names: Sequence[str], hmap: dict[str, list[str]]) -> str:
    """One ``name:value\n`` line per signed header: values trimmed, inner whitespace collapsed, repeated
    headers joined with ``,``; a signed header the request lacks has an empty value."""
    lines = []
    for name in names:
        values = hmap.get(name)
        if values is None:
            joined = ""
        elif len(values) == 1:
            joined = " ".join(values[0].split())
        else:
            joined = ",".join(" ".join(v.split()) for v in values)
        lines.append(f"{name}:{joined}\n")
    return "".join(lines)


def _payload_hash(hmap: dict[str, list[str]], body: bytes) -> str:
    """The hash of the body the server received, always: a client's ``X-Amz-Content-SHA256`` is never taken
    in its place (it is not necessarily signed, and a replayed request could claim the signed body's hash
    over another body). When sent, it must name that same hash: ``UNSIGNED-PAYLOAD`` (and the streaming
    forms) are refused, as no zeroscale operation takes an unsigned body."""
    payload_hash = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
    claimed = hmap.get("x-amz-content-sha256")
    if claimed is not None:
        value = claimed[0].strip() if len(claimed) == 1 else ",".join(claimed)
        if value != payload_hash:
            raise InvalidSignature(_content_sha_message(value, payload_hash))
    return payload_hash


def _content_sha_message(claimed: str, payload_hash: str) -> str:
    if claimed == UNSIGNED_PAYLOAD or claimed.startswith("STREAMING-"):
        return (
            f"X-Amz-Content-SHA256 '{claimed[:64]}' is not accepted: this service takes signed payloads "
            f"only. Sign the SHA-256 of the body (botocore does over http, and over https unless told "
            f"otherwise)."
        )
    return (
        f"The provided 'x-amz-content-sha256' header does not match what was computed "
        f"(XAmzContentSHA256Mismatch): it says '{claimed[:64]}', the body received hashes to "
        f"'{payload_hash}'."
    )


def _query_forms(pairs: list[tuple[str, str]]) -> tuple[str, ...]:
    """The canonical query string; then, where it differs, the wire pairs sorted as they stand: botocore
    signs a query taken from the URL without re-encoding it, so a client whose URL was not canonically
    encoded signed that form instead."""
    if not pairs:
        return ("",)
    canonical, raw_form = _canonical_query(pairs), _raw_sorted_query(pairs)
    return (canonical,) if raw_form == canonical else (canonical, raw_form)


def canonical_request(
    method: str,
    canonical_uri: str,
    canonical_query: str,
    canonical_headers: str,
    signed_names: Sequence[str],
    payload_hash: str,
) -> str:
    return (
        f"{method.upper()}\n{canonical_uri}\n{canonical_query}\n{canonical_headers}\n"
        f"{';'.join(signed_names)}\n{payload_hash}"
    )


def string_to_sign(amz_date: str, scope: str, creq: str) -> str:
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n" + hashlib.sha256(creq.encode("utf-8")).hexdigest()


def _signature_matches(key: bytes, sts: str, provided: str) -> bool:
    """Constant-time comparison of the signature ``key`` makes of ``sts`` with the one the client sent."""
    expected = hmac.new(key, sts.encode("utf-8"), hashlib.sha256).hexdigest().encode("ascii")
    return hmac.compare_digest(expected, provided.strip().lower().encode("latin-1", "replace"))


# ---------------------------------------------------------------------------------------------------------
# verify


@dataclass(slots=True)
class Signed:
    """A request whose signature has been checked as far as its headers allow (``prepare``): its claim, its
    key, its freshness; and the signature itself when the request declared its body's hash
    (``x-amz-content-sha256``). ``finish`` checks the body against it. The split lets a server refuse a
    request before reading its body (one without a key it knows, a stale one, a wrong declared
    signature) rather than hold the body of anyone who connects."""

    akid: str
    key: bytes
    claim: Claim
    scope: str
    method: str
    uri: str
    headers_part: str
    names: tuple[str, ...]
    hmap: dict[str, list[str]]
    verified: bool  # the signature matched over the declared hash: the body need only hash to it

    def finish(self, body: bytes) -> str:
        """The verified access key id, once ``body`` is the one signed (InvalidSignature otherwise)."""
        payload_hash = _payload_hash(self.hmap, body)
        if self.verified or _matches(self, payload_hash):
            return self.akid
        raise InvalidSignature(MSG_MISMATCH)


def _matches(signed: Signed, payload_hash: str) -> bool:
    claim = signed.claim
    for query in _query_forms(claim.pairs):
        creq = canonical_request(
            signed.method, signed.uri, query, signed.headers_part, signed.names, payload_hash
        )
        sts = string_to_sign(claim.amz_date, signed.scope, creq)
        if _signature_matches(signed.key, sts, claim.signature):
            return True
    return False


_HEX = frozenset("0123456789abcdef")


def _declared_hash(hmap: dict[str, list[str]]) -> str | None:
    """The body's hash as the request declares it, when it declares one a body could have; an unsigned or
    streaming payload is refused here (no zeroscale operation takes one), before any body is read."""
    claimed = hmap.get("x-amz-content-sha256")
    if claimed is None or len(claimed) != 1:
        return None
    value = claimed[0].strip()
    if value == UNSIGNED_PAYLOAD or value.startswith("STREAMING-"):
        raise InvalidSignature(_content_sha_message(value, ""))
    return value if len(value) == 64 and set(value) <= _HEX else None


def prepare(
    *,
    method: str,
    raw_path: bytes,
    query_string: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    lookup: Callable[[str], str | None],
    service: str = "sagemaker",
    region: str | None = None,
    now: float | None = None,
    max_skew_s: float = 900.0,
) -> Signed:
    """Everything ``verify`` checks that needs no body (its errors, but the body's): a request that fails
    here is refused before its body is read. ``Signed.finish(body)`` ends the check."""
    hmap = header_map(headers)
    if b"?" in raw_path:  # some servers hand over the path with its query attached
        raw_path = raw_path.partition(b"?")[0]
    claim = parse_claim(hmap, query_string)
    akid, scope_date, scope_region, scope = _parse_scope(claim.credential, service, region)
    names = _signed_header_names(claim.signed_headers)
    _check_all_signed(hmap, names)
    signed_at = _check_date(claim.amz_date, scope_date)
    secret = lookup(akid)
    if secret is None:
        raise UnrecognizedClient(MSG_UNKNOWN_KEY)
    _check_fresh(claim, signed_at, time.time() if now is None else now, max_skew_s)
    declared = _declared_hash(hmap)
    signed = Signed(
        akid,
        _signing_key(secret, scope_date, scope_region, service),
        claim,
        scope,
        method,
        _canonical_uri(raw_path, service != "s3"),
        _canonical_headers(names, hmap),
        names,
        hmap,
        False,
    )
    if declared is None:
        return signed
    if not _matches(signed, declared):
        raise InvalidSignature(MSG_MISMATCH)
    signed.verified = True
    return signed


def verify(
    *,
    method: str,
    raw_path: bytes,
    query_string: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    body: bytes,
    lookup: Callable[[str], str | None],
    service: str = "sagemaker",
    region: str | None = None,
    now: float | None = None,
    max_skew_s: float = 900.0,
) -> str:
    """Returns the verified access key id (``prepare`` then ``Signed.finish``).

    Raises zeroscale.errors.MissingAuthenticationToken (no Authorization header and no X-Amz-Signature
    query auth), UnrecognizedClient ('The security token included in the request is invalid.' for an
    unknown access key), InvalidSignature (malformed header, wrong service in scope, signature mismatch:
    'The request signature we calculated does not match the signature you provided. Check your AWS Secret
    Access Key and signing method. Consult the service documentation for details.', or request time too
    skewed: 'Signature expired: ...' / 'Signature not yet current: ...', a credential scope for another
    region than ``region``, the server's: 'Credential should be scoped to a valid region, not ...'; None
    checks no region). `lookup(access_key_id)` returns the secret or None.
    """
    return prepare(
        method=method,
        raw_path=raw_path,
        query_string=query_string,
        headers=headers,
        lookup=lookup,
        service=service,
        region=region,
        now=now,
        max_skew_s=max_skew_s,
    ).finish(body)
