/* model.h: the network as a list of layers over one flat parameter buffer.
 *
 * Activations are NHWC: a batch of B samples of h x w x c is a (B*h*w, c)
 * matrix, so a dense layer is (B, c), a convolution's output (B*h*w, c), and
 * spatial batch norm is the per-channel BN over B*h*w rows. Each layer is of
 * one kind from a table of kinds (layer.h); the model only wires buffers.
 *
 * Built from the hidden layers (arch.h): each conv or dense layer is followed,
 * by --bn-place, by
 *   none:   relu
 *   before: bn, relu
 *   after:  relu, bn
 * pool layers stand alone, and a dense layer of 10 gives the logits.
 *
 * params (n_params) holds every trainable tensor, in layer order; grads is
 * its twin with the same layout plus MODEL_GRAD_TAIL slots that carry the
 * step's loss sum, correct count and stop flag through the same allreduce.
 * state (n_state) holds the BN running statistics. `views` names every
 * tensor in both buffers ("dense0.W", "conv1.b", "bn0.running_var"): the
 * optimizer, checkpoints and tests walk that one list. */
#ifndef BNMPI_MODEL_H
#define BNMPI_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "bnmpi/layer.h"
#include "bnmpi/options.h"

#define MODEL_OUT ARCH_OUTPUT
#define MODEL_GRAD_TAIL 3 /* grads[n_params...]: loss sum, correct count, stop flag (train.c) */
#define MODEL_MAX_LAYERS (3 * ARCH_MAX_TOKENS + 1)
#define MODEL_MAX_VIEWS (4 * MODEL_MAX_LAYERS)

typedef enum { VIEW_PARAM, VIEW_STATE } view_buffer;

typedef struct {
    char name[32];       /* e.g. "dense0.W", "bn1.running_var" */
    view_buffer buffer;
    size_t offset, count;
    int rows, cols;      /* shape; cols = 1 for vectors */
    int decay;           /* weight decay applies (conv and dense weights only) */
} model_view;

struct model {
    act_shape input;               /* 28 x 28 x 1 */
    layer layers[MODEL_MAX_LAYERS];
    int n_layers;
    int n_hidden;                  /* hidden conv and dense layers */
    int linear[BN_MAX_HIDDEN + 1]; /* the conv and dense layers, output layer last */
    int bn_site[BN_MAX_HIDDEN];    /* hidden layer l's BN input is layers[bn_site[l]].y (where BN would be, without) */
    int bn_mode, bn_place;

    int shared;        /* params and grads are node-shared memory (gradsync.c), not ours to free */
    float *params;     /* (n_params) */
    float *grads;      /* (n_params + MODEL_GRAD_TAIL) */
    size_t n_params;
    float *state;      /* (n_state) BN running mean and variance */
    float *eval_state; /* (n_state) statistics used by evaluation, equal on every rank */
    size_t n_state;
    model_view views[MODEL_MAX_VIEWS];
    int n_views;

    int cap;           /* samples the forward buffers hold (training and evaluation) */
    int train_cap;     /* samples what only training needs holds */
    float *x;          /* (cap, 784) input batch */
    float *dbuf[2];    /* (train_cap * widest sample) backward ping-pong; dbuf[0] takes dlogits */
    int collecting;    /* forward_train accumulates BN population moments and leaves running stats */
};

/* Builds the layers from c->net and the BN options, and the buffers:
 * forward for up to cap samples, training for up to c->batch (cap if 0). */
void model_init(model *m, const bn_config *c, int cap);
/* About the bytes one rank allocates for c's model at cap samples (the
 * layers' buffers, parameters, gradients and optimizer moments), to refuse
 * what cannot fit before allocating; per_sample gets the bytes that grow
 * with each sample the buffers hold. */
size_t model_bytes(const bn_config *c, int cap, size_t *per_sample);
void model_free(model *m);
/* Glorot-uniform weights (Keras' default: limit sqrt(6 / (fan_in + fan_out)),
 * k*k*C for convolutions) times scale, zero biases, gamma 1, beta 0, running
 * mean 0 and variance 1. Deterministic in seed: layer by layer, in order. */
void model_init_params(model *m, uint64_t seed, double scale);

/* Adds a view of rows x cols to params or state; returns its index. For layer kinds, at build. */
int model_add_view(model *m, const char *name, view_buffer buf, int rows, int cols, int decay);
int model_find_view(const model *m, const char *name); /* its index, or -1 */
float *model_param(const model *m, int view);   /* a view's data (params or state) */
float *model_grad(const model *m, int view);    /* a parameter view's gradient */
float *model_eval_state(const model *m, int view); /* a state view's evaluation copy */

/* Forward in training mode over m->x (B samples); returns logits (B, 10). */
const float *model_forward_train(model *m, int B);
/* Backward from dlogits (B, 10) in m->dbuf[0]; adds into grads, tail
 * excluded. overlap_blocks = 0: no communication. K > 0 (an MLP only, whose
 * first layer is dense): also sums grads and the tail over the world,
 * started while backward runs (the first layer's weight gradient in K row
 * blocks, each sent as soon as it is made); the caller must comm_isum_wait()
 * before reading grads or the tail. */
void model_backward(model *m, int B, int overlap_blocks);
/* Forward in inference mode with eval_state; returns logits (B, 10). */
const float *model_forward_eval(model *m, int B);
/* Fills eval_state from the running statistics so that every rank holds the
 * same: a copy for sync/none; for local, the mean of the ranks' means and the
 * mean of their variances plus the variance of their means (the law of total
 * variance over equally sized rank batches). Collective. */
void model_prepare_eval(model *m);
/* Every BN layer's statistics over the BN group (1) or this rank's batch (0). */
void model_set_bn_sync(model *m, int sync);

/* Population statistics (--bn-eval recompute): reset, then add batches of
 * m->x (forward in training mode, so each layer sees what training feeds it;
 * running statistics untouched; every rank must add the same number of
 * batches, as sync BN communicates), then finish: the moments are merged
 * over every rank (count-weighted, Chan), and the running statistics and
 * eval_state become the mean and the variance with Bessel's correction for
 * the global count (Ioffe & Szegedy, Algorithm 2). Collective. */
void model_population_reset(model *m);
void model_population_add(model *m, int B);
void model_population_finish(model *m);

#endif
