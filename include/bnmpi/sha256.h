/* sha256.h: SHA-256 (FIPS 180-4), streaming, for verifying dataset files. */
#ifndef BNMPI_SHA256_H
#define BNMPI_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t h[8];
    uint64_t nbytes;     /* total bytes fed so far */
    uint8_t block[64];   /* pending partial block */
    size_t nblock;       /* bytes pending in block, < 64 */
} sha256_ctx;

void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t n);
/* Writes the digest as 64 lowercase hex characters plus NUL into hex[65]. */
void sha256_final_hex(sha256_ctx *c, char hex[65]);

#endif
