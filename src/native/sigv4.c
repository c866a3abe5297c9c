/* SigV4 verification for the native data plane: the common case of a boto3 request signed in its
 * Authorization header, checked as api/sigv4.py's prepare() + Signed.finish() check it. Whatever this file
 * is not sure to judge exactly as Python does is ZS_SIGV4_UNHANDLED, and Python answers the request.
 *
 * What Python does, and how each step is mirrored here (see api/sigv4.py):
 * - header_map: names lower-cased, values kept in arrival order. Here header names must be RFC 7230 tokens
 *   and values printable ASCII or tabs, so that lower-casing, trimming and collapsing whitespace are the
 *   ASCII ones (str.split() and str.strip() know no other whitespace among those bytes than space and tab).
 * - parse_claim / _parse_authorization: one Authorization value, stripped, "AWS4-HMAC-SHA256" up to its
 *   first space, then ","-separated "name=value" parts (each stripped; empty parts skipped). Here a part
 *   other than Credential, SignedHeaders and Signature is refused (Python would ignore it).
 * - _request_date: the first X-Amz-Date, stripped. Here exactly one X-Amz-Date (Date alone: Python's).
 * - _parse_scope: AKID/date/region/service/aws4_request, five non-empty parts, region and service those of
 *   the server.
 * - _signed_header_names: split on ";", stripped, lower-cased, de-duplicated, sorted; "host" among them.
 * - _check_all_signed: Content-Type and every x-amz-* / x-amzn-* header (x-amzn-trace-id aside) signed.
 * - _check_date / _check_time: YYYYMMDDTHHMMSSZ on the scope's date, within the skew of now. Here a
 *   calendar date and a time of day that exist (Python's timegm would roll Feb 30 over to March).
 * - _canonical_uri: dot and empty segments removed, then quoted with safe="/~". Here a path of unreserved
 *   characters and "/" with no such segment, which both steps leave as it is.
 * - _payload_hash: sha256 of the body; an x-amz-content-sha256 header is refused here.
 * - canonical_request / string_to_sign / _signature_matches: as Python builds them, the signature compared
 *   in constant time (here the 64 lowercase hex digits botocore sends, nothing else). */
#include "sigv4.h"

#include <string.h>

#include "sha256.h"

#define ALGORITHM "AWS4-HMAC-SHA256"
#define ALGORITHM_LEN (sizeof ALGORITHM - 1)
#define TERMINATOR "aws4_request"
#define TERMINATOR_LEN (sizeof TERMINATOR - 1)

typedef struct {
    const char *p;
    size_t n;
} span;

static int is_ws(char c) { return c == ' ' || c == '\t'; }

static char lower(char c) { return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c; }

static span trim(span s) {
    while (s.n > 0 && is_ws(s.p[0])) {
        s.p++;
        s.n--;
    }
    while (s.n > 0 && is_ws(s.p[s.n - 1])) s.n--;
    return s;
}

static int eq(span s, const char *lit, size_t lit_len) {
    return s.n == lit_len && memcmp(s.p, lit, lit_len) == 0;
}

/* ``s`` lower-cased equals ``lit`` (lower case). */
static int eq_lower(const char *s, size_t n, const char *lit, size_t lit_len) {
    if (n != lit_len) return 0;
    for (size_t i = 0; i < n; i++)
        if (lower(s[i]) != lit[i]) return 0;
    return 1;
}

static int starts_lower(const char *s, size_t n, const char *lit, size_t lit_len) {
    return n >= lit_len && eq_lower(s, lit_len, lit, lit_len);
}

#define EQ_LOWER(s, n, lit) eq_lower((s), (n), lit, sizeof lit - 1)
#define STARTS_LOWER(s, n, lit) starts_lower((s), (n), lit, sizeof lit - 1)

/* RFC 7230 tchar */
static int is_tchar(unsigned char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int is_token(const char *s, size_t n) {
    if (n == 0 || n > ZS_SIGV4_MAX_NAME) return 0;
    for (size_t i = 0; i < n; i++)
        if (!is_tchar((unsigned char)s[i])) return 0;
    return 1;
}

/* Printable ASCII and tabs: no control character, no byte past 0x7e. */
static int is_plain_value(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t') || c > 0x7e) return 0;
    }
    return 1;
}

static int is_unreserved_or_slash(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~' || c == '/';
}

/* A path that Python's _canonical_uri gives back unchanged: it starts with "/", holds unreserved characters
 * and "/" alone (quote(safe="/~") leaves those), and has no segment that _remove_dot_segments drops: no
 * empty one but the last ("/" and "/a/" keep their final slash), no "." and no "..". */
static int is_plain_path(const char *p, size_t n) {
    if (n == 0 || n > ZS_SIGV4_MAX_PATH || p[0] != '/') return 0;
    for (size_t i = 0; i < n; i++)
        if (!is_unreserved_or_slash((unsigned char)p[i])) return 0;
    size_t start = 1;
    for (size_t i = 1; i <= n; i++) {
        if (i < n && p[i] != '/') continue;
        size_t len = i - start;
        if (len == 0 && i < n) return 0; /* "//": an empty segment before the end */
        if (len == 1 && p[start] == '.') return 0;
        if (len == 2 && p[start] == '.' && p[start + 1] == '.') return 0;
        start = i + 1;
    }
    return 1;
}

static int is_digits(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9') return 0;
    return 1;
}

static int num(const char *s, size_t n) {
    int v = 0;
    for (size_t i = 0; i < n; i++) v = v * 10 + (s[i] - '0');
    return v;
}

static int is_leap(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

/* ``YYYYMMDDTHHMMSSZ`` -> seconds since the epoch, for a date and a time of day that exist (1970 on), else
 * -1. Python's _parse_amz_date takes more (any day and time digits, which timegm rolls over), never less. */
static int64_t parse_amz_date(span s) {
    static const int month_days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    static const int days_before[12] = {0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334};
    if (s.n != 16 || s.p[8] != 'T' || s.p[15] != 'Z') return -1;
    if (!is_digits(s.p, 8) || !is_digits(s.p + 9, 6)) return -1;
    int year = num(s.p, 4), month = num(s.p + 4, 2), day = num(s.p + 6, 2);
    int hour = num(s.p + 9, 2), minute = num(s.p + 11, 2), second = num(s.p + 13, 2);
    if (year < 1970 || month < 1 || month > 12 || day < 1) return -1;
    if (day > month_days[month - 1] + (month == 2 && is_leap(year))) return -1;
    if (hour > 23 || minute > 59 || second > 59) return -1;
    int64_t y = year - 1; /* days from 0001-01-01 to 1970-01-01: 719162 */
    int64_t days = 365 * y + y / 4 - y / 100 + y / 400 - 719162;
    days += days_before[month - 1] + (month > 2 && is_leap(year)) + day - 1;
    return days * 86400 + hour * 3600 + minute * 60 + second;
}

/* ---- the Authorization header ------------------------------------------------------------------------- */

typedef struct {
    span credential, signed_headers, signature;
} auth_fields;

/* As _parse_authorization reads ``value``, less what it would ignore (a part of another name). */
static int parse_authorization(span value, auth_fields *out) {
    span v = trim(value);
    if (v.n == 0) return 0;
    const char *sp = memchr(v.p, ' ', v.n);
    if (sp == NULL || (size_t)(sp - v.p) != ALGORITHM_LEN || memcmp(v.p, ALGORITHM, ALGORITHM_LEN) != 0)
        return 0;
    const char *p = sp + 1, *end = v.p + v.n;
    int seen_credential = 0, seen_signed = 0, seen_signature = 0;
    for (int last = 0; !last;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *stop = comma ? comma : end;
        span part = trim((span){p, (size_t)(stop - p)});
        last = comma == NULL;
        if (!last) p = comma + 1;
        if (part.n == 0) continue;
        const char *eqs = memchr(part.p, '=', part.n);
        if (eqs == NULL) return 0;
        span name = {part.p, (size_t)(eqs - part.p)};
        span val = trim((span){eqs + 1, (size_t)(part.p + part.n - eqs - 1)});
        if (eq(name, "Credential", 10)) {
            if (seen_credential++) return 0;
            out->credential = val;
        } else if (eq(name, "SignedHeaders", 13)) {
            if (seen_signed++) return 0;
            out->signed_headers = val;
        } else if (eq(name, "Signature", 9)) {
            if (seen_signature++) return 0;
            out->signature = val;
        } else {
            return 0;
        }
    }
    return seen_credential && seen_signed && seen_signature && out->credential.n > 0 &&
           out->signed_headers.n > 0 && out->signature.n > 0;
}

typedef struct {
    span akid, date, region, service;
} scope_parts;

static int parse_credential(span c, const char *region, const char *service, scope_parts *out) {
    span parts[5];
    size_t k = 0;
    const char *p = c.p, *end = c.p + c.n;
    for (;;) {
        const char *slash = memchr(p, '/', (size_t)(end - p));
        const char *stop = slash ? slash : end;
        if (k == 5) return 0; /* a sixth part */
        parts[k++] = (span){p, (size_t)(stop - p)};
        if (!slash) break;
        p = slash + 1;
    }
    if (k != 5) return 0;
    for (size_t i = 0; i < 5; i++)
        if (parts[i].n == 0) return 0;
    span akid = parts[0];
    if (akid.n > ZS_SIGV4_MAX_AKID) return 0;
    for (size_t i = 0; i < akid.n; i++)
        if ((unsigned char)akid.p[i] <= 0x20 || (unsigned char)akid.p[i] > 0x7e) return 0;
    if (parts[1].n != 8 || !is_digits(parts[1].p, 8)) return 0;
    if (!eq(parts[2], region, strlen(region)) || !eq(parts[3], service, strlen(service))) return 0;
    if (!eq(parts[4], TERMINATOR, TERMINATOR_LEN)) return 0;
    *out = (scope_parts){akid, parts[1], parts[2], parts[3]};
    return 1;
}

/* ---- SignedHeaders ------------------------------------------------------------------------------------ */

typedef struct {
    char buf[ZS_SIGV4_MAX_VALUE]; /* the names, lower-cased */
    span names[ZS_SIGV4_MAX_SIGNED];
    size_t n;
} signed_names;

static int span_cmp(span a, span b) {
    size_t m = a.n < b.n ? a.n : b.n;
    int c = memcmp(a.p, b.p, m);
    if (c != 0) return c;
    return a.n < b.n ? -1 : a.n > b.n;
}

/* As _signed_header_names: split on ";", each stripped and lower-cased, empty ones dropped, de-duplicated,
 * sorted; "host" must be among them. Here each must be a token too. */
static int parse_signed_headers(span v, signed_names *out) {
    if (v.n > sizeof out->buf) return 0;
    size_t used = 0;
    out->n = 0;
    const char *p = v.p, *end = v.p + v.n;
    for (int last = 0; !last;) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *stop = semi ? semi : end;
        span name = trim((span){p, (size_t)(stop - p)});
        last = semi == NULL;
        if (!last) p = semi + 1;
        if (name.n == 0) continue;
        if (!is_token(name.p, name.n)) return 0;
        char *dst = out->buf + used;
        for (size_t i = 0; i < name.n; i++) dst[i] = lower(name.p[i]);
        used += name.n;
        span low = {dst, name.n};
        /* insert in order, dropping a repeat */
        size_t at = out->n;
        while (at > 0 && span_cmp(out->names[at - 1], low) > 0) at--;
        if (at > 0 && span_cmp(out->names[at - 1], low) == 0) continue;
        if (out->n == ZS_SIGV4_MAX_SIGNED) return 0;
        memmove(&out->names[at + 1], &out->names[at], (out->n - at) * sizeof(span));
        out->names[at] = low;
        out->n++;
    }
    for (size_t i = 0; i < out->n; i++)
        if (eq(out->names[i], "host", 4)) return 1;
    return 0;
}

/* The index of a header's name among the signed names, or -1. */
static int signed_index(const signed_names *s, const char *name, size_t n) {
    for (size_t i = 0; i < s->n; i++)
        if (eq_lower(name, n, s->names[i].p, s->names[i].n)) return (int)i;
    return -1;
}

/* ---- signing keys, cached ----------------------------------------------------------------------------- */

#define KEY_CACHE_SLOTS 16

typedef struct {
    int used;
    size_t akid_len, secret_len, region_len, service_len;
    char akid[ZS_SIGV4_MAX_AKID];
    char secret[ZS_SIGV4_MAX_SECRET];
    char date[8];
    char region[ZS_SIGV4_MAX_SCOPE];
    char service[ZS_SIGV4_MAX_SCOPE];
    uint8_t key[ZS_SHA256_DIGEST];
} key_slot;

/* One thread only (see sigv4.h). Filled in turn, the oldest slot replaced. */
static key_slot key_cache[KEY_CACHE_SLOTS];
static size_t key_cache_next;

static int slot_holds(const key_slot *s, span akid, const char *secret, size_t secret_len, span date,
                      span region, span service) {
    return s->used && s->akid_len == akid.n && s->secret_len == secret_len && s->region_len == region.n &&
           s->service_len == service.n && memcmp(s->akid, akid.p, akid.n) == 0 &&
           memcmp(s->secret, secret, secret_len) == 0 && memcmp(s->date, date.p, 8) == 0 &&
           memcmp(s->region, region.p, region.n) == 0 && memcmp(s->service, service.p, service.n) == 0;
}

/* HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request") */
static void signing_key(span akid, const char *secret, size_t secret_len, span date, span region,
                        span service, uint8_t out[ZS_SHA256_DIGEST]) {
    for (size_t i = 0; i < KEY_CACHE_SLOTS; i++) {
        if (slot_holds(&key_cache[i], akid, secret, secret_len, date, region, service)) {
            memcpy(out, key_cache[i].key, ZS_SHA256_DIGEST);
            return;
        }
    }
    uint8_t first[4 + ZS_SIGV4_MAX_SECRET];
    memcpy(first, "AWS4", 4);
    memcpy(first + 4, secret, secret_len);
    uint8_t k[ZS_SHA256_DIGEST];
    zs_hmac_sha256(first, 4 + secret_len, date.p, date.n, k);
    zs_hmac_sha256(k, sizeof k, region.p, region.n, k);
    zs_hmac_sha256(k, sizeof k, service.p, service.n, k);
    zs_hmac_sha256(k, sizeof k, TERMINATOR, TERMINATOR_LEN, out);
    zs_wipe(first, sizeof first);
    zs_wipe(k, sizeof k);

    key_slot *s = &key_cache[key_cache_next];
    key_cache_next = (key_cache_next + 1) % KEY_CACHE_SLOTS;
    s->used = 1;
    s->akid_len = akid.n;
    s->secret_len = secret_len;
    s->region_len = region.n;
    s->service_len = service.n;
    memcpy(s->akid, akid.p, akid.n);
    memcpy(s->secret, secret, secret_len);
    memcpy(s->date, date.p, 8);
    memcpy(s->region, region.p, region.n);
    memcpy(s->service, service.p, service.n);
    memcpy(s->key, out, ZS_SHA256_DIGEST);
}

/* ---- the canonical request, hashed as it is written -------------------------------------------------- */

typedef struct {
    zs_sha256_ctx sha;
    uint8_t buf[1024];
    size_t n;
} sink;

static void sink_flush(sink *s) {
    zs_sha256_update(&s->sha, s->buf, s->n);
    s->n = 0;
}

static void put(sink *s, const void *data, size_t len) {
    if (s->n + len > sizeof s->buf) {
        sink_flush(s);
        if (len > sizeof s->buf) {
            zs_sha256_update(&s->sha, data, len);
            return;
        }
    }
    memcpy(s->buf + s->n, data, len);
    s->n += len;
}

static void put_char(sink *s, char c) {
    if (s->n == sizeof s->buf) sink_flush(s);
    s->buf[s->n++] = (uint8_t)c;
}

/* A value as " ".join(value.split()): trimmed, each inner run of whitespace one space. */
static void put_collapsed(sink *s, const char *v, size_t n) {
    span t = trim((span){v, n});
    int in_ws = 0;
    for (size_t i = 0; i < t.n; i++) {
        if (is_ws(t.p[i])) {
            in_ws = 1;
            continue;
        }
        if (in_ws) put_char(s, ' ');
        in_ws = 0;
        put_char(s, t.p[i]);
    }
}

/* ---- the check ---------------------------------------------------------------------------------------- */

int zs_sigv4_check(const char *method, size_t method_len, const char *raw_path, size_t path_len,
                   const char *query, size_t query_len, const zs_header *headers, size_t n_headers,
                   const uint8_t *body, size_t body_len, const char *region, const char *service,
                   int64_t now, zs_secret_fn lookup, void *ctx, const char **akid, size_t *akid_len) {
    (void)query;
    if (method == NULL || raw_path == NULL || (headers == NULL && n_headers > 0) ||
        (body == NULL && body_len > 0) || region == NULL || service == NULL || lookup == NULL)
        return ZS_SIGV4_UNHANDLED;
    if (query_len != 0) return ZS_SIGV4_UNHANDLED;
    if (method_len == 0 || method_len > ZS_SIGV4_MAX_METHOD) return ZS_SIGV4_UNHANDLED;
    for (size_t i = 0; i < method_len; i++)
        if (method[i] < 'A' || method[i] > 'Z') return ZS_SIGV4_UNHANDLED;
    if (!is_plain_path(raw_path, path_len)) return ZS_SIGV4_UNHANDLED;
    size_t region_len = strlen(region), service_len = strlen(service);
    if (region_len == 0 || region_len > ZS_SIGV4_MAX_SCOPE || service_len == 0 ||
        service_len > ZS_SIGV4_MAX_SCOPE)
        return ZS_SIGV4_UNHANDLED;

    /* The headers: their shape, and the ones that matter here. */
    if (n_headers > ZS_SIGV4_MAX_HEADERS) return ZS_SIGV4_UNHANDLED;
    const zs_header *authorization = NULL, *amz_date = NULL;
    for (size_t i = 0; i < n_headers; i++) {
        const zs_header *h = &headers[i];
        if ((h->name == NULL && h->name_len > 0) || (h->value == NULL && h->value_len > 0))
            return ZS_SIGV4_UNHANDLED;
        if (!is_token(h->name, h->name_len) || h->value_len > ZS_SIGV4_MAX_VALUE ||
            !is_plain_value(h->value, h->value_len))
            return ZS_SIGV4_UNHANDLED;
        if (EQ_LOWER(h->name, h->name_len, "authorization")) {
            if (authorization != NULL) return ZS_SIGV4_UNHANDLED;
            authorization = h;
        } else if (EQ_LOWER(h->name, h->name_len, "x-amz-date")) {
            if (amz_date != NULL) return ZS_SIGV4_UNHANDLED;
            amz_date = h;
        } else if (EQ_LOWER(h->name, h->name_len, "x-amz-content-sha256") ||
                   EQ_LOWER(h->name, h->name_len, "x-amz-security-token")) {
            return ZS_SIGV4_UNHANDLED;
        }
    }
    if (authorization == NULL || amz_date == NULL) return ZS_SIGV4_UNHANDLED;

    auth_fields auth = {{NULL, 0}, {NULL, 0}, {NULL, 0}};
    if (!parse_authorization((span){authorization->value, authorization->value_len}, &auth))
        return ZS_SIGV4_UNHANDLED;
    if (auth.signature.n != 2 * ZS_SHA256_DIGEST) return ZS_SIGV4_UNHANDLED;
    for (size_t i = 0; i < auth.signature.n; i++) {
        char c = auth.signature.p[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return ZS_SIGV4_UNHANDLED;
    }
    scope_parts scope;
    if (!parse_credential(auth.credential, region, service, &scope)) return ZS_SIGV4_UNHANDLED;

    signed_names names;
    if (!parse_signed_headers(auth.signed_headers, &names)) return ZS_SIGV4_UNHANDLED;
    /* Every signed name is present; every header Python requires signed is signed. */
    uint64_t present[(ZS_SIGV4_MAX_SIGNED + 63) / 64] = {0};
    for (size_t i = 0; i < n_headers; i++) {
        const zs_header *h = &headers[i];
        int at = signed_index(&names, h->name, h->name_len);
        if (at >= 0) {
            present[at / 64] |= (uint64_t)1 << (at % 64);
            continue;
        }
        if (EQ_LOWER(h->name, h->name_len, "x-amzn-trace-id")) continue;
        if (EQ_LOWER(h->name, h->name_len, "content-type") || STARTS_LOWER(h->name, h->name_len, "x-amz-") ||
            STARTS_LOWER(h->name, h->name_len, "x-amzn-"))
            return ZS_SIGV4_UNHANDLED;
    }
    for (size_t i = 0; i < names.n; i++)
        if (!(present[i / 64] >> (i % 64) & 1)) return ZS_SIGV4_UNHANDLED;

    span date = trim((span){amz_date->value, amz_date->value_len});
    int64_t signed_at = parse_amz_date(date);
    if (signed_at < 0 || memcmp(date.p, scope.date.p, 8) != 0) return ZS_SIGV4_UNHANDLED;

    size_t secret_len = 0;
    const char *secret = lookup(ctx, scope.akid.p, scope.akid.n, &secret_len);
    if (secret == NULL) return ZS_SIGV4_NO_KEY;
    if (secret_len > ZS_SIGV4_MAX_SECRET) return ZS_SIGV4_UNHANDLED;
    if (signed_at + ZS_SIGV4_SKEW_S < now || signed_at - ZS_SIGV4_SKEW_S > now) return ZS_SIGV4_SKEWED;

    /* The canonical request, into its hash. */
    uint8_t digest[ZS_SHA256_DIGEST];
    char hex[2 * ZS_SHA256_DIGEST];
    sink s;
    zs_sha256_init(&s.sha);
    s.n = 0;
    put(&s, method, method_len);
    put_char(&s, '\n');
    put(&s, raw_path, path_len);
    put(&s, "\n\n", 2); /* the canonical query: empty */
    for (size_t i = 0; i < names.n; i++) {
        put(&s, names.names[i].p, names.names[i].n);
        put_char(&s, ':');
        int first = 1;
        for (size_t j = 0; j < n_headers; j++) {
            const zs_header *h = &headers[j];
            if (!eq_lower(h->name, h->name_len, names.names[i].p, names.names[i].n)) continue;
            if (!first) put_char(&s, ',');
            first = 0;
            put_collapsed(&s, h->value, h->value_len);
        }
        put_char(&s, '\n');
    }
    put_char(&s, '\n');
    for (size_t i = 0; i < names.n; i++) {
        if (i > 0) put_char(&s, ';');
        put(&s, names.names[i].p, names.names[i].n);
    }
    put_char(&s, '\n');
    zs_sha256(body, body_len, digest);
    zs_hex_lower(digest, sizeof digest, hex);
    put(&s, hex, sizeof hex);
    sink_flush(&s);
    zs_sha256_final(&s.sha, digest);
    zs_hex_lower(digest, sizeof digest, hex);

    /* The string to sign, under the signing key. */
    uint8_t key[ZS_SHA256_DIGEST];
    signing_key(scope.akid, secret, secret_len, scope.date, scope.region, scope.service, key);
    zs_hmac_sha256_ctx mac;
    zs_hmac_sha256_init(&mac, key, sizeof key);
    zs_hmac_sha256_update(&mac, ALGORITHM "\n", ALGORITHM_LEN + 1);
    zs_hmac_sha256_update(&mac, date.p, date.n);
    zs_hmac_sha256_update(&mac, "\n", 1);
    zs_hmac_sha256_update(&mac, scope.date.p, scope.date.n);
    zs_hmac_sha256_update(&mac, "/", 1);
    zs_hmac_sha256_update(&mac, scope.region.p, scope.region.n);
    zs_hmac_sha256_update(&mac, "/", 1);
    zs_hmac_sha256_update(&mac, scope.service.p, scope.service.n);
    zs_hmac_sha256_update(&mac, "/" TERMINATOR "\n", TERMINATOR_LEN + 2);
    zs_hmac_sha256_update(&mac, hex, sizeof hex);
    zs_hmac_sha256_final(&mac, digest);
    zs_wipe(key, sizeof key);
    zs_hex_lower(digest, sizeof digest, hex);

    unsigned diff = 0; /* constant time: every byte compared */
    for (size_t i = 0; i < sizeof hex; i++) diff |= (unsigned)(uint8_t)(hex[i] ^ auth.signature.p[i]);
    if (diff != 0) return ZS_SIGV4_MISMATCH;
    if (akid != NULL) *akid = scope.akid.p;
    if (akid_len != NULL) *akid_len = scope.akid.n;
    return ZS_SIGV4_OK;
}
