/* pool.c: 2x2 / stride 2 max pooling on NHWC rows, with plain-loop references. */
#include "bnmpi/pool.h"

#include <math.h>
#include <string.h>

/* v replaces the current best: strictly greater, or the first NaN (a NaN best stays). */
static int beats(float v, float best) { return v > best || (isnan(v) && !isnan(best)); }

void pool_forward(float *y, int32_t *arg, const float *x, int B, int H, int W, int C) {
    const int Ho = H / 2, Wo = W / 2;
    for (int b = 0; b < B; b++)
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++) {
                const size_t o = ((size_t)b * Ho + oy) * Wo + ox;
                /* the window's rows in x, in tie order (0,0), (0,1), (1,0), (1,1) */
                const int32_t r0 = (int32_t)(((size_t)b * H + 2 * oy) * W + 2 * ox);
                const int32_t r[4] = {r0, r0 + 1, r0 + W, r0 + W + 1};
                float *yo = y + o * C;
                int32_t *ao = arg + o * C;
                const float *x0 = x + (size_t)r0 * C;
                for (int c = 0; c < C; c++) yo[c] = x0[c], ao[c] = r0;
                for (int j = 1; j < 4; j++) {
                    const float *xj = x + (size_t)r[j] * C;
                    for (int c = 0; c < C; c++)
                        if (beats(xj[c], yo[c])) yo[c] = xj[c], ao[c] = r[j];
                }
            }
}

void pool_backward(float *dx, const float *dy, const int32_t *arg, int B, int H, int W, int C) {
    memset(dx, 0, sizeof(float) * (size_t)B * H * W * C);
    const size_t n = (size_t)B * (H / 2) * (W / 2);
    for (size_t i = 0; i < n; i++)
        for (int c = 0; c < C; c++) dx[(size_t)arg[i * C + c] * C + c] = dy[i * C + c];
}

/* (dy, dx) offset of the winner of the window at (oy, ox) of image b, channel c, as 2*dy + dx. */
static int window_winner(const float *x, int b, int oy, int ox, int c, int H, int W, int C) {
    int best = 0;
    for (int j = 1; j < 4; j++) {
        float v = x[(((size_t)b * H + 2 * oy + j / 2) * W + 2 * ox + j % 2) * C + c];
        float m = x[(((size_t)b * H + 2 * oy + best / 2) * W + 2 * ox + best % 2) * C + c];
        if (isnan(m)) break;
        if (isnan(v) || v > m) best = j;
    }
    return best;
}

void pool_forward_ref(float *y, int32_t *arg, const float *x, int B, int H, int W, int C) {
    for (int b = 0; b < B; b++)
        for (int oy = 0; oy < H / 2; oy++)
            for (int ox = 0; ox < W / 2; ox++)
                for (int c = 0; c < C; c++) {
                    int j = window_winner(x, b, oy, ox, c, H, W, C);
                    size_t row = ((size_t)b * H + 2 * oy + j / 2) * W + 2 * ox + j % 2;
                    size_t o = (((size_t)b * (H / 2) + oy) * (W / 2) + ox) * C + c;
                    y[o] = x[row * C + c];
                    arg[o] = (int32_t)row;
                }
}

void pool_backward_ref(float *dx, const float *dy, const float *x, int B, int H, int W, int C) {
    for (int b = 0; b < B; b++)
        for (int iy = 0; iy < H; iy++)
            for (int ix = 0; ix < W; ix++)
                for (int c = 0; c < C; c++) {
                    int oy = iy / 2, ox = ix / 2;
                    float g = 0;
                    if (oy < H / 2 && ox < W / 2 && window_winner(x, b, oy, ox, c, H, W, C) == 2 * (iy % 2) + ix % 2)
                        g = dy[(((size_t)b * (H / 2) + oy) * (W / 2) + ox) * C + c];
                    dx[(((size_t)b * H + iy) * W + ix) * C + c] = g;
                }
}
