/* check.h: what the C tests share: random data from one generator, relative
 * differences, central differences and their tolerance. Include after
 * cmocka.h, once per test program. */
#ifndef BNMPI_TESTS_CHECK_H
#define BNMPI_TESTS_CHECK_H

#include <math.h>
#include <stddef.h>

#include "bnmpi/common.h"
#include "bnmpi/rng.h"

static bn_rng rng; /* seeded by the test's main */

static inline float *random_floats(size_t n, float scale) {
    float *p = bn_alloc_floats(n);
    for (size_t i = 0; i < n; i++) p[i] = rng_uniform_sym(&rng, scale);
    return p;
}

static inline double max_abs(const float *a, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(a[i]));
    return m;
}

/* ||a - b||_inf / ||b||_inf; NaN when any entry differs by NaN (fmax would drop it) */
static inline double rel_diff(const float *a, const float *b, size_t n) {
    double d = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]);
        d = isnan(e) || e > d ? e : d;
        if (isnan(d)) return d;
    }
    double s = max_abs(b, n);
    return s > 0 ? d / s : d;
}

/* L(y) = sum r_i y_i, computed in double, so dL/dy = r. */
static inline double dot(const float *y, const float *r, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)y[i] * r[i];
    return s;
}

/* Central difference of f at *p; f reads p. The step is the one float can take. */
typedef double (*loss_fn)(void *ctx);
static inline double numeric_grad(float *p, loss_fn f, void *ctx, float h) {
    float keep = *p;
    *p = keep + h;
    double up = f(ctx);
    *p = keep - h;
    double down = f(ctx);
    *p = keep;
    return (up - down) / ((double)(keep + h) - (double)(keep - h));
}

static inline void assert_grad_close(double analytic, double numeric, const char *what, size_t i) {
    double tol = 2e-2 * fmax(fabs(numeric), fabs(analytic)) + 2e-3;
    if (!(fabs(analytic - numeric) <= tol)) /* NaN fails too */
        fail_msg("%s[%zu]: analytic %.6g vs numeric %.6g", what, i, analytic, numeric);
}

#endif
