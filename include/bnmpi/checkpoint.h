/* checkpoint.h: save and restore everything that changes during training.
 *
 * The caller lists the state once (state_list); saving and loading walk that
 * same list, so nothing is saved that is not restored or vice versa.
 * Layout (format "bnmpi-checkpoint", format_version 1):
 *   /           attrs format, format_version
 *   /config     as in the metrics file (options as resolved, run facts)
 *   /state/...  one dataset per entry, named by the entry ("params/dense0.W",
 *               "optimizer/m", "position", ...); an entry that differs
 *               between ranks (BN running statistics in local mode) gets a
 *               leading dimension of n_ranks.
 * Rank 0 does the file I/O; saving and loading are collective. */
#ifndef BNMPI_CHECKPOINT_H
#define BNMPI_CHECKPOINT_H

#include "bnmpi/common.h"
#include "bnmpi/h5config.h"
#include "bnmpi/options.h"

#define CHECKPOINT_FORMAT "bnmpi-checkpoint"
#define CHECKPOINT_FORMAT_VERSION 1
#define STATE_MAX 64

typedef enum { ST_F32, ST_F64, ST_I64 } state_type;
/* Where an entry lives: the same on every rank, different per rank (saved
 * with a leading n_ranks dimension), or once per node in node-shared memory
 * (loaded by the node's rank 0 only). */
typedef enum { ST_SAME, ST_PER_RANK, ST_NODE_SHARED } state_place;

typedef struct {
    char name[48];
    state_type type;
    void *data;
    int rows, cols;  /* this rank's shape */
    state_place place; /* ST_PER_RANK and ST_NODE_SHARED: F32 only */
} state_entry;

typedef struct {
    state_entry e[STATE_MAX];
    int n;
} state_list;

void state_add(state_list *s, const char *name, state_type type, void *data, int rows, int cols, state_place place);

/* Writes path atomically: a temporary file beside it (path + ".tmp"), fsync,
 * rename over path, fsync of the directory. A kill at any moment leaves path
 * either the previous complete checkpoint or the new one. */
int checkpoint_save(const char *path, const state_list *s, const bn_config *c, const run_facts *f, bn_err *e);

/* Reads the configuration saved in path and its facts (dataset digests, run
 * id, rank count), on every rank. Checks that path is a bnmpi checkpoint and
 * names what it is when it is not (missing, not HDF5, truncated, a metrics
 * file, another format). Collective. */
int checkpoint_read_config(const char *path, bn_config *saved, saved_facts *f, bn_err *e);

/* Fills every entry from path. Shapes must match; a per-rank entry saved by
 * saved_ranks ranks is read at row (rank mod saved_ranks). */
int checkpoint_load(const char *path, const state_list *s, int saved_ranks, bn_err *e);

#endif
