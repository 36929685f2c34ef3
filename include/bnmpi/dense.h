/* dense.h: fully connected layer y = x W^T + b.
 *
 * Shapes (row-major): x (B, in), W (out, in), b (out), y (B, out).
 * Backward *adds* into dW and db (zeroing is the caller's explicit step) and
 * overwrites dx. Each BLAS kernel has a plain-loop _ref twin for the tests. */
#ifndef BNMPI_DENSE_H
#define BNMPI_DENSE_H

void dense_forward(float *y, const float *x, const float *w, const float *b, int B, int in, int out);
/* dx may be NULL (first layer: no gradient for the input is needed). */
void dense_backward(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w,
                    int B, int in, int out);

/* dense_backward's gradient pieces, for callers that interleave other work
 * (the overlapped allreduce in layer_dense.c): db += the column sums of dy;
 * rows [r0, r1) of dW += dy[:, r0:r1]^T x. */
void dense_backward_bias(float *db, const float *dy, int B, int out);
void dense_backward_weight_rows(float *dw, const float *dy, const float *x, int B, int in, int out, int r0, int r1);

void dense_forward_ref(float *y, const float *x, const float *w, const float *b, int B, int in, int out);
void dense_backward_ref(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w,
                        int B, int in, int out);

#endif
