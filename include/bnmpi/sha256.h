/* sha256.h: SHA-256, streaming, for verifying dataset files and comparing
 * parameters across ranks (OpenSSL's libcrypto underneath). */
#ifndef BNMPI_SHA256_H
#define BNMPI_SHA256_H

#include <stddef.h>

typedef struct evp_md_ctx_st EVP_MD_CTX;

typedef struct {
    EVP_MD_CTX *md; /* from sha256_init until sha256_final_hex */
} sha256_ctx;

void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t n);
/* Writes the digest as 64 lowercase hex characters plus NUL into hex[65] and
 * frees the context. */
void sha256_final_hex(sha256_ctx *c, char hex[65]);
/* Frees a context without a digest (a read given up half-way). */
void sha256_free(sha256_ctx *c);

#endif
