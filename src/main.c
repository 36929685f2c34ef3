/* main.c: options -> comm -> data -> model -> (resume) -> train_run.
 * Errors found by library code come back as values; this file turns them
 * into one exit on every rank. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bnmpi/comm.h"
#include "bnmpi/threads.h"
#include "bnmpi/train.h"

/* Ends the run on every rank with one formatted message. Collective: for
 * conditions every rank sees alike. */
__attribute__((format(printf, 2, 3))) _Noreturn static void fail_all(int code, const char *fmt, ...) {
    char msg[BN_ERRLEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    comm_exit(code, msg);
}

/* Ends the run on every rank when any rank failed; status is agreed first. */
static void check(int status, bn_err *e, int code) {
    if (comm_agree(status, e) != BN_OK) comm_exit(code, e->msg);
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

static void print_header(const trainer *t) {
    const bn_config *c = &t->cfg;
    const dataset *d = &t->data;
    char arch[256];
    int len = snprintf(arch, sizeof arch, "%d", MLP_IN);
    for (int l = 0; l < c->n_hidden; l++) len += snprintf(arch + len, sizeof arch - len, "-%d", c->hidden_sizes[l]);
    snprintf(arch + len, sizeof arch - len, "-%d", MLP_OUT);
    printf("bnmpi %s: %d rank%s x %d OpenBLAS thread%s (%s), %s\n", BNMPI_VERSION, t->size, t->size > 1 ? "s" : "",
           t->threads, t->threads > 1 ? "s" : "", threads_blas_core(), t->mpi_lib);
    if (t->size == 1)
        printf("gradients: one rank, nothing to sum\n");
    else if (t->gs.on)
        printf("gradients: summed in node-shared memory by %d rank%s per node, each updating 1/%d of the "
               "parameters%s\n",
               t->gs.node_size, t->gs.node_size > 1 ? "s" : "", t->gs.node_size,
               t->size > t->gs.node_size ? "; one MPI_Allreduce per share across nodes" : "");
    else
        printf("gradients: one MPI_Allreduce per step%s\n", c->overlap ? ", overlapped with backward" : "");
    printf("data: %s from %s: %d train, %d val, %d test\n", dataset_name(c->dataset), d->dir, d->n_train, d->n_val,
           d->n_test);
    printf("steps: %d per epoch of global batch %d (%d ranks x %d); the last %d samples of each shuffle are "
           "skipped\n",
           t->samp.steps_per_epoch, c->global_batch, t->size, c->batch, d->n_train % c->global_batch);
    if (c->bn == BN_NONE)
        printf("model: %s, no BN, %zu parameters, %s lr %g\n", arch, t->model.n_params, optimizer_name(c->optimizer),
               c->lr);
    else {
        char how[64];
        if (c->ghost_batch) snprintf(how, sizeof how, "ghost batches of %d", c->ghost_batch);
        else if (c->bn_group == 1) snprintf(how, sizeof how, "local");
        else if (c->bn_group == t->size) snprintf(how, sizeof how, "sync");
        else snprintf(how, sizeof how, "sync in groups of %d ranks", c->bn_group);
        printf("model: %s, BN %s %s ReLU (BN batch %d), %zu parameters, %s lr %g\n", arch, how,
               c->bn_place == BN_BEFORE_RELU ? "before" : "after", c->bn_batch, t->model.n_params,
               optimizer_name(c->optimizer), c->lr);
    }
    if (c->lr_peak != c->lr || c->warmup_epochs > 0)
        printf("lr: %g scaled %s by %d/%d to %g, warm-up over %g epochs\n", c->lr,
               c->lr_scale == LR_SCALE_SQRT ? "(sqrt)" : c->lr_scale == LR_SCALE_LINEAR ? "(linear)" : "(none)",
               c->global_batch, c->lr_ref_batch, c->lr_peak, c->warmup_epochs);
    options_print(c, stdout);
    printf("metrics: %s\n", t->metrics.path);
    if (c->resume[0])
        printf("resumed: %s at epoch %lld, step %lld (global step %lld)\n", c->resume, (long long)t->position[0],
               (long long)t->position[1], (long long)t->position[2]);
    fflush(stdout);
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* --resume: the checkpoint's configuration, with the command line's allowed
 * changes. Returns the rank count the checkpoint was written at. */
static int merge_resume_config(bn_config *c, char saved_sha[4][65], bn_err *e) {
    bn_config saved;
    int saved_ranks = 0;
    if (checkpoint_read_config(c->resume, &saved, saved_sha, &saved_ranks, e) != BN_OK) comm_exit(EXIT_RUNTIME, e->msg);
    if (options_merge_resume(c, &saved, e) != BN_OK) comm_exit(EXIT_USAGE, e->msg);
    return saved_ranks;
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
    char saved_sha[4][65] = {{0}};
    int saved_ranks = c->resume[0] ? merge_resume_config(c, saved_sha, &e) : 0;
    const int saved_global_batch = c->global_batch;
    if (options_resolve(c, t.size, &e) != BN_OK) comm_exit(EXIT_USAGE, e.msg);
    if (c->resume[0] && c->global_batch != saved_global_batch)
        fail_all(EXIT_USAGE,
                 "--resume %s: global batch %d at %d ranks differs from the checkpoint's %d; pass --global-batch %d "
                 "(or --batch %d)",
                 c->resume, c->global_batch, t.size, saved_global_batch, saved_global_batch,
                 saved_global_batch / t.size);
    check(comm_set_bn_group(c->bn == BN_NONE ? 1 : c->bn_group, &e), &e, EXIT_USAGE);
    const int uniform = comm_nodes_uniform(), fits = comm_node_size() <= GRADSYNC_MAX_NODE_RANKS;
    if (c->reduce == REDUCE_NODE && !uniform)
        fail_all(EXIT_USAGE, "--reduce node: needs the same number of ranks on every node; use --reduce mpi");
    if (c->reduce == REDUCE_NODE && !fits)
        fail_all(EXIT_USAGE, "--reduce node: at most %d ranks per node; use --reduce mpi", GRADSYNC_MAX_NODE_RANKS);
    if (c->reduce == REDUCE_AUTO) c->reduce = uniform && fits && !c->overlap ? REDUCE_NODE : REDUCE_MPI;

    t.threads = threads_policy(c->threads, comm_node_size());
    threads_apply(t.threads);
    c->threads = t.threads; /* the configuration shows and records what is used */
    t.show = t.rank == 0 && !c->quiet;
    t.progress = t.show && stdout_is_terminal();

    /* a bad --metrics path fails before the data is read */
    if (c->metrics[0] && !c->resume[0] &&
        comm_share(t.rank == 0 ? metrics_check_path(c->metrics, c->force, &e) : BN_OK, &e) != BN_OK)
        comm_exit(EXIT_RUNTIME, e.msg);
    check(dataset_load(&t.data, c, &e), &e, EXIT_RUNTIME);
    snprintf(c->data, sizeof c->data, "%s", t.data.dir);
    if (t.data.n_train < c->global_batch)
        fail_all(EXIT_USAGE, "--global-batch %d exceeds the %d training samples (%d ranks x --batch %d)",
                 c->global_batch, t.data.n_train, t.size, c->batch);
    const idx_array *files[4] = {&t.data.train_images, &t.data.train_labels, &t.data.test_images,
                                 &t.data.test_labels};
    for (int i = 0; i < 4 && c->resume[0]; i++)
        if (saved_sha[i][0] && strcmp(saved_sha[i], files[i]->sha256) != 0)
            fail_all(EXIT_USAGE, "--resume %s: the data in %s differs from the checkpoint's (%s %.12s, expected %.12s)",
                     c->resume, t.data.dir, h5config_sha_names[i], files[i]->sha256, saved_sha[i]);

    comm_library_version(t.mpi_lib, sizeof t.mpi_lib);
    comm_processor_name(t.host, sizeof t.host);
    time_t now = time(NULL);
    strftime(t.start_time, sizeof t.start_time, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    t.facts = (run_facts){t.mpi_lib, t.host, t.start_time, {files[0]->sha256, files[1]->sha256, files[2]->sha256,
                                                            files[3]->sha256}};

    /* the model, optimizer and sampler, then the state list over them */
    const int cap = BN_MAX(c->batch, c->eval_batch);
    mlp_init(&t.model, c, cap);
    optim_init(&t.opt, c, t.model.n_params);
    if (c->reduce == REDUCE_NODE) gradsync_init(&t.gs, &t.model, &t.opt);
    sampler_init(&t.samp, t.data.n_train, c->global_batch, c->batch, t.rank, (uint64_t)c->seed);
    t.labels = bn_calloc((size_t)cap, 1);
    t.steps = bn_calloc((size_t)t.samp.steps_per_epoch * STEP_COLS, sizeof(double));
    t.shuffle_seed = c->seed;
    diag_init(&t.diag, c->diagnostics, t.model.n_params);
    check(bn_blocks_init(&t.blocks, c, t.rank, &e), &e, EXIT_USAGE);
    train_list_state(&t);

    if (c->resume[0]) {
        check(checkpoint_load(c->resume, &t.state, saved_ranks, &e), &e, EXIT_RUNTIME);
        if (t.position[0] > c->epochs)
            fail_all(EXIT_USAGE,
                     "--resume %s: the checkpoint has finished %lld epochs%s; pass --epochs above %lld to continue",
                     c->resume, (long long)t.position[0] - 1, t.position[1] ? " and part of the next" : "",
                     (long long)t.position[0] - 1);
        if (t.rank == 0 && c->bn == BN_LOCAL && saved_ranks != t.size)
            fprintf(stderr, "bnmpi: warning: resuming a --bn local run written at %d ranks on %d ranks: the BN batch "
                            "changes from %d to %d samples, so this is not the same computation; BN running "
                            "statistics are taken from rank (r mod %d)\n",
                    saved_ranks, t.size, c->global_batch / saved_ranks, c->batch, saved_ranks);
    } else {
        if (t.rank == 0) mlp_init_params(&t.model, (uint64_t)c->seed, c->init_scale);
        if (t.gs.on) comm_bcast_node_shared_f32(t.model.params, t.model.n_params);
        else comm_bcast_f32(t.model.params, t.model.n_params, 0);
        comm_bcast_f32(t.model.state, t.model.n_state, 0);
        t.position[0] = 1;
    }

    /* the metrics file and where checkpoints go; rank 0 decides and tells */
    int status = BN_OK;
    if (t.rank == 0) {
        if (c->checkpoint[0] && !c->resume[0] && file_exists(c->checkpoint) && !c->force)
            status = bn_fail(&e, "--checkpoint %s: file exists; pass --resume %s to continue it, or --force to "
                                 "start over",
                             c->checkpoint, c->checkpoint);
        else if (c->resume[0] && c->metrics[0] && file_exists(c->metrics))
            status = metrics_reopen(&t.metrics, c->metrics, (int)t.position[0] - 1, t.position[2] - t.position[1],
                                    c, &t.facts, &e);
        else {
            if (c->resume[0])
                fprintf(stderr, "bnmpi: warning: the metrics file %s is gone; writing a new one\n", c->metrics);
            if (!c->metrics[0] || c->resume[0]) status = metrics_default_path(c, c->metrics, sizeof c->metrics, &e);
            if (status == BN_OK) status = metrics_create(&t.metrics, c->metrics, c->force, c, &t.facts, &e);
        }
        if (status != BN_OK) metrics_close(&t.metrics);
    }
    if (comm_share(status, &e) != BN_OK) comm_exit(EXIT_RUNTIME, e.msg);
    comm_bcast_chars(c->metrics, sizeof c->metrics, 0);
    /* a signal needs somewhere to save: beside the metrics file unless --checkpoint says */
    if (c->checkpoint[0]) snprintf(t.checkpoint, sizeof t.checkpoint, "%s", c->checkpoint);
    else {
        size_t n = strlen(c->metrics);
        int h5 = n > 3 && strcmp(c->metrics + n - 3, ".h5") == 0;
        snprintf(t.checkpoint, sizeof t.checkpoint, "%.*s.ckpt.h5", (int)(h5 ? n - 3 : n), c->metrics);
    }
    if (t.show) print_header(&t);

    int code = train_run(&t);
    sampler_free(&t.samp);
    optim_free(&t.opt);
    mlp_free(&t.model);
    dataset_free(&t.data);
    free(t.labels);
    free(t.steps);
    diag_free(&t.diag);
    comm_exit(code, NULL);
}
