/* mlp.h: the MLP 784 - hidden... - 10 over one flat parameter buffer.
 *
 * Hidden layer l: z = dense(in); then, by --bn-place,
 *   none:   out = relu(z)
 *   before: mid = bn(z),    out = relu(mid)
 *   after:  mid = relu(z),  out = bn(mid)
 * and the last dense layer gives the logits.
 *
 * params (n_params) holds every trainable tensor; grads is its twin with the
 * same layout plus MLP_GRAD_TAIL slots that carry the step's loss sum and
 * correct count through the same allreduce. state (n_state) holds the BN
 * running statistics. `views` names every tensor in both buffers: the
 * optimizer, checkpoints and tests walk that one list. */
#ifndef BNMPI_MLP_H
#define BNMPI_MLP_H

#include <stddef.h>
#include <stdint.h>

#include "bnmpi/batchnorm.h"
#include "bnmpi/options.h"

#define MLP_IN 784
#define MLP_OUT 10
#define MLP_GRAD_TAIL 3 /* grads[n_params...]: loss sum, correct count, stop flag (train.c) */
#define MLP_MAX_VIEWS (4 * BN_MAX_HIDDEN + 2 + 2 * BN_MAX_HIDDEN)

typedef enum { VIEW_PARAM, VIEW_STATE } view_buffer;

typedef struct {
    char name[32];       /* e.g. "dense0.W", "bn1.running_var" */
    view_buffer buffer;
    size_t offset, count;
    int rows, cols;      /* shape; cols = 1 for vectors */
    int decay;           /* weight decay applies (dense weights only) */
} mlp_view;

typedef struct {
    int n_hidden;
    int dims[BN_MAX_HIDDEN + 2];   /* 784, hidden..., 10 */
    int bn_mode, bn_place;

    int shared;      /* params and grads are node-shared memory (gradsync.c), not ours to free */
    float *params;   /* (n_params) */
    float *grads;    /* (n_params + MLP_GRAD_TAIL) */
    size_t n_params;
    float *state;    /* (n_state) BN running mean and variance per hidden layer */
    float *eval_state; /* (n_state) statistics used by evaluation, equal on every rank */
    size_t n_state;
    mlp_view views[MLP_MAX_VIEWS];
    int n_views;
    /* views per layer, indices into views[] (-1 when absent) */
    int w[BN_MAX_HIDDEN + 1], b[BN_MAX_HIDDEN + 1];
    int gamma[BN_MAX_HIDDEN], beta[BN_MAX_HIDDEN], rmean[BN_MAX_HIDDEN], rvar[BN_MAX_HIDDEN];

    bn_layer bn[BN_MAX_HIDDEN];

    int cap;                       /* rows the forward buffers hold (training and evaluation) */
    float *x;                      /* (cap, 784) input batch */
    float *z[BN_MAX_HIDDEN + 1];   /* (cap, dims[l+1]) dense outputs; z[n_hidden] = logits */
    float *mid[BN_MAX_HIDDEN];     /* (cap, dims[l+1]) bn(z) or relu(z); NULL without BN */
    float *xhat[BN_MAX_HIDDEN];    /* (batch, dims[l+1]) normalised, for backward */
    float *out[BN_MAX_HIDDEN];     /* (cap, dims[l+1]) layer output */
    float *inv_std[BN_MAX_HIDDEN]; /* (ghost batches per batch or 1, dims[l+1]) */
    float *dbuf[2];                /* (batch, max width) backward ping-pong */
    double *pop[BN_MAX_HIDDEN];    /* (1 + 2*dims[l+1]) population moments of BN inputs */
    int collecting;                /* forward_train accumulates pop[] and leaves running stats */
} mlp;

/* Builds the layout and buffers: forward for up to cap rows, training (BN's
 * saved normalised inputs, backward) for up to c->batch rows (cap if 0). */
void mlp_init(mlp *m, const bn_config *c, int cap);
/* About the bytes one rank allocates for a model of c with cap rows
 * (mlp_init's buffers and the optimizer's), to refuse what cannot fit. */
size_t mlp_bytes(const bn_config *c, int cap);
void mlp_free(mlp *m);
/* Glorot-uniform weights (Keras' default) times scale, zero biases, gamma 1,
 * beta 0, running mean 0 and variance 1. Deterministic in seed. */
void mlp_init_params(mlp *m, uint64_t seed, double scale);

float *mlp_param(const mlp *m, int view);   /* pointer to a view's data */
float *mlp_grad(const mlp *m, int view);

/* Forward in training mode over m->x (B rows); returns logits (B, 10). */
const float *mlp_forward_train(mlp *m, int B);
/* Backward from dlogits (B, 10) in m->dbuf[0]; adds into grads, tail
 * excluded. overlap_blocks = 0: no communication. K > 0: also sums grads and
 * the tail over the world, started while backward runs (the first layer's
 * weight gradient in K row blocks, each sent as soon as it is made); the
 * caller must comm_isum_wait() before reading grads or the tail. */
void mlp_backward(mlp *m, int B, int overlap_blocks);
/* Forward in inference mode with eval_state; returns logits (B, 10). */
const float *mlp_forward_eval(mlp *m, int B);
/* Fills eval_state from the running statistics so that every rank holds the
 * same: a copy for sync/none; for local, the mean of the ranks' means and the
 * mean of their variances plus the variance of their means (the law of total
 * variance over equally sized rank batches). Collective. */
void mlp_prepare_eval(mlp *m);

/* Population statistics (--bn-eval recompute): reset, then add batches of
 * m->x (forward in training mode, so each layer sees what training feeds it;
 * running statistics untouched; every rank must add the same number of
 * batches, as sync BN communicates), then finish: the moments are merged
 * over every rank (count-weighted, Chan), and the running statistics and
 * eval_state become the mean and the variance with Bessel's correction for
 * the global count (Ioffe & Szegedy, Algorithm 2). Collective. */
void mlp_population_reset(mlp *m);
void mlp_population_add(mlp *m, int B);
void mlp_population_finish(mlp *m);

#endif
