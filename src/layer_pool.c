/* layer_pool.c: the 2x2 max-pooling kind (kernels and _ref twins in pool.c). */
#include <stdint.h>
#include <stdlib.h>

#include "bnmpi/model.h"
#include "bnmpi/pool.h"

typedef struct {
    int32_t *arg; /* (cap * out rows, c) the input row of each maximum */
} pool_own;

static void build(layer *l, model *m, const layer_args *a) {
    (void)m, (void)a;
    l->out = (act_shape){l->in.h / 2, l->in.w / 2, l->in.c};
    l->own = bn_calloc(1, sizeof(pool_own));
}

static void bytes(const layer *l, size_t *per_cap, size_t *per_train) {
    *per_cap = sizeof(int32_t) * act_size(l->out);
    *per_train = 0;
}

static void alloc(layer *l, int cap, int train_cap) {
    (void)train_cap;
    pool_own *o = l->own;
    o->arg = bn_calloc(act_rows(l->out, cap) * (size_t)l->out.c, sizeof(int32_t));
}

static void init(layer *l, model *m, bn_rng *r, double scale) { (void)l, (void)m, (void)r, (void)scale; }

static void forward(layer *l, model *m, const float *x, int B, int train) {
    (void)m, (void)train;
    pool_forward(l->y, ((pool_own *)l->own)->arg, x, B, l->in.h, l->in.w, l->in.c);
}

static void backward(layer *l, model *m, float *dx, float *dy, const float *x, int B) {
    (void)m, (void)x;
    if (dx) pool_backward(dx, dy, ((pool_own *)l->own)->arg, B, l->in.h, l->in.w, l->in.c);
}

static void release(layer *l) {
    pool_own *o = l->own;
    if (o) free(o->arg);
    free(o);
    l->own = NULL;
}

const layer_kind layer_pool = {"pool", 0, build, bytes, alloc, init, forward, backward, release};
