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
 * Accuracies are fractions in [0, 1]; losses are mean cross-entropy (nats).
 * The file is flushed after every epoch. */
#ifndef BNMPI_METRICS_H
#define BNMPI_METRICS_H

#include <stdint.h>

#include "bnmpi/common.h"
#include "bnmpi/dataset.h"
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
    int64_t file;   /* hid_t; HDF5 stays inside metrics.c */
    char path[BN_PATH];
} metrics_file;

/* The default path: runs/<dataset>-bn_<mode>-h<hidden>-<opt>-gb<G>-np<P>-seed<S>-<UTC time>.h5,
 * with -2, -3, ... appended if that exists. Creates runs/ if missing. */
int metrics_default_path(const bn_config *c, char *out, size_t n, bn_err *e);
/* Creates the file; refuses an existing one unless force. Errors name the path
 * and why (missing directory, not writable, exists). */
int metrics_create(metrics_file *m, const char *path, int force, bn_err *e);
/* /config: the options plus the run's facts. */
int metrics_write_config(metrics_file *m, const bn_config *c, const run_facts *f, bn_err *e);
/* Reopens an existing file to continue a resumed run: keeps the first
 * keep_epochs rows of /epochs and keep_steps of /steps (rows a run wrote
 * after the checkpoint it resumes from are dropped) and removes /summary. */
int metrics_reopen(metrics_file *m, const char *path, int keep_epochs, long long keep_steps, bn_err *e);
/* Appends step rows, or one epoch row; then flushes. */
int metrics_append_steps(metrics_file *m, const step_row *steps, int n_steps, bn_err *e);
int metrics_append_epoch(metrics_file *m, const epoch_row *row, bn_err *e);
int metrics_write_summary(metrics_file *m, double test_loss, double test_acc, double total_time_s,
                          const char *params_sha256, bn_err *e);
void metrics_close(metrics_file *m);

#endif
