/* layer_bn.c: the batch-norm kind, per channel over every row of the BN
 * batch: B samples for a dense layer, B*H*W positions for a convolution
 * (spatial BN). Kernels in batchnorm.c. A ghost batch of K samples is K*H*W
 * rows; running statistics are Bessel-corrected with the true row count. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bnmpi/batchnorm.h"
#include "bnmpi/comm.h"
#include "bnmpi/model.h"

typedef struct {
    bn_layer bn;
    float *xhat;    /* (train_cap rows, c) normalised input, for backward */
    float *inv_std; /* (ghost batches per batch or 1, c) */
    double *pop;    /* (1 + 2c) population moments (--bn-eval recompute) */
    int ghost_samples;
} bn_own;

static void build(layer *l, model *m, const layer_args *a) {
    bn_own *o = bn_calloc(1, sizeof *o);
    const int c = l->in.c;
    l->own = o;
    l->out = l->in;
    o->ghost_samples = a->bn_ghost;
    bn_layer_init(&o->bn, c, a->bn_eps, a->bn_momentum, a->bn_sync, a->bn_ghost * l->in.h * l->in.w);
    char name[32];
    snprintf(name, sizeof name, "bn%d.gamma", l->index);
    l->view[0] = model_add_view(m, name, VIEW_PARAM, c, 1, 0);
    snprintf(name, sizeof name, "bn%d.beta", l->index);
    l->view[1] = model_add_view(m, name, VIEW_PARAM, c, 1, 0);
    snprintf(name, sizeof name, "bn%d.running_mean", l->index);
    l->view[2] = model_add_view(m, name, VIEW_STATE, c, 1, 0);
    snprintf(name, sizeof name, "bn%d.running_var", l->index);
    l->view[3] = model_add_view(m, name, VIEW_STATE, c, 1, 0);
}

static void bytes(const layer *l, size_t *per_cap, size_t *per_train) {
    *per_cap = 0;
    *per_train = sizeof(float) * act_size(l->in); /* xhat */
}

static void alloc(layer *l, int cap, int train_cap) {
    (void)cap;
    bn_own *o = l->own;
    const int c = l->in.c;
    o->xhat = bn_alloc_floats(act_rows(l->in, train_cap) * (size_t)c);
    const int chunks = o->ghost_samples ? (train_cap + o->ghost_samples - 1) / o->ghost_samples : 1;
    o->inv_std = bn_alloc_floats((size_t)chunks * c);
    o->pop = bn_calloc((size_t)(1 + 2 * c), sizeof(double));
}

static void init(layer *l, model *m, bn_rng *r, double scale) {
    (void)r, (void)scale;
    for (int j = 0; j < l->in.c; j++) {
        model_param(m, l->view[0])[j] = 1.0f;
        model_param(m, l->view[1])[j] = 0.0f;
        model_param(m, l->view[2])[j] = 0.0f;
        model_param(m, l->view[3])[j] = 1.0f;
    }
}

static void forward(layer *l, model *m, const float *x, int B, int train) {
    bn_own *o = l->own;
    const int rows = (int)act_rows(l->in, B);
    const float *g = model_param(m, l->view[0]), *be = model_param(m, l->view[1]);
    if (!train) {
        bn_forward_eval(&o->bn, l->y, x, g, be, model_eval_state(m, l->view[2]), model_eval_state(m, l->view[3]), rows);
        return;
    }
    const float momentum = o->bn.momentum;
    if (m->collecting) {
        bn_accumulate_moments(o->pop, x, rows, l->in.c);
        o->bn.momentum = 1.0f; /* r = 1*r + 0*batch: running statistics stay */
    }
    bn_forward_train(&o->bn, l->y, o->xhat, o->inv_std, x, g, be, model_param(m, l->view[2]),
                     model_param(m, l->view[3]), rows);
    o->bn.momentum = momentum;
}

static void backward(layer *l, model *m, float *dx, float *dy, const float *x, int B) {
    (void)x;
    bn_own *o = l->own;
    bn_backward(&o->bn, dx ? dx : dy, model_grad(m, l->view[0]), model_grad(m, l->view[1]), dy, o->xhat, o->inv_std,
                model_param(m, l->view[0]), (int)act_rows(l->in, B));
}

static void release(layer *l) {
    bn_own *o = l->own;
    if (o) {
        bn_layer_free(&o->bn);
        free(o->xhat);
        free(o->inv_std);
        free(o->pop);
    }
    free(o);
    l->own = NULL;
}

void layer_bn_set_sync(layer *l, int sync) { ((bn_own *)l->own)->bn.sync = sync; }

void layer_bn_population_reset(layer *l) {
    bn_own *o = l->own;
    memset(o->pop, 0, sizeof(double) * (size_t)(1 + 2 * l->in.c));
}

void layer_bn_population_finish(layer *l, model *m) {
    bn_own *o = l->own;
    const int c = l->in.c;
    comm_merge_moments(o->pop, c, COMM_WORLD_GROUP);
    const double n = o->pop[0], bessel = n > 1 ? n - 1 : 1;
    float *mean = model_param(m, l->view[2]), *var = model_param(m, l->view[3]);
    for (int j = 0; j < c; j++) {
        mean[j] = (float)o->pop[1 + j];
        var[j] = (float)(o->pop[1 + c + j] / bessel);
    }
}

const layer_kind layer_bn = {"bn", 1, build, bytes, alloc, init, forward, backward, release};
