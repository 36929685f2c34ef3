/* optim.c: Adam and SGD with momentum. */
#include "bnmpi/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void optim_init(optimizer *o, const bn_config *c, size_t n_params) {
    memset(o, 0, sizeof *o);
    o->kind = c->optimizer;
    o->lr = c->lr;
    o->beta1 = c->beta1;
    o->beta2 = c->beta2;
    o->eps = c->adam_eps;
    o->momentum = c->momentum;
    o->weight_decay = c->weight_decay;
    o->nesterov = c->nesterov;
    o->n = n_params;
    o->m = bn_alloc_floats(n_params);
    if (o->kind == OPT_ADAM) o->v = bn_alloc_floats(n_params);
}

void optim_free(optimizer *o) {
    if (!o->shared) {
        free(o->m);
        free(o->v);
    }
    memset(o, 0, sizeof *o);
}

static void adam_step(optimizer *o, float *p, float *g, size_t lo, size_t hi) {
    const double t = (double)o->t;
    const float lr_t = (float)(o->lr * sqrt(1.0 - pow(o->beta2, t)) / (1.0 - pow(o->beta1, t)));
    const float b1 = (float)o->beta1, b2 = (float)o->beta2, eps = (float)o->eps;
    float *m = o->m, *v = o->v;
    for (size_t i = lo; i < hi; i++) {
        const float gi = g[i];
        g[i] = 0.0f;
        m[i] = b1 * m[i] + (1.0f - b1) * gi;
        v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
        p[i] -= lr_t * m[i] / (sqrtf(v[i]) + eps);
    }
}

static void sgd_step(optimizer *o, float *p, float *g, float *vel, size_t n, int decay) {
    const float lr = (float)o->lr, mu = (float)o->momentum;
    const float wd = decay ? (float)o->weight_decay : 0.0f;
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] + wd * p[i];
        g[i] = 0.0f;
        vel[i] = mu * vel[i] - lr * gi;
        p[i] += o->nesterov ? mu * vel[i] - lr * gi : vel[i];
    }
}

void optim_step_range(optimizer *o, model *m, size_t lo, size_t hi) {
    o->t++;
    if (o->kind == OPT_ADAM) {
        adam_step(o, m->params, m->grads, lo, hi);
        return;
    }
    for (int i = 0; i < m->n_views; i++) { /* each view's part in [lo, hi): weight decay is per view */
        const model_view *v = &m->views[i];
        if (v->buffer != VIEW_PARAM) continue;
        const size_t a = BN_MAX(lo, v->offset), b = BN_MIN(hi, v->offset + v->count);
        if (a < b) sgd_step(o, m->params + a, m->grads + a, o->m + a, b - a, v->decay);
    }
}

void optim_step(optimizer *o, model *m) { optim_step_range(o, m, 0, o->n); }
