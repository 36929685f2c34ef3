/* test_syncbn.c: sync BN over P ranks at local batch b equals BN over one
 * batch of P*b (outputs, input gradients, running statistics), on data whose
 * mean is ~1000x its standard deviation. Also: local-mode evaluation
 * statistics combine the ranks' running statistics by the law of total
 * variance and come out identical on every rank. Run under mpiexec -n 2 / 4. */
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
#include "bnmpi/loss.h"
#include "bnmpi/model.h"
#include "bnmpi/rng.h"
#include "check.h"

enum { LOCAL_B = 16, C = 24 };

/* Every rank builds the same global batch: channel j ~ 1000*(j+1) + U(-1.7, 1.7). */
static void make_batch(float *x, float *dy, float *gamma, float *beta, int n) {
    bn_rng r;
    rng_seed(&r, 2024, 7, 0);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < C; j++) {
            x[i * C + j] = 1000.0f * (float)(j + 1) + rng_uniform_sym(&r, 1.7f);
            dy[i * C + j] = rng_uniform_sym(&r, 1.0f);
        }
    for (int j = 0; j < C; j++) {
        gamma[j] = 1.0f + rng_uniform_sym(&r, 0.5f);
        beta[j] = rng_uniform_sym(&r, 0.5f);
    }
}

static void test_sync_equals_one_big_batch(void **state) {
    (void)state;
    const int P = comm_size(), rank = comm_rank(), N = P * LOCAL_B;
    float *x = bn_alloc_floats((size_t)N * C), *dy = bn_alloc_floats((size_t)N * C);
    float gamma[C], beta[C];
    make_batch(x, dy, gamma, beta, N);

    /* reference: one rank's view of the whole batch, no communication */
    bn_layer ref;
    bn_layer_init(&ref, C, 1e-3f, 0.9f, 0, 0);
    float *y_ref = bn_alloc_floats((size_t)N * C), *h_ref = bn_alloc_floats((size_t)N * C);
    float *dx_ref = bn_alloc_floats((size_t)N * C), inv_ref[C], rm_ref[C] = {0}, rv_ref[C];
    float dg_ref[C] = {0}, db_ref[C] = {0};
    for (int j = 0; j < C; j++) rv_ref[j] = 1;
    bn_forward_train(&ref, y_ref, h_ref, inv_ref, x, gamma, beta, rm_ref, rv_ref, N);
    bn_backward(&ref, dx_ref, dg_ref, db_ref, dy, h_ref, inv_ref, gamma, N);

    /* sync: this rank's slice only */
    bn_err e;
    assert_int_equal(comm_set_bn_group(P, &e), BN_OK);
    bn_layer syn;
    bn_layer_init(&syn, C, 1e-3f, 0.9f, 1, 0);
    const size_t off = (size_t)rank * LOCAL_B * C, n = (size_t)LOCAL_B * C;
    float *y = bn_alloc_floats(n), *h = bn_alloc_floats(n), *dx = bn_alloc_floats(n);
    float inv[C], rm[C] = {0}, rv[C], dg[C] = {0}, db[C] = {0};
    for (int j = 0; j < C; j++) rv[j] = 1;
    bn_forward_train(&syn, y, h, inv, x + off, gamma, beta, rm, rv, LOCAL_B);
    bn_backward(&syn, dx, dg, db, dy + off, h, inv, gamma, LOCAL_B);

    double ey = rel_diff(y, y_ref + off, n), edx = rel_diff(dx, dx_ref + off, n);
    print_message("P=%d: outputs rel %.2e, input gradients rel %.2e\n", P, ey, edx);
    assert_true(ey <= 1e-5);
    assert_true(edx <= 1e-5);
    assert_true(rel_diff(rm, rm_ref, C) <= 1e-6);
    assert_true(rel_diff(rv, rv_ref, C) <= 1e-5);
    assert_true(rel_diff(inv, inv_ref, C) <= 1e-5);

    /* dgamma and dbeta are this rank's partial sums; summed they are the whole batch's */
    float sums[2 * C];
    memcpy(sums, dg, sizeof dg);
    memcpy(sums + C, db, sizeof db);
    comm_allreduce_sum_f32(sums, 2 * C, COMM_WORLD_GROUP, T_BN_COMM);
    assert_true(rel_diff(sums, dg_ref, C) <= 1e-4);
    assert_true(rel_diff(sums + C, db_ref, C) <= 1e-4);

    /* the data is hard on purpose: a float E[x^2]-E[x]^2 gets the variance badly wrong */
    float s1 = 0, s2 = 0;
    for (int i = 0; i < N; i++) {
        s1 += x[i * C + C - 1];
        s2 += x[i * C + C - 1] * x[i * C + C - 1];
    }
    double naive = s2 / N - (s1 / N) * (s1 / N), exact = 1.0 / ((double)inv_ref[C - 1] * inv_ref[C - 1]) - 1e-3;
    assert_true(fabs(naive - exact) > 0.1 * exact);

    assert_int_equal(comm_set_bn_group(1, &e), BN_OK);
    bn_layer_free(&ref);
    bn_layer_free(&syn);
    free(x), free(dy), free(y_ref), free(h_ref), free(dx_ref), free(y), free(h), free(dx);
}

/* --bn-group 2: ranks 2g and 2g+1 normalise over their two slices together,
 * exactly as BN over those 2*b rows alone (a 2-rank sync run on that data),
 * and independently of the other pairs. */
static void test_group_of_two(void **state) {
    (void)state;
    const int P = comm_size(), rank = comm_rank();
    if (P % 2 != 0 || P < 4) {
        print_message("group test needs an even rank count >= 4; skipped at P=%d\n", P);
        return;
    }
    const int N = P * LOCAL_B, G = 2;
    float *x = bn_alloc_floats((size_t)N * C), *dy = bn_alloc_floats((size_t)N * C);
    float gamma[C], beta[C];
    make_batch(x, dy, gamma, beta, N);
    const size_t group_off = (size_t)(rank / G) * G * LOCAL_B * C, rows = (size_t)G * LOCAL_B;
    bn_layer ref;
    bn_layer_init(&ref, C, 1e-3f, 0.9f, 0, 0);
    float *y_ref = bn_alloc_floats(rows * C), *h_ref = bn_alloc_floats(rows * C), *dx_ref = bn_alloc_floats(rows * C);
    float inv_ref[C], rm_ref[C] = {0}, rv_ref[C], dg_ref[C] = {0}, db_ref[C] = {0};
    for (int j = 0; j < C; j++) rv_ref[j] = 1;
    bn_forward_train(&ref, y_ref, h_ref, inv_ref, x + group_off, gamma, beta, rm_ref, rv_ref, (int)rows);
    bn_backward(&ref, dx_ref, dg_ref, db_ref, dy + group_off, h_ref, inv_ref, gamma, (int)rows);

    bn_err e;
    assert_int_equal(comm_set_bn_group(G, &e), BN_OK);
    assert_int_equal(comm_bn_group_size(), G);
    bn_layer grp;
    bn_layer_init(&grp, C, 1e-3f, 0.9f, 1, 0);
    const size_t off = (size_t)rank * LOCAL_B * C, n = (size_t)LOCAL_B * C, in_group = off - group_off;
    float *y = bn_alloc_floats(n), *h = bn_alloc_floats(n), *dx = bn_alloc_floats(n);
    float inv[C], rm[C] = {0}, rv[C], dg[C] = {0}, db[C] = {0};
    for (int j = 0; j < C; j++) rv[j] = 1;
    bn_forward_train(&grp, y, h, inv, x + off, gamma, beta, rm, rv, LOCAL_B);
    bn_backward(&grp, dx, dg, db, dy + off, h, inv, gamma, LOCAL_B);
    assert_true(rel_diff(y, y_ref + in_group, n) <= 1e-5);
    assert_true(rel_diff(dx, dx_ref + in_group, n) <= 1e-5);
    assert_true(rel_diff(rv, rv_ref, C) <= 1e-5);
    assert_int_equal(comm_set_bn_group(1, &e), BN_OK);
    bn_layer_free(&ref);
    bn_layer_free(&grp);
    free(x), free(dy), free(y_ref), free(h_ref), free(dx_ref), free(y), free(h), free(dx);
}

/* Spatial BN in a convnet (conv4, BN before ReLU): every statistic pools
 * every sample and position of the BN batch. Sync over P ranks at local
 * batch b equals one rank's BN over the P*b images: BN outputs, the
 * gradient BN hands back (seen through conv0.W's gradient, summed over
 * ranks) and the running statistics, Bessel-corrected with P*b*28*28 rows.
 * Pixels are 1000 + U(-1.7, 1.7), so the conv outputs' mean is ~1000x their spread. */
static void test_spatial_sync_equals_one_big_batch(void **state) {
    (void)state;
    enum { B = 2, HW = 28 * 28 };
    const int P = comm_size(), rank = comm_rank(), N = P * B;
    bn_config cfg = {0};
    bn_err e;
    assert_int_equal(arch_parse(&cfg.net, "conv4", "", &e), BN_OK);
    cfg.bn = BN_SYNC;
    cfg.bn_place = BN_BEFORE_RELU;
    cfg.bn_eps = 1e-3;
    cfg.bn_momentum = 0.9;
    cfg.batch = N;
    model ref;
    model_init(&ref, &cfg, N); /* sync off: bn_group 1 */
    cfg.bn_group = P;
    cfg.batch = B;
    model syn;
    model_init(&syn, &cfg, B);
    assert_int_equal(comm_set_bn_group(P, &e), BN_OK);
    model_init_params(&ref, 5, 1.0);
    model_init_params(&syn, 5, 1.0);
    bn_rng r;
    rng_seed(&r, 77, 3, 0);
    for (size_t i = 0; i < (size_t)N * HW; i++) ref.x[i] = 1000.0f + rng_uniform_sym(&r, 1.7f);
    memcpy(syn.x, ref.x + (size_t)rank * B * HW, sizeof(float) * B * HW);
    uint8_t labels[64];
    for (int i = 0; i < N; i++) labels[i] = (uint8_t)(i % 10);
    long correct = 0;
    memset(ref.grads, 0, sizeof(float) * ref.n_params);
    memset(syn.grads, 0, sizeof(float) * syn.n_params);
    softmax_xent(ref.dbuf[0], model_forward_train(&ref, N), labels, N, MODEL_OUT, 1.0f / N, &correct);
    softmax_xent(syn.dbuf[0], model_forward_train(&syn, B), labels + rank * B, B, MODEL_OUT, 1.0f / N, &correct);
    model_backward(&ref, N, 0);
    model_backward(&syn, B, 0);
    const int bn_at = 1; /* conv0, bn0, relu0, dense0 */
    assert_string_equal(syn.layers[bn_at].kind->name, "bn");
    const size_t n = (size_t)B * HW * 4;
    const double ey = rel_diff(syn.layers[bn_at].y, ref.layers[bn_at].y + (size_t)rank * n, n);
    comm_allreduce_sum_f32(syn.grads, syn.n_params, COMM_WORLD_GROUP, T_GRAD_COMM);
    const int w = model_find_view(&syn, "conv0.W"), rv = model_find_view(&syn, "bn0.running_var");
    const double edw = rel_diff(model_grad(&syn, w), model_grad(&ref, w), syn.views[w].count);
    const double erv = rel_diff(model_param(&syn, rv), model_param(&ref, rv), 4);
    print_message("P=%d spatial: outputs rel %.2e, conv0.W gradient rel %.2e, running var rel %.2e\n", P, ey, edw,
                  erv);
    assert_true(ey <= 1e-5);
    assert_true(edw <= 1e-5);
    assert_true(erv <= 1e-5);
    model_free(&ref);
    model_free(&syn);
}

static void test_local_eval_statistics(void **state) {
    (void)state;
    const int P = comm_size(), rank = comm_rank();
    bn_config cfg = {0};
    bn_err e;
    assert_int_equal(arch_parse(&cfg.net, "", "3", &e), BN_OK);
    cfg.bn = BN_LOCAL;
    cfg.bn_eps = 1e-3;
    cfg.bn_momentum = 0.99;
    model m;
    model_init(&m, &cfg, 4);
    const int rmean = model_find_view(&m, "bn0.running_mean"), rvar = model_find_view(&m, "bn0.running_var");
    float *mean = model_param(&m, rmean), *var = model_param(&m, rvar);
    /* rank r holds means r + j and variances 1 + r */
    for (int j = 0; j < 3; j++) {
        mean[j] = (float)(rank + j);
        var[j] = (float)(1 + rank);
    }
    model_prepare_eval(&m);
    const float *em = model_eval_state(&m, rmean), *ev = model_eval_state(&m, rvar);
    /* mean of r+j over r = (P-1)/2 + j; mean variance (P+1)/2 plus the variance of 0..P-1, (P^2-1)/12 */
    for (int j = 0; j < 3; j++) {
        assert_float_equal(em[j], (P - 1) / 2.0 + j, 1e-6);
        assert_float_equal(ev[j], (P + 1) / 2.0 + (P * P - 1) / 12.0, 1e-5);
    }
    /* bit-identical everywhere: the largest and the smallest over ranks agree */
    for (int j = 0; j < 3; j++) {
        assert_true(comm_max_f64(em[j]) == -comm_max_f64(-em[j]));
        assert_true(comm_max_f64(ev[j]) == -comm_max_f64(-ev[j]));
    }
    model_free(&m);
}

int main(int argc, char **argv) {
    comm_init(&argc, &argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sync_equals_one_big_batch),
        cmocka_unit_test(test_group_of_two),
        cmocka_unit_test(test_spatial_sync_equals_one_big_batch),
        cmocka_unit_test(test_local_eval_statistics),
    };
    /* every rank runs the tests (they are collective); rank 0 reports */
    if (comm_rank() != 0) cmocka_set_message_output(CM_OUTPUT_SUBUNIT);
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    double any = comm_max_f64(failed);
    comm_exit(any > 0 ? 1 : 0, NULL);
}
