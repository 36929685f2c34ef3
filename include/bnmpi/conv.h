/* conv.h: 2-D convolution on NHWC activations, stride 1, "same" zero padding.
 *
 * A batch of B images of H x W x C is a (B*H*W, C) row-major matrix; row
 * (b*H + y)*W + x holds pixel (y, x) of image b. Kernels are k x k, k odd
 * (3 or 5), padding k/2, so H and W are kept. Cross-correlation, as PyTorch's
 * Conv2d (no kernel flip):
 *   y[b,oy,ox,co] = bias[co] + sum_{ky,kx,ci} w[co,ky,kx,ci] * x[b, oy+ky-k/2, ox+kx-k/2, ci]
 * with x = 0 outside the image. W is (Cout, k*k*Cin) with the k*k*Cin index
 * ordered (ky, kx, ci): a dense layer's W with in = k*k*Cin, applied to the
 * im2col matrix, so the convolution is one cblas_sgemm over the whole batch.
 *
 * Scratch: col and dcol are (B*H*W, k*k*Cin) floats each, the caller's.
 * Backward *adds* into dW and db and overwrites dx, as dense.h. */
#ifndef BNMPI_CONV_H
#define BNMPI_CONV_H

/* col (B*H*W, k*k*C) from x (B*H*W, C); zeros outside the image. */
void conv_im2col(float *col, const float *x, int B, int H, int W, int C, int k);
/* dx (B*H*W, C) += the scatter of dcol (B*H*W, k*k*C): the adjoint of conv_im2col. */
void conv_col2im_add(float *dx, const float *dcol, int B, int H, int W, int C, int k);

/* y (B*H*W, cout); col (B*H*W, k*k*cin) is filled here and read by conv_backward;
 * w (cout, k*k*cin), b (cout). */
void conv_forward(float *y, float *col, const float *x, const float *w, const float *b, int B, int H, int W,
                  int cin, int cout, int k);
/* dw (cout, k*k*cin) and db (cout) += ; dx (B*H*W, cin) = . dx may be NULL (first
 * layer): then dcol is not touched and may be NULL too. col as left by conv_forward;
 * dcol (B*H*W, k*k*cin) scratch. */
void conv_backward(float *dx, float *dw, float *db, float *dcol, const float *dy, const float *col, const float *w,
                   int B, int H, int W, int cin, int cout, int k);

/* Plain loops from the definition, no im2col, double accumulation; for the tests. */
void conv_forward_ref(float *y, const float *x, const float *w, const float *b, int B, int H, int W, int cin,
                      int cout, int k);
void conv_backward_ref(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w, int B,
                       int H, int W, int cin, int cout, int k);

#endif
