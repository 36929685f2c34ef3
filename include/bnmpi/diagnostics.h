/* diagnostics.h: per-layer measurements for testing claims about BN
 * (--diagnostics N: every N steps; off by default, and nothing runs when off).
 *
 * For each hidden conv or dense layer l, at the BN input (the layer's output
 * before the ReLU with --bn-place before, after the ReLU with after; the same
 * place when --bn none, where BN would be), over every row of the global
 * batch (B samples, or B*H*W positions after a convolution):
 *   act_mean, act_var   mean over units of the per-unit mean and variance over
 *                       the global batch (Ioffe & Szegedy's "internal
 *                       covariate shift" is their change);
 *   *_drift             the absolute change of act_mean and act_var since the
 *                       previous log;
 *   bn_noise            the spread (unbiased standard deviation) of the BN
 *                       batches' means across the BN batches of this step
 *                       (ranks, groups or ghost batches), relative to the
 *                       standard deviation over the global batch, averaged
 *                       over units (about 1/sqrt(BN batch) for independent
 *                       samples); NaN when a step has a single BN batch
 *                       (sync) or no BN;
 * and for every conv and dense layer (0..n_hidden, the output layer last):
 * grad_norm, weight_norm, update_norm
 * (L2 norms of its weight matrix's global gradient, of the weights after the
 * step, and of the step's change to them). Per log, the seconds spent in the
 * gradient allreduce and in BN collectives since the previous log. */
#ifndef BNMPI_DIAGNOSTICS_H
#define BNMPI_DIAGNOSTICS_H

#include <stdint.h>

#include "bnmpi/model.h"

typedef struct {
    int64_t step;
    int32_t epoch, layer;
    double act_mean, act_var, act_mean_drift, act_var_drift, bn_noise;
    double grad_norm, weight_norm, update_norm;
} diag_layer_row;

typedef struct {
    int64_t step;
    int32_t epoch;
    double interval_s, grad_comm_s, bn_comm_s;
} diag_comm_row;

typedef struct {
    int every;                 /* steps between logs */
    float *params_before;      /* (n_params) copy taken before a logged step's update */
    double grad_norm[BN_MAX_HIDDEN + 1]; /* taken then too: the update consumes the gradient */
    double prev_mean[BN_MAX_HIDDEN], prev_var[BN_MAX_HIDDEN];
    int have_prev;
    double last_time, last_grad_comm, last_bn_comm;  /* cumulative counters at the previous log */
    double grad_comm_total, bn_comm_total;           /* cumulative over the run (timers reset per epoch) */
} diagnostics;

void diag_init(diagnostics *d, int every, size_t n_params);
void diag_free(diagnostics *d);
/* Whether the step after `done` steps is logged. */
int diag_due(const diagnostics *d, int64_t done);
/* Call before the optimizer update of a logged step (after the allreduce). */
void diag_before_update(diagnostics *d, const model *m);
/* Call after it: fills rows[0..n_hidden] (one per conv or dense layer; act_*
 * and bn_noise are NaN for the output layer) and *comm. Collective. B is the
 * local batch in samples, ghost the ghost batch in samples (0 = none). */
void diag_measure(diagnostics *d, model *m, int B, int ghost, int64_t step, int epoch, diag_layer_row *rows,
                  diag_comm_row *comm);

#endif
