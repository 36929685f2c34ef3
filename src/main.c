/* main.c: options -> comm -> data -> model -> [batch -> forward -> backward ->
 * allreduce -> step -> metrics] per epoch -> test. Errors found by library
 * code come back as values; this file turns them into one exit. */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bnmpi/comm.h"
#include "bnmpi/dataset.h"
#include "bnmpi/loss.h"
#include "bnmpi/metrics.h"
#include "bnmpi/mlp.h"
#include "bnmpi/optim.h"
#include "bnmpi/options.h"
#include "bnmpi/sampler.h"
#include "bnmpi/sha256.h"
#include "bnmpi/threads.h"

enum { EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

typedef struct {
    bn_config cfg;
    int rank, size, threads;
    int show;             /* rank 0 and not --quiet */
    int progress;         /* show and stdout is a terminal */
    dataset data;
    mlp model;
    optimizer opt;
    sampler samp;
    uint8_t *labels;      /* (cap) labels of the current batch */
    metrics_file metrics; /* rank 0 only */
    step_row *steps;      /* (steps_per_epoch) rank 0's rows for this epoch */
    long long global_step;
} trainer;

/* Ends the run on every rank when any rank failed; status is agreed first. */
static void check(int status, bn_err *e, int code) {
    if (comm_agree(status, e) != BN_OK) comm_exit(code, e->msg);
}

typedef struct {
    double loss, acc;
} eval_result;

/* Mean loss and accuracy over rows[0..n), each rank taking a contiguous share. */
static eval_result evaluate(trainer *t, const idx_array *images, const idx_array *labels, const int32_t *rows,
                            int n) {
    double t0 = bn_now();
    mlp *m = &t->model;
    const int lo = (int)((long long)n * t->rank / t->size), hi = (int)((long long)n * (t->rank + 1) / t->size);
    double sums[2] = {0, 0}; /* loss sum, correct count */
    for (int start = lo; start < hi; start += t->cfg.eval_batch) {
        int B = BN_MIN(t->cfg.eval_batch, hi - start);
        dataset_gather(m->x, t->labels, images, labels, rows + start, NULL, B);
        long correct = 0;
        sums[0] += softmax_xent(NULL, mlp_forward_eval(m, B), t->labels, B, MLP_OUT, 0.0f, &correct);
        sums[1] += (double)correct;
    }
    comm_allreduce_sum_f64(sums, 2, COMM_WORLD_GROUP, T_EVAL);
    bn_timers[T_EVAL] += bn_now() - t0;
    return (eval_result){n ? sums[0] / n : NAN, n ? sums[1] / n : NAN};
}

/* mpirun hands its ranks a pseudo-terminal even when its own output goes to a
 * file or pipe, so a rank whose parent is the launcher asks what the
 * launcher's stdout is. */
static int stdout_is_terminal(void) {
    if (!isatty(STDOUT_FILENO)) return 0;
    char link[64], target[256];
    snprintf(link, sizeof link, "/proc/%d/fd/1", (int)getppid());
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0) return 1; /* cannot tell: trust isatty */
    target[n] = '\0';
    return strncmp(target, "/dev/pts/", 9) == 0 || strncmp(target, "/dev/tty", 8) == 0;
}

static void progress_bar(const trainer *t, int epoch, int step, double loss) {
    const int width = 30, total = t->samp.steps_per_epoch;
    int filled = (int)((long long)width * step / total);
    char bar[64];
    for (int i = 0; i < width; i++) bar[i] = i < filled ? '#' : '.';
    bar[width] = '\0';
    printf("\r  epoch %d/%d [%s] %3d%% %d/%d loss %.4f", epoch, t->cfg.epochs, bar, 100 * step / total, step,
           total, loss);
    fflush(stdout);
}

/* One epoch of training; fills the training half of row. Returns BN_ERR with
 * e set on a non-finite loss (the same on every rank: it comes from the
 * allreduce). */
static int train_epoch(trainer *t, int epoch, epoch_row *row, bn_err *e) {
    mlp *m = &t->model;
    const int b = t->cfg.batch, G = t->cfg.global_batch, steps = t->samp.steps_per_epoch;
    const size_t n = m->n_params;
    double last_progress = 0;
    double loss_sum = 0, correct_sum = 0;
    sampler_set_epoch(&t->samp, epoch);
    for (int s = 0; s < steps; s++) {
        dataset_gather(m->x, t->labels, &t->data.train_images, &t->data.train_labels, t->data.train_idx,
                       sampler_batch(&t->samp, s), b);
        memset(m->grads, 0, sizeof(float) * (n + MLP_GRAD_TAIL));
        long correct = 0;
        double loss = softmax_xent(m->dbuf[0], mlp_forward_train(m, b), t->labels, b, MLP_OUT, 1.0f / (float)G,
                                   &correct);
        m->grads[n] = (float)loss;
        m->grads[n + 1] = (float)correct;
        mlp_backward(m, b);
        comm_allreduce_sum_f32(m->grads, n + MLP_GRAD_TAIL, COMM_WORLD_GROUP, T_GRAD_COMM);
        const double step_loss = m->grads[n] / G, step_acc = m->grads[n + 1] / G;
        t->global_step++;
        if (!isfinite(step_loss))
            return bn_fail(e, "non-finite loss at epoch %d, step %d (global step %lld); try a lower --lr", epoch,
                           s + 1, t->global_step);
        optim_step(&t->opt, m);
        loss_sum += m->grads[n];
        correct_sum += m->grads[n + 1];
        if (t->rank == 0) t->steps[s] = (step_row){t->global_step, epoch, step_loss, step_acc, t->opt.lr};
        if (t->progress && (bn_now() - last_progress > 0.2 || s + 1 == steps)) {
            progress_bar(t, epoch, s + 1, step_loss);
            last_progress = bn_now();
        }
    }
    row->train_loss = loss_sum / ((double)steps * G);
    row->train_acc = correct_sum / ((double)steps * G);
    return BN_OK;
}

/* Every rank must hold the same parameters (same allreduce result, same
 * update). Checks that rank 0's digest is everyone's; digest out. */
static int check_params_agree(const trainer *t, char digest[65], bn_err *e) {
    sha256_ctx h;
    sha256_init(&h);
    sha256_update(&h, t->model.params, sizeof(float) * t->model.n_params);
    sha256_final_hex(&h, digest);
    char root[65];
    memcpy(root, digest, 65);
    comm_bcast_chars(root, 65, 0);
    if (memcmp(root, digest, 65) != 0)
        return bn_fail(e, "parameters on rank %d differ from rank 0's (sha256 %.12s vs %.12s)", t->rank, digest,
                       root);
    return BN_OK;
}

static void iso_time(char *out, size_t n) {
    time_t now = time(NULL);
    strftime(out, n, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
}

static void print_header(const trainer *t, const char *mpi_lib) {
    const bn_config *c = &t->cfg;
    const dataset *d = &t->data;
    char arch[256];
    int len = snprintf(arch, sizeof arch, "%d", MLP_IN);
    for (int l = 0; l < c->n_hidden; l++) len += snprintf(arch + len, sizeof arch - len, "-%d", c->hidden_sizes[l]);
    snprintf(arch + len, sizeof arch - len, "-%d", MLP_OUT);
    printf("bnmpi %s: %d rank%s x %d OpenBLAS thread%s (%s), %s\n", BNMPI_VERSION, t->size, t->size > 1 ? "s" : "",
           t->threads, t->threads > 1 ? "s" : "", threads_blas_core(), mpi_lib);
    printf("data: %s from %s: %d train, %d val, %d test\n", dataset_name(c->dataset), d->dir, d->n_train, d->n_val,
           d->n_test);
    printf("steps: %d per epoch of global batch %d (%d ranks x %d); the last %d samples of each shuffle are "
           "skipped\n",
           t->samp.steps_per_epoch, c->global_batch, t->size, c->batch, d->n_train % c->global_batch);
    if (c->bn == BN_NONE)
        printf("model: %s, no BN, %zu parameters, %s lr %g\n", arch, t->model.n_params, optimizer_name(c->optimizer),
               c->lr);
    else
        printf("model: %s, BN %s %s ReLU (BN batch %d), %zu parameters, %s lr %g\n", arch, bn_mode_name(c->bn),
               c->bn_place == BN_BEFORE_RELU ? "before" : "after", c->bn_batch, t->model.n_params,
               optimizer_name(c->optimizer), c->lr);
    options_print(c, stdout);
    printf("metrics: %s\n", t->metrics.path);
    fflush(stdout);
}

int main(int argc, char **argv) {
    trainer t;
    memset(&t, 0, sizeof t);
    bn_err e = {{0}};
    comm_init(&argc, &argv);
    t.rank = comm_rank();
    t.size = comm_size();
    bn_config *c = &t.cfg;

    parse_result pr = options_parse(c, argc, argv, t.rank == 0, &e);
    if (pr == PARSE_EXIT_OK) comm_exit(0, NULL);
    if (pr == PARSE_ERROR) comm_exit(EXIT_USAGE, e.msg);
    if (options_resolve(c, t.size, &e) != BN_OK) comm_exit(EXIT_USAGE, e.msg);
    check(c->bn == BN_SYNC ? comm_set_bn_group(t.size, &e) : BN_OK, &e, EXIT_USAGE);

    t.threads = threads_policy(c->threads, comm_node_size());
    threads_apply(t.threads);
    c->threads = t.threads; /* the configuration shows and records what is used */
    t.show = t.rank == 0 && !c->quiet;
    t.progress = t.show && stdout_is_terminal();

    check(dataset_load(&t.data, c, &e), &e, EXIT_RUNTIME);
    snprintf(c->data, sizeof c->data, "%s", t.data.dir);
    if (t.data.n_train < c->global_batch)
        comm_exit(EXIT_USAGE, (snprintf(e.msg, sizeof e.msg,
                                        "--global-batch %d exceeds the %d training samples (%d ranks x --batch %d)",
                                        c->global_batch, t.data.n_train, t.size, c->batch),
                               e.msg));

    char mpi_lib[256], host[256], start[32];
    comm_library_version(mpi_lib, sizeof mpi_lib);
    comm_processor_name(host, sizeof host);
    iso_time(start, sizeof start);
    int status = BN_OK;
    if (t.rank == 0) {
        char path[BN_PATH];
        status = c->metrics[0] ? (snprintf(path, sizeof path, "%s", c->metrics), BN_OK)
                               : metrics_default_path(c, path, sizeof path, &e);
        if (status == BN_OK) status = metrics_create(&t.metrics, path, c->force, &e);
        if (status == BN_OK) snprintf(c->metrics, sizeof c->metrics, "%s", path);
        run_facts f = {mpi_lib, host, start,
                       {t.data.train_images.sha256, t.data.train_labels.sha256, t.data.test_images.sha256,
                        t.data.test_labels.sha256}};
        if (status == BN_OK) status = metrics_write_config(&t.metrics, c, &f, &e);
    }
    check(status, &e, EXIT_RUNTIME);

    const int cap = BN_MAX(c->batch, c->eval_batch);
    mlp_init(&t.model, c, cap);
    if (t.rank == 0) mlp_init_params(&t.model, (uint64_t)c->seed);
    comm_bcast_f32(t.model.params, t.model.n_params, 0);
    comm_bcast_f32(t.model.state, t.model.n_state, 0);
    optim_init(&t.opt, c, t.model.n_params);
    sampler_init(&t.samp, t.data.n_train, c->global_batch, c->batch, t.rank, (uint64_t)c->seed);
    t.labels = bn_calloc((size_t)cap, 1);
    t.steps = bn_calloc((size_t)t.samp.steps_per_epoch, sizeof(step_row));
    if (t.show) print_header(&t, mpi_lib);

    const double run_start = bn_now();
    for (int epoch = 1; epoch <= c->epochs; epoch++) {
        bn_timers_reset();
        epoch_row row = {.epoch = epoch, .lr = c->lr};
        const double t0 = bn_now();
        status = train_epoch(&t, epoch, &row, &e);
        if (status != BN_OK) {
            if (t.progress) printf("\n");
            if (t.rank == 0) metrics_close(&t.metrics);
            comm_exit(EXIT_RUNTIME, e.msg);
        }
        const double train_s = bn_now() - t0;
        mlp_prepare_eval(&t.model);
        eval_result val = evaluate(&t, &t.data.train_images, &t.data.train_labels, t.data.val_idx, t.data.n_val);
        row.val_loss = val.loss;
        row.val_acc = val.acc;
        row.time_s = bn_now() - t0;
        row.comm_s = bn_timers[T_GRAD_COMM] + bn_timers[T_BN_COMM];
        row.samples_per_s = (double)t.samp.steps_per_epoch * c->global_batch / train_s;
        char digest[65];
        check(check_params_agree(&t, digest, &e), &e, EXIT_RUNTIME);
        if (t.rank == 0) status = metrics_append_epoch(&t.metrics, &row, t.steps, t.samp.steps_per_epoch, &e);
        check(status, &e, EXIT_RUNTIME);
        if (t.progress) printf("\r\033[K");
        if (t.show) {
            printf("epoch %*d/%d  loss %.4f acc %6.2f%%  val_loss %.4f val_acc %6.2f%%  %8.0f samples/s  %6.2f s "
                   "(comm %4.1f%%)\n",
                   c->epochs >= 10 ? 2 : 1, epoch, c->epochs, row.train_loss, 100 * row.train_acc, row.val_loss,
                   100 * row.val_acc, row.samples_per_s, row.time_s, 100 * row.comm_s / row.time_s);
            fflush(stdout);
        }
    }
    const double total_s = bn_now() - run_start;
    eval_result test = evaluate(&t, &t.data.test_images, &t.data.test_labels, t.data.test_idx, t.data.n_test);
    char digest[65];
    check(check_params_agree(&t, digest, &e), &e, EXIT_RUNTIME);
    if (t.rank == 0) {
        status = metrics_write_summary(&t.metrics, test.loss, test.acc, total_s, digest, &e);
        metrics_close(&t.metrics);
    }
    check(status, &e, EXIT_RUNTIME);
    if (t.rank == 0) {
        printf("test: loss %.4f acc %.2f%%  (%d epochs in %.1f s)\n", test.loss, 100 * test.acc, c->epochs, total_s);
        printf("metrics: %s\n", t.metrics.path);
    }
    sampler_free(&t.samp);
    optim_free(&t.opt);
    mlp_free(&t.model);
    dataset_free(&t.data);
    free(t.labels);
    free(t.steps);
    comm_exit(0, NULL);
}
