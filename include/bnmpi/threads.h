/* threads.h: the OpenBLAS thread count per rank, chosen on purpose.
 * Several ranks each running a full OpenBLAS pool on the same cores thrash, so
 * the default is the cores this rank may run on (its affinity mask, which
 * mpirun narrows when it binds) shared among the ranks on the node that see
 * the same cores, and at least 1. */
#ifndef BNMPI_THREADS_H
#define BNMPI_THREADS_H

/* requested > 0 wins; else min(affinity cores, online cores / node ranks), >= 1. */
int threads_policy(int requested, int node_ranks);
void threads_apply(int n);
/* OpenBLAS's kernel name, e.g. "Haswell" (openblas_get_corename). */
const char *threads_blas_core(void);

#endif
