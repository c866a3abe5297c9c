/* See http.h. */
#include "http.h"

#include <string.h>

/* RFC 9110 tchar: what a method or a header name may hold. */
static int is_tchar(unsigned char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* A request target's byte (RFC 3986: unreserved, sub-delims, ':', '@', '/', '?' and '%' escapes; no
 * fragment): what llhttp, the main port's parser, takes too. */
static int is_target_char(unsigned char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return 1;
    return c != 0 && strchr("-._~!$&'()*+,;=:@/?%", c) != NULL;
}

/* The methods the plane reads (the rest is refused, 400): HTTP's own, less CONNECT and TRACE, and HEAD
 * (whose answer has no body: a relayed one would need it taken off). */
static int known_method(const char *m, size_t n) {
    static const char *const names[] = {"GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strlen(names[i]) == n && memcmp(names[i], m, n) == 0) return 1;
    return 0;
}

/* A header value's byte: visible ASCII, space, tab, or obs-text (UTF-8 from botocore's str values). */
static int is_vchar(unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7f); }

int zs_ieq(const char *s, size_t n, const char *lower) {
    size_t i = 0;
    for (; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 'A' && c <= 'Z') c = (unsigned char)(c + 32);
        if (lower[i] == 0 || c != (unsigned char)lower[i]) return 0;
    }
    return lower[i] == 0;
}

const zs_header *zs_find_header(const zs_header *headers, size_t n, const char *name, size_t *count) {
    const zs_header *first = NULL;
    size_t found = 0;
    for (size_t i = 0; i < n; i++) {
        if (zs_ieq(headers[i].name, headers[i].name_len, name)) {
            if (first == NULL) first = &headers[i];
            found++;
        }
    }
    if (count != NULL) *count = found;
    return first;
}

int64_t zs_content_length(const char *value, size_t len) {
    if (len == 0 || len > 18) return -1;
    int64_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (value[i] < '0' || value[i] > '9') return -1;
        n = n * 10 + (value[i] - '0');
    }
    return n;
}

/* The end of the line starting at ``at`` (its CR), or -1 when no CRLF is in the buffer yet; -2 when a bare
 * LF or a CR not followed by LF comes first. */
static long line_end(const char *buf, size_t len, size_t at) {
    for (size_t i = at; i < len; i++) {
        if (buf[i] == '\n') return -2;
        if (buf[i] == '\r') {
            if (i + 1 >= len) return -1;
            return buf[i + 1] == '\n' ? (long)i : -2;
        }
    }
    return -1;
}

/* The header lines from ``at`` through the blank line: ZS_MORE, ZS_BAD, ZS_TOO_LARGE or the head's length. */
static long parse_headers(const char *buf, size_t len, size_t at, size_t max_head, zs_header *headers,
                          size_t *n_headers) {
    size_t n = 0;
    for (;;) {
        long end = line_end(buf, len, at);
        if (end == -2) return ZS_BAD;
        if (end == -1) return len >= max_head ? ZS_TOO_LARGE : ZS_MORE;
        if ((size_t)end + 2 > max_head) return ZS_TOO_LARGE;
        if ((size_t)end == at) { /* the blank line */
            *n_headers = n;
            return end + 2;
        }
        if (n == ZS_MAX_HEADERS) return ZS_BAD;
        size_t i = at;
        while (i < (size_t)end && is_tchar((unsigned char)buf[i])) i++;
        if (i == at || i >= (size_t)end || buf[i] != ':') return ZS_BAD; /* no name, or space before ':' */
        headers[n].name = buf + at;
        headers[n].name_len = i - at;
        i++;
        while (i < (size_t)end && (buf[i] == ' ' || buf[i] == '\t')) i++;
        size_t v = i, last = i;
        for (; i < (size_t)end; i++) {
            unsigned char c = (unsigned char)buf[i];
            if (!is_vchar(c)) return ZS_BAD;
            if (c != ' ' && c != '\t') last = i + 1;
        }
        headers[n].value = buf + v;
        headers[n].value_len = last > v ? last - v : 0;
        n++;
        at = (size_t)end + 2;
    }
}

long zs_parse_request(const char *buf, size_t len, size_t max_head, zs_request *req) {
    long end = line_end(buf, len, 0);
    if (end == -2) return ZS_BAD;
    if (end == -1) return len >= max_head ? ZS_TOO_LARGE : ZS_MORE;
    if ((size_t)end + 2 > max_head) return ZS_TOO_LARGE;
    size_t i = 0, e = (size_t)end;
    while (i < e && is_tchar((unsigned char)buf[i])) i++;
    if (i == 0 || i >= e || buf[i] != ' ' || !known_method(buf, i)) return ZS_BAD;
    req->method = buf;
    req->method_len = i;
    size_t t = ++i;
    while (i < e && is_target_char((unsigned char)buf[i])) i++;
    if (i == t || i >= e || buf[i] != ' ' || buf[t] != '/') return ZS_BAD; /* origin-form only */
    req->target = buf + t;
    req->target_len = i - t;
    i++;
    if (e - i != 8 || memcmp(buf + i, "HTTP/1.", 7) != 0 || (buf[i + 7] != '0' && buf[i + 7] != '1')) return ZS_BAD;
    req->minor = buf[i + 7] - '0';
    return parse_headers(buf, len, e + 2, max_head, req->headers, &req->n_headers);
}

long zs_parse_response(const char *buf, size_t len, size_t max_head, zs_response *resp) {
    long end = line_end(buf, len, 0);
    if (end == -2) return ZS_BAD;
    if (end == -1) return len >= max_head ? ZS_TOO_LARGE : ZS_MORE;
    if ((size_t)end + 2 > max_head) return ZS_TOO_LARGE;
    size_t e = (size_t)end;
    /* "HTTP/1.x NNN" then a reason after a space, or nothing */
    if (e < 12 || memcmp(buf, "HTTP/1.", 7) != 0 || (buf[7] != '0' && buf[7] != '1') || buf[8] != ' ') return ZS_BAD;
    for (int k = 9; k < 12; k++)
        if (buf[k] < '0' || buf[k] > '9') return ZS_BAD;
    if (e > 12 && buf[12] != ' ') return ZS_BAD;
    for (size_t k = 12; k < e; k++)
        if (!is_vchar((unsigned char)buf[k])) return ZS_BAD;
    resp->minor = buf[7] - '0';
    resp->status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
    return parse_headers(buf, len, e + 2, max_head, resp->headers, &resp->n_headers);
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

long zs_chunked_scan(const char *buf, size_t len, size_t max_body, size_t max_head, size_t *body_len,
                     const char **trailer, size_t *trailer_len) {
    size_t at = 0, body = 0, framing = 0;
    for (;;) {
        long end = line_end(buf, len, at);
        if (end == -2) return ZS_BAD;
        if (end == -1) return (len - at) > 64 ? ZS_BAD : ZS_MORE; /* a size line is short */
        size_t i = at, size = 0;
        int digits = 0;
        for (; i < (size_t)end; i++) {
            int h = hexval(buf[i]);
            if (h < 0) break;
            if (++digits > 15) return ZS_BAD;
            size = size * 16 + (size_t)h;
        }
        if (digits == 0) return ZS_BAD;
        if (i < (size_t)end && buf[i] != ';' && buf[i] != ' ' && buf[i] != '\t') return ZS_BAD; /* extensions */
        framing += (size_t)end + 2 - at + 2;
        if (framing > max_head) return ZS_TOO_LARGE;
        at = (size_t)end + 2;
        if (size == 0) break;
        if (size > max_body - body) return ZS_TOO_LARGE;
        if (len - at < size + 2) return ZS_MORE;
        if (buf[at + size] != '\r' || buf[at + size + 1] != '\n') return ZS_BAD;
        body += size;
        at += size + 2;
    }
    size_t start = at;
    for (;;) { /* trailers, then the blank line */
        long end = line_end(buf, len, at);
        if (end == -2) return ZS_BAD;
        if (end == -1) return (len - start) > max_head ? ZS_TOO_LARGE : ZS_MORE;
        if ((size_t)end - start > max_head) return ZS_TOO_LARGE;
        if ((size_t)end == at) {
            *body_len = body;
            *trailer = buf + start;
            *trailer_len = at - start;
            return end + 2;
        }
        at = (size_t)end + 2;
    }
}

void zs_chunked_copy(const char *buf, size_t len, char *out) {
    size_t at = 0;
    for (;;) {
        long end = line_end(buf, len, at);
        size_t i = at, size = 0;
        for (; i < (size_t)end; i++) {
            int h = hexval(buf[i]);
            if (h < 0) break;
            size = size * 16 + (size_t)h;
        }
        at = (size_t)end + 2;
        if (size == 0) return;
        memcpy(out, buf + at, size);
        out += size;
        at += size + 2;
    }
}
