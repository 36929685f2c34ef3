/* test_conv.c: NHWC convolution and 2x2 max pooling against their plain-loop
 * references, central-difference gradient checks, the im2col/col2im adjoint
 * identity, odd sizes, ties and NaN in pooling. One rank. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bnmpi/comm.h"
#include "bnmpi/common.h"
#include "bnmpi/conv.h"
#include "bnmpi/pool.h"
#include "bnmpi/rng.h"
#include "check.h"

static float *copy_floats(const float *a, size_t n) {
    float *p = bn_alloc_floats(n);
    memcpy(p, a, sizeof(float) * n);
    return p;
}

/* Scratch as a reused buffer holds it: stale values, here NaN, that must all be overwritten. */
static float *stale_floats(size_t n) {
    float *p = bn_alloc_floats(n);
    for (size_t i = 0; i < n; i++) p[i] = NAN;
    return p;
}

static void assert_rel_close(const float *a, const float *b, size_t n, double tol, const char *what) {
    double d = rel_diff(a, b, n);
    if (!(d <= tol)) fail_msg("%s: relative difference %.3g > %.3g", what, d, tol);
}

/* ---- convolution ------------------------------------------------------- */

typedef struct {
    int B, H, W, cin, cout, k;
} conv_shape;

static size_t rows(conv_shape s) { return (size_t)s.B * s.H * s.W; }
static size_t kdim(conv_shape s) { return (size_t)s.k * s.k * s.cin; }

/* Forward, and backward (dx, dW, dB) from non-zero dW, db, against the references;
 * then dx == NULL gives the same dW, db bit for bit. */
static void check_conv_against_ref(conv_shape s) {
    const size_t N = rows(s), K = kdim(s);
    float *x = random_floats(N * s.cin, 1), *w = random_floats((size_t)s.cout * K, 0.3f);
    float *b = random_floats((size_t)s.cout, 0.3f), *dy = random_floats(N * s.cout, 1);
    float *y = bn_alloc_floats(N * s.cout), *y_ref = bn_alloc_floats(N * s.cout);
    float *col = stale_floats(N * K), *dcol = stale_floats(N * K);
    conv_forward(y, col, x, w, b, s.B, s.H, s.W, s.cin, s.cout, s.k);
    conv_forward_ref(y_ref, x, w, b, s.B, s.H, s.W, s.cin, s.cout, s.k);
    assert_rel_close(y, y_ref, N * s.cout, 1e-5, "y");

    float *dx = random_floats(N * s.cin, 1), *dx_ref = bn_alloc_floats(N * s.cin); /* dx: overwritten */
    float *dw = random_floats((size_t)s.cout * K, 1), *db = random_floats((size_t)s.cout, 1);
    float *dw0 = copy_floats(dw, (size_t)s.cout * K), *db0 = copy_floats(db, (size_t)s.cout);
    float *dw_ref = copy_floats(dw, (size_t)s.cout * K), *db_ref = copy_floats(db, (size_t)s.cout);
    conv_backward(dx, dw, db, dcol, dy, col, w, s.B, s.H, s.W, s.cin, s.cout, s.k);
    conv_backward_ref(dx_ref, dw_ref, db_ref, dy, x, w, s.B, s.H, s.W, s.cin, s.cout, s.k);
    assert_rel_close(dx, dx_ref, N * s.cin, 1e-5, "dx");
    assert_rel_close(dw, dw_ref, (size_t)s.cout * K, 1e-5, "dW");
    assert_rel_close(db, db_ref, (size_t)s.cout, 1e-5, "db");
    /* the references add too: their increments are a real gradient, not ~0 */
    assert_true(rel_diff(dw_ref, dw0, (size_t)s.cout * K) > 1e-2);
    assert_true(rel_diff(db_ref, db0, (size_t)s.cout) > 1e-2);

    /* first layer: no dx, no dcol, same dW and db */
    float *dw2 = copy_floats(dw0, (size_t)s.cout * K), *db2 = copy_floats(db0, (size_t)s.cout);
    conv_backward(NULL, dw2, db2, NULL, dy, col, w, s.B, s.H, s.W, s.cin, s.cout, s.k);
    assert_memory_equal(dw2, dw, sizeof(float) * s.cout * K);
    assert_memory_equal(db2, db, sizeof(float) * s.cout);
    free(x), free(w), free(b), free(dy), free(y), free(y_ref), free(col), free(dcol), free(dx), free(dx_ref);
    free(dw), free(db), free(dw0), free(db0), free(dw_ref), free(db_ref), free(dw2), free(db2);
}

static void test_conv_matches_reference(void **state) {
    (void)state;
    const conv_shape shapes[] = {
        {3, 5, 5, 1, 4, 3}, {3, 7, 7, 3, 4, 3}, {3, 6, 5, 3, 4, 3}, {3, 5, 5, 1, 4, 5}, {3, 7, 7, 3, 4, 5},
        {3, 6, 5, 1, 4, 5}, {2, 3, 4, 3, 4, 5}, /* kernel wider than the image */
        {1, 1, 1, 2, 3, 3},                     /* one pixel: only the centre tap */
        {2, 14, 14, 32, 64, 3},                 /* a second layer's size */
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) check_conv_against_ref(shapes[i]);
}

/* The convention itself, independent of both implementations: cross-correlation
 * (no flip), W index (ky, kx, ci), zero padding. A single 1 at tap (ky, kx) = (0, 2)
 * of input channel 1 makes y(oy, ox) = x(oy - 1, ox + 1, channel 1), 0 off the image. */
static void test_conv_layout_by_hand(void **state) {
    (void)state;
    enum { B = 2, H = 4, W = 5, CI = 2, K = 3 };
    float x[B * H * W * CI], w[K * K * CI] = {0}, bias[1] = {0.5f}, y[B * H * W], yr[B * H * W];
    float col[B * H * W * K * K * CI];
    for (int i = 0; i < B * H * W * CI; i++) x[i] = (float)(i + 1);
    for (int i = 0; i < B * H * W * K * K * CI; i++) col[i] = NAN;
    w[(0 * K + 2) * CI + 1] = 1;
    conv_forward(y, col, x, w, bias, B, H, W, CI, 1, K);
    conv_forward_ref(yr, x, w, bias, B, H, W, CI, 1, K);
    for (int b = 0; b < B; b++)
        for (int oy = 0; oy < H; oy++)
            for (int ox = 0; ox < W; ox++) {
                int iy = oy - 1, ix = ox + 1, o = (b * H + oy) * W + ox;
                float want = 0.5f + (iy >= 0 && ix < W ? x[((b * H + iy) * W + ix) * CI + 1] : 0);
                assert_float_equal(y[o], want, 0);
                assert_float_equal(yr[o], want, 0);
            }
}

typedef struct {
    conv_shape s;
    float *x, *w, *b, *y, *r, *col;
} conv_ctx;

static double conv_loss(void *p) {
    conv_ctx *c = p;
    conv_forward(c->y, c->col, c->x, c->w, c->b, c->s.B, c->s.H, c->s.W, c->s.cin, c->s.cout, c->s.k);
    return dot(c->y, c->r, rows(c->s) * c->s.cout);
}

/* dx, dW, db of sum(y * r) from conv_backward and conv_backward_ref, against central differences. */
static void check_conv_gradient(conv_shape s) {
    const size_t N = rows(s), K = kdim(s), nx = N * s.cin, nw = (size_t)s.cout * K;
    conv_ctx c = {.s = s};
    c.x = random_floats(nx, 1), c.w = random_floats(nw, 1), c.b = random_floats(s.cout, 1);
    c.y = bn_alloc_floats(N * s.cout), c.r = random_floats(N * s.cout, 1), c.col = stale_floats(N * K);
    float *dcol = stale_floats(N * K);
    float *dx[2] = {bn_alloc_floats(nx), bn_alloc_floats(nx)}, *dw[2] = {bn_alloc_floats(nw), bn_alloc_floats(nw)};
    float *db[2] = {bn_alloc_floats(s.cout), bn_alloc_floats(s.cout)};
    conv_loss(&c); /* fills col */
    conv_backward(dx[0], dw[0], db[0], dcol, c.r, c.col, c.w, s.B, s.H, s.W, s.cin, s.cout, s.k);
    conv_backward_ref(dx[1], dw[1], db[1], c.r, c.x, c.w, s.B, s.H, s.W, s.cin, s.cout, s.k);
    for (size_t i = 0; i < nx; i++) {
        double n = numeric_grad(&c.x[i], conv_loss, &c, 1e-2f);
        assert_grad_close(dx[0][i], n, "dx", i), assert_grad_close(dx[1][i], n, "dx_ref", i);
    }
    for (size_t i = 0; i < nw; i++) {
        double n = numeric_grad(&c.w[i], conv_loss, &c, 1e-2f);
        assert_grad_close(dw[0][i], n, "dW", i), assert_grad_close(dw[1][i], n, "dW_ref", i);
    }
    for (int i = 0; i < s.cout; i++) {
        double n = numeric_grad(&c.b[i], conv_loss, &c, 1e-2f);
        assert_grad_close(db[0][i], n, "db", (size_t)i), assert_grad_close(db[1][i], n, "db_ref", (size_t)i);
    }
    free(c.x), free(c.w), free(c.b), free(c.y), free(c.r), free(c.col), free(dcol);
    for (int j = 0; j < 2; j++) free(dx[j]), free(dw[j]), free(db[j]);
}

static void test_conv_gradient(void **state) {
    (void)state;
    check_conv_gradient((conv_shape){2, 5, 4, 2, 3, 3});
    check_conv_gradient((conv_shape){2, 5, 6, 1, 2, 5});
}

/* <col2im(a), x> == <a, im2col(x)>, and col2im adds into what dx held. */
static void check_adjoint(int B, int H, int W, int C, int k) {
    const size_t N = (size_t)B * H * W, K = (size_t)k * k * C;
    float *x = random_floats(N * C, 1), *a = random_floats(N * K, 1), *col = stale_floats(N * K);
    float *dx0 = random_floats(N * C, 1), *dx = copy_floats(dx0, N * C);
    conv_im2col(col, x, B, H, W, C, k);
    conv_col2im_add(dx, a, B, H, W, C, k);
    double lhs = dot(dx, x, N * C) - dot(dx0, x, N * C), rhs = dot(a, col, N * K), scale = 0;
    for (size_t i = 0; i < N * K; i++) scale += fabs((double)a[i] * col[i]);
    if (!(fabs(lhs - rhs) <= 1e-6 * scale)) fail_msg("<col2im(a), x> = %.9g, <a, im2col(x)> = %.9g", lhs, rhs);
    /* zeros outside the image: in the top-left pixel's row, taps above or left of it */
    for (int ky = 0; ky < k; ky++)
        for (int kx = 0; kx < k; kx++)
            for (int c = 0; c < C; c++)
                if (ky < k / 2 || kx < k / 2) assert_float_equal(col[(ky * k + kx) * C + c], 0, 0);
    free(x), free(a), free(col), free(dx0), free(dx);
}

static void test_im2col_adjoint(void **state) {
    (void)state;
    check_adjoint(3, 5, 5, 1, 3);
    check_adjoint(2, 7, 6, 3, 5);
    check_adjoint(2, 3, 2, 4, 5);
}

/* ---- max pooling ------------------------------------------------------- */

static void check_pool_against_ref(int B, int H, int W, int C) {
    const size_t nx = (size_t)B * H * W * C, ny = (size_t)B * (H / 2) * (W / 2) * C;
    float *x = random_floats(nx, 1), *y = bn_alloc_floats(ny), *y_ref = bn_alloc_floats(ny);
    int32_t *arg = bn_calloc(ny, sizeof(int32_t)), *arg_ref = bn_calloc(ny, sizeof(int32_t));
    float *dy = random_floats(ny, 1), *dx = random_floats(nx, 1), *dx_ref = random_floats(nx, 1);
    pool_forward(y, arg, x, B, H, W, C);
    pool_forward_ref(y_ref, arg_ref, x, B, H, W, C);
    assert_memory_equal(y, y_ref, sizeof(float) * ny);
    assert_memory_equal(arg, arg_ref, sizeof(int32_t) * ny);
    for (size_t i = 0; i < ny; i++) assert_true(arg[i] >= 0 && arg[i] < B * H * W);
    pool_backward(dx, dy, arg, B, H, W, C);
    pool_backward_ref(dx_ref, dy, x, B, H, W, C);
    assert_memory_equal(dx, dx_ref, sizeof(float) * nx);
    free(x), free(y), free(y_ref), free(arg), free(arg_ref), free(dy), free(dx), free(dx_ref);
}

static void test_pool_matches_reference(void **state) {
    (void)state;
    check_pool_against_ref(3, 4, 4, 5);
    check_pool_against_ref(3, 7, 7, 4);
    check_pool_against_ref(2, 5, 6, 3);
    check_pool_against_ref(2, 28, 28, 32);
    check_pool_against_ref(2, 1, 5, 2); /* one row: no output, all-zero gradient */
}

/* 7x7 -> 3x3: the last row and column never win, even when largest, and get 0. */
static void test_pool_odd_size_floors(void **state) {
    (void)state;
    enum { B = 2, H = 7, W = 7, C = 2, HO = 3, WO = 3 };
    float x[B * H * W * C], y[B * HO * WO * C], dy[B * HO * WO * C], dx[B * H * W * C];
    int32_t arg[B * HO * WO * C];
    for (int b = 0; b < B; b++)
        for (int i = 0; i < H; i++)
            for (int j = 0; j < W; j++)
                for (int c = 0; c < C; c++)
                    x[((b * H + i) * W + j) * C + c] = (i == H - 1 || j == W - 1) ? 100.0f : (float)(i * W + j + c);
    for (int i = 0; i < B * HO * WO * C; i++) dy[i] = 1;
    pool_forward(y, arg, x, B, H, W, C);
    for (int b = 0; b < B; b++)
        for (int oy = 0; oy < HO; oy++)
            for (int ox = 0; ox < WO; ox++)
                for (int c = 0; c < C; c++) {
                    int o = ((b * HO + oy) * WO + ox) * C + c, row = (b * H + 2 * oy + 1) * W + 2 * ox + 1;
                    assert_float_equal(y[o], x[row * C + c], 0); /* increasing values: (1,1) wins */
                    assert_int_equal(arg[o], row);
                }
    pool_backward(dx, dy, arg, B, H, W, C);
    double total = 0;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < H; i++)
            for (int j = 0; j < W; j++)
                for (int c = 0; c < C; c++) {
                    float g = dx[((b * H + i) * W + j) * C + c];
                    total += g;
                    if (i == H - 1 || j == W - 1) assert_float_equal(g, 0, 0);
                }
    assert_float_equal(total, B * HO * WO * C, 0);
}

typedef struct {
    float *x, *y, *r;
    int32_t *arg;
    int B, H, W, C;
} pool_ctx;

static double pool_loss(void *p) {
    pool_ctx *c = p;
    pool_forward(c->y, c->arg, c->x, c->B, c->H, c->W, c->C);
    return dot(c->y, c->r, (size_t)c->B * (c->H / 2) * (c->W / 2) * c->C);
}

/* Inputs 0.05 apart (a shuffled ramp): no ties, and a step of 1e-2 never changes a max. */
static void test_pool_gradient(void **state) {
    (void)state;
    pool_ctx c = {.B = 2, .H = 5, .W = 6, .C = 3};
    const int nx = c.B * c.H * c.W * c.C, ny = c.B * (c.H / 2) * (c.W / 2) * c.C;
    int32_t *perm = bn_calloc(nx, sizeof(int32_t));
    for (int i = 0; i < nx; i++) perm[i] = i;
    rng_shuffle(&rng, perm, nx);
    c.x = bn_alloc_floats(nx), c.y = bn_alloc_floats(ny), c.r = random_floats(ny, 1);
    c.arg = bn_calloc(ny, sizeof(int32_t));
    for (int i = 0; i < nx; i++) c.x[i] = 0.05f * (perm[i] - nx / 2);
    float *dx = bn_alloc_floats(nx);
    pool_loss(&c);
    pool_backward(dx, c.r, c.arg, c.B, c.H, c.W, c.C);
    int nonzero = 0;
    for (int i = 0; i < nx; i++) {
        assert_grad_close(dx[i], numeric_grad(&c.x[i], pool_loss, &c, 1e-2f), "dx", (size_t)i);
        nonzero += dx[i] != 0;
    }
    assert_int_equal(nonzero, ny); /* one winner per output */
    free(perm), free(c.x), free(c.y), free(c.r), free(c.arg), free(dx);
}

/* Ties go to the first maximum in window order (0,0), (0,1), (1,0), (1,1); the
 * others get exactly 0. A NaN anywhere in the window wins. One 2x2 image, 6 channels. */
static void test_pool_ties_and_nan(void **state) {
    (void)state;
    enum { C = 6 };
    const float nan = NAN;
    /* x[pos][c], pos = (0,0), (0,1), (1,0), (1,1) */
    const float x[4][C] = {
        {2, 1, 1, -1, 1, 5},
        {2, 3, 0, -1, nan, 5},
        {2, 3, 4, -1, 9, nan},
        {2, 0, 4, -1, nan, 5},
    };
    const int32_t want[C] = {0, 1, 2, 0, 1, 2};
    float y[C], y_ref[C], dy[C] = {1, 2, 3, 4, 5, 6}, dx[4 * C], dx_ref[4 * C];
    int32_t arg[C], arg_ref[C];
    pool_forward(y, arg, &x[0][0], 1, 2, 2, C);
    pool_forward_ref(y_ref, arg_ref, &x[0][0], 1, 2, 2, C);
    assert_memory_equal(arg, want, sizeof want);
    assert_memory_equal(arg_ref, want, sizeof want);
    for (int c = 0; c < 4; c++) assert_float_equal(y[c], x[want[c]][c], 0);
    assert_true(isnan(y[4]) && isnan(y[5]) && isnan(y_ref[4]) && isnan(y_ref[5]));
    pool_backward(dx, dy, arg, 1, 2, 2, C);
    pool_backward_ref(dx_ref, dy, &x[0][0], 1, 2, 2, C);
    for (int pos = 0; pos < 4; pos++)
        for (int c = 0; c < C; c++) {
            float g = pos == want[c] ? dy[c] : 0;
            assert_memory_equal(&dx[pos * C + c], &g, sizeof g); /* exactly 0, not -0 or tiny */
            assert_memory_equal(&dx_ref[pos * C + c], &g, sizeof g);
        }
}

int main(int argc, char **argv) {
    comm_init(&argc, &argv);
    rng_seed(&rng, 2024, 77, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_matches_reference), cmocka_unit_test(test_conv_layout_by_hand),
        cmocka_unit_test(test_conv_gradient),          cmocka_unit_test(test_im2col_adjoint),
        cmocka_unit_test(test_pool_matches_reference), cmocka_unit_test(test_pool_odd_size_floors),
        cmocka_unit_test(test_pool_gradient),          cmocka_unit_test(test_pool_ties_and_nan),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    comm_exit(failed ? 1 : 0, NULL);
}
