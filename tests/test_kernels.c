/* test_kernels.c: each BLAS kernel against its plain-loop reference, and
 * central-difference gradient checks of dense, BN (train mode), softmax
 * cross-entropy and the whole MLP in every BN placement. One rank. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bnmpi/batchnorm.h"
#include "bnmpi/comm.h"
#include "bnmpi/dataset.h"
#include "bnmpi/dense.h"
#include "bnmpi/loss.h"
#include "bnmpi/model.h"
#include "bnmpi/rng.h"
#include "check.h"

static void check_dense_against_ref(int B, int in, int out) {
    float *x = random_floats((size_t)B * in, 1), *w = random_floats((size_t)out * in, 0.1f);
    float *b = random_floats((size_t)out, 0.1f), *dy = random_floats((size_t)B * out, 1);
    float *y = bn_alloc_floats((size_t)B * out), *y_ref = bn_alloc_floats((size_t)B * out);
    dense_forward(y, x, w, b, B, in, out);
    dense_forward_ref(y_ref, x, w, b, B, in, out);
    assert_true(rel_diff(y, y_ref, (size_t)B * out) < 1e-5);

    float *dx = bn_alloc_floats((size_t)B * in), *dx_ref = bn_alloc_floats((size_t)B * in);
    float *dw = random_floats((size_t)out * in, 1), *db = random_floats((size_t)out, 1);
    float *dw_ref = bn_alloc_floats((size_t)out * in), *db_ref = bn_alloc_floats((size_t)out);
    memcpy(dw_ref, dw, sizeof(float) * (size_t)out * in); /* backward adds: start from the same non-zero */
    memcpy(db_ref, db, sizeof(float) * (size_t)out);
    dense_backward(dx, dw, db, dy, x, w, B, in, out);
    dense_backward_ref(dx_ref, dw_ref, db_ref, dy, x, w, B, in, out);
    assert_true(rel_diff(dx, dx_ref, (size_t)B * in) < 1e-5);
    assert_true(rel_diff(dw, dw_ref, (size_t)out * in) < 1e-5);
    assert_true(rel_diff(db, db_ref, (size_t)out) < 1e-5);
    free(x), free(w), free(b), free(dy), free(y), free(y_ref), free(dx), free(dx_ref);
    free(dw), free(db), free(dw_ref), free(db_ref);
}

/* The overlapped backward (layer_dense.c) builds dW from row blocks and db on its own:
 * uneven blocks that tile the rows give the reference's dW and db. */
static void test_dense_row_blocks_match_reference(void **state) {
    (void)state;
    const int B = 24, in = 37, out = 29, blocks = 4;
    float *x = random_floats((size_t)B * in, 1), *w = random_floats((size_t)out * in, 0.1f);
    float *dy = random_floats((size_t)B * out, 1);
    float *dw = random_floats((size_t)out * in, 1), *db = random_floats((size_t)out, 1);
    float *dw_ref = bn_alloc_floats((size_t)out * in), *db_ref = bn_alloc_floats((size_t)out);
    memcpy(dw_ref, dw, sizeof(float) * (size_t)out * in);
    memcpy(db_ref, db, sizeof(float) * (size_t)out);
    for (int k = 0; k < blocks; k++)
        dense_backward_weight_rows(dw, dy, x, B, in, out, out * k / blocks, out * (k + 1) / blocks);
    dense_backward_bias(db, dy, B, out);
    dense_backward_ref(NULL, dw_ref, db_ref, dy, x, w, B, in, out);
    assert_true(rel_diff(dw, dw_ref, (size_t)out * in) < 1e-5);
    assert_true(rel_diff(db, db_ref, (size_t)out) < 1e-5);
    free(x), free(w), free(dy), free(dw), free(db), free(dw_ref), free(db_ref);
}

static void test_dense_matches_reference(void **state) {
    (void)state;
    check_dense_against_ref(7, 13, 5);
    check_dense_against_ref(32, 784, 256);
    check_dense_against_ref(33, 256, 10);
}

typedef struct {
    float *x, *w, *b, *y, *r;
    int B, in, out;
} dense_ctx;

static double dense_loss(void *p) {
    dense_ctx *c = p;
    dense_forward_ref(c->y, c->x, c->w, c->b, c->B, c->in, c->out);
    return dot(c->y, c->r, (size_t)c->B * c->out);
}

static void test_dense_gradient(void **state) {
    (void)state;
    dense_ctx c = {.B = 4, .in = 6, .out = 3};
    c.x = random_floats(24, 1), c.w = random_floats(18, 1), c.b = random_floats(3, 1);
    c.y = bn_alloc_floats(12), c.r = random_floats(12, 1);
    float *dx = bn_alloc_floats(24), *dw = bn_alloc_floats(18), *db = bn_alloc_floats(3);
    dense_backward(dx, dw, db, c.r, c.x, c.w, c.B, c.in, c.out);
    for (size_t i = 0; i < 24; i++) assert_grad_close(dx[i], numeric_grad(&c.x[i], dense_loss, &c, 1e-2f), "dx", i);
    for (size_t i = 0; i < 18; i++) assert_grad_close(dw[i], numeric_grad(&c.w[i], dense_loss, &c, 1e-2f), "dW", i);
    for (size_t i = 0; i < 3; i++) assert_grad_close(db[i], numeric_grad(&c.b[i], dense_loss, &c, 1e-2f), "db", i);
    free(c.x), free(c.w), free(c.b), free(c.y), free(c.r), free(dx), free(dw), free(db);
}

typedef struct {
    bn_layer l;
    float *x, *y, *xhat, *inv_std, *gamma, *beta, *rm, *rv, *r;
    int B, c;
} bn_ctx;

static double bn_loss(void *p) {
    bn_ctx *c = p;
    bn_forward_train(&c->l, c->y, c->xhat, c->inv_std, c->x, c->gamma, c->beta, c->rm, c->rv, c->B);
    return dot(c->y, c->r, (size_t)c->B * c->c);
}

static void test_batchnorm_gradient(void **state) {
    (void)state;
    bn_ctx c = {.B = 6, .c = 3};
    size_t n = (size_t)c.B * c.c;
    bn_layer_init(&c.l, c.c, 1e-3f, 0.99f, 0, 0);
    c.x = random_floats(n, 2), c.y = bn_alloc_floats(n), c.xhat = bn_alloc_floats(n);
    c.inv_std = bn_alloc_floats(3), c.gamma = random_floats(3, 2), c.beta = random_floats(3, 1);
    c.rm = bn_alloc_floats(3), c.rv = bn_alloc_floats(3), c.r = random_floats(n, 1);
    float *dx = bn_alloc_floats(n), *dg = bn_alloc_floats(3), *dbeta = bn_alloc_floats(3);
    bn_loss(&c);
    bn_backward(&c.l, dx, dg, dbeta, c.r, c.xhat, c.inv_std, c.gamma, c.B);
    for (size_t i = 0; i < n; i++) assert_grad_close(dx[i], numeric_grad(&c.x[i], bn_loss, &c, 1e-2f), "dx", i);
    for (size_t i = 0; i < 3; i++) {
        assert_grad_close(dg[i], numeric_grad(&c.gamma[i], bn_loss, &c, 1e-2f), "dgamma", i);
        assert_grad_close(dbeta[i], numeric_grad(&c.beta[i], bn_loss, &c, 1e-2f), "dbeta", i);
    }
    /* the normalised batch has mean 0 and biased variance 1/(1 + eps/var) per channel */
    for (int j = 0; j < c.c; j++) {
        double m = 0, v = 0;
        for (int i = 0; i < c.B; i++) m += c.xhat[i * c.c + j];
        m /= c.B;
        for (int i = 0; i < c.B; i++) v += (c.xhat[i * c.c + j] - m) * (c.xhat[i * c.c + j] - m);
        assert_true(fabs(m) < 1e-5);
        assert_true(v / c.B > 0.99 && v / c.B <= 1.0 + 1e-5);
    }
    bn_layer_free(&c.l);
    free(c.x), free(c.y), free(c.xhat), free(c.inv_std), free(c.gamma), free(c.beta), free(c.rm), free(c.rv);
    free(c.r), free(dx), free(dg), free(dbeta);
}

static void test_batchnorm_running_stats(void **state) {
    (void)state;
    /* one step from r = (0, 1) with momentum 0.9 on x = {1, 2, 3, 6}: mean 3, unbiased var 14/3 */
    bn_layer l;
    bn_layer_init(&l, 1, 1e-3f, 0.9f, 0, 0);
    float x[4] = {1, 2, 3, 6}, y[4], xhat[4], inv_std[1], gamma[1] = {1}, beta[1] = {0}, rm[1] = {0}, rv[1] = {1};
    bn_forward_train(&l, y, xhat, inv_std, x, gamma, beta, rm, rv, 4);
    assert_float_equal(rm[0], 0.1f * 3.0f, 1e-6);
    assert_float_equal(rv[0], 0.9f + 0.1f * 14.0f / 3.0f, 1e-6);
    assert_float_equal(inv_std[0], 1.0 / sqrt(3.5 + 1e-3), 1e-6);
    bn_layer_free(&l);
}

/* Ghost BN with K = 16 at batch 64 is BN applied to the four 16-row slices
 * in turn: outputs, saved statistics, running statistics and gradients, bit
 * for bit. */
static void test_ghost_batchnorm_is_four_slices(void **state) {
    (void)state;
    enum { B = 64, K = 16, C = 5 };
    const size_t n = (size_t)B * C;
    float *x = random_floats(n, 3), *dy = random_floats(n, 1), *gamma = random_floats(C, 1), *beta = random_floats(C, 1);
    bn_layer ghost, plain;
    bn_layer_init(&ghost, C, 1e-3f, 0.9f, 0, K);
    bn_layer_init(&plain, C, 1e-3f, 0.9f, 0, 0);
    float *y1 = bn_alloc_floats(n), *h1 = bn_alloc_floats(n), *inv1 = bn_alloc_floats(B / K * C), *dx1 = bn_alloc_floats(n);
    float *y2 = bn_alloc_floats(n), *h2 = bn_alloc_floats(n), *inv2 = bn_alloc_floats(B / K * C), *dx2 = bn_alloc_floats(n);
    float rm1[C] = {0}, rv1[C] = {1, 1, 1, 1, 1}, rm2[C] = {0}, rv2[C] = {1, 1, 1, 1, 1};
    float dg1[C] = {0}, db1[C] = {0}, dg2[C] = {0}, db2[C] = {0};
    bn_forward_train(&ghost, y1, h1, inv1, x, gamma, beta, rm1, rv1, B);
    bn_backward(&ghost, dx1, dg1, db1, dy, h1, inv1, gamma, B);
    for (int k = 0; k < B / K; k++) {
        size_t off = (size_t)k * K * C;
        bn_forward_train(&plain, y2 + off, h2 + off, inv2 + k * C, x + off, gamma, beta, rm2, rv2, K);
        bn_backward(&plain, dx2 + off, dg2, db2, dy + off, h2 + off, inv2 + k * C, gamma, K);
    }
    assert_memory_equal(y1, y2, n * sizeof(float));
    assert_memory_equal(inv1, inv2, B / K * C * sizeof(float));
    assert_memory_equal(rm1, rm2, sizeof rm1);
    assert_memory_equal(rv1, rv2, sizeof rv1);
    assert_memory_equal(dx1, dx2, n * sizeof(float));
    assert_memory_equal(dg1, dg2, sizeof dg1);
    assert_memory_equal(db1, db2, sizeof db1);
    /* and it is not plain BN over the 64 rows */
    bn_forward_train(&plain, y2, h2, inv2, x, gamma, beta, rm2, rv2, B);
    assert_true(rel_diff(y1, y2, n) > 1e-3);
    bn_layer_free(&ghost);
    bn_layer_free(&plain);
    free(x), free(dy), free(gamma), free(beta), free(y1), free(h1), free(inv1), free(dx1), free(y2), free(h2);
    free(inv2), free(dx2);
}

typedef struct {
    float *logits;
    uint8_t *labels;
    int B, k;
} xent_ctx;

static double xent_loss(void *p) {
    xent_ctx *c = p;
    long correct = 0;
    return softmax_xent(NULL, c->logits, c->labels, c->B, c->k, 0, &correct);
}

static void test_softmax_xent(void **state) {
    (void)state;
    xent_ctx c = {.B = 5, .k = 10};
    c.logits = random_floats(50, 3);
    uint8_t labels[5] = {0, 3, 9, 9, 4};
    c.labels = labels;
    float *d = bn_alloc_floats(50);
    long correct = 0;
    softmax_xent(d, c.logits, labels, c.B, c.k, 1.0f, &correct);
    for (size_t i = 0; i < 50; i++) assert_grad_close(d[i], numeric_grad(&c.logits[i], xent_loss, &c, 1e-2f), "dz", i);
    /* stable for huge logits: loss of a confident right answer is ~0, wrong is the margin */
    float big[20] = {0};
    big[3] = 1e4f;
    big[10 + 7] = 1e4f;
    uint8_t lab[2] = {3, 2};
    correct = 0;
    double loss = softmax_xent(NULL, big, lab, 2, 10, 0, &correct);
    assert_true(isfinite(loss));
    assert_float_equal(loss, 1e4, 1e-3);
    assert_int_equal(correct, 1);
    free(c.logits), free(d);
}

/* The whole model: analytic gradients of the mean loss against central
 * differences, for every BN placement (local statistics, one rank): an MLP,
 * and a convnet whose BN is spatial (over every position), also in ghost
 * batches. */
typedef struct {
    model m;
    uint8_t labels[8];
    int B;
} mlp_ctx;

static double mlp_loss(void *p) {
    mlp_ctx *c = p;
    long correct = 0;
    return softmax_xent(NULL, model_forward_train(&c->m, c->B), c->labels, c->B, MODEL_OUT, 0, &correct) / c->B;
}

/* shift moves every ReLU input up (conv and dense biases, BN's beta) so
 * that few of a convnet's thousands of ReLUs sit at a kink a step can cross;
 * the gradient flows through the same code either way. The CNNs pool the
 * image to 7x7 first, which keeps their ReLU and pooling kinks few. */
static void check_model_gradient(const char *arch, const char *hidden, int bn, int place, int ghost, int B, float h,
                                 float shift) {
    bn_config cfg = {0};
    bn_err e;
    assert_int_equal(arch_parse(&cfg.net, arch, hidden, &e), BN_OK);
    cfg.bn = bn;
    cfg.bn_place = place;
    cfg.bn_eps = 1e-3;
    cfg.bn_momentum = 0.99;
    cfg.ghost_batch = ghost;
    mlp_ctx c = {.B = B};
    model_init(&c.m, &cfg, c.B);
    model_init_params(&c.m, 7, 1.0);
    for (size_t i = 0; i < (size_t)c.B * MNIST_PIXELS; i++) c.m.x[i] = rng_uniform_sym(&rng, 1);
    for (int i = 0; i < c.B; i++) c.labels[i] = (uint8_t)rng_below(&rng, 10);
    /* gamma and beta away from 1 and 0 so their gradients are exercised */
    for (int i = 0; i < c.m.n_views; i++)
        if (strstr(c.m.views[i].name, "gamma") || strstr(c.m.views[i].name, "beta"))
            for (size_t j = 0; j < c.m.views[i].count; j++) model_param(&c.m, i)[j] += rng_uniform_sym(&rng, 0.5f);
    for (int i = 0; i < c.m.n_views; i++) {
        const char *name = c.m.views[i].name, *dot = strrchr(name, '.');
        if (shift != 0 && dot && (!strcmp(dot, ".beta") || !strcmp(dot, ".b"))) /* the output's: softmax ignores it */
            for (size_t j = 0; j < c.m.views[i].count; j++) model_param(&c.m, i)[j] += shift;
    }
    long correct = 0;
    memset(c.m.grads, 0, sizeof(float) * c.m.n_params);
    softmax_xent(c.m.dbuf[0], model_forward_train(&c.m, c.B), c.labels, c.B, MODEL_OUT, 1.0f / c.B, &correct);
    model_backward(&c.m, c.B, 0);
    float *analytic = bn_alloc_floats(c.m.n_params);
    memcpy(analytic, c.m.grads, sizeof(float) * c.m.n_params);
    /* every tensor: a few entries each (dense0.W has 4704; every 20th is
     * enough, the rest take the same code path). ReLU kinks make a central
     * difference meaningless where a step crosses one: such points show as
     * a difference that changes with the step size, and are skipped. */
    int checked = 0, skipped = 0;
    for (int v = 0; v < c.m.n_views; v++) {
        const model_view *view = &c.m.views[v];
        if (view->buffer != VIEW_PARAM) continue;
        for (size_t j = 0; j < view->count; j += view->count > 64 ? view->count / 20 : 1) {
            float *p = model_param(&c.m, v) + j;
            double n1 = numeric_grad(p, mlp_loss, &c, 2 * h), n2 = numeric_grad(p, mlp_loss, &c, h);
            checked++;
            if (fabs(n1 - n2) > 0.01 * fmax(fabs(n1), fabs(n2)) + 1e-4) {
                skipped++;
                continue;
            }
            assert_grad_close(analytic[view->offset + j], n2, view->name, j);
        }
    }
    print_message("%d entries checked, %d skipped at ReLU kinks\n", checked, skipped);
    assert_true(checked > 100);
    assert_true(skipped * 10 <= checked);
    free(analytic);
    model_free(&c.m);
}

static void test_mlp_gradient_no_bn(void **s) { (void)s; check_model_gradient("", "6,5", BN_NONE, BN_AFTER_RELU, 0, 8, 2e-3f, 0); }
static void test_mlp_gradient_bn_after(void **s) { (void)s; check_model_gradient("", "6,5", BN_LOCAL, BN_AFTER_RELU, 0, 8, 2e-3f, 0); }
static void test_mlp_gradient_bn_before(void **s) { (void)s; check_model_gradient("", "6,5", BN_LOCAL, BN_BEFORE_RELU, 0, 8, 2e-3f, 0); }
static void test_cnn_gradient_no_bn(void **s) { (void)s; check_model_gradient("pool,pool,conv2,conv3k5,pool,dense4", "", BN_NONE, BN_AFTER_RELU, 0, 4, 1e-3f, 2); }
static void test_cnn_gradient_bn_after(void **s) { (void)s; check_model_gradient("pool,pool,conv2,conv3k5,pool,dense4", "", BN_LOCAL, BN_AFTER_RELU, 0, 4, 1e-3f, 2); }
static void test_cnn_gradient_bn_before(void **s) { (void)s; check_model_gradient("pool,pool,conv2,conv3k5,pool,dense4", "", BN_LOCAL, BN_BEFORE_RELU, 0, 4, 1e-3f, 2); }
static void test_cnn_gradient_ghost(void **s) { (void)s; check_model_gradient("pool,pool,conv2,pool,dense4", "", BN_LOCAL, BN_BEFORE_RELU, 2, 4, 1e-3f, 2); }

/* --bn-eval recompute at one rank: the first BN layer's input is the dense
 * output z = x W^T + b, whatever BN does, so its population statistics are a
 * direct computation over all rows: mean and Bessel-corrected variance. */
static void test_population_statistics(void **state) {
    (void)state;
    enum { B = 16, BATCHES = 5, H = 7 };
    bn_config cfg = {0};
    bn_err e;
    assert_int_equal(arch_parse(&cfg.net, "", "7", &e), BN_OK);
    cfg.bn = BN_LOCAL;
    cfg.bn_group = 1;
    cfg.bn_place = BN_BEFORE_RELU;
    cfg.bn_eps = 1e-3;
    cfg.bn_momentum = 0.99;
    model m;
    model_init(&m, &cfg, B);
    model_init_params(&m, 3, 1.0);
    float *all = bn_alloc_floats((size_t)B * BATCHES * MNIST_PIXELS), *z = bn_alloc_floats((size_t)B * BATCHES * H);
    for (size_t i = 0; i < (size_t)B * BATCHES * MNIST_PIXELS; i++) all[i] = rng_uniform_sym(&rng, 1) + 0.5f;
    float running_before[2 * H];
    memcpy(running_before, m.state, sizeof running_before);
    model_population_reset(&m);
    for (int k = 0; k < BATCHES; k++) {
        memcpy(m.x, all + (size_t)k * B * MNIST_PIXELS, sizeof(float) * B * MNIST_PIXELS);
        model_population_add(&m, B);
        assert_memory_equal(m.state, running_before, sizeof running_before); /* untouched during the pass */
    }
    model_population_finish(&m);
    dense_forward_ref(z, all, model_param(&m, model_find_view(&m, "dense0.W")),
                      model_param(&m, model_find_view(&m, "dense0.b")), B * BATCHES, MNIST_PIXELS, H);
    const int rmean = model_find_view(&m, "bn0.running_mean"), rvar = model_find_view(&m, "bn0.running_var");
    const int N = B * BATCHES;
    for (int j = 0; j < H; j++) {
        double mean = 0, m2 = 0;
        for (int i = 0; i < N; i++) mean += z[i * H + j];
        mean /= N;
        for (int i = 0; i < N; i++) m2 += (z[i * H + j] - mean) * (z[i * H + j] - mean);
        const float *rm = model_param(&m, rmean), *rv = model_param(&m, rvar);
        assert_true(fabs(rm[j] - mean) <= 1e-5 * fmax(1, fabs(mean)));
        assert_true(fabs(rv[j] - m2 / (N - 1)) <= 1e-5 * (m2 / (N - 1)));
        assert_true(model_eval_state(&m, rvar)[j] == rv[j]);
    }
    free(all), free(z);
    model_free(&m);
}

int main(int argc, char **argv) {
    comm_init(&argc, &argv);
    rng_seed(&rng, 12345, 99, 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dense_matches_reference), cmocka_unit_test(test_dense_gradient),
        cmocka_unit_test(test_dense_row_blocks_match_reference),
        cmocka_unit_test(test_batchnorm_gradient),      cmocka_unit_test(test_batchnorm_running_stats),
        cmocka_unit_test(test_ghost_batchnorm_is_four_slices),
        cmocka_unit_test(test_softmax_xent),
        cmocka_unit_test(test_population_statistics),            cmocka_unit_test(test_mlp_gradient_no_bn),
        cmocka_unit_test(test_mlp_gradient_bn_after),   cmocka_unit_test(test_mlp_gradient_bn_before),
        cmocka_unit_test(test_cnn_gradient_no_bn),      cmocka_unit_test(test_cnn_gradient_bn_after),
        cmocka_unit_test(test_cnn_gradient_bn_before),  cmocka_unit_test(test_cnn_gradient_ghost),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    comm_exit(failed ? 1 : 0, NULL);
}
