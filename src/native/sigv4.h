/* SigV4 verification for the native data plane (docs/dataplane.md, step 2): the common case of a boto3
 * request signed in its Authorization header. Written by sigv4.c. */
#ifndef ZS_SIGV4_H
#define ZS_SIGV4_H
#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *name; /* as on the wire, any case */
    size_t name_len;
    const char *value; /* as on the wire (surrounding whitespace not yet trimmed) */
    size_t value_len;
} zs_header;

/* The most a request's signing time may differ from ``now``: api/sigv4.py's prepare(max_skew_s=900.0), the
 * default the server's call of it (api/app.py) keeps. */
#define ZS_SIGV4_SKEW_S 900

/* Bounds past which a request is not handled here (nonzero: Python answers it). */
#define ZS_SIGV4_MAX_HEADERS 128 /* header lines in the request */
#define ZS_SIGV4_MAX_SIGNED 64   /* names in SignedHeaders */
#define ZS_SIGV4_MAX_NAME 128    /* bytes in a header name */
#define ZS_SIGV4_MAX_VALUE 8192  /* bytes in a header value */
#define ZS_SIGV4_MAX_PATH 4096   /* bytes in the path */
#define ZS_SIGV4_MAX_METHOD 16   /* bytes in the method */
#define ZS_SIGV4_MAX_AKID 128    /* bytes in an access key id */
#define ZS_SIGV4_MAX_SECRET 256  /* bytes in a secret */
#define ZS_SIGV4_MAX_SCOPE 64    /* bytes in the region, and in the service */

/* zs_sigv4_check's answers: 0 when the signature holds, else why not (each hands the request to Python). */
#define ZS_SIGV4_OK 0
#define ZS_SIGV4_UNHANDLED 1 /* a request outside the common case this verifier takes, or a malformed one */
#define ZS_SIGV4_MISMATCH 2  /* the signature does not hold for the request */
#define ZS_SIGV4_NO_KEY 3    /* ``lookup`` knows no secret for the access key id */
#define ZS_SIGV4_SKEWED 4    /* signed further than ZS_SIGV4_SKEW_S from ``now`` */

/* The secret of an access key id, or NULL when the key is not known here. */
typedef const char *(*zs_secret_fn)(void *ctx, const char *akid, size_t akid_len, size_t *secret_len);

/* 0 when the request's Authorization header carries an AWS4-HMAC-SHA256 signature that holds for it (for
 * ``service`` in ``region``, signed within ZS_SIGV4_SKEW_S of ``now``, every header Python's verifier
 * (api/sigv4.py) requires signed is signed), *akid / *akid_len then point at the access key id inside the
 * header. Anything else, or anything this verifier does not handle, is nonzero: the caller then hands the
 * request to the Python server, which answers it. Never 0 for a request api/sigv4.py refuses.
 *
 * Handled: an ``Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`` header,
 * one ``X-Amz-Date``, no query string, a path of [A-Za-z0-9-._~/] alone with no empty, "." or ".." segment
 * (its own canonical URI), header names that are tokens and values of printable ASCII and tabs, no
 * ``X-Amz-Content-SHA256`` and no ``X-Amz-Security-Token``, every signed header present, the bounds above.
 * Anything else is nonzero (ZS_SIGV4_UNHANDLED when not judged at all).
 *
 * Not thread-safe: the signing keys derived are kept in one static table (keyed by access key id, secret,
 * date, region and service), so the function is called from one thread only (the plane's loop). */
int zs_sigv4_check(const char *method, size_t method_len, const char *raw_path, size_t path_len,
                   const char *query, size_t query_len, const zs_header *headers, size_t n_headers,
                   const uint8_t *body, size_t body_len, const char *region, const char *service,
                   int64_t now, zs_secret_fn lookup, void *ctx, const char **akid, size_t *akid_len);

#endif
