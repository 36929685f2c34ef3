/* comm.c: MPI lives here and nowhere else. */
#include "bnmpi/comm.h"

#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int world_rank, world_size;
static int thread_level;             /* what MPI_Init_thread provided */
static volatile int exiting;         /* comm_exit has begun: the watchdog stands down */
static MPI_Comm node_comm = MPI_COMM_NULL;
static MPI_Comm cross_comm = MPI_COMM_NULL; /* the ranks with this rank's node rank, one per node */
static MPI_Comm bn_comm = MPI_COMM_NULL;
static int bn_group_size = 1;
static MPI_Op moments_op = MPI_OP_NULL;
static MPI_Datatype moments_type = MPI_DATATYPE_NULL;
static int moments_channels = -1;
enum { MAX_WINDOWS = 16 };
static MPI_Win windows[MAX_WINDOWS];
static int n_windows;

/* The collective this rank is in, for the watchdog: set on entry, cleared on
 * return. Written by the main thread only; read by the watchdog thread. */
static const char *volatile waiting_op;
static volatile int waiting_timer = -1;
static const char *const timer_names[T_COUNT] = {"gradient sum", "BN statistics", "evaluation", "checkpoint or data I/O"};

static void enter(const char *op, int timer) {
    waiting_timer = timer;
    waiting_op = op;
}
static void leave(void) { waiting_op = NULL; }

int comm_exiting(void) { return exiting; }

int comm_threads_multiple(void) { return thread_level == MPI_THREAD_MULTIPLE; }

void comm_waiting_text(char *out, size_t n) {
    const char *op = waiting_op;
    const int timer = waiting_timer;
    if (!op) snprintf(out, n, "computing (in no collective)");
    else if (timer >= 0 && timer < T_COUNT) snprintf(out, n, "%s (%s)", op, timer_names[timer]);
    else snprintf(out, n, "%s", op);
}

_Noreturn void comm_fail(const char *msg) {
    fprintf(stderr, "bnmpi: %s\n", msg);
    fflush(stderr);
    fflush(stdout);
    MPI_Abort(MPI_COMM_WORLD, 1);
    exit(1); /* not reached */
}

static void fatal_handler(const char *msg) {
    char line[BN_ERRLEN + 32];
    if (world_size > 1) {
        snprintf(line, sizeof line, "rank %d: %s", world_rank, msg);
        comm_fail(line);
    }
    comm_fail(msg);
}

void comm_init(int *argc, char ***argv) {
    /* the watchdog thread may call MPI_Abort while the main thread waits in a collective */
    MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &thread_level);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    const char *test_node = getenv("BNMPI_TEST_NODE_SIZE");
    if (test_node && atoi(test_node) > 0)
        MPI_Comm_split(MPI_COMM_WORLD, world_rank / atoi(test_node), world_rank, &node_comm);
    else
        MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world_rank, MPI_INFO_NULL, &node_comm);
    int node_rank;
    MPI_Comm_rank(node_comm, &node_rank);
    MPI_Comm_split(MPI_COMM_WORLD, node_rank, world_rank, &cross_comm);
    bn_set_fatal(fatal_handler);
    bn_err e;
    comm_set_bn_group(1, &e);
}

int comm_rank(void) { return world_rank; }
int comm_size(void) { return world_size; }

int comm_node_size(void) {
    int n;
    MPI_Comm_size(node_comm, &n);
    return n;
}

static int count_or_die(size_t n) {
    if (n > INT_MAX) bn_fatal("collective of %zu elements exceeds MPI's int count", n);
    return (int)n;
}

int comm_node_rank(void) {
    int r;
    MPI_Comm_rank(node_comm, &r);
    return r;
}

/* A node-shared window in which this rank provides `bytes` (total: what every
 * node rank provides), kept until comm_exit. */
static MPI_Win shared_window(size_t bytes, size_t total) {
    if (n_windows == MAX_WINDOWS) bn_fatal("too many shared windows");
    MPI_Win *w = &windows[n_windows++];
    void *mine;
    if (MPI_Win_allocate_shared((MPI_Aint)bytes, 1, MPI_INFO_NULL, node_comm, &mine, w) != MPI_SUCCESS)
        bn_fatal("cannot allocate %zu bytes of node-shared memory", total);
    MPI_Win_lock_all(MPI_MODE_NOCHECK, *w); /* a passive epoch for the whole run: MPI_Win_sync needs one */
    return *w;
}

/* The start of node rank q's part of a shared window. */
static void *shared_part(MPI_Win w, int q) {
    MPI_Aint size;
    int disp;
    void *base;
    MPI_Win_shared_query(w, q, &size, &disp, &base);
    return base;
}

void *comm_node_shared_alloc(size_t bytes) {
    return shared_part(shared_window(comm_node_rank() == 0 ? bytes : 0, bytes), 0);
}

float *comm_node_shared_slots(size_t floats, float **slots) {
    const size_t bytes = floats * sizeof(float);
    MPI_Win w = shared_window(bytes, bytes * (size_t)comm_node_size());
    for (int q = 0; q < comm_node_size(); q++) slots[q] = shared_part(w, q);
    return slots[comm_node_rank()];
}

void comm_node_fence(int timer) {
    enter("MPI_Barrier of the node", timer);
    double t0 = bn_now();
    for (int i = 0; i < n_windows; i++) MPI_Win_sync(windows[i]);
    MPI_Barrier(node_comm);
    for (int i = 0; i < n_windows; i++) MPI_Win_sync(windows[i]);
    if (timer >= 0) bn_timers[timer] += bn_now() - t0;
    leave();
}

int comm_nodes_uniform(void) {
    int n = comm_node_size(), lo, hi;
    MPI_Allreduce(&n, &lo, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(&n, &hi, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return lo == hi;
}

void comm_cross_sum_f32(float *buf, size_t n, int timer) {
    int size;
    MPI_Comm_size(cross_comm, &size);
    if (size == 1) return;
    enter("MPI_Allreduce across nodes", timer);
    double t0 = bn_now();
    MPI_Allreduce(MPI_IN_PLACE, buf, count_or_die(n), MPI_FLOAT, MPI_SUM, cross_comm);
    bn_timers[timer] += bn_now() - t0;
    leave();
}

void comm_bcast_node_shared_f32(float *buf, size_t n) {
    if (comm_node_rank() == 0) MPI_Bcast(buf, count_or_die(n), MPI_FLOAT, 0, cross_comm);
    comm_node_fence(T_IO);
}

void comm_node_barrier(void) { MPI_Barrier(node_comm); }

void comm_node_bcast_chars(char *buf, size_t n) { MPI_Bcast(buf, count_or_die(n), MPI_CHAR, 0, node_comm); }

/* Rank 0 of comm's status, and its message on failure, on every rank. */
static int share_on(MPI_Comm comm, int status, bn_err *e) {
    int st = status;
    enter("MPI_Bcast of a status", -1);
    MPI_Bcast(&st, 1, MPI_INT, 0, comm);
    if (st != BN_OK) MPI_Bcast(e->msg, BN_ERRLEN, MPI_CHAR, 0, comm);
    leave();
    if (st == BN_OK) return BN_OK;
    e->msg[BN_ERRLEN - 1] = '\0';
    return BN_ERR;
}

int comm_node_share(int status, bn_err *e) { return share_on(node_comm, status, e); }

int comm_set_bn_group(int group_size, bn_err *e) {
    if (group_size < 1 || world_size % group_size != 0)
        return bn_fail(e, "BN group of %d ranks does not divide %d ranks", group_size, world_size);
    if (bn_comm != MPI_COMM_NULL) MPI_Comm_free(&bn_comm);
    MPI_Comm_split(MPI_COMM_WORLD, world_rank / group_size, world_rank, &bn_comm);
    bn_group_size = group_size;
    return BN_OK;
}

int comm_bn_group_size(void) { return bn_group_size; }

static MPI_Comm group_comm(comm_group g) { return g == COMM_BN_GROUP ? bn_comm : MPI_COMM_WORLD; }


void comm_allreduce_sum_f32(float *buf, size_t n, comm_group g, int timer) {
    enter("MPI_Allreduce", timer);
    double t0 = bn_now();
    MPI_Allreduce(MPI_IN_PLACE, buf, count_or_die(n), MPI_FLOAT, MPI_SUM, group_comm(g));
    bn_timers[timer] += bn_now() - t0;
    leave();
}

void comm_allreduce_sum_f64(double *buf, size_t n, comm_group g, int timer) {
    enter("MPI_Allreduce", timer);
    double t0 = bn_now();
    MPI_Allreduce(MPI_IN_PLACE, buf, count_or_die(n), MPI_DOUBLE, MPI_SUM, group_comm(g));
    bn_timers[timer] += bn_now() - t0;
    leave();
}

static MPI_Request pending[COMM_MAX_PENDING];
static int n_pending;

void comm_isum_start_f32(float *buf, size_t n, int timer) {
    double t0 = bn_now();
    if (n_pending == COMM_MAX_PENDING) comm_fail("internal: too many nonblocking sums in flight");
    MPI_Iallreduce(MPI_IN_PLACE, buf, count_or_die(n), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &pending[n_pending++]);
    bn_timers[timer] += bn_now() - t0;
}

void comm_isum_progress(int timer) {
    double t0 = bn_now();
    int done;
    MPI_Testall(n_pending, pending, &done, MPI_STATUSES_IGNORE);
    bn_timers[timer] += bn_now() - t0;
}

void comm_isum_wait(int timer) {
    enter("MPI_Waitall of the nonblocking sums", timer);
    double t0 = bn_now();
    MPI_Waitall(n_pending, pending, MPI_STATUSES_IGNORE);
    n_pending = 0;
    bn_timers[timer] += bn_now() - t0;
    leave();
}

double comm_max_f64(double x) {
    MPI_Allreduce(MPI_IN_PLACE, &x, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return x;
}

void comm_bcast_f32(float *buf, size_t n, int root) {
    enter("MPI_Bcast", -1);
    MPI_Bcast(buf, count_or_die(n), MPI_FLOAT, root, MPI_COMM_WORLD);
    leave();
}

void comm_bcast_chars(char *buf, size_t n, int root) {
    enter("MPI_Bcast", -1);
    MPI_Bcast(buf, count_or_die(n), MPI_CHAR, root, MPI_COMM_WORLD);
    leave();
}

void comm_bcast_f64(double *buf, size_t n, int root) {
    enter("MPI_Bcast", -1);
    MPI_Bcast(buf, count_or_die(n), MPI_DOUBLE, root, MPI_COMM_WORLD);
    leave();
}

void comm_bcast_i64(int64_t *buf, size_t n, int root) {
    enter("MPI_Bcast", -1);
    MPI_Bcast(buf, count_or_die(n), MPI_INT64_T, root, MPI_COMM_WORLD);
    leave();
}

void comm_gather_f32(const float *send, size_t n, float *recv) {
    enter("MPI_Gather", T_IO);
    MPI_Gather(send, count_or_die(n), MPI_FLOAT, recv, count_or_die(n), MPI_FLOAT, 0, MPI_COMM_WORLD);
    leave();
}

/* MPI user op: inout <- merge(in, inout) for `len` records of 1 + 2c doubles.
 * mean = (na*ma + nb*mb)/n and m2 = m2a + m2b + d^2*na*nb/n with d = mb - ma:
 * every term is symmetric in a and b, so the result does not depend on the
 * order the MPI implementation combines ranks in. */
static void merge_moments_op(void *in, void *inout, int *len, MPI_Datatype *type) {
    (void)type;
    const int c = moments_channels;
    const double *a = in;
    double *b = inout;
    for (int r = 0; r < *len; r++, a += 1 + 2 * c, b += 1 + 2 * c) {
        const double na = a[0], nb = b[0], n = na + nb;
        if (na == 0) continue;
        if (nb == 0) {
            memcpy(b, a, sizeof(double) * (size_t)(1 + 2 * c));
            continue;
        }
        const double w = na * nb / n;
        for (int j = 0; j < c; j++) {
            const double d = b[1 + j] - a[1 + j];
            b[1 + j] = (na * a[1 + j] + nb * b[1 + j]) / n;
            b[1 + c + j] = (a[1 + c + j] + b[1 + c + j]) + d * d * w;
        }
        b[0] = n;
    }
}

void comm_merge_moments(double *stats, int c, comm_group g) {
    if ((g == COMM_BN_GROUP ? bn_group_size : world_size) == 1) return;
    double t0 = bn_now();
    if (c != moments_channels) {
        if (moments_type != MPI_DATATYPE_NULL) MPI_Type_free(&moments_type);
        if (moments_op == MPI_OP_NULL) MPI_Op_create(merge_moments_op, 1, &moments_op);
        MPI_Type_contiguous(1 + 2 * c, MPI_DOUBLE, &moments_type);
        MPI_Type_commit(&moments_type);
        moments_channels = c;
    }
    MPI_Allreduce(MPI_IN_PLACE, stats, 1, moments_type, moments_op, group_comm(g));
    bn_timers[T_BN_COMM] += bn_now() - t0;
}

int comm_agree(int status, bn_err *e) {
    int first_bad = status == BN_OK ? world_size : world_rank;
    enter("MPI_Allreduce of a status", -1);
    MPI_Allreduce(MPI_IN_PLACE, &first_bad, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    leave();
    if (first_bad == world_size) return BN_OK;
    int n_bad = status == BN_OK ? 0 : 1;
    MPI_Allreduce(MPI_IN_PLACE, &n_bad, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    char msg[BN_ERRLEN];
    if (world_rank == first_bad) memcpy(msg, e->msg, sizeof msg);
    MPI_Bcast(msg, BN_ERRLEN, MPI_CHAR, first_bad, MPI_COMM_WORLD);
    msg[BN_ERRLEN - 1] = '\0';
    if (n_bad < world_size)
        snprintf(e->msg, sizeof e->msg, "rank %d: %s", first_bad, msg);
    else
        memcpy(e->msg, msg, sizeof msg);
    return BN_ERR;
}

int comm_share(int status, bn_err *e) { return share_on(MPI_COMM_WORLD, status, e); }

_Noreturn void comm_exit(int code, const char *msg) {
    fflush(stdout);
    exiting = 1;
    if (msg && world_rank == 0) fprintf(stderr, "bnmpi: %s\n", msg);
    fflush(stderr);
    if (bn_comm != MPI_COMM_NULL) MPI_Comm_free(&bn_comm);
    if (moments_type != MPI_DATATYPE_NULL) MPI_Type_free(&moments_type);
    if (moments_op != MPI_OP_NULL) MPI_Op_free(&moments_op);
    for (int i = 0; i < n_windows; i++) {
        MPI_Win_unlock_all(windows[i]);
        MPI_Win_free(&windows[i]);
    }
    MPI_Comm_free(&cross_comm);
    MPI_Comm_free(&node_comm);
    MPI_Finalize();
    exit(code);
}

void comm_library_version(char *out, size_t n) {
    char v[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    MPI_Get_library_version(v, &len);
    v[len < MPI_MAX_LIBRARY_VERSION_STRING ? len : MPI_MAX_LIBRARY_VERSION_STRING - 1] = '\0';
    char *nl = strpbrk(v, ",\n");
    if (nl) *nl = '\0';
    snprintf(out, n, "%s", v);
}

void comm_processor_name(char *out, size_t n) {
    char name[MPI_MAX_PROCESSOR_NAME];
    int len = 0;
    MPI_Get_processor_name(name, &len);
    name[len] = '\0';
    snprintf(out, n, "%s", name);
}
