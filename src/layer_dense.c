/* layer_dense.c: the dense kind, y = x W^T + b over flattened samples
 * (kernels and their _ref twins in dense.c). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bnmpi/comm.h"
#include "bnmpi/dense.h"
#include "bnmpi/model.h"

static void build(layer *l, model *m, const layer_args *a) {
    const int in = (int)act_size(l->in);
    char name[32];
    l->out = (act_shape){1, 1, a->units};
    snprintf(name, sizeof name, "dense%d.W", l->index);
    l->view[0] = model_add_view(m, name, VIEW_PARAM, a->units, in, 1);
    snprintf(name, sizeof name, "dense%d.b", l->index);
    l->view[1] = model_add_view(m, name, VIEW_PARAM, a->units, 1, 0);
}

static void bytes(const layer *l, size_t *per_cap, size_t *per_train) {
    (void)l;
    *per_cap = *per_train = 0;
}

static void alloc(layer *l, int cap, int train_cap) { (void)l, (void)cap, (void)train_cap; }

/* Glorot-uniform: limit sqrt(6 / (fan_in + fan_out)) = sqrt(6 / (rows + cols)) of W. */
static void init(layer *l, model *m, bn_rng *r, double scale) {
    const model_view *w = &m->views[l->view[0]];
    const float limit = sqrtf(6.0f / (float)(w->rows + w->cols)) * (float)scale;
    float *p = model_param(m, l->view[0]);
    for (size_t i = 0; i < w->count; i++) p[i] = rng_uniform_sym(r, limit);
    memset(model_param(m, l->view[1]), 0, sizeof(float) * m->views[l->view[1]].count);
}

static void forward(layer *l, model *m, const float *x, int B, int train) {
    (void)train;
    dense_forward(l->y, x, model_param(m, l->view[0]), model_param(m, l->view[1]), B, (int)act_size(l->in), l->out.c);
}

static void backward(layer *l, model *m, float *dx, float *dy, const float *x, int B) {
    dense_backward(dx, model_grad(m, l->view[0]), model_grad(m, l->view[1]), dy, x, model_param(m, l->view[0]), B,
                   (int)act_size(l->in), l->out.c);
}

void layer_dense_backward_overlapped(layer *l, model *m, const float *dy, const float *x, int B, int blocks) {
    const int in = (int)act_size(l->in), w = l->out.c;
    const size_t after = m->views[l->view[1]].offset; /* == in*w: b directly follows W, at the buffer's start */
    dense_backward_bias(model_grad(m, l->view[1]), dy, B, w);
    comm_isum_start_f32(m->grads + after, m->n_params + MODEL_GRAD_TAIL - after, T_GRAD_COMM);
    float *dw = model_grad(m, l->view[0]);
    for (int k = 0; k < blocks; k++) {
        const int r0 = w * k / blocks, r1 = w * (k + 1) / blocks;
        dense_backward_weight_rows(dw, dy, x, B, in, w, r0, r1);
        comm_isum_start_f32(dw + (size_t)r0 * in, (size_t)(r1 - r0) * in, T_GRAD_COMM);
        comm_isum_progress(T_GRAD_COMM);
    }
}

static void release(layer *l) { (void)l; }

const layer_kind layer_dense = {"dense", 0, build, bytes, alloc, init, forward, backward, release};
