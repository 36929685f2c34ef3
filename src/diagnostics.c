/* diagnostics.c: per-layer measurements at logged steps (see diagnostics.h). */
#include "bnmpi/diagnostics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bnmpi/batchnorm.h"
#include "bnmpi/comm.h"

void diag_init(diagnostics *d, int every, size_t n_params) {
    memset(d, 0, sizeof *d);
    d->every = every;
    if (every > 0) d->params_before = bn_alloc_floats(n_params);
    d->last_time = bn_now();
}

void diag_free(diagnostics *d) {
    free(d->params_before);
    memset(d, 0, sizeof *d);
}

int diag_due(const diagnostics *d, int64_t done) { return d->every > 0 && (done + 1) % d->every == 0; }

static double norm(const float *a, size_t n);

void diag_before_update(diagnostics *d, const model *m) {
    memcpy(d->params_before, m->params, sizeof(float) * m->n_params);
    for (int l = 0; l <= m->n_hidden; l++) {
        const int w = m->layers[m->linear[l]].view[0];
        d->grad_norm[l] = norm(model_grad(m, w), m->views[w].count);
    }
}

static double norm(const float *a, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * a[i];
    return sqrt(s);
}

static double norm_diff(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) {
        double x = (double)a[i] - b[i];
        s += x * x;
    }
    return sqrt(s);
}

/* Means of x (rows, c) per channel, into mean (c). */
static void column_means(double *mean, const float *x, int rows, int c) {
    memset(mean, 0, sizeof(double) * (size_t)c);
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < c; j++) mean[j] += x[(size_t)i * c + j];
    for (int j = 0; j < c; j++) mean[j] /= rows;
}

/* Spread of the BN batches' means relative to the population spread. */
/* x is (B rows, c); a ghost batch is `ghost` rows. */
static double bn_noise(const model *m, const float *x, int B, int ghost, const double *pop_var, int c) {
    const int P = comm_size(), G = comm_bn_group_size(), chunks = ghost ? B / ghost : 1;
    const int batches = P / G * chunks; /* distinct BN batches in this step */
    if (m->bn_mode == BN_NONE || batches < 2) return NAN;
    const int rows = B / chunks;
    double *means = bn_calloc((size_t)chunks * c, sizeof(double));
    double *sums = bn_calloc((size_t)2 * c, sizeof(double));
    for (int k = 0; k < chunks; k++) column_means(means + (size_t)k * c, x + (size_t)k * rows * c, rows, c);
    if (G > 1) { /* one BN batch per group: its mean, the same on each of its ranks */
        comm_allreduce_sum_f64(means, (size_t)c, COMM_BN_GROUP, T_BN_COMM);
        for (int j = 0; j < c; j++) means[j] /= G;
    }
    /* two passes over the P*chunks entries (each group's mean counted G times) */
    for (int k = 0; k < chunks; k++)
        for (int j = 0; j < c; j++) sums[j] += means[(size_t)k * c + j];
    comm_allreduce_sum_f64(sums, (size_t)c, COMM_WORLD_GROUP, T_BN_COMM);
    const double entries = (double)P * chunks;
    for (int k = 0; k < chunks; k++)
        for (int j = 0; j < c; j++) {
            double dev = means[(size_t)k * c + j] - sums[j] / entries;
            sums[c + j] += dev * dev;
        }
    comm_allreduce_sum_f64(sums + c, (size_t)c, COMM_WORLD_GROUP, T_BN_COMM);
    double noise = 0;
    int used = 0;
    for (int j = 0; j < c; j++)
        if (pop_var[j] > 0) {
            /* unbiased over the distinct BN batches (a group's mean is entered G times) */
            noise += sqrt(sums[c + j] / entries * batches / (batches - 1)) / sqrt(pop_var[j]);
            used++;
        }
    free(means);
    free(sums);
    return used ? noise / used : NAN;
}

void diag_measure(diagnostics *d, model *m, int B, int ghost, int64_t step, int epoch, diag_layer_row *rows,
                  diag_comm_row *comm) {
    for (int l = 0; l <= m->n_hidden; l++) {
        diag_layer_row *r = &rows[l];
        const int wv = m->layers[m->linear[l]].view[0];
        const model_view *w = &m->views[wv];
        memset(r, 0, sizeof *r);
        r->step = step;
        r->epoch = epoch;
        r->layer = l;
        r->grad_norm = d->grad_norm[l];
        r->weight_norm = norm(model_param(m, wv), w->count);
        r->update_norm = norm_diff(model_param(m, wv), d->params_before + w->offset, w->count);
        r->act_mean = r->act_var = r->act_mean_drift = r->act_var_drift = r->bn_noise = NAN;
        if (l == m->n_hidden) break;
        /* at the BN input, over every row: B samples, or B*H*W positions of a convolution */
        const layer *site = &m->layers[m->bn_site[l]];
        const int c = site->out.c, per_sample = site->out.h * site->out.w;
        const float *x = site->y;
        const int B_rows = B * per_sample, ghost_rows = ghost * per_sample;
        double *stats = bn_calloc((size_t)(1 + 2 * c), sizeof(double));
        bn_accumulate_moments(stats, x, B_rows, c);
        comm_merge_moments(stats, c, COMM_WORLD_GROUP);
        double mean = 0, var = 0;
        for (int j = 0; j < c; j++) {
            stats[1 + c + j] /= stats[0]; /* m2 -> biased variance */
            mean += stats[1 + j];
            var += stats[1 + c + j];
        }
        r->act_mean = mean / c;
        r->act_var = var / c;
        if (d->have_prev) {
            r->act_mean_drift = fabs(r->act_mean - d->prev_mean[l]);
            r->act_var_drift = fabs(r->act_var - d->prev_var[l]);
        }
        d->prev_mean[l] = r->act_mean;
        d->prev_var[l] = r->act_var;
        r->bn_noise = bn_noise(m, x, B_rows, ghost_rows, stats + 1 + c, c);
        free(stats);
    }
    d->have_prev = 1;
    const double now = bn_now(), grad = bn_timer_total(T_GRAD_COMM), bn = bn_timer_total(T_BN_COMM);
    *comm = (diag_comm_row){step, epoch, now - d->last_time, grad - d->last_grad_comm, bn - d->last_bn_comm};
    d->last_time = now;
    d->last_grad_comm = grad;
    d->last_bn_comm = bn;
}
