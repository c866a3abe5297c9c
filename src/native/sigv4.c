/* Placeholder until the verifier lands: refuses every request (each then goes to the Python server). */
#include "sigv4.h"

int zs_sigv4_check(const char *method, size_t method_len, const char *raw_path, size_t path_len,
                   const char *query, size_t query_len, const zs_header *headers, size_t n_headers,
                   const uint8_t *body, size_t body_len, const char *region, const char *service,
                   int64_t now, zs_secret_fn lookup, void *ctx, const char **akid, size_t *akid_len) {
    (void)method; (void)method_len; (void)raw_path; (void)path_len; (void)query; (void)query_len;
    (void)headers; (void)n_headers; (void)body; (void)body_len; (void)region; (void)service; (void)now;
    (void)lookup; (void)ctx; (void)akid; (void)akid_len;
    return 1;
}
