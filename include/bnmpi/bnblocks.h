/* bnblocks.h: a benchmark hook that times sync BN against local BN inside one
 * run, so that both see the same machine conditions.
 *
 * On a shared VM, whole runs differ by tens of percent (docs/benchmark.md), more
 * than the few percent sync costs; two separate runs cannot resolve it. With
 * BNMPI_BENCH_BN_BLOCKS=K (and --bn sync), the BN layers turn sync off and on
 * every K steps: blocks 0, 2, 4... of an epoch are local, 1, 3, 5... sync. The
 * rest of the step is the same code in both. Rank 0 writes one CSV row per whole
 * block to BNMPI_BENCH_BN_CSV: epoch,first_step,steps,bn,seconds. The first
 * block of an epoch follows the validation pass and is not written.
 *
 * The training itself is then a mix of the two modes: use it for timing only. */
#ifndef BNMPI_BNBLOCKS_H
#define BNMPI_BNBLOCKS_H

#include <stdio.h>

#include "bnmpi/common.h"
#include "bnmpi/model.h"
#include "bnmpi/options.h"

typedef struct {
    int steps;        /* K; 0 = off */
    FILE *csv;        /* rank 0 */
    int first_step;   /* of the open block, -1 = none */
    double t0;
} bn_blocks;

/* Reads the environment; errors name the variable. When on, rank 0 opens the
 * CSV and says on stderr that the run is for timing only. */
int bn_blocks_init(bn_blocks *b, const bn_config *c, int rank, bn_err *e);
/* At the start of step s (from 0) of an epoch (from 1) and, with s = steps_per_epoch, after
 * its last step: closes a whole block and sets the BN layers' mode for the next. */
void bn_blocks_at(bn_blocks *b, model *m, int epoch, int s);
void bn_blocks_close(bn_blocks *b);

#endif
