/* layer_conv.c: the convolution kind: kxk, stride 1, padding keeping H and W,
 * one im2col of the whole batch and one GEMM (kernels and _ref twins in conv.c). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bnmpi/conv.h"
#include "bnmpi/model.h"

typedef struct {
    int k;
    float *col;  /* (cap * H*W, k*k*cin) im2col of the last forward, read by backward */
    float *dcol; /* (train_cap * H*W, k*k*cin) backward scratch */
} conv_own;

static void build(layer *l, model *m, const layer_args *a) {
    conv_own *o = bn_calloc(1, sizeof *o);
    o->k = a->arch->k;
    l->own = o;
    l->out = (act_shape){l->in.h, l->in.w, a->arch->units};
    char name[32];
    snprintf(name, sizeof name, "conv%d.W", l->index);
    l->view[0] = model_add_view(m, name, VIEW_PARAM, l->out.c, o->k * o->k * l->in.c, 1);
    snprintf(name, sizeof name, "conv%d.b", l->index);
    l->view[1] = model_add_view(m, name, VIEW_PARAM, l->out.c, 1, 0);
}

static size_t col_floats(const layer *l) {
    const conv_own *o = l->own;
    return (size_t)l->in.h * l->in.w * o->k * o->k * l->in.c;
}

static void bytes(const layer *l, size_t *per_cap, size_t *per_train) {
    *per_cap = sizeof(float) * col_floats(l);
    *per_train = sizeof(float) * col_floats(l); /* dcol */
}

static void alloc(layer *l, int cap, int train_cap) {
    conv_own *o = l->own;
    o->col = bn_alloc_floats((size_t)cap * col_floats(l));
    o->dcol = bn_alloc_floats((size_t)train_cap * col_floats(l));
}

/* Glorot-uniform over the receptive field, as Keras: fan_in k*k*cin, fan_out k*k*cout. */
static void init(layer *l, model *m, bn_rng *r, double scale) {
    const conv_own *o = l->own;
    const float fan = (float)(o->k * o->k) * (float)(l->in.c + l->out.c);
    const float limit = sqrtf(6.0f / fan) * (float)scale;
    float *p = model_param(m, l->view[0]);
    for (size_t i = 0; i < m->views[l->view[0]].count; i++) p[i] = rng_uniform_sym(r, limit);
    memset(model_param(m, l->view[1]), 0, sizeof(float) * (size_t)l->out.c);
}

static void forward(layer *l, model *m, const float *x, int B, int train) {
    (void)train;
    conv_own *o = l->own;
    conv_forward(l->y, o->col, x, model_param(m, l->view[0]), model_param(m, l->view[1]), B, l->in.h, l->in.w,
                 l->in.c, l->out.c, o->k);
}

static void backward(layer *l, model *m, float *dx, float *dy, const float *x, int B) {
    (void)x;
    conv_own *o = l->own;
    conv_backward(dx, model_grad(m, l->view[0]), model_grad(m, l->view[1]), o->dcol, dy, o->col,
                  model_param(m, l->view[0]), B, l->in.h, l->in.w, l->in.c, l->out.c, o->k);
}

static void release(layer *l) {
    conv_own *o = l->own;
    if (o) {
        free(o->col);
        free(o->dcol);
    }
    free(o);
    l->own = NULL;
}

const layer_kind layer_conv = {"conv", 0, build, bytes, alloc, init, forward, backward, release};
