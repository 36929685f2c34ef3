/* sampler.c: per-epoch global permutation and this rank's slice of it. */
#include "bnmpi/sampler.h"

#include <stdlib.h>
#include <string.h>

#include "bnmpi/common.h"
#include "bnmpi/rng.h"

void sampler_init(sampler *s, int n, int global_batch, int local_batch, int rank, uint64_t seed) {
    memset(s, 0, sizeof *s);
    s->n = n;
    s->global_batch = global_batch;
    s->local_batch = local_batch;
    s->rank = rank;
    s->steps_per_epoch = n / global_batch;
    s->seed = seed;
    s->perm = bn_calloc((size_t)n, sizeof(int32_t));
}

void sampler_free(sampler *s) {
    free(s->perm);
    memset(s, 0, sizeof *s);
}

void sampler_set_epoch(sampler *s, int epoch) {
    bn_rng r;
    rng_seed(&r, s->seed, RNG_EPOCH, (uint64_t)epoch);
    for (int i = 0; i < s->n; i++) s->perm[i] = i;
    rng_shuffle(&r, s->perm, s->n);
}

const int32_t *sampler_batch(const sampler *s, int step) {
    return s->perm + (size_t)step * s->global_batch + (size_t)s->rank * s->local_batch;
}
