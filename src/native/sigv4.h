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

/* The secret of an access key id, or NULL when the key is not known here. */
typedef const char *(*zs_secret_fn)(void *ctx, const char *akid, size_t akid_len, size_t *secret_len);

/* 0 when the request's Authorization header carries an AWS4-HMAC-SHA256 signature that holds for it (for
 * ``service`` in ``region``, signed within ZS_SIGV4_SKEW_S of ``now``, every header Python's verifier
 * (api/sigv4.py) requires signed is signed), *akid / *akid_len then point at the access key id inside the
 * header. Anything else, or anything this verifier does not handle, is nonzero: the caller then hands the
 * request to the Python server, which answers it. Never 0 for a request api/sigv4.py refuses. */
int zs_sigv4_check(const char *method, size_t method_len, const char *raw_path, size_t path_len,
                   const char *query, size_t query_len, const zs_header *headers, size_t n_headers,
                   const uint8_t *body, size_t body_len, const char *region, const char *service,
                   int64_t now, zs_secret_fn lookup, void *ctx, const char **akid, size_t *akid_len);

#endif
