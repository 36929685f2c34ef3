/* comm.h: the only module that calls MPI.
 *
 * Typed wrappers take element counts, never byte counts. A one-rank run takes
 * the same path. Two communicators exist: the world (gradients, metrics,
 * evaluation sums) and the BN group (ranks whose batch-norm statistics are
 * merged: just this rank for `local`, every rank for `sync`). */
#ifndef BNMPI_COMM_H
#define BNMPI_COMM_H

#include <stddef.h>
#include <stdint.h>
#include "bnmpi/common.h"

typedef enum { COMM_WORLD_GROUP, COMM_BN_GROUP } comm_group;

/* MPI_Init_thread (asking for MPI_THREAD_MULTIPLE, so that the watchdog's
 * thread may call MPI_Abort), installs comm_fail as the fatal handler,
 * builds the node communicator.
 * Test hook: BNMPI_TEST_NODE_SIZE=k makes "nodes" of k consecutive ranks, so
 * one machine can test what spans nodes. */
void comm_init(int *argc, char ***argv);
int comm_rank(void);
int comm_size(void);
int comm_node_size(void);   /* ranks sharing this node */
int comm_node_rank(void);
/* Node-shared memory (MPI-3 shared window): collective over the node's
 * ranks; the node's rank 0 provides `bytes`, every rank gets the same memory.
 * Freed at comm_exit. */
void *comm_node_shared_alloc(size_t bytes);
void comm_node_barrier(void);
/* Node-shared memory with one slot of `floats` per node rank (each rank
 * provides its own): returns this rank's slot; slots[q] gets node rank q's
 * (comm_node_size() pointers). Collective over the node. Freed at comm_exit. */
float *comm_node_shared_slots(size_t floats, float **slots);
/* Every store to node-shared memory that a node rank made before the call is
 * visible to every node rank after it (MPI_Win_sync, barrier, MPI_Win_sync).
 * Time goes to the timer (none when it is negative). */
void comm_node_fence(int timer);
/* 1 when every node runs the same number of ranks. Collective. */
int comm_nodes_uniform(void);
/* In-place sum over the ranks that share this rank's node rank, one per node
 * (the cross-node step of a per-node reduction). */
void comm_cross_sum_f32(float *buf, size_t n, int timer);
/* Broadcast from world rank 0 into node-shared memory: among the nodes' rank
 * 0s, then a node fence. Collective. */
void comm_bcast_node_shared_f32(float *buf, size_t n);
void comm_node_bcast_chars(char *buf, size_t n);
/* comm_share within the node: its rank 0's status and message. */
int comm_node_share(int status, bn_err *e);
/* Ranks per BN group; 1 = every rank alone (local), comm_size() = all (sync).
 * Must divide comm_size(). Groups are consecutive ranks. Collective. */
int comm_set_bn_group(int group_size, bn_err *e);
int comm_bn_group_size(void);

/* In-place sums over a group. Time goes to the named timer. */
void comm_allreduce_sum_f32(float *buf, size_t n, comm_group g, int timer);
void comm_allreduce_sum_f64(double *buf, size_t n, comm_group g, int timer);
double comm_max_f64(double x);   /* over the world */

/* Nonblocking in-place sums over the world, to overlap the gradient sum with
 * backward: start up to COMM_MAX_PENDING sums on disjoint slices, call
 * comm_isum_progress between compute blocks (Open MPI moves a nonblocking
 * collective on only inside MPI calls), and comm_isum_wait before reading any
 * of them. Time inside these calls goes to the timer. */
#define COMM_MAX_PENDING 64
void comm_isum_start_f32(float *buf, size_t n, int timer);
void comm_isum_progress(int timer);
void comm_isum_wait(int timer);
void comm_bcast_f32(float *buf, size_t n, int root);
void comm_bcast_chars(char *buf, size_t n, int root);
void comm_bcast_f64(double *buf, size_t n, int root);
void comm_bcast_i64(int64_t *buf, size_t n, int root);
/* recv (rank 0 only, n * comm_size() elements) gets every rank's send (n) in rank order. */
void comm_gather_f32(const float *send, size_t n, float *recv);

/* Merges per-channel moments over group g (the BN group, or every rank), in place.
 * stats: [count, mean[0..c), m2[0..c)] (1 + 2c doubles), where m2 is the sum
 * of squared deviations from mean. Chan et al.'s pairwise merge, so no
 * E[x^2]-E[x]^2 cancellation; symmetric in its operands, so every rank of the
 * group gets the same bits. One collective per call. Used for --bn-eval
 * recompute's population statistics, once per evaluation; sync BN's per-step
 * forward sends plain sums instead (batchnorm.c), as Open MPI runs a user op
 * 3x slower than MPI_SUM. */
void comm_merge_moments(double *stats, int c, comm_group g);

/* Collective agreement on an error found on some ranks only: every rank passes
 * its status; if any failed, all return BN_ERR and e holds the message of the
 * lowest failing rank (prefixed by "rank N: " when the world has > 1 rank and
 * only some ranks failed). */
int comm_agree(int status, bn_err *e);

/* For work only rank 0 does (file I/O): every rank returns rank 0's status,
 * and e holds its message, unprefixed. Collective. */
int comm_share(int status, bn_err *e);

/* What this rank waits in, e.g. "MPI_Allreduce (gradient sum)", or that it
 * is in no collective. Safe to call from another thread (the watchdog). */
void comm_waiting_text(char *out, size_t n);
/* 1 once comm_exit has begun (the job is ending by itself). */
int comm_exiting(void);
/* 1 when MPI provided MPI_THREAD_MULTIPLE. */
int comm_threads_multiple(void);

/* Prints "bnmpi: MSG" on stderr of the calling rank, then MPI_Abort(1): ends
 * every rank within seconds. For errors the other ranks cannot know about. */
_Noreturn void comm_fail(const char *msg);
/* Rank 0 prints "bnmpi: MSG" (when msg non-NULL), all ranks finalize and exit
 * with code. Collective: every rank must call it. */
_Noreturn void comm_exit(int code, const char *msg);

/* "Open MPI v4.1.4, ..." first line of MPI_Get_library_version. */
void comm_library_version(char *out, size_t n);
void comm_processor_name(char *out, size_t n);

#endif
