/* metrics.c: the HDF5 metrics file. Rank 0 holds the rows and rewrites the
 * file atomically at every flush (see metrics.h). */
#define _GNU_SOURCE
#include "bnmpi/metrics.h"

#include "bnmpi/h5image.h"

#include <errno.h>
#include <hdf5.h>
#include <hdf5_hl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define EPOCH_FIELDS 9
static const char *epoch_names[EPOCH_FIELDS] = {"epoch", "train_loss", "train_acc", "val_loss", "val_acc",
                                                "lr", "time_s", "comm_s", "samples_per_s"};
static const size_t epoch_offsets[EPOCH_FIELDS] = {
    HOFFSET(epoch_row, epoch),   HOFFSET(epoch_row, train_loss), HOFFSET(epoch_row, train_acc),
    HOFFSET(epoch_row, val_loss), HOFFSET(epoch_row, val_acc),   HOFFSET(epoch_row, lr),
    HOFFSET(epoch_row, time_s),  HOFFSET(epoch_row, comm_s),     HOFFSET(epoch_row, samples_per_s)};
static const size_t epoch_sizes[EPOCH_FIELDS] = {sizeof(int32_t), 8, 8, 8, 8, 8, 8, 8, 8};

#define STEP_FIELDS 5
static const char *step_names[STEP_FIELDS] = {"step", "epoch", "loss", "acc", "lr"};
static const size_t step_offsets[STEP_FIELDS] = {HOFFSET(step_row, step), HOFFSET(step_row, epoch),
                                                 HOFFSET(step_row, loss), HOFFSET(step_row, acc),
                                                 HOFFSET(step_row, lr)};
static const size_t step_sizes[STEP_FIELDS] = {sizeof(int64_t), sizeof(int32_t), 8, 8, 8};

#define DIAG_FIELDS 11
static const char *diag_names[DIAG_FIELDS] = {"step", "epoch", "layer", "act_mean", "act_var", "act_mean_drift",
                                              "act_var_drift", "bn_noise", "grad_norm", "weight_norm",
                                              "update_norm"};
static const size_t diag_offsets[DIAG_FIELDS] = {
    HOFFSET(diag_layer_row, step),        HOFFSET(diag_layer_row, epoch),        HOFFSET(diag_layer_row, layer),
    HOFFSET(diag_layer_row, act_mean),    HOFFSET(diag_layer_row, act_var),      HOFFSET(diag_layer_row, act_mean_drift),
    HOFFSET(diag_layer_row, act_var_drift), HOFFSET(diag_layer_row, bn_noise),   HOFFSET(diag_layer_row, grad_norm),
    HOFFSET(diag_layer_row, weight_norm), HOFFSET(diag_layer_row, update_norm)};
static const size_t diag_sizes[DIAG_FIELDS] = {sizeof(int64_t), sizeof(int32_t), sizeof(int32_t), 8, 8, 8, 8, 8, 8, 8, 8};

#define COMM_FIELDS 5
static const char *comm_names[COMM_FIELDS] = {"step", "epoch", "interval_s", "grad_comm_s", "bn_comm_s"};
static const size_t comm_offsets[COMM_FIELDS] = {HOFFSET(diag_comm_row, step), HOFFSET(diag_comm_row, epoch),
                                                 HOFFSET(diag_comm_row, interval_s),
                                                 HOFFSET(diag_comm_row, grad_comm_s),
                                                 HOFFSET(diag_comm_row, bn_comm_s)};
static const size_t comm_sizes[COMM_FIELDS] = {sizeof(int64_t), sizeof(int32_t), 8, 8, 8};

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

int metrics_default_path(const bn_config *c, char *out, size_t n, bn_err *e) {
    if (mkdir("runs", 0777) != 0 && errno != EEXIST)
        return bn_fail(e, "cannot create directory runs/ for the metrics file: %s (pass --metrics PATH)",
                       strerror(errno));
    char arch[300];
    arch_file_tag(&c->net, c->arch, c->hidden, arch, sizeof arch);
    char stamp[32];
    time_t now = time(NULL);
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", gmtime(&now));
    char base[BN_PATH];
    snprintf(base, sizeof base, "runs/%s-bn_%s-%s-%s-gb%d-np%d-seed%d-%s", dataset_name(c->dataset),
             bn_mode_name(c->bn), arch, optimizer_name(c->optimizer), c->global_batch, c->n_ranks, c->seed,
             stamp);
    snprintf(out, n, "%s.h5", base);
    for (int k = 2; file_exists(out); k++) snprintf(out, n, "%s-%d.h5", base, k);
    return BN_OK;
}

static void keep(metrics_file *m, const char *path, const bn_config *c, const run_facts *f) {
    memset(m, 0, sizeof *m);
    snprintf(m->path, sizeof m->path, "%s", path);
    m->cfg = *c;
    m->facts = *f;
    snprintf(m->start_time, sizeof m->start_time, "%s", f->start_time);
    m->facts.start_time = m->start_time;
}

static void *grow(void *p, size_t *cap, size_t need, size_t size) {
    if (need <= *cap) return p;
    size_t n = BN_MAX(need, *cap * 2 + 16);
    void *q = realloc(p, n * size);
    if (!q) bn_fatal("out of memory growing the metrics rows to %zu", n);
    *cap = n;
    return q;
}

int metrics_check_path(const char *path, int force, bn_err *e) {
    char dir_buf[BN_PATH];
    snprintf(dir_buf, sizeof dir_buf, "%s", path);
    const char *dir = dirname(dir_buf);
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return bn_fail(e, "--metrics %s: directory %s does not exist", path, dir);
    if (access(dir, W_OK) != 0) return bn_fail(e, "--metrics %s: directory %s is not writable", path, dir);
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return bn_fail(e, "--metrics %s: is a directory, expected a file path", path);
    if (file_exists(path) && !force)
        return bn_fail(e, "--metrics %s: file exists; choose another path or pass --force to overwrite it", path);
    return BN_OK;
}

int metrics_create(metrics_file *m, const char *path, int force, const bn_config *c, const run_facts *f, bn_err *e) {
    keep(m, path, c, f);
    if (metrics_check_path(path, force, e) != BN_OK) return BN_ERR;
    return metrics_flush(m, e);
}

/* Reads a whole table of `size`-byte records into *rows (malloc'd). */
static int read_table(hid_t f, const char *path, const char *name, size_t size, const size_t *offsets,
                      const size_t *sizes, void **rows, size_t *n, bn_err *e) {
    hsize_t nfields = 0, nrecords = 0;
    if (H5TBget_table_info(f, name, &nfields, &nrecords) < 0)
        return bn_fail(e, "--metrics %s: no readable /%s table", path, name);
    *n = (size_t)nrecords;
    *rows = bn_calloc(*n + 1, size);
    if (nrecords && H5TBread_table(f, name, size, offsets, sizes, *rows) < 0)
        return bn_fail(e, "--metrics %s: cannot read /%s", path, name);
    return BN_OK;
}

/* Fails unless the file's /config (other, with its facts) and rows are those
 * of the run the checkpoint r continues: the same run id (when both have
 * one), the same computation and data, and every row the checkpoint needs. */
static int check_same_run(const metrics_file *m, const bn_config *other, const saved_facts *of,
                          const metrics_resume_point *r, bn_err *e) {
    char why[BN_ERRLEN] = "";
    bn_err diff;
    if (options_same_computation(other, r->cfg, &diff) != BN_OK)
        snprintf(why, sizeof why, "its /config has %.400s of the checkpoint", diff.msg);
    for (int i = 0; i < 4 && !why[0]; i++)
        if (of->sha256[i][0] && r->facts->sha256[i][0] && strcmp(of->sha256[i], r->facts->sha256[i]) != 0)
            snprintf(why, sizeof why, "its %s differs from the checkpoint's", h5config_sha_names[i]);
    if (!why[0] && of->run_id[0] && r->facts->run_id[0] && strcmp(of->run_id, r->facts->run_id) != 0)
        snprintf(why, sizeof why, "the same configuration, but its run id is %.12s, the checkpoint's %.12s",
                 of->run_id, r->facts->run_id);
    if (!why[0] && (m->n_epochs < (size_t)r->epochs_done || m->n_steps < (size_t)r->steps_done))
        snprintf(why, sizeof why, "it holds %zu epochs and %zu steps, the checkpoint needs %d and %lld",
                 m->n_epochs, m->n_steps, r->epochs_done, r->steps_done);
    for (size_t i = 0; i < (size_t)r->epochs_done && !why[0]; i++)
        if (m->epochs[i].epoch != (int32_t)(i + 1))
            snprintf(why, sizeof why, "its /epochs row %zu is epoch %d", i + 1, (int)m->epochs[i].epoch);
    for (size_t i = 0; i < (size_t)r->steps_done && !why[0]; i++)
        if (m->steps[i].step != (int64_t)(i + 1) || m->steps[i].epoch > r->epochs_done)
            snprintf(why, sizeof why, "its /steps row %zu is step %lld of epoch %d", i + 1,
                     (long long)m->steps[i].step, (int)m->steps[i].epoch);
    /* rows past the checkpoint's epochs, where the file has them, are the checkpoint's own */
    for (int i = 0; i < r->n_epoch_rows && !why[0] && (size_t)r->steps_done + (size_t)i < m->n_steps; i++) {
        const step_row *have = &m->steps[r->steps_done + i];
        const double *want = r->epoch_rows + (size_t)i * 5;
        if (have->step != (int64_t)want[0] || have->epoch != (int32_t)want[1] || have->loss != want[2] ||
            have->acc != want[3] || have->lr != want[4])
            snprintf(why, sizeof why, "its step %lld differs from the checkpoint's", (long long)want[0]);
    }
    if (!why[0]) return BN_OK;
    return bn_fail(e, "--metrics %s: not the metrics of the run in --resume %s (%s); it was left as it is; pass "
                      "--metrics with a new path to write this run's metrics there",
                   m->path, r->checkpoint, why);
}

int metrics_reopen(metrics_file *m, const char *path, const metrics_resume_point *r, const bn_config *c,
                   const run_facts *f, bn_err *e) {
    keep(m, path, c, f);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (H5Fis_hdf5(path) <= 0) return bn_fail(e, "--metrics %s: not an HDF5 file; cannot continue it", path);
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) return bn_fail(e, "--metrics %s: cannot open it", path);
    char format[64] = "";
    h5_attr_read_string(file, "format", format, sizeof format);
    int status = strcmp(format, METRICS_FORMAT) == 0
                     ? BN_OK
                     : bn_fail(e, "--metrics %s: not a bnmpi metrics file (format \"%s\")", path, format);
    bn_config other;
    saved_facts of;
    if (status == BN_OK) status = h5config_read(file, "config", path, &other, &of, e);
    void *epochs = NULL, *steps = NULL;
    if (status == BN_OK)
        status = read_table(file, path, "epochs", sizeof(epoch_row), epoch_offsets, epoch_sizes, &epochs,
                            &m->n_epochs, e);
    if (status == BN_OK)
        status = read_table(file, path, "steps", sizeof(step_row), step_offsets, step_sizes, &steps, &m->n_steps, e);
    void *dl = NULL, *dc = NULL;
    if (status == BN_OK && H5Lexists(file, "diagnostics", H5P_DEFAULT) > 0) {
        status = read_table(file, path, "diagnostics/layers", sizeof(diag_layer_row), diag_offsets, diag_sizes, &dl,
                            &m->n_diag_layers, e);
        if (status == BN_OK)
            status = read_table(file, path, "diagnostics/comm", sizeof(diag_comm_row), comm_offsets, comm_sizes,
                                &dc, &m->n_diag_comm, e);
    }
    m->diag_layers = dl;
    m->diag_comm = dc;
    m->cap_diag_layers = m->n_diag_layers + 1;
    m->cap_diag_comm = m->n_diag_comm + 1;
    if (status == BN_OK) {
        hid_t g = H5Gopen2(file, "config", H5P_DEFAULT);
        if (g >= 0) {
            h5_attr_read_string(g, "start_time", m->start_time, sizeof m->start_time);
            H5Gclose(g);
        }
    }
    H5Fclose(file);
    m->epochs = epochs;
    m->steps = steps;
    m->cap_epochs = m->n_epochs + 1;
    m->cap_steps = m->n_steps + 1;
    if (status != BN_OK || check_same_run(m, &other, &of, r, e) != BN_OK) return BN_ERR;
    m->n_epochs = (size_t)r->epochs_done;
    m->n_steps = (size_t)r->steps_done;
    while (m->n_diag_layers && m->diag_layers[m->n_diag_layers - 1].step > r->steps_done) m->n_diag_layers--;
    while (m->n_diag_comm && m->diag_comm[m->n_diag_comm - 1].step > r->steps_done) m->n_diag_comm--;
    return metrics_flush(m, e);
}

/* Copies n records field by field, padding zeroed: the tables are written
 * with their in-memory layout, so a padding byte would reach the file. */
static void copy_rows(void *dst, const void *src, size_t n, size_t size, int nfields, const size_t *offsets,
                      const size_t *sizes) {
    memset(dst, 0, n * size);
    for (size_t r = 0; r < n; r++)
        for (int i = 0; i < nfields; i++)
            memcpy((char *)dst + r * size + offsets[i], (const char *)src + r * size + offsets[i], sizes[i]);
}

void metrics_add_steps(metrics_file *m, const step_row *steps, int n_steps) {
    m->steps = grow(m->steps, &m->cap_steps, m->n_steps + (size_t)n_steps, sizeof(step_row));
    copy_rows(m->steps + m->n_steps, steps, (size_t)n_steps, sizeof(step_row), STEP_FIELDS, step_offsets, step_sizes);
    m->n_steps += (size_t)n_steps;
}

void metrics_add_epoch(metrics_file *m, const epoch_row *row) {
    m->epochs = grow(m->epochs, &m->cap_epochs, m->n_epochs + 1, sizeof(epoch_row));
    copy_rows(m->epochs + m->n_epochs++, row, 1, sizeof(epoch_row), EPOCH_FIELDS, epoch_offsets, epoch_sizes);
}

void metrics_add_diagnostics(metrics_file *m, const diag_layer_row *rows, int n_rows, const diag_comm_row *comm) {
    m->diag_layers = grow(m->diag_layers, &m->cap_diag_layers, m->n_diag_layers + (size_t)n_rows,
                          sizeof(diag_layer_row));
    copy_rows(m->diag_layers + m->n_diag_layers, rows, (size_t)n_rows, sizeof(diag_layer_row), DIAG_FIELDS,
              diag_offsets, diag_sizes);
    m->n_diag_layers += (size_t)n_rows;
    m->diag_comm = grow(m->diag_comm, &m->cap_diag_comm, m->n_diag_comm + 1, sizeof(diag_comm_row));
    copy_rows(m->diag_comm + m->n_diag_comm++, comm, 1, sizeof(diag_comm_row), COMM_FIELDS, comm_offsets,
              comm_sizes);
}

void metrics_set_summary(metrics_file *m, double test_loss, double test_acc, double total_time_s,
                         const char *params_sha256) {
    m->has_summary = 1;
    m->test_loss = test_loss;
    m->test_acc = test_acc;
    m->total_time_s = total_time_s;
    snprintf(m->params_sha256, sizeof m->params_sha256, "%s", params_sha256);
}

/* The whole file, built in memory and written atomically to m->path. */
static int write_file(const metrics_file *m, bn_err *e) {
    char what[BN_PATH + 16];
    snprintf(what, sizeof what, "--metrics %s", m->path);
    hid_t f = h5image_create();
    if (f < 0) return bn_fail(e, "%s: cannot create an HDF5 file in memory", what);
    int bad = h5_attr_string(f, "format", METRICS_FORMAT) < 0;
    bad |= h5_attr_int(f, "format_version", METRICS_FORMAT_VERSION) < 0;
    if (!bad && h5config_write(f, "config", &m->cfg, &m->facts, e) != BN_OK) bad = 1;
    hid_t epoch_types[EPOCH_FIELDS] = {H5T_NATIVE_INT32};
    for (int i = 1; i < EPOCH_FIELDS; i++) epoch_types[i] = H5T_NATIVE_DOUBLE;
    hid_t step_types[STEP_FIELDS] = {H5T_NATIVE_INT64, H5T_NATIVE_INT32, H5T_NATIVE_DOUBLE, H5T_NATIVE_DOUBLE,
                                     H5T_NATIVE_DOUBLE};
    bad |= H5TBmake_table("epochs", f, "epochs", EPOCH_FIELDS, (hsize_t)m->n_epochs, sizeof(epoch_row), epoch_names,
                          epoch_offsets, epoch_types, 16, NULL, 0, m->n_epochs ? m->epochs : NULL) < 0;
    bad |= H5TBmake_table("steps", f, "steps", STEP_FIELDS, (hsize_t)m->n_steps, sizeof(step_row), step_names,
                          step_offsets, step_types, 1024, NULL, 0, m->n_steps ? m->steps : NULL) < 0;
    if (m->cfg.diagnostics > 0) {
        hid_t dl_types[DIAG_FIELDS] = {H5T_NATIVE_INT64, H5T_NATIVE_INT32, H5T_NATIVE_INT32};
        for (int i = 3; i < DIAG_FIELDS; i++) dl_types[i] = H5T_NATIVE_DOUBLE;
        hid_t dc_types[COMM_FIELDS] = {H5T_NATIVE_INT64, H5T_NATIVE_INT32, H5T_NATIVE_DOUBLE, H5T_NATIVE_DOUBLE,
                                       H5T_NATIVE_DOUBLE};
        hid_t g = H5Gcreate2(f, "diagnostics", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        bad |= g < 0 || h5_attr_int(g, "every", m->cfg.diagnostics) < 0;
        if (g >= 0) {
            bad |= H5TBmake_table("layers", g, "layers", DIAG_FIELDS, (hsize_t)m->n_diag_layers,
                                  sizeof(diag_layer_row), diag_names, diag_offsets, dl_types, 256, NULL, 0,
                                  m->n_diag_layers ? m->diag_layers : NULL) < 0;
            bad |= H5TBmake_table("comm", g, "comm", COMM_FIELDS, (hsize_t)m->n_diag_comm, sizeof(diag_comm_row),
                                  comm_names, comm_offsets, dc_types, 256, NULL, 0,
                                  m->n_diag_comm ? m->diag_comm : NULL) < 0;
            H5Gclose(g);
        }
    }
    if (m->has_summary) {
        hid_t g = H5Gcreate2(f, "summary", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        bad |= g < 0;
        if (g >= 0) {
            bad |= h5_attr_double(g, "test_loss", m->test_loss) < 0;
            bad |= h5_attr_double(g, "test_acc", m->test_acc) < 0;
            bad |= h5_attr_double(g, "total_time_s", m->total_time_s) < 0;
            bad |= h5_attr_string(g, "params_sha256", m->params_sha256) < 0;
            H5Gclose(g);
        }
    }
    return h5image_commit(f, bad, m->path, what, e);
}

int metrics_flush(metrics_file *m, bn_err *e) {
    double t0 = bn_now();
    int status = write_file(m, e);
    bn_timers[T_IO] += bn_now() - t0;
    return status;
}

void metrics_close(metrics_file *m) {
    free(m->epochs);
    free(m->steps);
    free(m->diag_layers);
    free(m->diag_comm);
    m->diag_layers = NULL;
    m->diag_comm = NULL;
    m->n_diag_layers = m->n_diag_comm = m->cap_diag_layers = m->cap_diag_comm = 0;
    m->epochs = NULL;
    m->steps = NULL;
    m->n_epochs = m->n_steps = m->cap_epochs = m->cap_steps = 0;
}
