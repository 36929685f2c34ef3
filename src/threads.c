/* threads.c: OpenBLAS thread policy. */
#define _GNU_SOURCE
#include "bnmpi/threads.h"

#include <cblas.h>
#include <sched.h>
#include <unistd.h>

int threads_policy(int requested, int node_ranks) {
    if (requested > 0) return requested;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    if (online < 1) online = 1;
    int affinity = (int)online;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) affinity = CPU_COUNT(&set);
    int share = (int)(online / (node_ranks > 0 ? node_ranks : 1));
    int n = affinity < share ? affinity : share;
    return n > 0 ? n : 1;
}

void threads_apply(int n) { openblas_set_num_threads(n); }

const char *threads_blas_core(void) { return openblas_get_corename(); }
