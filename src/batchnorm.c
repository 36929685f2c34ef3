/* batchnorm.c: BN forward/backward; statistics in double: two passes over a
 * rank's rows (local), or one pass of sums added over the BN group (sync). */
#include "bnmpi/batchnorm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bnmpi/comm.h"
#include "bnmpi/common.h"

void bn_layer_init(bn_layer *l, int c, float eps, float momentum, int sync, int ghost) {
    l->c = c;
    l->ghost = ghost;
    l->eps = eps;
    l->momentum = momentum;
    l->sync = sync;
    l->stats = bn_calloc((size_t)(1 + 2 * c), sizeof(double));
    l->sums = bn_calloc((size_t)(2 * c), sizeof(double));
    l->scratch = bn_calloc((size_t)(3 * c), sizeof(float));
}

void bn_layer_free(bn_layer *l) {
    free(l->stats);
    free(l->sums);
    free(l->scratch);
    memset(l, 0, sizeof *l);
}

static void local_moments(double *stats, const float *x, int B, int c) {
    double *mean = stats + 1, *m2 = stats + 1 + c;
    memset(stats, 0, sizeof(double) * (size_t)(1 + 2 * c));
    for (int i = 0; i < B; i++) {
        const float *row = x + (size_t)i * c;
        for (int j = 0; j < c; j++) mean[j] += row[j];
    }
    for (int j = 0; j < c; j++) mean[j] /= B;
    for (int i = 0; i < B; i++) {
        const float *row = x + (size_t)i * c;
        for (int j = 0; j < c; j++) {
            double d = row[j] - mean[j];
            m2[j] += d * d;
        }
    }
    stats[0] = B;
}

void bn_accumulate_moments(double *acc, const float *x, int B, int c) {
    double *batch = bn_calloc((size_t)(1 + 2 * c), sizeof(double));
    local_moments(batch, x, B, c);
    const double na = acc[0], nb = batch[0], n = na + nb;
    for (int j = 0; j < c; j++) {
        const double d = batch[1 + j] - acc[1 + j];
        acc[1 + j] = (na * acc[1 + j] + nb * batch[1 + j]) / n;
        acc[1 + c + j] += batch[1 + c + j] + d * d * na * nb / n;
    }
    acc[0] = n;
    free(batch);
}

/* Sync: the group's moments from one MPI_SUM of [sum x, sum x^2] (2c doubles),
 * as Keras' SyncBatchNormalization does, but in double. var = E[x^2] - E[x]^2
 * loses about log10(mean^2/var) of double's 16 digits, which stays far below
 * float precision unless |mean| > 1e4 * std, where eps dominates var anyway.
 * A merge of (count, mean, m2) would need an MPI user op, which Open MPI runs
 * 3x slower than MPI_SUM on these 4 kB (bnmpi-bound, bncomm rows). */
static void group_moments(double *stats, const float *x, int B, int c) {
    double *s1 = stats + 1, *s2 = stats + 1 + c;
    memset(stats, 0, sizeof(double) * (size_t)(1 + 2 * c));
    for (int i = 0; i < B; i++) {
        const float *row = x + (size_t)i * c;
        for (int j = 0; j < c; j++) {
            s1[j] += row[j];
            s2[j] += (double)row[j] * row[j];
        }
    }
    comm_allreduce_sum_f64(s1, (size_t)(2 * c), COMM_BN_GROUP, T_BN_COMM);
    const double n = (double)B * comm_bn_group_size();
    for (int j = 0; j < c; j++) {
        const double mean = s1[j] / n, m2 = s2[j] - n * mean * mean;
        s1[j] = mean;
        s2[j] = m2 > 0 ? m2 : 0;
    }
    stats[0] = n;
}

static void forward_chunk(bn_layer *l, float *y, float *xhat, float *inv_std, const float *x, const float *gamma,
                          const float *beta, float *running_mean, float *running_var, int B) {
    const int c = l->c;
    double *mean = l->stats + 1, *m2 = l->stats + 1 + c;
    if (l->sync && comm_bn_group_size() > 1)
        group_moments(l->stats, x, B, c);
    else
        local_moments(l->stats, x, B, c);
    const double n = l->stats[0];
    const double unbias = n > 1 ? n / (n - 1) : 1.0;
    const float m = l->momentum;
    float *mean_f = l->scratch;
    for (int j = 0; j < c; j++) {
        double var = m2[j] / n;
        inv_std[j] = (float)(1.0 / sqrt(var + l->eps));
        mean_f[j] = (float)mean[j];
        running_mean[j] = m * running_mean[j] + (1 - m) * (float)mean[j];
        running_var[j] = m * running_var[j] + (1 - m) * (float)(var * unbias);
    }
    for (int i = 0; i < B; i++) {
        const float *xr = x + (size_t)i * c;
        float *hr = xhat + (size_t)i * c, *yr = y + (size_t)i * c;
        for (int j = 0; j < c; j++) {
            float h = (xr[j] - mean_f[j]) * inv_std[j];
            hr[j] = h;
            yr[j] = gamma[j] * h + beta[j];
        }
    }
}

void bn_forward_train(bn_layer *l, float *y, float *xhat, float *inv_std, const float *x,
                      const float *gamma, const float *beta, float *running_mean, float *running_var, int B) {
    const int K = l->ghost ? l->ghost : B;
    for (int r = 0, k = 0; r < B; r += K, k++) {
        const size_t off = (size_t)r * l->c;
        forward_chunk(l, y + off, xhat + off, inv_std + (size_t)k * l->c, x + off, gamma, beta, running_mean,
                      running_var, BN_MIN(K, B - r));
    }
}

static void backward_chunk(bn_layer *l, float *dx, float *dgamma, float *dbeta, const float *dy, const float *xhat,
                           const float *inv_std, const float *gamma, int B) {
    const int c = l->c;
    double *sum_dy = l->sums, *sum_dyh = l->sums + c;
    memset(l->sums, 0, sizeof(double) * (size_t)(2 * c));
    for (int i = 0; i < B; i++) {
        const float *g = dy + (size_t)i * c, *h = xhat + (size_t)i * c;
        for (int j = 0; j < c; j++) {
            sum_dy[j] += g[j];
            sum_dyh[j] += (double)g[j] * h[j];
        }
    }
    for (int j = 0; j < c; j++) {
        dbeta[j] += (float)sum_dy[j];
        dgamma[j] += (float)sum_dyh[j];
    }
    double n = B;
    if (l->sync) {
        comm_allreduce_sum_f64(l->sums, (size_t)(2 * c), COMM_BN_GROUP, T_BN_COMM);
        n = (double)B * comm_bn_group_size();
    }
    /* dx = gamma*inv_std * (dy - mean(dy) - xhat * mean(dy*xhat)), means over the BN batch */
    float *a = l->scratch, *mdy = l->scratch + c, *mdyh = l->scratch + 2 * c;
    for (int j = 0; j < c; j++) {
        a[j] = gamma[j] * inv_std[j];
        mdy[j] = (float)(sum_dy[j] / n);
        mdyh[j] = (float)(sum_dyh[j] / n);
    }
    for (int i = 0; i < B; i++) {
        const float *g = dy + (size_t)i * c, *h = xhat + (size_t)i * c;
        float *d = dx + (size_t)i * c;
        for (int j = 0; j < c; j++) d[j] = a[j] * (g[j] - mdy[j] - h[j] * mdyh[j]);
    }
}

void bn_backward(bn_layer *l, float *dx, float *dgamma, float *dbeta, const float *dy, const float *xhat,
                 const float *inv_std, const float *gamma, int B) {
    const int K = l->ghost ? l->ghost : B;
    for (int r = 0, k = 0; r < B; r += K, k++) {
        const size_t off = (size_t)r * l->c;
        backward_chunk(l, dx + off, dgamma, dbeta, dy + off, xhat + off, inv_std + (size_t)k * l->c, gamma,
                       BN_MIN(K, B - r));
    }
}

void bn_forward_eval(bn_layer *l, float *y, const float *x, const float *gamma, const float *beta,
                     const float *mean, const float *var, int B) {
    const int c = l->c;
    float *scale = l->scratch, *shift = l->scratch + c;
    for (int j = 0; j < c; j++) {
        scale[j] = gamma[j] / sqrtf(var[j] + l->eps);
        shift[j] = beta[j] - mean[j] * scale[j];
    }
    for (int i = 0; i < B; i++) {
        const float *xr = x + (size_t)i * c;
        float *yr = y + (size_t)i * c;
        for (int j = 0; j < c; j++) yr[j] = xr[j] * scale[j] + shift[j];
    }
}
