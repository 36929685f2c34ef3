/* conv.c: NHWC convolution as one im2col of the batch and one cblas_sgemm
 * (dense.c), with plain-loop references. */
#include "bnmpi/conv.h"

#include <string.h>

#include "bnmpi/dense.h"

/* Valid kernel columns [*kx0, *kx1) at output column ox: 0 <= ox + kx - k/2 < W. */
static void kx_range(int ox, int W, int k, int *kx0, int *kx1) {
    const int p = k / 2;
    *kx0 = ox < p ? p - ox : 0;
    *kx1 = ox + k - p > W ? W - ox + p : k;
}

void conv_im2col(float *col, const float *x, int B, int H, int W, int C, int k) {
    const int p = k / 2;
    const size_t K = (size_t)k * k * C, kc = (size_t)k * C;
    for (int b = 0; b < B; b++)
        for (int oy = 0; oy < H; oy++)
            for (int ox = 0; ox < W; ox++) {
                float *dst = col + (((size_t)b * H + oy) * W + ox) * K;
                int kx0, kx1;
                kx_range(ox, W, k, &kx0, &kx1);
                for (int ky = 0; ky < k; ky++, dst += kc) {
                    const int iy = oy + ky - p;
                    if (iy < 0 || iy >= H) {
                        memset(dst, 0, sizeof(float) * kc);
                        continue;
                    }
                    /* kernel columns kx0..kx1-1 read input pixels adjacent in x: one copy */
                    const float *src = x + (((size_t)b * H + iy) * W + ox + kx0 - p) * C;
                    memset(dst, 0, sizeof(float) * kx0 * C);
                    memcpy(dst + (size_t)kx0 * C, src, sizeof(float) * (kx1 - kx0) * C);
                    memset(dst + (size_t)kx1 * C, 0, sizeof(float) * (k - kx1) * C);
                }
            }
}

void conv_col2im_add(float *dx, const float *dcol, int B, int H, int W, int C, int k) {
    const int p = k / 2;
    const size_t K = (size_t)k * k * C, kc = (size_t)k * C;
    for (int b = 0; b < B; b++)
        for (int oy = 0; oy < H; oy++)
            for (int ox = 0; ox < W; ox++) {
                const float *src = dcol + (((size_t)b * H + oy) * W + ox) * K;
                int kx0, kx1;
                kx_range(ox, W, k, &kx0, &kx1);
                for (int ky = 0; ky < k; ky++, src += kc) {
                    const int iy = oy + ky - p;
                    if (iy < 0 || iy >= H) continue;
                    float *dst = dx + (((size_t)b * H + iy) * W + ox + kx0 - p) * C;
                    const float *s = src + (size_t)kx0 * C;
                    const size_t n = (size_t)(kx1 - kx0) * C;
                    for (size_t i = 0; i < n; i++) dst[i] += s[i];
                }
            }
}

void conv_forward(float *y, float *col, const float *x, const float *w, const float *b, int B, int H, int W,
                  int cin, int cout, int k) {
    conv_im2col(col, x, B, H, W, cin, k);
    /* y (BHW, cout) = col (BHW, kkcin) . W^T + b */
    dense_forward(y, col, w, b, B * H * W, k * k * cin, cout);
}

void conv_backward(float *dx, float *dw, float *db, float *dcol, const float *dy, const float *col, const float *w,
                   int B, int H, int W, int cin, int cout, int k) {
    const int N = B * H * W;
    /* dW += dy^T col, db += colsum dy, dcol = dy W */
    dense_backward(dx ? dcol : NULL, dw, db, dy, col, w, N, k * k * cin, cout);
    if (!dx) return;
    memset(dx, 0, sizeof(float) * (size_t)N * cin);
    conv_col2im_add(dx, dcol, B, H, W, cin, k);
}

/* Row of pixel (y, x) of image b. */
static size_t px(int b, int y, int x, int H, int W) { return ((size_t)b * H + y) * W + x; }

void conv_forward_ref(float *y, const float *x, const float *w, const float *b, int B, int H, int W, int cin,
                      int cout, int k) {
    const int p = k / 2, K = k * k * cin;
    for (int n = 0; n < B; n++)
        for (int oy = 0; oy < H; oy++)
            for (int ox = 0; ox < W; ox++)
                for (int co = 0; co < cout; co++) {
                    double s = b[co];
                    for (int ky = 0; ky < k; ky++)
                        for (int kx = 0; kx < k; kx++) {
                            int iy = oy + ky - p, ix = ox + kx - p;
                            if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                            for (int ci = 0; ci < cin; ci++)
                                s += (double)w[(size_t)co * K + (ky * k + kx) * cin + ci] *
                                     x[px(n, iy, ix, H, W) * cin + ci];
                        }
                    y[px(n, oy, ox, H, W) * cout + co] = (float)s;
                }
}

void conv_backward_ref(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w, int B,
                       int H, int W, int cin, int cout, int k) {
    const int p = k / 2, K = k * k * cin;
    for (int co = 0; co < cout; co++) {
        double sb = 0;
        for (size_t i = 0; i < (size_t)B * H * W; i++) sb += dy[i * cout + co];
        db[co] += (float)sb;
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++)
                for (int ci = 0; ci < cin; ci++) {
                    double s = 0;
                    for (int n = 0; n < B; n++)
                        for (int oy = 0; oy < H; oy++)
                            for (int ox = 0; ox < W; ox++) {
                                int iy = oy + ky - p, ix = ox + kx - p;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                                s += (double)dy[px(n, oy, ox, H, W) * cout + co] * x[px(n, iy, ix, H, W) * cin + ci];
                            }
                    dw[(size_t)co * K + (ky * k + kx) * cin + ci] += (float)s;
                }
    }
    if (!dx) return;
    /* gather form: input pixel (iy, ix) feeds output (iy - ky + p, ix - kx + p) through tap (ky, kx) */
    for (int n = 0; n < B; n++)
        for (int iy = 0; iy < H; iy++)
            for (int ix = 0; ix < W; ix++)
                for (int ci = 0; ci < cin; ci++) {
                    double s = 0;
                    for (int ky = 0; ky < k; ky++)
                        for (int kx = 0; kx < k; kx++) {
                            int oy = iy - ky + p, ox = ix - kx + p;
                            if (oy < 0 || oy >= H || ox < 0 || ox >= W) continue;
                            for (int co = 0; co < cout; co++)
                                s += (double)dy[px(n, oy, ox, H, W) * cout + co] *
                                     w[(size_t)co * K + (ky * k + kx) * cin + ci];
                        }
                    dx[px(n, iy, ix, H, W) * cin + ci] = (float)s;
                }
}
