/* layer_relu.c: the ReLU kind, elementwise (kernels in loss.c). */
#include <string.h>

#include "bnmpi/loss.h"
#include "bnmpi/model.h"

static void build(layer *l, model *m, const layer_args *a) {
    (void)m, (void)a;
    l->out = l->in;
}

static void bytes(const layer *l, size_t *per_cap, size_t *per_train) {
    (void)l;
    *per_cap = *per_train = 0;
}

static void alloc(layer *l, int cap, int train_cap) { (void)l, (void)cap, (void)train_cap; }
static void init(layer *l, model *m, bn_rng *r, double scale) { (void)l, (void)m, (void)r, (void)scale; }

static void forward(layer *l, model *m, const float *x, int B, int train) {
    (void)m, (void)train;
    relu_forward(l->y, x, act_rows(l->in, B) * (size_t)l->in.c);
}

/* the mask is the output's sign: y > 0 exactly where x > 0 */
static void backward(layer *l, model *m, float *dx, float *dy, const float *x, int B) {
    (void)m, (void)x;
    if (!dx) return;
    const size_t n = act_rows(l->in, B) * (size_t)l->in.c;
    if (dx != dy) memcpy(dx, dy, sizeof(float) * n);
    relu_backward(dx, l->y, n);
}

static void release(layer *l) { (void)l; }

const layer_kind layer_relu = {"relu", 1, build, bytes, alloc, init, forward, backward, release};
