/* batchnorm.h: batch normalisation over a (B, C) activation, per channel.
 *
 * Training: y = gamma * xhat + beta with xhat = (x - mu) / sqrt(var + eps), where
 * mu and var (biased, divide by N) are over the BN batch: this rank's B rows
 * (local) or the rows of every rank in the BN group (sync; comm_merge_moments).
 * The same eps sits inside the square root in forward, backward and eval.
 * Running statistics: r = m*r + (1-m)*batch, with the batch variance unbiased
 * (times N/(N-1), N the BN batch), as Keras and PyTorch keep them.
 *
 * Ghost batch norm (Hoffer et al. 2017): with ghost = K > 0 a rank's B rows
 * are K-row virtual batches, each normalised with its own statistics and
 * each updating the running statistics in turn; inv_std then holds B/K rows. */
#ifndef BNMPI_BATCHNORM_H
#define BNMPI_BATCHNORM_H

typedef struct {
    int c;          /* channels */
    float eps;
    float momentum;
    int sync;       /* merge statistics over the BN group */
    int ghost;      /* rows per virtual batch; 0 = the whole local batch */
    double *stats;  /* (1 + 2c) scratch: count, mean, m2 */
    double *sums;   /* (2c) scratch for backward: sum dy, sum dy*xhat */
    float *scratch; /* (3c) per-channel coefficients */
} bn_layer;

void bn_layer_init(bn_layer *l, int c, float eps, float momentum, int sync, int ghost);
void bn_layer_free(bn_layer *l);

/* x, y, xhat (B, c); gamma, beta (c); inv_std (B/ghost or 1, c) out;
 * running_mean/var (c) updated.
 * y may alias x. */
void bn_forward_train(bn_layer *l, float *y, float *xhat, float *inv_std, const float *x,
                      const float *gamma, const float *beta, float *running_mean, float *running_var, int B);
/* dx (B, c) = input gradient (may alias dy); dgamma, dbeta (c) are *added* to
 * with this rank's partial sums. In sync mode the sums used for dx are merged
 * over the BN group. The caller's dy is the gradient of the global-mean loss. */
void bn_backward(bn_layer *l, float *dx, float *dgamma, float *dbeta, const float *dy, const float *xhat,
                 const float *inv_std, const float *gamma, int B);
/* Per-channel moments of x (B, c) merged into acc: [count, mean[c], m2[c]]
 * (Chan's formula), for population statistics over many batches. */
void bn_accumulate_moments(double *acc, const float *x, int B, int c);

/* Inference with given statistics (mean, var (c)). y may alias x. */
void bn_forward_eval(bn_layer *l, float *y, const float *x, const float *gamma, const float *beta,
                     const float *mean, const float *var, int B);

#endif
