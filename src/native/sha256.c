/* SHA-256 as FIPS 180-4 specifies it (sections 4.1.2, 4.2.2, 5.1.1, 5.2.1, 5.3.3, 6.2), and HMAC over it as
 * RFC 2104 specifies it (section 2).
 *
 * Two ways to process message blocks: compress() below, portable C (the reference, and the fallback), and on
 * x86-64 compress_shani(), with the SHA extensions (SHA256RNDS2, SHA256MSG1, SHA256MSG2). Which one is chosen
 * once per process, at the first block hashed (blocks() below). */
#include "sha256.h"

#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* 4.2.2: the first 32 bits of the fractional parts of the cube roots of the first 64 primes. */
static const uint32_t K[64] = {
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u, 0x923f82a4u, 0xab1c5ed5u,
    0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u, 0x72be5d74u, 0x80deb1feu, 0x9bdc06a7u, 0xc19bf174u,
    0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu, 0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau,
    0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u, 0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u,
    0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu, 0x53380d13u, 0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u,
    0xa2bfe8a1u, 0xa81a664bu, 0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u,
    0x19a4c116u, 0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
    0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u, 0x90befffau, 0xa4506cebu, 0xbef9a3f7u, 0xc67178f2u,
};

/* 5.3.3: the first 32 bits of the fractional parts of the square roots of the first 8 primes. */
static const uint32_t H0[8] = {
    0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au, 0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u,
};

/* 3.2 and 4.1.2 */
static inline uint32_t rotr(uint32_t x, unsigned n) { return (x >> n) | (x << (32u - n)); }
static inline uint32_t ch(uint32_t x, uint32_t y, uint32_t z) { return (x & y) ^ (~x & z); }
static inline uint32_t maj(uint32_t x, uint32_t y, uint32_t z) { return (x & y) ^ (x & z) ^ (y & z); }
static inline uint32_t big_sigma0(uint32_t x) { return rotr(x, 2) ^ rotr(x, 13) ^ rotr(x, 22); }
static inline uint32_t big_sigma1(uint32_t x) { return rotr(x, 6) ^ rotr(x, 11) ^ rotr(x, 25); }
static inline uint32_t small_sigma0(uint32_t x) { return rotr(x, 7) ^ rotr(x, 18) ^ (x >> 3); }
static inline uint32_t small_sigma1(uint32_t x) { return rotr(x, 17) ^ rotr(x, 19) ^ (x >> 10); }

static inline uint32_t load_be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static inline void store_be32(uint8_t *p, uint32_t x) {
    p[0] = (uint8_t)(x >> 24);
    p[1] = (uint8_t)(x >> 16);
    p[2] = (uint8_t)(x >> 8);
    p[3] = (uint8_t)x;
}

/* 6.2.2: one message block M(i) into the hash value. */
static void compress(uint32_t h[8], const uint8_t block[ZS_SHA256_BLOCK]) {
    uint32_t w[64];
    for (int t = 0; t < 16; t++) w[t] = load_be32(block + 4 * t);
    for (int t = 16; t < 64; t++)
        w[t] = small_sigma1(w[t - 2]) + w[t - 7] + small_sigma0(w[t - 15]) + w[t - 16];
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int t = 0; t < 64; t++) {
        uint32_t t1 = hh + big_sigma1(e) + ch(e, f, g) + K[t] + w[t];
        uint32_t t2 = big_sigma0(a) + maj(a, b, c);
        hh = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += hh;
}

#if defined(__x86_64__)
#define ZS_SHANI_TARGET __attribute__((target("sha,sse4.1,ssse3")))

/* 6.2.2 for ``n`` blocks, with the SHA extensions (Intel SDM vol. 2, SHA256RNDS2, SHA256MSG1, SHA256MSG2).
 *
 * SHA256RNDS2 does rounds t and t+1: it takes the working variables as two vectors, ABEF (a in lane 3, b in
 * lane 2, e in lane 1, f in lane 0) and CDGH (c, d, g, h the same way), and W[t] + K[t], W[t+1] + K[t+1] in
 * lanes 0 and 1 of a third; it returns the new ABEF. The new CDGH is the old ABEF (two rounds on, c and d are
 * the a and b of before, g and h the e and f), so two calls in turn, each taking the other's result as its
 * ABEF, do four rounds with no move between them.
 *
 * The message schedule (6.2.2 step 1) four words at a time, W[t..t+3] for t = 16, 20, ..., 60:
 * SHA256MSG1(W[t-16..t-13], W[t-12..t-9]) gives W[t-16+i] + sigma0(W[t-15+i]) for i = 0..3; to that we add
 * W[t-7..t-4] (PALIGNR of the two vectors before); SHA256MSG2 of that and W[t-4..t-1] adds sigma1(W[t-2+i]),
 * W[t] and W[t+1] computed within the instruction before W[t+2] and W[t+3] use them. */
ZS_SHANI_TARGET static void compress_shani(uint32_t h[8], const uint8_t *p, size_t n) {
    /* Each 32-bit word of the block is big-endian (3.1): reverse the bytes of each lane. */
    const __m128i be32 = _mm_set_epi8(12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3);
    /* h[0..3] = a, b, c, d and h[4..7] = e, f, g, h (lane 0 first); reversed, d c b a and h g f e. */
    __m128i dcba = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)h), 0x1b);
    __m128i hgfe = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)(h + 4)), 0x1b);
    __m128i abef = _mm_unpackhi_epi64(hgfe, dcba); /* lanes 0..3: f e b a */
    __m128i cdgh = _mm_unpacklo_epi64(hgfe, dcba); /* lanes 0..3: h g d c */
    for (; n > 0; n--, p += ZS_SHA256_BLOCK) {
        const __m128i abef0 = abef, cdgh0 = cdgh;
        __m128i m[4]; /* m[g % 4]: W[4g..4g+3], lane 0 first */
        for (int g = 0; g < 4; g++)
            m[g] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * g)), be32);
#pragma GCC unroll 16
        for (int g = 0; g < 16; g++) {
            if (g >= 4) { /* m[g % 4] holds W[4g-16..], the others W[4g-12..], W[4g-8..], W[4g-4..] */
                __m128i w = _mm_sha256msg1_epu32(m[g & 3], m[(g + 1) & 3]);
                w = _mm_add_epi32(w, _mm_alignr_epi8(m[(g + 3) & 3], m[(g + 2) & 3], 4)); /* W[4g-7..4g-4] */
                m[g & 3] = _mm_sha256msg2_epu32(w, m[(g + 3) & 3]);
            }
            const __m128i wk = _mm_add_epi32(m[g & 3], _mm_loadu_si128((const __m128i *)(K + 4 * g)));
            cdgh = _mm_sha256rnds2_epu32(cdgh, abef, wk);                          /* rounds 4g, 4g+1 */
            abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(wk, 0x0e)); /* 4g+2, 4g+3 */
        }
        /* 6.2.2 step 4: H(i) = the working variables + H(i-1) */
        abef = _mm_add_epi32(abef, abef0);
        cdgh = _mm_add_epi32(cdgh, cdgh0);
    }
    _mm_storeu_si128((__m128i *)h, _mm_shuffle_epi32(_mm_unpackhi_epi64(cdgh, abef), 0x1b));
    _mm_storeu_si128((__m128i *)(h + 4), _mm_shuffle_epi32(_mm_unpacklo_epi64(cdgh, abef), 0x1b));
}
#endif

static void compress_portable(uint32_t h[8], const uint8_t *p, size_t n) {
    for (; n > 0; n--, p += ZS_SHA256_BLOCK) compress(h, p);
}

typedef void blocks_fn(uint32_t h[8], const uint8_t *p, size_t n);

/* The block function this process uses, chosen at its first use: the SHA extensions where the CPU has them
 * (with SSSE3 and SSE4.1, checked too) unless ZS_SHA256_PORTABLE is set (sha256.h).
 * Threads that race to choose all choose the same one. */
static blocks_fn *chosen;

static blocks_fn *choose(void) {
    blocks_fn *fn = __atomic_load_n(&chosen, __ATOMIC_ACQUIRE);
    if (fn != NULL) return fn;
    fn = compress_portable;
    const char *portable = getenv("ZS_SHA256_PORTABLE");
    if (portable == NULL || portable[0] == '\0' || strcmp(portable, "0") == 0) {
#if defined(__x86_64__)
        __builtin_cpu_init();
        if (__builtin_cpu_supports("sha") && __builtin_cpu_supports("sse4.1") &&
            __builtin_cpu_supports("ssse3"))
            fn = compress_shani;
#endif
    }
    __atomic_store_n(&chosen, fn, __ATOMIC_RELEASE);
    return fn;
}

static void blocks(uint32_t h[8], const uint8_t *p, size_t n) { choose()(h, p, n); }

const char *zs_sha256_impl(void) {
#if defined(__x86_64__)
    if (choose() == compress_shani) return "sha-ni";
#endif
    return "portable";
}

void zs_sha256_init(zs_sha256_ctx *ctx) {
    memcpy(ctx->h, H0, sizeof H0);
    ctx->len = 0;
    ctx->buf_len = 0;
}

void zs_sha256_update(zs_sha256_ctx *ctx, const void *data, size_t len) {
    const uint8_t *p = data;
    ctx->len += len;
    if (ctx->buf_len > 0) {
        size_t take = ZS_SHA256_BLOCK - ctx->buf_len;
        if (take > len) take = len;
        memcpy(ctx->buf + ctx->buf_len, p, take);
        ctx->buf_len += take;
        p += take;
        len -= take;
        if (ctx->buf_len < ZS_SHA256_BLOCK) return;
        blocks(ctx->h, ctx->buf, 1);
        ctx->buf_len = 0;
    }
    if (len >= ZS_SHA256_BLOCK) {
        size_t n = len / ZS_SHA256_BLOCK;
        blocks(ctx->h, p, n);
        p += n * ZS_SHA256_BLOCK;
        len -= n * ZS_SHA256_BLOCK;
    }
    if (len > 0) {
        memcpy(ctx->buf, p, len);
        ctx->buf_len = len;
    }
}

/* 5.1.1: the bit "1", then k zero bits with l + 1 + k = 448 mod 512, then l as a 64-bit big-endian number. */
void zs_sha256_final(zs_sha256_ctx *ctx, uint8_t out[ZS_SHA256_DIGEST]) {
    uint64_t bits = ctx->len * 8u;
    size_t n = ctx->buf_len;
    ctx->buf[n++] = 0x80;
    if (n > ZS_SHA256_BLOCK - 8) { /* no room for the length in this block: pad it out, then one more */
        memset(ctx->buf + n, 0, ZS_SHA256_BLOCK - n);
        blocks(ctx->h, ctx->buf, 1);
        n = 0;
    }
    memset(ctx->buf + n, 0, ZS_SHA256_BLOCK - 8 - n);
    store_be32(ctx->buf + ZS_SHA256_BLOCK - 8, (uint32_t)(bits >> 32));
    store_be32(ctx->buf + ZS_SHA256_BLOCK - 4, (uint32_t)bits);
    blocks(ctx->h, ctx->buf, 1);
    for (int i = 0; i < 8; i++) store_be32(out + 4 * i, ctx->h[i]);
    zs_wipe(ctx, sizeof *ctx);
}

void zs_sha256(const void *data, size_t len, uint8_t out[ZS_SHA256_DIGEST]) {
    zs_sha256_ctx ctx;
    zs_sha256_init(&ctx);
    zs_sha256_update(&ctx, data, len);
    zs_sha256_final(&ctx, out);
}

/* RFC 2104, 2: H(K XOR opad, H(K XOR ipad, text)), K padded with zeros to the block size B (64) after
 * being hashed when longer than B; ipad the byte 0x36 repeated B times, opad 0x5c. */
void zs_hmac_sha256_init(zs_hmac_sha256_ctx *ctx, const void *key, size_t key_len) {
    uint8_t k0[ZS_SHA256_BLOCK] = {0};
    uint8_t key_ipad[ZS_SHA256_BLOCK];
    if (key_len > ZS_SHA256_BLOCK)
        zs_sha256(key, key_len, k0);
    else if (key_len > 0)
        memcpy(k0, key, key_len);
    for (int i = 0; i < ZS_SHA256_BLOCK; i++) {
        key_ipad[i] = k0[i] ^ 0x36u;
        ctx->key_opad[i] = k0[i] ^ 0x5cu;
    }
    zs_sha256_init(&ctx->inner);
    zs_sha256_update(&ctx->inner, key_ipad, sizeof key_ipad);
    zs_wipe(k0, sizeof k0);
    zs_wipe(key_ipad, sizeof key_ipad);
}

void zs_hmac_sha256_update(zs_hmac_sha256_ctx *ctx, const void *data, size_t len) {
    zs_sha256_update(&ctx->inner, data, len);
}

void zs_hmac_sha256_final(zs_hmac_sha256_ctx *ctx, uint8_t out[ZS_SHA256_DIGEST]) {
    uint8_t inner[ZS_SHA256_DIGEST];
    zs_sha256_ctx outer;
    zs_sha256_final(&ctx->inner, inner);
    zs_sha256_init(&outer);
    zs_sha256_update(&outer, ctx->key_opad, sizeof ctx->key_opad);
    zs_sha256_update(&outer, inner, sizeof inner);
    zs_sha256_final(&outer, out);
    zs_wipe(inner, sizeof inner);
    zs_wipe(ctx, sizeof *ctx);
}

void zs_hmac_sha256(const void *key, size_t key_len, const void *data, size_t len,
                    uint8_t out[ZS_SHA256_DIGEST]) {
    zs_hmac_sha256_ctx ctx;
    zs_hmac_sha256_init(&ctx, key, key_len);
    zs_hmac_sha256_update(&ctx, data, len);
    zs_hmac_sha256_final(&ctx, out);
}

void zs_hex_lower(const uint8_t *in, size_t len, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0x0fu];
    }
}

void zs_wipe(void *p, size_t len) {
    volatile uint8_t *v = p;
    while (len--) *v++ = 0;
}
