/* dense.c: the dense layer on cblas_sgemm, with plain-loop references. */
#include "bnmpi/dense.h"

#include <cblas.h>

void dense_forward(float *y, const float *x, const float *w, const float *b, int B, int in, int out) {
    for (int i = 0; i < B; i++)
        for (int o = 0; o < out; o++) y[(size_t)i * out + o] = b[o];
    /* y (B,out) += x (B,in) . W^T (in,out) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, out, in, 1.0f, x, in, w, in, 1.0f, y, out);
}

void dense_backward_bias(float *db, const float *dy, int B, int out) {
    for (int i = 0; i < B; i++) {
        const float *row = dy + (size_t)i * out;
        for (int o = 0; o < out; o++) db[o] += row[o];
    }
}

void dense_backward_weight_rows(float *dw, const float *dy, const float *x, int B, int in, int out, int r0, int r1) {
    /* dW[r0:r1] (r1-r0,in) += dy[:, r0:r1]^T (r1-r0,B) . x (B,in) */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, r1 - r0, in, B, 1.0f, dy + r0, out, x, in, 1.0f,
                dw + (size_t)r0 * in, in);
}

void dense_backward(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w,
                    int B, int in, int out) {
    dense_backward_weight_rows(dw, dy, x, B, in, out, 0, out);
    dense_backward_bias(db, dy, B, out);
    /* dx (B,in) = dy (B,out) . W (out,in) */
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, in, out, 1.0f, dy, out, w, in, 0.0f, dx, in);
}

void dense_forward_ref(float *y, const float *x, const float *w, const float *b, int B, int in, int out) {
    for (int i = 0; i < B; i++)
        for (int o = 0; o < out; o++) {
            double s = b[o];
            for (int k = 0; k < in; k++) s += (double)x[(size_t)i * in + k] * w[(size_t)o * in + k];
            y[(size_t)i * out + o] = (float)s;
        }
}

void dense_backward_ref(float *dx, float *dw, float *db, const float *dy, const float *x, const float *w,
                        int B, int in, int out) {
    for (int o = 0; o < out; o++) {
        double sb = 0;
        for (int i = 0; i < B; i++) sb += dy[(size_t)i * out + o];
        db[o] += (float)sb;
        for (int k = 0; k < in; k++) {
            double s = 0;
            for (int i = 0; i < B; i++) s += (double)dy[(size_t)i * out + o] * x[(size_t)i * in + k];
            dw[(size_t)o * in + k] += (float)s;
        }
    }
    if (dx)
        for (int i = 0; i < B; i++)
            for (int k = 0; k < in; k++) {
                double s = 0;
                for (int o = 0; o < out; o++) s += (double)dy[(size_t)i * out + o] * w[(size_t)o * in + k];
                dx[(size_t)i * in + k] = (float)s;
            }
}
