/* sampler.h: which samples each rank trains on at each step.
 *
 * Epoch e draws one permutation of the n training positions from (seed, e),
 * the same on every rank. Global step k takes the contiguous chunk
 * perm[k*G, (k+1)*G) (G = global batch) and rank r takes its slice
 * [r*b, (r+1)*b) of it (b = local batch). So the samples in a global batch do
 * not depend on the number of ranks. The last n mod G positions of each
 * permutation are not used in that epoch; a fresh permutation the next epoch
 * means no sample is left out systematically. */
#ifndef BNMPI_SAMPLER_H
#define BNMPI_SAMPLER_H

#include <stdint.h>

typedef struct {
    int n;              /* training positions */
    int global_batch, local_batch, rank;
    int steps_per_epoch;
    uint64_t seed;
    int32_t *perm;      /* (n) positions 0..n-1 in this epoch's order */
} sampler;

void sampler_init(sampler *s, int n, int global_batch, int local_batch, int rank, uint64_t seed);
void sampler_free(sampler *s);
/* Draws the permutation of epoch e (epochs count from 1). */
void sampler_set_epoch(sampler *s, int epoch);
/* This rank's local_batch positions for step k of the current epoch. */
const int32_t *sampler_batch(const sampler *s, int step);

#endif
