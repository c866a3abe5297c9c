/* HTTP/1.1 message heads for the native data plane: a client's request, a worker's answer, and a chunked
 * body. Pure functions over a buffer, no allocation: the loop (plane.c) calls them each time bytes arrive,
 * and they are fuzzed on their own (tests/native). Strict by design: what they do not take whole is
 * refused, never guessed at. */
#ifndef ZS_HTTP_H
#define ZS_HTTP_H
#include <stddef.h>
#include <stdint.h>

#include "sigv4.h"

#define ZS_MAX_HEADERS 64

enum { ZS_MORE = 0, ZS_BAD = -1, ZS_TOO_LARGE = -2 };

typedef struct {
    const char *method;
    size_t method_len;
    const char *target; /* the request target as sent (path and query) */
    size_t target_len;
    int minor; /* HTTP/1.<minor>: 0 or 1 */
    zs_header headers[ZS_MAX_HEADERS];
    size_t n_headers;
} zs_request;

typedef struct {
    int status;
    int minor;
    zs_header headers[ZS_MAX_HEADERS];
    size_t n_headers;
} zs_response;

/* The request head at the start of buf[0:len]: its length (through the blank line) once whole, ZS_MORE when
 * more bytes are needed, ZS_BAD when it is not a request head this parser takes (a bare LF, a folded
 * line, a control character, more than ZS_MAX_HEADERS headers, ...), ZS_TOO_LARGE past max_head bytes. */
long zs_parse_request(const char *buf, size_t len, size_t max_head, zs_request *req);

/* The same for a worker's answer head (status line "HTTP/1.x NNN reason"). */
long zs_parse_response(const char *buf, size_t len, size_t max_head, zs_response *resp);

/* The value of the first header named ``name`` (lowercase, compared without case), else NULL; *count gets
 * how many headers have that name (when count is not NULL). */
const zs_header *zs_find_header(const zs_header *headers, size_t n, const char *name, size_t *count);

/* A Content-Length value: its number, or -1 unless it is 1-18 digits. */
int64_t zs_content_length(const char *value, size_t len);

/* Case-insensitive comparison of ``s[0:n]`` with the lowercase ``lower``. */
int zs_ieq(const char *s, size_t n, const char *lower);

/* A chunked body at buf[0:len] (after the head): ZS_MORE while incomplete, ZS_BAD when malformed, else the
 * bytes it takes through its last chunk and trailers; *body_len gets the decoded size and *trailer /
 * *trailer_len the trailer section (header lines, without the final CRLF). At most max_body decoded bytes
 * and max_head bytes of framing: ZS_TOO_LARGE past either. */
long zs_chunked_scan(const char *buf, size_t len, size_t max_body, size_t max_head, size_t *body_len,
                     const char **trailer, size_t *trailer_len);

/* Copies the data of a chunked body that zs_chunked_scan found whole into out (body_len bytes). */
void zs_chunked_copy(const char *buf, size_t len, char *out);

#endif
