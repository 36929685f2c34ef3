/* rng.h: a small deterministic generator (xoshiro256**, seeded by splitmix64).
 *
 * The whole state is four uint64 words, so a checkpoint can save and restore
 * it. Streams are derived from (seed, purpose, index) so that, e.g., the
 * permutation of epoch e does not depend on how many numbers anything else drew. */
#ifndef BNMPI_RNG_H
#define BNMPI_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4];
} bn_rng;

enum { RNG_INIT = 1, RNG_SPLIT = 2, RNG_EPOCH = 3 }; /* stream purposes */

void rng_seed(bn_rng *r, uint64_t seed, uint64_t purpose, uint64_t index);
uint64_t rng_u64(bn_rng *r);
/* Uniform in [0, n), unbiased (Lemire's method). n >= 1. */
uint64_t rng_below(bn_rng *r, uint64_t n);
/* Uniform float in [-limit, limit). */
float rng_uniform_sym(bn_rng *r, float limit);
/* Fisher-Yates shuffle of idx[0..n). */
void rng_shuffle(bn_rng *r, int32_t *idx, int n);

#endif
