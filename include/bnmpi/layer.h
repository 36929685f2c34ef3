/* layer.h: the interface every layer kind fills in, and the table of kinds.
 *
 * A layer maps its input (B*in.h*in.w, in.c) to its output y (B*out.h*out.w,
 * out.c), both NHWC. A kind owns, in its own file: its shape rule and
 * parameters (build), its buffers, initialisation, forward and backward, with
 * the plain-loop reference kernels beside the fast ones. The model calls
 * only this interface; a kind never calls the model back except to add and
 * find its views. Backward *adds* into parameter gradients and writes the
 * input gradient dx (NULL for the first layer: none is needed); a kind with
 * in_place set may be given dx == dy. */
#ifndef BNMPI_LAYER_H
#define BNMPI_LAYER_H

#include <stddef.h>

#include "bnmpi/arch.h"
#include "bnmpi/rng.h"

typedef struct {
    int h, w, c; /* one sample: h x w positions of c channels */
} act_shape;

/* Rows of a batch of B samples of shape s. */
static inline size_t act_rows(act_shape s, int B) { return (size_t)B * (size_t)s.h * (size_t)s.w; }
static inline size_t act_size(act_shape s) { return (size_t)s.h * (size_t)s.w * (size_t)s.c; }

typedef struct model model;
typedef struct layer layer;

/* What a kind is built from: the arch layer (conv, dense, pool) or the BN options. */
typedef struct {
    const arch_layer *arch; /* conv, dense, pool: the user's layer; NULL for the output dense 10 */
    int units;              /* dense: units (the output layer's 10) */
    float bn_eps, bn_momentum;
    int bn_sync, bn_ghost;  /* BN: merge over the BN group; ghost batch in samples (0 = off) */
} layer_args;

typedef struct {
    const char *name;
    int in_place; /* backward may write dx over dy */
    /* sets l->out from l->in and the args, adds the kind's views to m */
    void (*build)(layer *l, model *m, const layer_args *a);
    /* bytes of the kind's own buffers per sample of cap and of train_cap */
    void (*bytes)(const layer *l, size_t *per_cap_sample, size_t *per_train_sample);
    void (*alloc)(layer *l, int cap, int train_cap);
    void (*init)(layer *l, model *m, bn_rng *r, double scale);
    void (*forward)(layer *l, model *m, const float *x, int B, int train);
    void (*backward)(layer *l, model *m, float *dx, float *dy, const float *x, int B);
    void (*free)(layer *l);
} layer_kind;

struct layer {
    const layer_kind *kind;
    act_shape in, out;
    int index;   /* among the layers of its kind: dense0, conv1, bn2 */
    int view[4]; /* conv, dense: W, b; bn: gamma, beta, running_mean, running_var; -1 unused */
    float *y;    /* (cap samples) output */
    void *own;   /* the kind's own buffers and settings (conv: im2col; pool: argmax; bn: statistics) */
};

extern const layer_kind layer_dense, layer_conv, layer_pool, layer_relu, layer_bn;

/* The first layer's weight gradient of an MLP is most of the gradient and the
 * last thing backward makes: dense_backward_overlapped starts its sum in K row
 * blocks as they are made, after everything behind it in the buffer (layer_dense.c). */
void layer_dense_backward_overlapped(layer *l, model *m, const float *dy, const float *x, int B, int blocks);
/* BN kind's extras (layer_bn.c): the statistics' scope, population moments. */
void layer_bn_set_sync(layer *l, int sync);
void layer_bn_population_reset(layer *l);
void layer_bn_population_finish(layer *l, model *m);

#endif
