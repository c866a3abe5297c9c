/* SHA-256 (FIPS 180-4) and HMAC-SHA-256 (RFC 2104), for the native data plane's SigV4 check (sigv4.c).
 * No external library. Streaming: init, any number of updates, final.
 *
 * Message blocks are processed in portable C, or on x86-64 with the CPU's SHA extensions (SHA-NI) where it
 * has them, chosen once per process when the first block is hashed. The environment variable
 * ZS_SHA256_PORTABLE, set to anything but "" or "0" at that moment, keeps the portable C (to test it on a
 * machine with SHA-NI). zs_sha256_impl() says which was chosen. */
#ifndef ZS_SHA256_H
#define ZS_SHA256_H
#include <stddef.h>
#include <stdint.h>

#define ZS_SHA256_BLOCK 64  /* bytes in a message block (FIPS 180-4, 1: 512 bits) */
#define ZS_SHA256_DIGEST 32 /* bytes in a message digest (256 bits) */

typedef struct {
    uint32_t h[8];                /* the intermediate hash value H(i) */
    uint64_t len;                 /* bytes hashed so far */
    uint8_t buf[ZS_SHA256_BLOCK]; /* the partial block not yet processed */
    size_t buf_len;
} zs_sha256_ctx;

void zs_sha256_init(zs_sha256_ctx *ctx);
void zs_sha256_update(zs_sha256_ctx *ctx, const void *data, size_t len);
/* Writes the digest and wipes the context. */
void zs_sha256_final(zs_sha256_ctx *ctx, uint8_t out[ZS_SHA256_DIGEST]);
void zs_sha256(const void *data, size_t len, uint8_t out[ZS_SHA256_DIGEST]);
/* "sha-ni" or "portable": how this process processes blocks (choosing it now if not yet chosen). */
const char *zs_sha256_impl(void);

typedef struct {
    zs_sha256_ctx inner;               /* H(K0 ^ ipad || text), being hashed */
    uint8_t key_opad[ZS_SHA256_BLOCK]; /* K0 ^ opad, for the outer hash */
} zs_hmac_sha256_ctx;

/* A key of any length: one longer than a block is hashed first (RFC 2104, 2). */
void zs_hmac_sha256_init(zs_hmac_sha256_ctx *ctx, const void *key, size_t key_len);
void zs_hmac_sha256_update(zs_hmac_sha256_ctx *ctx, const void *data, size_t len);
/* Writes the MAC and wipes the context. */
void zs_hmac_sha256_final(zs_hmac_sha256_ctx *ctx, uint8_t out[ZS_SHA256_DIGEST]);
void zs_hmac_sha256(const void *key, size_t key_len, const void *data, size_t len,
                    uint8_t out[ZS_SHA256_DIGEST]);

/* Lowercase hex of ``len`` bytes into ``out`` (2 * len chars, no terminator). */
void zs_hex_lower(const uint8_t *in, size_t len, char *out);

/* Overwrites ``len`` bytes at ``p`` with zeros, in a way the compiler does not drop as a dead store. */
void zs_wipe(void *p, size_t len);

#endif
