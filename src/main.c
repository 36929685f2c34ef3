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
#include "bnmpi/outputs.h"
#include "bnmpi/watchdog.h"
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
    char arch[1024];
    arch_describe(&c->net, arch, sizeof arch);
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
        printf("model: %s, BN %s %s ReLU (BN batch %d%s), %zu parameters, %s lr %g\n", arch, how,
               c->bn_place == BN_BEFORE_RELU ? "before" : "after", c->bn_batch,
               c->net.convnet ? " samples: each conv BN statistic also spans every position" : "", t->model.n_params,
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

/* Evaluation blocks hold at most this much of the forward buffers; a larger
 * --eval-batch is split into blocks of this size. */
#define EVAL_BLOCK_BYTES ((size_t)256 << 20)

/* Samples per evaluation block: --eval-batch, but never more than a rank's
 * share of the larger evaluation set, nor (when above the training batch)
 * than EVAL_BLOCK_BYTES of forward buffers. */
static int eval_block(const bn_config *c, const dataset *d, int size) {
    const int share = (BN_MAX(d->n_val, d->n_test) + size - 1) / size;
    size_t per_sample = 1;
    model_bytes(c, 1, &per_sample);
    const int fits = (int)BN_MIN((size_t)1 << 30, BN_MAX(EVAL_BLOCK_BYTES / per_sample, (size_t)1));
    return BN_MAX(1, BN_MIN(BN_MIN(c->eval_batch, share), BN_MAX(fits, c->batch)));
}

/* Refuses a model whose buffers cannot fit this rank's share of the node's
 * memory, before allocating them (the kernel would kill the job instead). */
static void check_memory(const bn_config *c, int cap) {
    const double need = (double)model_bytes(c, cap, NULL);
    const double node = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGE_SIZE);
    const double mine = node / comm_node_size();
    if (node > 0 && need > 0.8 * mine)
        fail_all(EXIT_USAGE,
                 "--%s %s: the model and its buffers need %.1f GB per rank at --batch %d, more than 80%% of this "
                 "rank's share of the node's memory (%.1f GB of %.1f GB for %d ranks); choose smaller layers or "
                 "--batch",
                 c->arch[0] ? "arch" : "hidden", c->arch[0] ? c->arch : c->hidden, need / 1e9, c->batch, mine / 1e9,
                 node / 1e9, comm_node_size());
}

/* --resume: the checkpoint's configuration (into saved, with its facts),
 * and c merged with it: the command line's allowed changes on top. */
static void merge_resume_config(bn_config *c, bn_config *saved, saved_facts *sf, bn_err *e) {
    if (checkpoint_read_config(c->resume, saved, sf, e) != BN_OK) comm_exit(EXIT_RUNTIME, e->msg);
    if (options_merge_resume(c, saved, e) != BN_OK) comm_exit(EXIT_USAGE, e->msg);
}

/* Rank 0: the metrics file (created, or continued at --resume) and where
 * checkpoints go, after checking that no two outputs are one file. Returns
 * the exit code for a failure, 0 when all is well. */
static int open_outputs(trainer *t, const bn_config *saved, const saved_facts *sf, bn_err *e) {
    bn_config *c = &t->cfg;
    if (c->checkpoint[0] && !c->resume[0] && file_exists(c->checkpoint) && !c->force) {
        bn_fail(e, "--checkpoint %s: file exists; pass --resume %s to continue it, or --force to start over",
                c->checkpoint, c->checkpoint);
        return EXIT_RUNTIME;
    }
    const int reopen = c->resume[0] && c->metrics[0] && file_exists(c->metrics);
    if (c->resume[0] && !reopen)
        fprintf(stderr, "bnmpi: warning: the metrics file %s is gone; writing a new one\n", c->metrics);
    if (!reopen && (!c->metrics[0] || c->resume[0]) &&
        metrics_default_path(c, c->metrics, sizeof c->metrics, e) != BN_OK)
        return EXIT_RUNTIME;
    if (c->checkpoint[0]) snprintf(t->checkpoint, sizeof t->checkpoint, "%s", c->checkpoint);
    else outputs_signal_checkpoint(c->metrics, t->checkpoint, sizeof t->checkpoint);
    if (outputs_check_distinct(c->metrics, t->checkpoint, c->resume, e) != BN_OK) return EXIT_USAGE;
    int status;
    if (reopen) {
        const metrics_resume_point at = {c->resume,       saved,    sf, (int)t->position[0] - 1,
                                         t->position[2] - t->position[1], t->steps, (int)t->position[1]};
        status = metrics_reopen(&t->metrics, c->metrics, &at, c, &t->facts, e);
    } else {
        status = metrics_create(&t->metrics, c->metrics, c->force, c, &t->facts, e);
    }
    if (status != BN_OK) metrics_close(&t->metrics);
    return status == BN_OK ? 0 : EXIT_RUNTIME;
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
    bn_config saved;
    saved_facts sf;
    memset(&saved, 0, sizeof saved);
    memset(&sf, 0, sizeof sf);
    if (c->resume[0]) merge_resume_config(c, &saved, &sf, &e);
    const int saved_ranks = sf.n_ranks;
    const int saved_global_batch = c->global_batch;
    if (options_resolve(c, t.size, &e) != BN_OK) comm_exit(EXIT_USAGE, e.msg);
    if (c->resume[0] && c->global_batch != saved_global_batch)
        fail_all(EXIT_USAGE,
                 "--resume %s: global batch %d at %d ranks differs from the checkpoint's %d; pass --global-batch %d "
                 "(or --batch %d)",
                 c->resume, c->global_batch, t.size, saved_global_batch, saved_global_batch,
                 saved_global_batch / t.size);
    watchdog_start(c->watchdog); /* from here on, a rank that stops ends the job */
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
        if (sf.sha256[i][0] && strcmp(sf.sha256[i], files[i]->sha256) != 0)
            fail_all(EXIT_USAGE, "--resume %s: the data in %s differs from the checkpoint's (%s %.12s, expected %.12s)",
                     c->resume, t.data.dir, h5config_sha_names[i], files[i]->sha256, sf.sha256[i]);

    comm_library_version(t.mpi_lib, sizeof t.mpi_lib);
    comm_processor_name(t.host, sizeof t.host);
    time_t now = time(NULL);
    strftime(t.start_time, sizeof t.start_time, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    /* a resumed run keeps its id (a checkpoint older than run ids gets a new one) */
    if (sf.run_id[0]) snprintf(t.run_id, sizeof t.run_id, "%s", sf.run_id);
    else h5config_new_run_id(t.run_id);
    comm_bcast_chars(t.run_id, sizeof t.run_id, 0);
    t.facts = (run_facts){t.mpi_lib,
                          t.host,
                          t.start_time,
                          {files[0]->sha256, files[1]->sha256, files[2]->sha256, files[3]->sha256},
                          t.run_id,
                          0};

    /* the model, optimizer and sampler, then the state list over them; the
     * forward buffers hold a training batch or an evaluation block, which is
     * never more than a rank's share of the larger evaluation set */
    t.eval_block = eval_block(c, &t.data, t.size);
    const int cap = BN_MAX(c->batch, t.eval_block);
    check_memory(c, cap);
    model_init(&t.model, c, cap);
    t.facts.n_params = t.model.n_params;
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
        if (t.rank == 0) model_init_params(&t.model, (uint64_t)c->seed, c->init_scale);
        if (t.gs.on) comm_bcast_node_shared_f32(t.model.params, t.model.n_params);
        else comm_bcast_f32(t.model.params, t.model.n_params, 0);
        comm_bcast_f32(t.model.state, t.model.n_state, 0);
        t.position[0] = 1;
    }

    /* the metrics file and where checkpoints go; rank 0 decides and tells */
    int64_t code = t.rank == 0 ? open_outputs(&t, &saved, &sf, &e) : 0;
    comm_bcast_i64(&code, 1, 0);
    if (comm_share(code ? BN_ERR : BN_OK, &e) != BN_OK) comm_exit((int)code, e.msg);
    comm_bcast_chars(c->metrics, sizeof c->metrics, 0);
    comm_bcast_chars(t.checkpoint, sizeof t.checkpoint, 0);
    if (t.show) print_header(&t);

    code = train_run(&t);
    sampler_free(&t.samp);
    optim_free(&t.opt);
    model_free(&t.model);
    dataset_free(&t.data);
    free(t.labels);
    free(t.steps);
    diag_free(&t.diag);
    comm_exit((int)code, NULL);
}
