/* model.c: the layer list, its flat buffers, and the passes over it (see model.h). */
#include "bnmpi/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bnmpi/comm.h"

int model_add_view(model *m, const char *name, view_buffer buf, int rows, int cols, int decay) {
    if (m->n_views == MODEL_MAX_VIEWS) bn_fatal("model: more than %d views at '%s'", MODEL_MAX_VIEWS, name);
    model_view *v = &m->views[m->n_views];
    size_t *cursor = buf == VIEW_PARAM ? &m->n_params : &m->n_state;
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

int model_find_view(const model *m, const char *name) {
    for (int i = 0; i < m->n_views; i++)
        if (strcmp(m->views[i].name, name) == 0) return i;
    return -1;
}

float *model_param(const model *m, int view) {
    const model_view *v = &m->views[view];
    return (v->buffer == VIEW_PARAM ? m->params : m->state) + v->offset;
}

float *model_grad(const model *m, int view) { return m->grads + m->views[view].offset; }

float *model_eval_state(const model *m, int view) { return m->eval_state + m->views[view].offset; }

/* Appends a layer of kind k after the last one (or the input). */
static layer *add_layer(model *m, const layer_kind *k, const layer_args *a) {
    if (m->n_layers == MODEL_MAX_LAYERS) bn_fatal("model: more than %d layers", MODEL_MAX_LAYERS);
    layer *l = &m->layers[m->n_layers];
    memset(l, 0, sizeof *l);
    l->kind = k;
    l->in = m->n_layers ? m->layers[m->n_layers - 1].out : m->input;
    for (int i = 0; i < m->n_layers; i++) l->index += m->layers[i].kind == k;
    for (int i = 0; i < 4; i++) l->view[i] = -1;
    k->build(l, m, a);
    m->n_layers++;
    return l;
}

/* The layers and views of c's network; no buffers yet. */
static void build(model *m, const bn_config *c) {
    memset(m, 0, sizeof *m);
    m->input = (act_shape){ARCH_INPUT_SIDE, ARCH_INPUT_SIDE, 1};
    m->bn_mode = c->bn;
    m->bn_place = c->bn_place;
    const layer_args bn = {NULL, 0, (float)c->bn_eps, (float)c->bn_momentum, c->bn_group > 1, c->ghost_batch};
    for (int i = 0; i < c->net.n; i++) {
        const arch_layer *al = &c->net.layer[i];
        const layer_args a = {al, al->units, 0, 0, 0, 0};
        if (al->kind == ARCH_POOL) {
            add_layer(m, &layer_pool, &a);
            continue;
        }
        const int h = m->n_hidden++;
        m->linear[h] = m->n_layers;
        add_layer(m, al->kind == ARCH_CONV ? &layer_conv : &layer_dense, &a);
        if (m->bn_mode != BN_NONE && m->bn_place == BN_BEFORE_RELU) {
            m->bn_site[h] = m->n_layers - 1;
            add_layer(m, &layer_bn, &bn);
            add_layer(m, &layer_relu, &a);
        } else {
            add_layer(m, &layer_relu, &a);
            m->bn_site[h] = m->bn_mode == BN_NONE && m->bn_place == BN_BEFORE_RELU ? m->n_layers - 2 : m->n_layers - 1;
            if (m->bn_mode != BN_NONE) add_layer(m, &layer_bn, &bn);
        }
    }
    m->linear[m->n_hidden] = m->n_layers;
    const layer_args out = {NULL, MODEL_OUT, 0, 0, 0, 0};
    add_layer(m, &layer_dense, &out);
}

static size_t widest(const model *m) {
    size_t w = act_size(m->input);
    for (int i = 0; i < m->n_layers; i++) w = BN_MAX(w, act_size(m->layers[i].out));
    return w;
}

static int train_samples(const bn_config *c, int cap) { return c->batch > 0 && c->batch < cap ? c->batch : cap; }

size_t model_bytes(const bn_config *c, int cap, size_t *per_sample) {
    model *m = bn_calloc(1, sizeof *m);
    build(m, c);
    const size_t copies = 2 + (c->optimizer == OPT_ADAM ? 2 : 1); /* params, grads, optimizer moments */
    size_t per_cap = sizeof(float) * act_size(m->input), per_train = 2 * sizeof(float) * widest(m);
    for (int i = 0; i < m->n_layers; i++) {
        const layer *l = &m->layers[i];
        size_t a, b;
        l->kind->bytes(l, &a, &b);
        per_cap += a + sizeof(float) * act_size(l->out);
        per_train += b;
    }
    const size_t total = sizeof(float) * (copies * m->n_params + 2 * m->n_state) + per_cap * (size_t)cap +
                         per_train * (size_t)train_samples(c, cap);
    if (per_sample) *per_sample = per_cap;
    for (int i = 0; i < m->n_layers; i++) m->layers[i].kind->free(&m->layers[i]);
    free(m);
    return total;
}

void model_init(model *m, const bn_config *c, int cap) {
    build(m, c);
    m->cap = cap;
    m->train_cap = train_samples(c, cap);
    m->params = bn_alloc_floats(m->n_params);
    m->grads = bn_alloc_floats(m->n_params + MODEL_GRAD_TAIL);
    m->state = bn_alloc_floats(m->n_state);
    m->eval_state = bn_alloc_floats(m->n_state);
    m->x = bn_alloc_floats((size_t)cap * act_size(m->input));
    for (int i = 0; i < m->n_layers; i++) {
        layer *l = &m->layers[i];
        l->y = bn_alloc_floats((size_t)cap * act_size(l->out));
        l->kind->alloc(l, cap, m->train_cap);
    }
    for (int i = 0; i < 2; i++) m->dbuf[i] = bn_alloc_floats((size_t)m->train_cap * widest(m));
}

void model_free(model *m) {
    if (!m->shared) {
        free(m->params);
        free(m->grads);
    }
    free(m->state);
    free(m->eval_state);
    free(m->x);
    for (int i = 0; i < m->n_layers; i++) {
        free(m->layers[i].y);
        m->layers[i].kind->free(&m->layers[i]);
    }
    free(m->dbuf[0]);
    free(m->dbuf[1]);
    memset(m, 0, sizeof *m);
}

void model_init_params(model *m, uint64_t seed, double scale) {
    bn_rng r;
    rng_seed(&r, seed, RNG_INIT, 0);
    for (int i = 0; i < m->n_layers; i++) m->layers[i].kind->init(&m->layers[i], m, &r, scale);
}

static const float *forward(model *m, int B, int train) {
    const float *x = m->x;
    for (int i = 0; i < m->n_layers; i++) {
        layer *l = &m->layers[i];
        l->kind->forward(l, m, x, B, train);
        x = l->y;
    }
    return x;
}

const float *model_forward_train(model *m, int B) { return forward(m, B, 1); }
const float *model_forward_eval(model *m, int B) { return forward(m, B, 0); }

void model_backward(model *m, int B, int overlap_blocks) {
    float *d = m->dbuf[0], *other = m->dbuf[1];
    for (int i = m->n_layers - 1; i >= 0; i--) {
        layer *l = &m->layers[i];
        const float *x = i ? m->layers[i - 1].y : m->x;
        if (i == 0 && overlap_blocks > 0) {
            layer_dense_backward_overlapped(l, m, d, x, B, overlap_blocks);
            break;
        }
        if (l->kind->in_place) {
            l->kind->backward(l, m, d, d, x, B);
            continue;
        }
        l->kind->backward(l, m, i ? other : NULL, d, x, B);
        float *t = d;
        d = other;
        other = t;
    }
}

void model_set_bn_sync(model *m, int sync) {
    for (int i = 0; i < m->n_layers; i++)
        if (m->layers[i].kind == &layer_bn) layer_bn_set_sync(&m->layers[i], sync);
}

void model_prepare_eval(model *m) {
    memcpy(m->eval_state, m->state, sizeof(float) * m->n_state);
    const int P = comm_size();
    if (m->bn_mode != BN_LOCAL || P == 1 || m->n_state == 0) return;
    /* eval_state's views hold the ranks' average mean and average of
     * (var + (mean - average mean)^2), computed in double. */
    double *buf = bn_calloc(m->n_state, sizeof(double));
    for (size_t i = 0; i < m->n_state; i++) buf[i] = m->state[i];
    comm_allreduce_sum_f64(buf, m->n_state, COMM_WORLD_GROUP, T_EVAL);
    for (int i = 0; i < m->n_layers; i++) {
        const layer *l = &m->layers[i];
        if (l->kind != &layer_bn) continue;
        const model_view *vm = &m->views[l->view[2]], *vv = &m->views[l->view[3]];
        for (size_t j = 0; j < vm->count; j++) {
            double mean = buf[vm->offset + j] / P;
            double dev = m->state[vm->offset + j] - mean;
            m->eval_state[vm->offset + j] = (float)mean;
            buf[vm->offset + j] = 0.0;
            buf[vv->offset + j] = m->state[vv->offset + j] + dev * dev;
        }
    }
    comm_allreduce_sum_f64(buf, m->n_state, COMM_WORLD_GROUP, T_EVAL);
    for (int i = 0; i < m->n_layers; i++) {
        const layer *l = &m->layers[i];
        if (l->kind != &layer_bn) continue;
        const model_view *vv = &m->views[l->view[3]];
        for (size_t j = 0; j < vv->count; j++) m->eval_state[vv->offset + j] = (float)(buf[vv->offset + j] / P);
    }
    free(buf);
}

void model_population_reset(model *m) {
    for (int i = 0; i < m->n_layers; i++)
        if (m->layers[i].kind == &layer_bn) layer_bn_population_reset(&m->layers[i]);
}

void model_population_add(model *m, int B) {
    m->collecting = 1;
    model_forward_train(m, B);
    m->collecting = 0;
}

void model_population_finish(model *m) {
    for (int i = 0; i < m->n_layers; i++)
        if (m->layers[i].kind == &layer_bn) layer_bn_population_finish(&m->layers[i], m);
    memcpy(m->eval_state, m->state, sizeof(float) * m->n_state);
}
