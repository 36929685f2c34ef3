/* mlp.c: layout, initialisation, forward and backward of the MLP. */
#include "bnmpi/mlp.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bnmpi/comm.h"
#include "bnmpi/dense.h"
#include "bnmpi/loss.h"
#include "bnmpi/rng.h"

static int add_view(mlp *m, const char *name, view_buffer buf, size_t *cursor, int rows, int cols, int decay) {
    mlp_view *v = &m->views[m->n_views];
    snprintf(v->name, sizeof v->name, "%s", name);
    v->buffer = buf;
    v->offset = *cursor;
    v->rows = rows;
    v->cols = cols;
    v->count = (size_t)rows * cols;
    v->decay = decay;
    *cursor += v->count;
    return m->n_views++;
}

void mlp_init(mlp *m, const bn_config *c, int cap) {
    memset(m, 0, sizeof *m);
    m->n_hidden = c->n_hidden;
    m->bn_mode = c->bn;
    m->bn_place = c->bn_place;
    m->cap = cap;
    m->dims[0] = MLP_IN;
    for (int l = 0; l < c->n_hidden; l++) m->dims[l + 1] = c->hidden_sizes[l];
    m->dims[c->n_hidden + 1] = MLP_OUT;

    size_t pcur = 0, scur = 0;
    char name[32];
    for (int l = 0; l <= m->n_hidden; l++) {
        snprintf(name, sizeof name, "dense%d.W", l);
        m->w[l] = add_view(m, name, VIEW_PARAM, &pcur, m->dims[l + 1], m->dims[l], 1);
        snprintf(name, sizeof name, "dense%d.b", l);
        m->b[l] = add_view(m, name, VIEW_PARAM, &pcur, m->dims[l + 1], 1, 0);
        if (l == m->n_hidden) break;
        m->gamma[l] = m->beta[l] = m->rmean[l] = m->rvar[l] = -1;
        if (m->bn_mode == BN_NONE) continue;
        int w = m->dims[l + 1];
        snprintf(name, sizeof name, "bn%d.gamma", l);
        m->gamma[l] = add_view(m, name, VIEW_PARAM, &pcur, w, 1, 0);
        snprintf(name, sizeof name, "bn%d.beta", l);
        m->beta[l] = add_view(m, name, VIEW_PARAM, &pcur, w, 1, 0);
        snprintf(name, sizeof name, "bn%d.running_mean", l);
        m->rmean[l] = add_view(m, name, VIEW_STATE, &scur, w, 1, 0);
        snprintf(name, sizeof name, "bn%d.running_var", l);
        m->rvar[l] = add_view(m, name, VIEW_STATE, &scur, w, 1, 0);
        bn_layer_init(&m->bn[l], w, (float)c->bn_eps, (float)c->bn_momentum, c->bn_group > 1, c->ghost_batch);
    }
    m->n_params = pcur;
    m->n_state = scur;
    m->params = bn_alloc_floats(pcur);
    m->grads = bn_alloc_floats(pcur + MLP_GRAD_TAIL);
    m->state = bn_alloc_floats(scur);
    m->eval_state = bn_alloc_floats(scur);

    /* forward buffers hold cap rows (evaluation blocks too); what only
     * training needs holds the training batch */
    const int train_cap = c->batch > 0 && c->batch < cap ? c->batch : cap;
    int widest = MLP_IN;
    m->x = bn_alloc_floats((size_t)cap * MLP_IN);
    for (int l = 0; l <= m->n_hidden; l++) {
        size_t n = (size_t)cap * m->dims[l + 1];
        widest = BN_MAX(widest, m->dims[l + 1]);
        m->z[l] = bn_alloc_floats(n);
        if (l == m->n_hidden) break;
        m->out[l] = bn_alloc_floats(n);
        if (m->bn_mode != BN_NONE) {
            m->mid[l] = bn_alloc_floats(n);
            m->xhat[l] = bn_alloc_floats((size_t)train_cap * m->dims[l + 1]);
            const int chunks = c->ghost_batch ? (train_cap + c->ghost_batch - 1) / c->ghost_batch : 1;
            m->inv_std[l] = bn_alloc_floats((size_t)chunks * m->dims[l + 1]);
            m->pop[l] = bn_calloc((size_t)(1 + 2 * m->dims[l + 1]), sizeof(double));
        }
    }
    m->dbuf[0] = bn_alloc_floats((size_t)train_cap * widest);
    m->dbuf[1] = bn_alloc_floats((size_t)train_cap * widest);
}

size_t mlp_bytes(const bn_config *c, int cap) {
    size_t params = 0, rows = (size_t)cap * MLP_IN, widest = MLP_IN;
    for (int l = 0, in = MLP_IN; l <= c->n_hidden; l++) {
        const size_t w = l < c->n_hidden ? (size_t)c->hidden_sizes[l] : MLP_OUT;
        const int bn = l < c->n_hidden && c->bn != BN_NONE;
        params += w * (size_t)in + w + (bn ? 2 * w : 0);
        rows += (size_t)cap * w * (bn ? 3 : 2) + (bn ? (size_t)c->batch * w : 0); /* z, out, mid; xhat */
        widest = BN_MAX(widest, w);
        in = (int)w;
    }
    rows += 2 * (size_t)c->batch * widest; /* dbuf */
    const size_t copies = 2 + (c->optimizer == OPT_ADAM ? 2 : 1); /* params, grads, optimizer moments */
    return sizeof(float) * (copies * params + rows);
}

void mlp_free(mlp *m) {
    if (!m->shared) {
        free(m->params);
        free(m->grads);
    }
    free(m->state);
    free(m->eval_state);
    free(m->x);
    for (int l = 0; l <= m->n_hidden; l++) {
        free(m->z[l]);
        if (l == m->n_hidden) break;
        free(m->out[l]);
        free(m->mid[l]);
        free(m->xhat[l]);
        free(m->inv_std[l]);
        free(m->pop[l]);
        if (m->bn_mode != BN_NONE) bn_layer_free(&m->bn[l]);
    }
    free(m->dbuf[0]);
    free(m->dbuf[1]);
    memset(m, 0, sizeof *m);
}

float *mlp_param(const mlp *m, int view) {
    const mlp_view *v = &m->views[view];
    return (v->buffer == VIEW_PARAM ? m->params : m->state) + v->offset;
}

float *mlp_grad(const mlp *m, int view) { return m->grads + m->views[view].offset; }

void mlp_init_params(mlp *m, uint64_t seed, double scale) {
    bn_rng r;
    rng_seed(&r, seed, RNG_INIT, 0);
    for (int l = 0; l <= m->n_hidden; l++) {
        const mlp_view *w = &m->views[m->w[l]];
        float limit = sqrtf(6.0f / (float)(w->rows + w->cols)) * (float)scale;
        float *p = mlp_param(m, m->w[l]);
        for (size_t i = 0; i < w->count; i++) p[i] = rng_uniform_sym(&r, limit);
        memset(mlp_param(m, m->b[l]), 0, sizeof(float) * m->views[m->b[l]].count);
        if (l == m->n_hidden || m->bn_mode == BN_NONE) continue;
        for (int j = 0; j < m->dims[l + 1]; j++) {
            mlp_param(m, m->gamma[l])[j] = 1.0f;
            mlp_param(m, m->beta[l])[j] = 0.0f;
            mlp_param(m, m->rmean[l])[j] = 0.0f;
            mlp_param(m, m->rvar[l])[j] = 1.0f;
        }
    }
}

static const float *layer_input(const mlp *m, int l) { return l == 0 ? m->x : m->out[l - 1]; }

static const float *forward(mlp *m, int B, int train) {
    for (int l = 0; l <= m->n_hidden; l++) {
        const int in = m->dims[l], w = m->dims[l + 1];
        const size_t n = (size_t)B * w;
        dense_forward(m->z[l], layer_input(m, l), mlp_param(m, m->w[l]), mlp_param(m, m->b[l]), B, in, w);
        if (l == m->n_hidden) break;
        if (m->bn_mode == BN_NONE) {
            relu_forward(m->out[l], m->z[l], n);
            continue;
        }
        const float *g = mlp_param(m, m->gamma[l]), *be = mlp_param(m, m->beta[l]);
        /* BN reads src, writes dst; ReLU goes before or after it */
        const float *src = m->z[l];
        float *dst = m->mid[l];
        if (m->bn_place == BN_AFTER_RELU) {
            relu_forward(m->mid[l], m->z[l], n);
            src = m->mid[l];
            dst = m->out[l];
        }
        if (train && m->collecting) bn_accumulate_moments(m->pop[l], src, B, w);
        if (train)
            bn_forward_train(&m->bn[l], dst, m->xhat[l], m->inv_std[l], src, g, be, mlp_param(m, m->rmean[l]),
                             mlp_param(m, m->rvar[l]), B);
        else
            bn_forward_eval(&m->bn[l], dst, src, g, be, m->eval_state + m->views[m->rmean[l]].offset,
                            m->eval_state + m->views[m->rvar[l]].offset, B);
        if (m->bn_place == BN_BEFORE_RELU) relu_forward(m->out[l], m->mid[l], n);
    }
    return m->z[m->n_hidden];
}

const float *mlp_forward_train(mlp *m, int B) { return forward(m, B, 1); }
const float *mlp_forward_eval(mlp *m, int B) { return forward(m, B, 0); }

/* The first layer's weight gradient, dense0.W at grads[0, in*w), is most of
 * the gradient (98% for 784-256-10) and the last thing backward makes. Its
 * sum is started in row blocks as they are made; everything after it in the
 * buffer, tail included, is complete once db0 is, and goes first. */
static void first_layer_overlapped(mlp *m, const float *d, int B, int blocks) {
    const int in = m->dims[0], w = m->dims[1];
    const size_t after = m->views[m->b[0]].offset; /* == in*w: b0 directly follows W0 */
    dense_backward_bias(mlp_grad(m, m->b[0]), d, B, w);
    comm_isum_start_f32(m->grads + after, m->n_params + MLP_GRAD_TAIL - after, T_GRAD_COMM);
    float *dw = mlp_grad(m, m->w[0]);
    for (int k = 0; k < blocks; k++) {
        const int r0 = w * k / blocks, r1 = w * (k + 1) / blocks;
        dense_backward_weight_rows(dw, d, m->x, B, in, w, r0, r1);
        comm_isum_start_f32(dw + (size_t)r0 * in, (size_t)(r1 - r0) * in, T_GRAD_COMM);
        comm_isum_progress(T_GRAD_COMM);
    }
}

void mlp_backward(mlp *m, int B, int overlap_blocks) {
    float *d = m->dbuf[0], *dprev = m->dbuf[1];
    for (int l = m->n_hidden; l >= 0; l--) {
        const int in = m->dims[l], w = m->dims[l + 1];
        const size_t n = (size_t)B * w;
        if (l < m->n_hidden) { /* d = dL/d out[l] -> dL/d z[l] */
            if (m->bn_mode == BN_NONE) {
                relu_backward(d, m->out[l], n);
            } else {
                float *dg = mlp_grad(m, m->gamma[l]), *db = mlp_grad(m, m->beta[l]);
                const float *g = mlp_param(m, m->gamma[l]);
                if (m->bn_place == BN_BEFORE_RELU) relu_backward(d, m->out[l], n);
                bn_backward(&m->bn[l], d, dg, db, d, m->xhat[l], m->inv_std[l], g, B);
                if (m->bn_place == BN_AFTER_RELU) relu_backward(d, m->mid[l], n);
            }
        }
        if (l == 0 && overlap_blocks > 0) {
            first_layer_overlapped(m, d, B, overlap_blocks);
            break;
        }
        dense_backward(l > 0 ? dprev : NULL, mlp_grad(m, m->w[l]), mlp_grad(m, m->b[l]), d, layer_input(m, l),
                       mlp_param(m, m->w[l]), B, in, w);
        float *t = d;
        d = dprev;
        dprev = t;
    }
}

void mlp_prepare_eval(mlp *m) {
    memcpy(m->eval_state, m->state, sizeof(float) * m->n_state);
    const int P = comm_size();
    if (m->bn_mode != BN_LOCAL || P == 1 || m->n_state == 0) return;
    /* eval_state's views hold the ranks' average mean and average of
     * (var + (mean - average mean)^2), computed in double. */
    double *buf = bn_calloc(m->n_state, sizeof(double));
    for (size_t i = 0; i < m->n_state; i++) buf[i] = m->state[i];
    comm_allreduce_sum_f64(buf, m->n_state, COMM_WORLD_GROUP, T_EVAL);
    for (int l = 0; l < m->n_hidden; l++) {
        const mlp_view *vm = &m->views[m->rmean[l]], *vv = &m->views[m->rvar[l]];
        for (size_t j = 0; j < vm->count; j++) {
            double mean = buf[vm->offset + j] / P;
            double dev = m->state[vm->offset + j] - mean;
            m->eval_state[vm->offset + j] = (float)mean;
            buf[vm->offset + j] = 0.0;
            buf[vv->offset + j] = m->state[vv->offset + j] + dev * dev;
        }
    }
    comm_allreduce_sum_f64(buf, m->n_state, COMM_WORLD_GROUP, T_EVAL);
    for (int l = 0; l < m->n_hidden; l++) {
        const mlp_view *vv = &m->views[m->rvar[l]];
        for (size_t j = 0; j < vv->count; j++) m->eval_state[vv->offset + j] = (float)(buf[vv->offset + j] / P);
    }
    free(buf);
}

void mlp_population_reset(mlp *m) {
    for (int l = 0; l < m->n_hidden && m->bn_mode != BN_NONE; l++)
        memset(m->pop[l], 0, sizeof(double) * (size_t)(1 + 2 * m->dims[l + 1]));
}

void mlp_population_add(mlp *m, int B) {
    float keep[BN_MAX_HIDDEN];
    for (int l = 0; l < m->n_hidden && m->bn_mode != BN_NONE; l++) {
        keep[l] = m->bn[l].momentum;
        m->bn[l].momentum = 1.0f; /* r = 1*r + 0*batch: running statistics stay */
    }
    m->collecting = 1;
    mlp_forward_train(m, B);
    m->collecting = 0;
    for (int l = 0; l < m->n_hidden && m->bn_mode != BN_NONE; l++) m->bn[l].momentum = keep[l];
}

void mlp_population_finish(mlp *m) {
    for (int l = 0; l < m->n_hidden && m->bn_mode != BN_NONE; l++) {
        const int c = m->dims[l + 1];
        double *pop = m->pop[l];
        comm_merge_moments(pop, c, COMM_WORLD_GROUP);
        const double n = pop[0], bessel = n > 1 ? n - 1 : 1;
        float *mean = mlp_param(m, m->rmean[l]), *var = mlp_param(m, m->rvar[l]);
        for (int j = 0; j < c; j++) {
            mean[j] = (float)pop[1 + j];
            var[j] = (float)(pop[1 + c + j] / bessel);
        }
    }
    memcpy(m->eval_state, m->state, sizeof(float) * m->n_state);
}
