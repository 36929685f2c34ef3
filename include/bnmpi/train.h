/* train.h: the trainer: everything a run holds, and the epoch loop.
 *
 * The state that changes during training is listed once, in `state`, and
 * checkpoints save and restore exactly that list. */
#ifndef BNMPI_TRAIN_H
#define BNMPI_TRAIN_H

#include <stdint.h>

#include "bnmpi/bnblocks.h"
#include "bnmpi/checkpoint.h"
#include "bnmpi/dataset.h"
#include "bnmpi/diagnostics.h"
#include "bnmpi/gradsync.h"
#include "bnmpi/metrics.h"
#include "bnmpi/model.h"
#include "bnmpi/optim.h"
#include "bnmpi/options.h"
#include "bnmpi/sampler.h"

enum { EXIT_RUNTIME = 1, EXIT_USAGE = 2 };
enum { STEP_COLS = 5 }; /* a row of steps: step, epoch, loss, acc, lr */

typedef struct {
    bn_config cfg;
    int rank, size, threads;
    int first_epoch;       /* the epoch this process started in (a resumed run's is later than 1) */
    int eval_block;        /* samples per evaluation forward (--eval-batch, split to bound memory) */
    int show;              /* rank 0 and not --quiet */
    int progress;          /* show, and stdout is a terminal */
    dataset data;
    model model;
    optimizer opt;
    gradsync gs;           /* --reduce node */
    sampler samp;
    uint8_t *labels;       /* (cap) labels of the current batch */
    metrics_file metrics;  /* rank 0 only */
    char checkpoint[BN_PATH]; /* where checkpoints go ("" = none) */
    char mpi_lib[256], host[256], start_time[32], run_id[RUN_ID_LEN + 1];
    run_facts facts;

    /* training state beside the model and optimizer (all in `state`) */
    int64_t position[3];   /* epoch in progress (from 1), steps done in it, steps done in the run */
    double epoch_sums[2];  /* this epoch so far: loss sum, correct count */
    double *steps;         /* (steps_per_epoch, STEP_COLS) this epoch's rows */
    int64_t shuffle_seed;  /* shuffles derive from (seed, epoch); nothing else draws numbers */
    bn_blocks blocks;      /* BNMPI_BENCH_BN_BLOCKS, off unless set */
    diagnostics diag;      /* --diagnostics; its previous log's activation statistics are state */
    double diag_prev[2 * BN_MAX_HIDDEN + 1]; /* have_prev, prev_mean[], prev_var[] for the state list */
    state_list state;
} trainer;

/* Lists the state; call after model, optimizer and sampler exist. */
void train_list_state(trainer *t);
/* Runs epochs position[0]..epochs, then the test set. Returns the exit code. */
int train_run(trainer *t);

#endif
