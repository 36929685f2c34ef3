/* bound.c: the hardware bound of one bnmpi training step (MLP 784-256-10 with BN).
 *
 * Times, per rank, the step's five cblas_sgemm calls at the per-rank batch with
 * the same shapes and transposes as src/dense.c, an Adam update over the
 * parameters (the loop of src/optim.c, for information), and an in-place
 * MPI_Allreduce of the gradient buffer (n_params + 2 tail floats, as
 * src/main.c sends). Every repetition starts after a barrier, so at np=2 both
 * ranks compute at the same time, as in training. Prints CSV on rank 0:
 *
 *   kind,np,threads,batch,op,count,median_s,min_s,reps
 *
 * kind "gemm": op fwd1, dW1, fwd2, dW2, dX2 (one call each) and "step" (the
 * median of the per-repetition sum of the five); the time of a rep is the
 * slowest rank's. kind "adam": op "update". kind "allreduce": op "sum_f32"
 * (bnmpi's blocking MPI_Allreduce), "iallreduce_wait_f32" (MPI_Iallreduce then
 * MPI_Wait: --overlap's call with nothing to overlap) and
 * "reduce_scatter_allgather_f32" (what a sharded optimizer would call).
 * kind "update" (np > 1, one node): the gradient sum plus Adam, op
 * "allreduce_adam" (--reduce mpi) and "node_shared_adam" (--reduce node).
 * kind "bncomm" (np > 1): sync BN's collectives, op "moments_sum" (the
 * forward sums, as src/batchnorm.c sends them), "backward_sum" (the backward
 * sums) and, for comparison, "moments_userop" (the same moments merged by an
 * MPI user op, as bnmpi did before and comm_merge_moments still does).
 * Plus a "# core <OpenBLAS core name>" comment line first.
 *
 * Usage: mpirun -np P bnmpi-bound [--batches 16,32,64,256] [--threads 1]
 *                                  [--time 0.4] [--no-gemm] [--no-allreduce]
 *                                  [--hidden 256] [--count N]
 * --time is the measuring budget in seconds per batch (and for the allreduce);
 * the repetition count follows from a warm-up, at least 30.
 */
#define _POSIX_C_SOURCE 200809L
#include <cblas.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { IN = 784, OUT = 10, N_OPS = 5, MIN_REPS = 30, MAX_REPS = 20000, MAX_BATCHES = 32 };
static const char *const op_name[N_OPS] = {"fwd1", "dW1", "fwd2", "dW2", "dX2"};

static int rank, nranks;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void die(const char *msg) {
    if (rank == 0) fprintf(stderr, "bnmpi-bound: %s\n", msg);
    MPI_Finalize();
    exit(2);
}

static float *floats(size_t n, unsigned *seed) {
    float *p = NULL;
    if (posix_memalign((void **)&p, 64, ((n * sizeof(float) + 63) / 64) * 64) != 0) die("out of memory");
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 1664525u + 1013904223u;
        p[i] = (float)((*seed >> 8) & 0xffff) / 65536.0f - 0.5f;
    }
    return p;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median and minimum of v[0..n), sorting v. */
static void stats(double *v, int n, double *median, double *min) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    *min = v[0];
    *median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Each rep's time is the slowest rank's: reduce per-rep arrays with MAX. */
static void slowest_rank(double *v, int n) {
    if (nranks > 1) MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
}

/* How many reps fit in budget seconds, given the time of one; agreed by all ranks. */
static int reps_for(double one, double budget) {
    MPI_Allreduce(MPI_IN_PLACE, &one, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    double r = one > 0 ? budget / one : MAX_REPS;
    return r < MIN_REPS ? MIN_REPS : r > MAX_REPS ? MAX_REPS : (int)r;
}

typedef struct {
    float *x, *w1, *z1, *dz1, *dw1, *a1, *w2, *z2, *dz2, *dw2, *da1;
} step_buffers;

/* The step's GEMMs exactly as src/dense.c issues them (row-major, W stored (out, in)). */
static void gemms(step_buffers *s, int B, int H, double t[N_OPS]) {
    double t0 = now();
    /* fwd1: z1 (B,H) += x (B,784) . W1^T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, H, IN, 1.0f, s->x, IN, s->w1, IN, 1.0f, s->z1, H);
    double t1 = now();
    /* fwd2: z2 (B,10) += a1 (B,H) . W2^T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, OUT, H, 1.0f, s->a1, H, s->w2, H, 1.0f, s->z2, OUT);
    double t2 = now();
    /* dW2 (10,H) += dz2^T (10,B) . a1 (B,H) */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OUT, H, B, 1.0f, s->dz2, OUT, s->a1, H, 1.0f, s->dw2, H);
    double t3 = now();
    /* dX2: da1 (B,H) = dz2 (B,10) . W2 (10,H) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, H, OUT, 1.0f, s->dz2, OUT, s->w2, H, 0.0f, s->da1, H);
    double t4 = now();
    /* dW1 (H,784) += dz1^T (H,B) . x (B,784); layer 0 computes no dx */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, H, IN, B, 1.0f, s->dz1, H, s->x, IN, 1.0f, s->dw1, IN);
    double t5 = now();
    t[0] = t1 - t0; /* fwd1 */
    t[1] = t5 - t4; /* dW1 */
    t[2] = t2 - t1; /* fwd2 */
    t[3] = t3 - t2; /* dW2 */
    t[4] = t4 - t3; /* dX2 */
}

static void print_row(const char *kind, int threads, int batch, const char *op, long count, double *v, int n) {
    double med, min;
    stats(v, n, &med, &min);
    if (rank == 0)
        printf("%s,%d,%d,%d,%s,%ld,%.9e,%.9e,%d\n", kind, nranks, threads, batch, op, count, med, min, n);
}

static void bench_gemm(int B, int H, int threads, double budget) {
    unsigned seed = 12345u + (unsigned)rank;
    step_buffers s = {
        .x = floats((size_t)B * IN, &seed),   .w1 = floats((size_t)H * IN, &seed),
        .z1 = floats((size_t)B * H, &seed),   .dz1 = floats((size_t)B * H, &seed),
        .dw1 = floats((size_t)H * IN, &seed), .a1 = floats((size_t)B * H, &seed),
        .w2 = floats((size_t)OUT * H, &seed), .z2 = floats((size_t)B * OUT, &seed),
        .dz2 = floats((size_t)B * OUT, &seed), .dw2 = floats((size_t)OUT * H, &seed),
        .da1 = floats((size_t)B * H, &seed),
    };
    double t[N_OPS];
    double t0 = now();
    for (int i = 0; i < 10; i++) gemms(&s, B, H, t);
    const int reps = reps_for((now() - t0) / 10, budget);
    double *per_op[N_OPS], *total = calloc((size_t)reps, sizeof(double));
    for (int k = 0; k < N_OPS; k++) per_op[k] = calloc((size_t)reps, sizeof(double));
    if (!total) die("out of memory");
    for (int r = 0; r < reps; r++) {
        MPI_Barrier(MPI_COMM_WORLD);
        /* keep the accumulating outputs bounded, outside the timed region */
        if (r % 64 == 0) {
            memset(s.z1, 0, sizeof(float) * (size_t)B * H);
            memset(s.z2, 0, sizeof(float) * (size_t)B * OUT);
            memset(s.dw1, 0, sizeof(float) * (size_t)H * IN);
            memset(s.dw2, 0, sizeof(float) * (size_t)OUT * H);
        }
        gemms(&s, B, H, t);
        total[r] = 0;
        for (int k = 0; k < N_OPS; k++) {
            per_op[k][r] = t[k];
            total[r] += t[k];
        }
    }
    for (int k = 0; k < N_OPS; k++) {
        slowest_rank(per_op[k], reps);
        print_row("gemm", threads, B, op_name[k], 1, per_op[k], reps);
        free(per_op[k]);
    }
    slowest_rank(total, reps);
    print_row("gemm", threads, B, "step", N_OPS, total, reps);
    free(total);
    free(s.x), free(s.w1), free(s.z1), free(s.dz1), free(s.dw1), free(s.a1);
    free(s.w2), free(s.z2), free(s.dz2), free(s.dw2), free(s.da1);
}

/* src/optim.c's Adam loop (Keras defaults), the per-step elementwise floor. */
static void adam(float *p, const float *g, float *m, float *v, size_t n, float lr_t) {
    const float b1 = 0.9f, b2 = 0.999f, eps = 1e-7f;
    for (size_t i = 0; i < n; i++) {
        m[i] = b1 * m[i] + (1.0f - b1) * g[i];
        v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
        p[i] -= lr_t * m[i] / (sqrtf(v[i]) + eps);
    }
}

/* One operation timed rep by rep: prepare (untimed; may be NULL) runs before
 * the barrier that starts each rep, run is timed. The time of a rep is the
 * slowest rank's; one row is printed. reps = 0: as many as fit in budget,
 * judged from 10 untimed runs. Returns the reps used. */
typedef struct {
    void (*prepare)(void *ctx, int rep);
    void (*run)(void *ctx);
    void *ctx;
} timed_op;

static int time_op(const char *kind, const char *op, long count, int threads, double budget, int reps, timed_op o) {
    if (reps == 0) {
        double t0 = now();
        for (int i = 0; i < 10; i++) o.run(o.ctx);
        reps = reps_for((now() - t0) / 10, budget);
    }
    double *t = calloc((size_t)reps, sizeof(double));
    if (!t) die("out of memory");
    for (int r = 0; r < reps; r++) {
        if (o.prepare) o.prepare(o.ctx, r);
        MPI_Barrier(MPI_COMM_WORLD);
        double a = now();
        o.run(o.ctx);
        t[r] = now() - a;
    }
    slowest_rank(t, reps);
    print_row(kind, threads, 0, op, count, t, reps);
    free(t);
    return reps;
}

typedef struct {
    float *p, *g, *m, *v;
    size_t n;
} adam_ctx;

static void adam_run(void *ctx) {
    adam_ctx *a = ctx;
    adam(a->p, a->g, a->m, a->v, a->n, 1e-9f);
}

static void bench_adam(size_t n, int threads, double budget) {
    unsigned seed = 777u;
    adam_ctx a = {floats(n, &seed), floats(n, &seed), floats(n, &seed), floats(n, &seed), n};
    for (size_t i = 0; i < n; i++) a.v[i] = fabsf(a.v[i]);
    time_op("adam", "update", (long)n, threads, budget, 0, (timed_op){NULL, adam_run, &a});
    free(a.p), free(a.g), free(a.m), free(a.v);
}

/* The gradient buffer (n floats), and the reduce-scatter's blocks (P x block). */
typedef struct {
    float *buf, *full, *mine;
    size_t n, block;
} sum_ctx;

static void refill(float *x, size_t n, int rep) {
    if (rep % 64 == 0) /* keep the sums finite */
        for (size_t i = 0; i < n; i++) x[i] = 0.001f * (float)(i % 97);
}
static void refill_buf(void *ctx, int rep) {
    sum_ctx *c = ctx;
    refill(c->buf, c->n, rep);
}
static void refill_full(void *ctx, int rep) {
    sum_ctx *c = ctx;
    refill(c->full, c->block * (size_t)nranks, rep);
}
static void allreduce_run(void *ctx) {
    sum_ctx *c = ctx;
    MPI_Allreduce(MPI_IN_PLACE, c->buf, (int)c->n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
}
/* The nonblocking form (bnmpi --overlap): started and waited for at once, so
 * this is its cost with nothing to overlap. */
static void iallreduce_run(void *ctx) {
    sum_ctx *c = ctx;
    MPI_Request req;
    MPI_Iallreduce(MPI_IN_PLACE, c->buf, (int)c->n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &req);
    MPI_Wait(&req, MPI_STATUS_IGNORE);
}
/* A sharded update's pair: each rank gets the sum of its 1/P block, then the
 * blocks are gathered back to every rank. */
static void reduce_scatter_allgather_run(void *ctx) {
    sum_ctx *c = ctx;
    MPI_Reduce_scatter_block(c->full, c->mine, (int)c->block, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allgather(c->mine, (int)c->block, MPI_FLOAT, c->full, (int)c->block, MPI_FLOAT, MPI_COMM_WORLD);
}

static void bench_allreduce(size_t n, int threads, double budget) {
    unsigned seed = 99u + (unsigned)rank;
    const size_t block = (n + (size_t)nranks - 1) / (size_t)nranks;
    sum_ctx c = {floats(n, &seed), NULL, NULL, n, block};
    c.full = floats(block * (size_t)nranks, &seed);
    c.mine = floats(block, &seed);
    const int reps = time_op("allreduce", "sum_f32", (long)n, threads, budget, 0,
                             (timed_op){refill_buf, allreduce_run, &c});
    time_op("allreduce", "iallreduce_wait_f32", (long)n, threads, budget, reps,
            (timed_op){refill_buf, iallreduce_run, &c});
    time_op("allreduce", "reduce_scatter_allgather_f32", (long)n, threads, budget, reps,
            (timed_op){refill_full, reduce_scatter_allgather_run, &c});
    free(c.buf), free(c.full), free(c.mine);
}

/* The gradient sum and the update, both ways bnmpi can do them at np ranks on
 * one node, with the gradient freshly written as after backward:
 *   "allreduce_adam": MPI_Allreduce of the whole gradient, then Adam over
 *     every parameter on every rank (--reduce mpi);
 *   "node_shared_adam": a fence, this rank's 1/np share summed from every
 *     rank's slot of a shared window, Adam over that share, a fence
 *     (--reduce node, src/gradsync.c).
 * kind "update", the time of a rep being the slowest rank's. */
static void bench_update(size_t n, int threads, double budget) {
    MPI_Comm node;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node);
    int P, r;
    MPI_Comm_size(node, &P);
    MPI_Comm_rank(node, &r);
    enum { MAX_SLOTS = 64 };
    if (P != nranks || P > MAX_SLOTS) { /* the shared half needs every rank on this node, at most MAX_SLOTS */
        MPI_Comm_free(&node);
        return;
    }
    unsigned seed = 5u + (unsigned)rank;
    float *p = floats(n, &seed), *g = floats(n, &seed), *m = floats(n, &seed), *v = floats(n, &seed);
    for (size_t i = 0; i < n; i++) v[i] = fabsf(v[i]);
    float *mine, *slot[MAX_SLOTS];
    MPI_Win win;
    MPI_Win_allocate_shared((MPI_Aint)(n * sizeof(float)), sizeof(float), MPI_INFO_NULL, node, &mine, &win);
    for (int q = 0; q < P; q++) {
        MPI_Aint size;
        int disp;
        MPI_Win_shared_query(win, q, &size, &disp, &slot[q]);
    }
    MPI_Win_lock_all(MPI_MODE_NOCHECK, win);
    const size_t lo = n * (size_t)r / (size_t)P / 16 * 16, hi = r + 1 == P ? n : n * (size_t)(r + 1) / (size_t)P / 16 * 16;
    const int reps = reps_for(5e-4, budget);
    double *t1 = calloc((size_t)reps, sizeof(double)), *t2 = calloc((size_t)reps, sizeof(double));
    if (!t1 || !t2) die("out of memory");
    for (int k = 0; k < reps; k++) {
        for (size_t i = 0; i < n; i++) g[i] = 0.001f * (float)(i % 97);
        MPI_Barrier(MPI_COMM_WORLD);
        double a = now();
        MPI_Allreduce(MPI_IN_PLACE, g, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        adam(p, g, m, v, n, 1e-9f);
        t1[k] = now() - a;
        for (size_t i = 0; i < n; i++) mine[i] = 0.001f * (float)(i % 97);
        MPI_Barrier(MPI_COMM_WORLD);
        a = now();
        MPI_Win_sync(win);
        MPI_Barrier(node);
        MPI_Win_sync(win);
        for (int q = 0; q < P; q++)
            if (q != r)
                for (size_t i = lo; i < hi; i++) {
                    mine[i] += slot[q][i];
                    slot[q][i] = 0.0f;
                }
        adam(p + lo, mine + lo, m + lo, v + lo, hi - lo, 1e-9f);
        MPI_Win_sync(win);
        MPI_Barrier(node);
        MPI_Win_sync(win);
        t2[k] = now() - a;
    }
    slowest_rank(t1, reps);
    slowest_rank(t2, reps);
    print_row("update", threads, 0, "allreduce_adam", (long)n, t1, reps);
    print_row("update", threads, 0, "node_shared_adam", (long)n, t2, reps);
    MPI_Win_unlock_all(win);
    MPI_Win_free(&win);
    MPI_Comm_free(&node);
    free(t1), free(t2), free(p), free(g), free(m), free(v);
}

/* Sync BN's two collectives per BN layer and step (src/batchnorm.c): the
 * forward MPI_Allreduce of 2c doubles (sum x, sum x^2) and the backward one of
 * 2c doubles (sum dy, sum dy*xhat), both MPI_SUM. For comparison, the moments
 * as one record of 1 + 2c doubles (count, mean, m2) merged by a user operation
 * (Chan's formula): what bnmpi's forward sent before, 3x slower here. */
static int merge_c;
static void merge_op(void *in, void *inout, int *len, MPI_Datatype *type) {
    (void)type;
    const int c = merge_c;
    const double *a = in;
    double *b = inout;
    for (int r = 0; r < *len; r++, a += 1 + 2 * c, b += 1 + 2 * c) {
        const double na = a[0], nb = b[0], n = na + nb;
        if (na == 0) continue;
        const double w = na * nb / n;
        for (int j = 0; j < c; j++) {
            const double d = b[1 + j] - a[1 + j];
            b[1 + j] = (na * a[1 + j] + nb * b[1 + j]) / n;
            b[1 + c + j] = (a[1 + c + j] + b[1 + c + j]) + d * d * w;
        }
        b[0] = n;
    }
}

static MPI_Op moments_op;
static MPI_Datatype moments_type;
static int bn_c;
static void reset_moments(double *buf) {
    buf[0] = 32;
    for (int j = 0; j < 2 * bn_c; j++) buf[1 + j] = 0.5 + 0.001 * j;
}
static void moments_userop(void *buf) {
    reset_moments(buf);
    MPI_Allreduce(MPI_IN_PLACE, buf, 1, moments_type, moments_op, MPI_COMM_WORLD);
}
static void moments_sum(void *buf) {
    reset_moments(buf);
    MPI_Allreduce(MPI_IN_PLACE, buf + 1, 2 * bn_c, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
}
static void backward_sums(void *buf) {
    MPI_Allreduce(MPI_IN_PLACE, buf, 2 * bn_c, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
}

static void bench_bncomm(int c, int threads, double budget) {
    bn_c = merge_c = c;
    MPI_Op_create(merge_op, 1, &moments_op);
    MPI_Type_contiguous(1 + 2 * c, MPI_DOUBLE, &moments_type);
    MPI_Type_commit(&moments_type);
    double *buf = calloc((size_t)(1 + 2 * c), sizeof(double));
    if (!buf) die("out of memory");
    time_op("bncomm", "moments_userop", 1 + 2L * c, threads, budget, 0, (timed_op){NULL, moments_userop, buf});
    time_op("bncomm", "moments_sum", 2L * c, threads, budget, 0, (timed_op){NULL, moments_sum, buf});
    time_op("bncomm", "backward_sum", 2L * c, threads, budget, 0, (timed_op){NULL, backward_sums, buf});
    free(buf);
    MPI_Type_free(&moments_type);
    MPI_Op_free(&moments_op);
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);

    int batches[MAX_BATCHES] = {16, 32, 64, 256}, n_batches = 4, threads = 1, hidden = 256;
    int do_gemm = 1, do_allreduce = 1;
    double budget = 0.4;
    long count = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--no-gemm")) {
            do_gemm = 0;
        } else if (!strcmp(a, "--no-allreduce")) {
            do_allreduce = 0;
        } else if (!val) {
            die("usage: bnmpi-bound [--batches B,B,...] [--threads N] [--time S] [--hidden H] [--count N] "
                "[--no-gemm] [--no-allreduce]");
        } else if (!strcmp(a, "--batches")) {
            n_batches = 0;
            char *copy = strdup(val), *save = NULL;
            for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                if (n_batches == MAX_BATCHES) die("--batches: too many");
                batches[n_batches] = atoi(tok);
                if (batches[n_batches] < 1) die("--batches: each must be a positive integer");
                n_batches++;
            }
            free(copy);
            i++;
        } else if (!strcmp(a, "--threads")) {
            threads = atoi(val), i++;
            if (threads < 1) die("--threads: must be >= 1");
        } else if (!strcmp(a, "--hidden")) {
            hidden = atoi(val), i++;
            if (hidden < 1) die("--hidden: must be >= 1");
        } else if (!strcmp(a, "--time")) {
            budget = atof(val), i++;
            if (!(budget > 0)) die("--time: must be > 0");
        } else if (!strcmp(a, "--count")) {
            count = atol(val), i++;
            if (count < 1) die("--count: must be >= 1");
        } else {
            die("unknown option (see the comment at the top of tools/bench/bound.c)");
        }
    }
    /* bnmpi's flat parameters with BN: W1, b1, gamma, beta, W2, b2 (src/mlp.c) */
    const long n_params = (long)hidden * IN + hidden + 2L * hidden + (long)OUT * hidden + OUT;
    if (count < 0) count = n_params + 2; /* + MLP_GRAD_TAIL: loss sum and correct count */

    openblas_set_num_threads(threads);
    if (rank == 0) {
        printf("# core %s\n", openblas_get_corename());
        printf("# params %ld allreduce_floats %ld\n", n_params, count);
        printf("kind,np,threads,batch,op,count,median_s,min_s,reps\n");
    }
    if (do_gemm) {
        for (int b = 0; b < n_batches; b++) bench_gemm(batches[b], hidden, threads, budget);
        bench_adam((size_t)n_params, threads, budget / 2);
    }
    if (do_allreduce && nranks > 1) {
        bench_allreduce((size_t)count, threads, budget);
        bench_bncomm(hidden, threads, budget / 4);
        bench_update((size_t)n_params, threads, budget);
    }
    fflush(stdout);
    MPI_Finalize();
    return 0;
}
