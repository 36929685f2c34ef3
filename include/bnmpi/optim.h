/* optim.h: Adam and SGD over the flat parameter buffer.
 *
 * State lives apart from the gradients, in buffers with the parameters'
 * layout, so a checkpoint can save it whole.
 * Adam (Keras): t += 1; lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t);
 *   m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2; p -= lr_t * m / (sqrt(v) + eps).
 * SGD (Keras): g += wd*p on decayed tensors; v = mu*v - lr*g;
 *   p += v, or with Nesterov p += mu*v - lr*g. */
#ifndef BNMPI_OPTIM_H
#define BNMPI_OPTIM_H

#include <stdint.h>

#include "bnmpi/model.h"
#include "bnmpi/options.h"

typedef struct {
    int kind;           /* optim_kind */
    double lr, beta1, beta2, eps, momentum, weight_decay;
    int nesterov;
    int64_t t;          /* steps taken */
    size_t n;
    float *m;           /* (n) Adam first moment / SGD velocity */
    float *v;           /* (n) Adam second moment; NULL for SGD */
    int shared;         /* m and v are node-shared memory (gradsync.c), not ours to free */
} optimizer;

void optim_init(optimizer *o, const bn_config *c, size_t n_params);
void optim_free(optimizer *o);
/* One update of every view of m with its gradient, zeroing the gradient as it
 * goes (backward adds into it; this saves a separate pass over it). */
void optim_step(optimizer *o, model *m);
/* The same for parameters [lo, hi) only (a shard, gradsync.c); the step count
 * advances as for a whole step. */
void optim_step_range(optimizer *o, model *m, size_t lo, size_t hi);

#endif
