/* pool.h: 2x2 max pooling, stride 2, on NHWC activations (rows x channels).
 *
 * x (B*H*W, C) -> y (B*(H/2)*(W/2), C). Odd H or W floor as PyTorch does: the
 * last row / column is dropped (7x7 -> 3x3) and gets zero gradient.
 * Ties: the first maximum in window order (0,0), (0,1), (1,0), (1,1) (row, column
 * offsets) wins and alone gets the gradient. NaN propagates as in PyTorch: a NaN in
 * the window wins (the first NaN, in the same order), so y is NaN. */
#ifndef BNMPI_POOL_H
#define BNMPI_POOL_H

#include <stdint.h>

/* y, arg (B*(H/2)*(W/2), C); arg[i*C + c] is the row of x (0..B*H*W-1) whose
 * channel c gave y[i*C + c]. */
void pool_forward(float *y, int32_t *arg, const float *x, int B, int H, int W, int C);
/* dx (B*H*W, C) overwritten: zero, then dy (B*(H/2)*(W/2), C) written at the argmax. */
void pool_backward(float *dx, const float *dy, const int32_t *arg, int B, int H, int W, int C);

/* Plain-loop twins for the tests. The backward recomputes the argmax from x
 * instead of reading arg. */
void pool_forward_ref(float *y, int32_t *arg, const float *x, int B, int H, int W, int C);
void pool_backward_ref(float *dx, const float *dy, const float *x, int B, int H, int W, int C);

#endif
