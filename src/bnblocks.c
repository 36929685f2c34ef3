/* bnblocks.c: BNMPI_BENCH_BN_BLOCKS, sync and local BN alternating in one run
 * (the why is in bnblocks.h). */
#include "bnmpi/bnblocks.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int bn_blocks_init(bn_blocks *b, const bn_config *c, int rank, bn_err *e) {
    memset(b, 0, sizeof *b);
    b->first_step = -1;
    const char *k = getenv("BNMPI_BENCH_BN_BLOCKS"), *path = getenv("BNMPI_BENCH_BN_CSV");
    if (!k || !*k) return BN_OK;
    char *end;
    long steps = strtol(k, &end, 10);
    if (*end || steps < 1 || steps > 1000000)
        return bn_fail(e, "BNMPI_BENCH_BN_BLOCKS=%s: expected a whole number of steps >= 1", k);
    if (c->bn != BN_SYNC) return bn_fail(e, "BNMPI_BENCH_BN_BLOCKS needs --bn sync (it turns sync off and on)");
    if (!path || !*path) return bn_fail(e, "BNMPI_BENCH_BN_BLOCKS needs BNMPI_BENCH_BN_CSV=FILE for its rows");
    b->steps = (int)steps;
    if (rank == 0) {
        b->csv = fopen(path, "w");
        if (!b->csv) return bn_fail(e, "BNMPI_BENCH_BN_CSV=%s: cannot write: %s", path, strerror(errno));
        fprintf(b->csv, "epoch,first_step,steps,bn,seconds\n");
        fprintf(stderr, "bnmpi: BNMPI_BENCH_BN_BLOCKS=%ld: BN alternates local and sync every %ld steps, for timing "
                        "only; block times go to %s\n",
                steps, steps, path);
    }
    return BN_OK;
}

void bn_blocks_at(bn_blocks *b, model *m, int epoch, int s) {
    if (!b->steps) return;
    const int K = b->steps;
    if (s % K != 0) return;
    const double now = bn_now();
    /* the open block is whole when it began K steps ago in this epoch */
    if (b->first_step > 0 && b->first_step == s - K && b->csv)
        fprintf(b->csv, "%d,%d,%d,%s,%.9f\n", epoch, b->first_step, K, (b->first_step / K) % 2 ? "sync" : "local",
                now - b->t0);
    b->first_step = s;
    b->t0 = now;
    const int sync = (s / K) % 2;
    model_set_bn_sync(m, sync);
}

void bn_blocks_close(bn_blocks *b) {
    if (b->csv) fclose(b->csv);
    b->csv = NULL;
}
