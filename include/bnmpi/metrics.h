/* metrics.h: the HDF5 metrics file, written by rank 0 only.
 *
 * Layout (format "bnmpi-metrics", format_version 1):
 *   /            attrs format, format_version
 *   /config      one attribute per option as resolved (dashes become
 *                underscores: data is the folder used, threads the count
 *                used, metrics this file's path) plus n_ranks, local_batch,
 *                global_batch, bn_batch, bnmpi_version, mpi_library, hostname, start_time,
 *                slurm_job_id (when set), <file>_sha256 for the four IDX files
 *   /epochs      table: epoch, train_loss, train_acc, val_loss, val_acc, lr,
 *                time_s, comm_s, samples_per_s  (one row per epoch)
 *   /steps       table: step, epoch, loss, acc, lr  (one row per step, for
 *                the whole global batch)
 *   /summary     attrs test_loss, test_acc, total_time_s, params_sha256 (of the
 *                final parameter buffer, identical on every rank by check)
 *   /diagnostics (with --diagnostics N; attr every = N)
 *     /diagnostics/layers  table: step, epoch, layer, act_mean, act_var,
 *                act_mean_drift, act_var_drift, bn_noise, grad_norm,
 *                weight_norm, update_norm (one row per dense layer per log;
 *                see diagnostics.h)
 *     /diagnostics/comm    table: step, epoch, interval_s, grad_comm_s, bn_comm_s
 * Accuracies are fractions in [0, 1]; losses are mean cross-entropy (nats).
 *
 * Rank 0 keeps the rows in memory and rewrites the whole file after every
 * epoch the way checkpoints are written (a temporary file, fsync, rename), so
 * a run killed at any moment leaves a complete file with every finished epoch.
 * The file is small: 40 bytes a step. */
#ifndef BNMPI_METRICS_H
#define BNMPI_METRICS_H

#include <stdint.h>

#include "bnmpi/common.h"
#include "bnmpi/dataset.h"
#include "bnmpi/diagnostics.h"
#include "bnmpi/h5config.h"
#include "bnmpi/options.h"

#define METRICS_FORMAT "bnmpi-metrics"
#define METRICS_FORMAT_VERSION 1

typedef struct {
    int32_t epoch;
    double train_loss, train_acc, val_loss, val_acc, lr, time_s, comm_s, samples_per_s;
} epoch_row;

typedef struct {
    int64_t step;   /* global step, counted from 1 over the whole run */
    int32_t epoch;
    double loss, acc, lr;
} step_row;

typedef struct {
    char path[BN_PATH];
    bn_config cfg;
    run_facts facts;
    char start_time[32];   /* the first run's, kept across resumes */
    epoch_row *epochs;
    step_row *steps;
    size_t n_epochs, n_steps, cap_epochs, cap_steps;
    diag_layer_row *diag_layers;
    diag_comm_row *diag_comm;
    size_t n_diag_layers, n_diag_comm, cap_diag_layers, cap_diag_comm;
    int has_summary;
    double test_loss, test_acc, total_time_s;
    char params_sha256[65];
} metrics_file;

/* The default path: runs/<dataset>-bn_<mode>-h<hidden>-<opt>-gb<G>-np<P>-seed<S>-<UTC time>.h5,
 * with -2, -3, ... appended if that exists. Creates runs/ if missing. */
int metrics_default_path(const bn_config *c, char *out, size_t n, bn_err *e);
/* Whether path can be created: its directory exists and is writable, and it
 * is not a directory, nor an existing file unless force. */
int metrics_check_path(const char *path, int force, bn_err *e);
/* Checks that path can be created (its directory exists and is writable; an
 * existing file only with force) and writes the file with /config and empty
 * tables. Errors name the path and why. c and f are copied. */
int metrics_create(metrics_file *m, const char *path, int force, const bn_config *c, const run_facts *f, bn_err *e);
/* Where a checkpoint stands, to continue its run's metrics file. */
typedef struct {
    const char *checkpoint;    /* the --resume path, for messages */
    const bn_config *cfg;      /* its configuration as saved */
    const saved_facts *facts;  /* its run id and data digests */
    int epochs_done;           /* epochs it completed */
    long long steps_done;      /* the steps of those epochs */
    const double *epoch_rows;  /* (n_epoch_rows, 5) its steps of the epoch in progress: step, epoch, loss, acc, lr */
    int n_epoch_rows;
} metrics_resume_point;

/* Continues a resumed run's file. First checks that it is that run's file:
 * the same run id, computation and data as the checkpoint, every row the
 * checkpoint needs, and the checkpoint's own rows where the file has them;
 * otherwise fails naming both files, and the file is not touched. Then keeps
 * the first epochs_done rows of /epochs and steps_done of /steps (rows
 * written after the checkpoint are dropped), drops /summary, keeps the first
 * start_time, and rewrites the file. */
int metrics_reopen(metrics_file *m, const char *path, const metrics_resume_point *r, const bn_config *c,
                   const run_facts *f, bn_err *e);
/* Add rows in memory; metrics_flush writes the file. */
void metrics_add_steps(metrics_file *m, const step_row *steps, int n_steps);
void metrics_add_epoch(metrics_file *m, const epoch_row *row);
void metrics_add_diagnostics(metrics_file *m, const diag_layer_row *rows, int n_rows, const diag_comm_row *comm);
void metrics_set_summary(metrics_file *m, double test_loss, double test_acc, double total_time_s,
                         const char *params_sha256);
int metrics_flush(metrics_file *m, bn_err *e);
void metrics_close(metrics_file *m);

#endif
