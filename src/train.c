/* train.c: the epoch loop: [batch -> forward -> backward -> allreduce ->
 * update] per step, validation and metrics per epoch, test at the end,
 * checkpoints on request, on a signal, and every N steps. */
#define _GNU_SOURCE
#include "bnmpi/train.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bnmpi/comm.h"
#include "bnmpi/loss.h"
#include "bnmpi/sha256.h"
#include "bnmpi/signals.h"
#include "bnmpi/watchdog.h"

/* the gradient buffer's tail, summed by the same allreduce */
enum { TAIL_LOSS, TAIL_CORRECT, TAIL_STOP };
_Static_assert(TAIL_STOP < MODEL_GRAD_TAIL, "MODEL_GRAD_TAIL too small");

void train_list_state(trainer *t) {
    model *m = &t->model;
    state_list *s = &t->state;
    char name[48];
    const state_place shared = t->gs.on ? ST_NODE_SHARED : ST_SAME; /* parameters and optimizer state */
    s->n = 0;
    for (int i = 0; i < m->n_views; i++) {
        const model_view *v = &m->views[i];
        int is_param = v->buffer == VIEW_PARAM;
        snprintf(name, sizeof name, "%s/%s", is_param ? "params" : "bn_running", v->name);
        /* running statistics differ between ranks in local mode: save every rank's */
        state_add(s, name, ST_F32, model_param(m, i), v->rows, v->cols, is_param ? shared : ST_PER_RANK);
    }
    state_add(s, "optimizer/m", ST_F32, t->opt.m, 1, (int)t->opt.n, shared);
    if (t->opt.v) state_add(s, "optimizer/v", ST_F32, t->opt.v, 1, (int)t->opt.n, shared);
    state_add(s, "optimizer/t", ST_I64, &t->opt.t, 1, 1, ST_SAME);
    state_add(s, "position", ST_I64, t->position, 1, 3, ST_SAME);
    state_add(s, "epoch_sums", ST_F64, t->epoch_sums, 1, 2, ST_SAME);
    state_add(s, "epoch_steps", ST_F64, t->steps, t->samp.steps_per_epoch, STEP_COLS, ST_SAME);
    state_add(s, "rng/shuffle_seed", ST_I64, &t->shuffle_seed, 1, 1, ST_SAME);
    state_add(s, "diagnostics/previous", ST_F64, t->diag_prev, 1, 2 * BN_MAX_HIDDEN + 1, ST_SAME);
}

typedef struct {
    double loss, acc;
} eval_result;

/* Mean loss and accuracy over rows[0..n), each rank taking a contiguous share. */
static eval_result evaluate(trainer *t, const idx_array *images, const idx_array *labels, const int32_t *rows,
                            int n) {
    double t0 = bn_now();
    model *m = &t->model;
    const int lo = (int)((long long)n * t->rank / t->size), hi = (int)((long long)n * (t->rank + 1) / t->size);
    double sums[2] = {0, 0}; /* loss sum, correct count */
    for (int start = lo; start < hi; start += t->eval_block) {
        int B = BN_MIN(t->eval_block, hi - start);
        dataset_gather(m->x, t->labels, images, labels, rows + start, NULL, B);
        long correct = 0;
        sums[0] += softmax_xent(NULL, model_forward_eval(m, B), t->labels, B, MODEL_OUT, 0.0f, &correct);
        sums[1] += (double)correct;
        watchdog_kick();
    }
    comm_allreduce_sum_f64(sums, 2, COMM_WORLD_GROUP, T_EVAL);
    bn_timers[T_EVAL] += bn_now() - t0;
    return (eval_result){n ? sums[0] / n : NAN, n ? sums[1] / n : NAN};
}

/* "12m05s", "41s": a duration for the progress bar and the epoch lines. */
static void duration_text(double s, char *out, size_t n) {
    const long t = s > 0 && s < 1e9 ? (long)(s + 0.5) : 0;
    if (t >= 3600) snprintf(out, n, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else if (t >= 60) snprintf(out, n, "%ldm%02lds", t / 60, t % 60);
    else snprintf(out, n, "%lds", t);
}

/* In-epoch progress on a terminal: steps, loss, samples/s since the epoch
 * began and the epoch's time left at that rate. */
static void progress_bar(const trainer *t, int epoch, int step, int first_step, double loss, double t0) {
    const int width = 30, total = t->samp.steps_per_epoch;
    int filled = (int)((long long)width * step / total);
    char bar[64], left[32];
    for (int i = 0; i < width; i++) bar[i] = i < filled ? '#' : '.';
    bar[width] = '\0';
    const double took = bn_now() - t0, rate = step > first_step && took > 0 ? (step - first_step) / took : 0;
    duration_text(rate > 0 ? (total - step) / rate : 0, left, sizeof left);
    printf("\r  epoch %d/%d [%s] %3d%% %d/%d loss %.4f  %.0f samples/s  %s left\033[K", epoch, t->cfg.epochs, bar,
           100 * step / total, step, total, loss, rate * t->cfg.global_batch, left);
    fflush(stdout);
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

/* Test hooks, read from the environment (documented in the README):
 * BNMPI_FAULT_RANK=r BNMPI_FAULT_STEP=k: rank r fails alone after global step k;
 * BNMPI_SIGNAL_RANK=r BNMPI_SIGNAL_STEP=k: rank r sends itself SIGUSR1 then;
 * BNMPI_STALL_RANK=r BNMPI_STALL_STEP=k: rank r stops itself (SIGSTOP) then. */
static int hook_at(const trainer *t, const char *rank_var, const char *step_var) {
    const char *r = getenv(rank_var), *s = getenv(step_var);
    return r && s && atoi(r) == t->rank && atoll(s) == (long long)t->position[2];
}

static void run_test_hooks(const trainer *t) {
    if (hook_at(t, "BNMPI_FAULT_RANK", "BNMPI_FAULT_STEP"))
        bn_fatal("injected fault after global step %lld (BNMPI_FAULT_RANK, BNMPI_FAULT_STEP)",
                 (long long)t->position[2]);
    if (hook_at(t, "BNMPI_SIGNAL_RANK", "BNMPI_SIGNAL_STEP")) raise(SIGUSR1);
    if (hook_at(t, "BNMPI_STALL_RANK", "BNMPI_STALL_STEP")) raise(SIGSTOP);
}

/* Scheduled checkpoints (epoch ends, every N steps) go only where --checkpoint
 * says; a signal's goes to t->checkpoint, which always names a place. */
static int save_checkpoint(trainer *t, int scheduled, bn_err *e) {
    if (scheduled && !t->cfg.checkpoint[0]) return BN_OK;
    int status = checkpoint_save(t->checkpoint, &t->state, &t->cfg, &t->facts, e);
    watchdog_kick();
    return status;
}

static void to_step_rows(const double *m, step_row *rows, int n) {
    for (int i = 0; i < n; i++, m += STEP_COLS)
        rows[i] = (step_row){(int64_t)m[0], (int32_t)m[1], m[2], m[3], m[4]};
}

/* Rank 0 adds rows [0, n) of this epoch's steps to the metrics. */
static void add_steps(trainer *t, int n) {
    if (t->rank != 0 || n == 0) return;
    step_row *rows = bn_calloc((size_t)n, sizeof(step_row));
    to_step_rows(t->steps, rows, n);
    metrics_add_steps(&t->metrics, rows, n);
    free(rows);
}

/* Rank 0 rewrites the metrics file; every rank gets its status. */
static int flush_metrics(trainer *t, bn_err *e) {
    int status = comm_share(t->rank == 0 ? metrics_flush(&t->metrics, e) : BN_OK, e);
    watchdog_kick();
    return status;
}

/* The learning rate of the step after `done` steps: lr_peak (--lr after
 * --lr-scale), ramped linearly from 0 over the first --warmup-epochs. */
static double lr_at(const trainer *t, int64_t done) {
    const double warm = t->cfg.warmup_epochs * t->samp.steps_per_epoch;
    if (warm > 0 && (double)done < warm) return t->cfg.lr_peak * ((double)done + 1) / warm;
    return t->cfg.lr_peak;
}

/* --bn-eval recompute: population statistics from one training-mode pass
 * over the training set, each rank taking an equal share of whole batches. */
static void recompute_bn_statistics(trainer *t) {
    model *m = &t->model;
    const int b = t->cfg.batch, per_rank = t->data.n_train / t->size / b * b;
    model_population_reset(m);
    for (int start = t->rank * per_rank, end = start + per_rank; start < end; start += b) {
        dataset_gather(m->x, t->labels, &t->data.train_images, &t->data.train_labels, t->data.train_idx + start,
                       NULL, b);
        model_population_add(m, b);
        watchdog_kick();
    }
    model_population_finish(m);
}

/* The diagnostics' previous values travel in the state list as diag_prev. */
static void log_diagnostics(trainer *t, int epoch) {
    diagnostics *d = &t->diag;
    const int L = t->model.n_hidden;
    d->have_prev = t->diag_prev[0] != 0;
    memcpy(d->prev_mean, t->diag_prev + 1, sizeof(double) * BN_MAX_HIDDEN);
    memcpy(d->prev_var, t->diag_prev + 1 + BN_MAX_HIDDEN, sizeof(double) * BN_MAX_HIDDEN);
    diag_layer_row rows[BN_MAX_HIDDEN + 1];
    diag_comm_row comm;
    diag_measure(d, &t->model, t->cfg.batch, t->cfg.ghost_batch, t->position[2] + 1, epoch, rows, &comm);
    t->diag_prev[0] = 1;
    memcpy(t->diag_prev + 1, d->prev_mean, sizeof(double) * BN_MAX_HIDDEN);
    memcpy(t->diag_prev + 1 + BN_MAX_HIDDEN, d->prev_var, sizeof(double) * BN_MAX_HIDDEN);
    if (t->rank == 0) metrics_add_diagnostics(&t->metrics, rows, L + 1, &comm);
}

typedef enum { EPOCH_DONE, EPOCH_STOPPED, EPOCH_FAILED } epoch_status;

/* Runs the steps of epoch position[0] from position[1] on. */
static epoch_status train_epoch(trainer *t, int *steps_run, bn_err *e) {
    model *m = &t->model;
    const int b = t->cfg.batch, G = t->cfg.global_batch, steps = t->samp.steps_per_epoch;
    const int epoch = (int)t->position[0];
    const size_t n = m->n_params;
    double last_progress = 0;
    const double t0 = bn_now();
    const int first_step = (int)t->position[1];
    const int overlap = t->size > 1 ? t->cfg.overlap : 0;
    int gathered = -1; /* the step whose batch m->x holds */
    sampler_set_epoch(&t->samp, epoch);
    *steps_run = 0;
    for (int s = (int)t->position[1]; s < steps; s++, ++*steps_run) {
        bn_blocks_at(&t->blocks, m, epoch, s);
        if (gathered != s)
            dataset_gather(m->x, t->labels, &t->data.train_images, &t->data.train_labels, t->data.train_idx,
                           sampler_batch(&t->samp, s), b);
        memset(m->grads + n, 0, sizeof(float) * MODEL_GRAD_TAIL); /* the rest was zeroed by the last update */
        long correct = 0;
        double loss = softmax_xent(m->dbuf[0], model_forward_train(m, b), t->labels, b, MODEL_OUT, 1.0f / (float)G,
                                   &correct);
        float *tail = m->grads + n;
        tail[TAIL_LOSS] = (float)loss;
        tail[TAIL_CORRECT] = (float)correct;
        tail[TAIL_STOP] = signals_pending() ? 1.0f : 0.0f;
        model_backward(m, b, overlap);
        /* the sums: tail_sum gets the step's loss, correct count and stop flag over every rank */
        const int log_diag = diag_due(&t->diag, t->position[2]);
        const int sharded = t->gs.on && !log_diag; /* diagnostics read the whole gradient */
        float tail_sum[MODEL_GRAD_TAIL];
        if (sharded) {
            gradsync_reduce(&t->gs, m, tail_sum);
        } else if (overlap) {
            /* while the sums travel: the next batch (backward is done with m->x and labels) */
            if (s + 1 < steps) {
                dataset_gather(m->x, t->labels, &t->data.train_images, &t->data.train_labels, t->data.train_idx,
                               sampler_batch(&t->samp, s + 1), b);
                gathered = s + 1;
            }
            comm_isum_wait(T_GRAD_COMM);
        } else {
            comm_allreduce_sum_f32(m->grads, n + MODEL_GRAD_TAIL, COMM_WORLD_GROUP, T_GRAD_COMM);
        }
        if (!sharded) memcpy(tail_sum, tail, sizeof tail_sum);
        const double step_loss = tail_sum[TAIL_LOSS] / G, step_acc = tail_sum[TAIL_CORRECT] / G;
        t->opt.lr = lr_at(t, t->position[2]);
        double *row = t->steps + (size_t)s * STEP_COLS;
        row[0] = (double)(t->position[2] + 1);
        row[1] = epoch;
        row[2] = step_loss;
        row[3] = step_acc;
        row[4] = t->opt.lr;
        if (!isfinite(step_loss)) {
            bn_fail(e, "non-finite loss at epoch %d, step %d (global step %lld); try a lower --lr", epoch, s + 1,
                    (long long)t->position[2] + 1);
            bn_err ignored;
            add_steps(t, s + 1); /* the rows up to the failure, for the record */
            flush_metrics(t, &ignored);
            return EPOCH_FAILED;
        }
        if (log_diag) diag_before_update(&t->diag, m);
        if (t->gs.on) gradsync_update(&t->gs, m, &t->opt, !sharded);
        else optim_step(&t->opt, m);
        if (log_diag) log_diagnostics(t, epoch);
        t->epoch_sums[0] += tail_sum[TAIL_LOSS];
        t->epoch_sums[1] += tail_sum[TAIL_CORRECT];
        t->position[1] = s + 1;
        t->position[2]++;
        watchdog_at(t->position[0], t->position[2]);
        run_test_hooks(t);
        if (t->progress && (bn_now() - last_progress > 0.2 || s + 1 == steps)) {
            progress_bar(t, epoch, s + 1, first_step, step_loss, t0);
            last_progress = bn_now();
        }
        if (tail_sum[TAIL_STOP] > 0) return EPOCH_STOPPED;
        if (t->cfg.checkpoint_every && t->position[2] % t->cfg.checkpoint_every == 0 && s + 1 < steps &&
            save_checkpoint(t, 1, e) != BN_OK)
            return EPOCH_FAILED;
    }
    bn_blocks_at(&t->blocks, m, epoch, steps);
    return EPOCH_DONE;
}

/* steps_run: the steps this process ran (fewer than steps_per_epoch in the
 * epoch a run resumed in mid-way). */
static int finish_epoch(trainer *t, double t0, double run_start, int steps_run, bn_err *e) {
    const int steps = t->samp.steps_per_epoch, G = t->cfg.global_batch;
    const double train_s = bn_now() - t0;
    epoch_row row = {.epoch = (int32_t)t->position[0], .lr = t->opt.lr};
    row.train_loss = t->epoch_sums[0] / ((double)steps * G);
    row.train_acc = t->epoch_sums[1] / ((double)steps * G);
    if (t->cfg.bn_eval == BN_EVAL_RECOMPUTE && t->cfg.bn != BN_NONE) recompute_bn_statistics(t);
    else model_prepare_eval(&t->model);
    eval_result val = evaluate(t, &t->data.train_images, &t->data.train_labels, t->data.val_idx, t->data.n_val);
    row.val_loss = val.loss;
    row.val_acc = val.acc;
    row.time_s = bn_now() - t0;
    row.comm_s = bn_timers[T_GRAD_COMM] + bn_timers[T_BN_COMM];
    row.samples_per_s = (double)steps_run * G / train_s;
    char digest[65];
    if (comm_agree(check_params_agree(t, digest, e), e) != BN_OK) return BN_ERR;
    add_steps(t, steps);
    if (t->rank == 0) metrics_add_epoch(&t->metrics, &row);
    if (flush_metrics(t, e) != BN_OK) return BN_ERR;
    if (t->progress) printf("\r\033[K");
    if (t->show) {
        /* the run's time left: this process's mean epoch so far, times the epochs to go */
        char eta[48] = "";
        const int done_here = row.epoch - t->first_epoch + 1, to_go = t->cfg.epochs - row.epoch;
        if (to_go > 0) {
            char d[32];
            duration_text((bn_now() - run_start) / done_here * to_go, d, sizeof d);
            snprintf(eta, sizeof eta, "  ~%s left", d);
        }
        printf("epoch %*d/%d  loss %.4f acc %6.2f%%  val_loss %.4f val_acc %6.2f%%  %8.0f samples/s  %6.2f s "
               "(comm %4.1f%%)%s\n",
               t->cfg.epochs >= 10 ? 2 : 1, row.epoch, t->cfg.epochs, row.train_loss, 100 * row.train_acc,
               row.val_loss, 100 * row.val_acc, row.samples_per_s, row.time_s, 100 * row.comm_s / row.time_s, eta);
        fflush(stdout);
    }
    t->position[0]++;
    t->position[1] = 0;
    t->epoch_sums[0] = t->epoch_sums[1] = 0;
    return save_checkpoint(t, 1, e);
}

int train_run(trainer *t) {
    bn_err e = {{0}};
    const double run_start = bn_now();
    signals_install();
    watchdog_at(t->position[0], t->position[2]);
    t->first_epoch = (int)t->position[0];
    while (t->position[0] <= t->cfg.epochs) {
        bn_timers_reset();
        const double t0 = bn_now();
        int steps_run = 0;
        epoch_status st = train_epoch(t, &steps_run, &e);
        if (st == EPOCH_FAILED) {
            if (t->progress) printf("\n");
            if (t->rank == 0) metrics_close(&t->metrics);
            comm_exit(EXIT_RUNTIME, e.msg);
        }
        if (st == EPOCH_STOPPED) {
            if (t->progress) printf("\n");
            int status = save_checkpoint(t, 0, &e);
            if (t->rank == 0) metrics_close(&t->metrics);
            if (status != BN_OK) comm_exit(EXIT_RUNTIME, e.msg);
            if (t->rank == 0)
                fprintf(stderr, "bnmpi: stopped by a signal after epoch %lld step %lld; checkpoint %s; resume with "
                                "--resume %s\n",
                        (long long)t->position[0], (long long)t->position[1], t->checkpoint, t->checkpoint);
            comm_exit(BN_EXIT_STOPPED, NULL);
        }
        if (finish_epoch(t, t0, run_start, steps_run, &e) != BN_OK) comm_exit(EXIT_RUNTIME, e.msg);
    }
    const double total_s = bn_now() - run_start;
    eval_result test = evaluate(t, &t->data.test_images, &t->data.test_labels, t->data.test_idx, t->data.n_test);
    char digest[65];
    if (comm_agree(check_params_agree(t, digest, &e), &e) != BN_OK) comm_exit(EXIT_RUNTIME, e.msg);
    bn_blocks_close(&t->blocks);
    if (t->rank == 0) metrics_set_summary(&t->metrics, test.loss, test.acc, total_s, digest);
    int status = flush_metrics(t, &e);
    if (t->rank == 0) metrics_close(&t->metrics);
    if (status != BN_OK) comm_exit(EXIT_RUNTIME, e.msg);
    if (t->rank == 0) {
        printf("test: loss %.4f acc %.2f%%  (%d epochs in %.1f s)\n", test.loss, 100 * test.acc, t->cfg.epochs,
               total_s);
        printf("metrics: %s\n", t->metrics.path);
        if (t->cfg.checkpoint[0]) printf("checkpoint: %s\n", t->cfg.checkpoint);
    }
    return 0;
}
