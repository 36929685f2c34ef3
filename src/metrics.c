/* metrics.c: HDF5 metric tables through the HDF5 high-level table API. */
#define _GNU_SOURCE
#include "bnmpi/metrics.h"

#include "bnmpi/h5config.h"

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

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

int metrics_default_path(const bn_config *c, char *out, size_t n, bn_err *e) {
    if (mkdir("runs", 0777) != 0 && errno != EEXIST)
        return bn_fail(e, "cannot create directory runs/ for the metrics file: %s (pass --metrics PATH)",
                       strerror(errno));
    char hidden[128];
    snprintf(hidden, sizeof hidden, "%s", c->hidden);
    for (char *p = hidden; *p; p++)
        if (*p == ',') *p = 'x';
    char stamp[32];
    time_t now = time(NULL);
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", gmtime(&now));
    char base[BN_PATH];
    snprintf(base, sizeof base, "runs/%s-bn_%s-h%s-%s-gb%d-np%d-seed%d-%s", dataset_name(c->dataset),
             bn_mode_name(c->bn), hidden, optimizer_name(c->optimizer), c->global_batch, c->n_ranks, c->seed,
             stamp);
    snprintf(out, n, "%s.h5", base);
    for (int k = 2; file_exists(out); k++) snprintf(out, n, "%s-%d.h5", base, k);
    return BN_OK;
}

int metrics_create(metrics_file *m, const char *path, int force, bn_err *e) {
    m->file = -1;
    snprintf(m->path, sizeof m->path, "%s", path);
    char dir_buf[BN_PATH];
    snprintf(dir_buf, sizeof dir_buf, "%s", path);
    const char *dir = dirname(dir_buf);
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return bn_fail(e, "--metrics %s: directory %s does not exist", path, dir);
    if (access(dir, W_OK) != 0)
        return bn_fail(e, "--metrics %s: directory %s is not writable", path, dir);
    if (file_exists(path) && !force)
        return bn_fail(e, "--metrics %s: file exists; choose another path or pass --force to overwrite it", path);
    if (file_exists(path) && stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return bn_fail(e, "--metrics %s: is a directory, expected a file path", path);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fcreate(path, force ? H5F_ACC_TRUNC : H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) return bn_fail(e, "--metrics %s: cannot create the HDF5 file", path);
    m->file = f;
    if (h5_attr_string(f, "format", METRICS_FORMAT) < 0 || h5_attr_int(f, "format_version", METRICS_FORMAT_VERSION) < 0)
        return bn_fail(e, "%s: cannot write the root attributes", path);
    return BN_OK;
}

int metrics_write_config(metrics_file *m, const bn_config *c, const run_facts *f, bn_err *e) {
    if (h5config_write(m->file, "config", c, f, e) != BN_OK)
        return bn_fail(e, "%s: cannot write /config", m->path);

    hid_t epoch_types[EPOCH_FIELDS] = {H5T_NATIVE_INT32};
    for (int i = 1; i < EPOCH_FIELDS; i++) epoch_types[i] = H5T_NATIVE_DOUBLE;
    hid_t step_types[STEP_FIELDS] = {H5T_NATIVE_INT64, H5T_NATIVE_INT32, H5T_NATIVE_DOUBLE, H5T_NATIVE_DOUBLE,
                                     H5T_NATIVE_DOUBLE};
    if (H5TBmake_table("epochs", m->file, "epochs", EPOCH_FIELDS, 0, sizeof(epoch_row), epoch_names,
                       epoch_offsets, epoch_types, 16, NULL, 0, NULL) < 0 ||
        H5TBmake_table("steps", m->file, "steps", STEP_FIELDS, 0, sizeof(step_row), step_names, step_offsets,
                       step_types, 1024, NULL, 0, NULL) < 0)
        return bn_fail(e, "%s: cannot create the /epochs and /steps tables", m->path);
    if (H5Fflush(m->file, H5F_SCOPE_GLOBAL) < 0) return bn_fail(e, "%s: flush failed", m->path);
    return BN_OK;
}

int metrics_reopen(metrics_file *m, const char *path, int keep_epochs, long long keep_steps, bn_err *e) {
    m->file = -1;
    snprintf(m->path, sizeof m->path, "%s", path);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (H5Fis_hdf5(path) <= 0) return bn_fail(e, "--metrics %s: not an HDF5 file; cannot append to it", path);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0) return bn_fail(e, "--metrics %s: cannot open it for appending", path);
    m->file = f;
    char format[64] = "";
    h5_attr_read_string(f, "format", format, sizeof format);
    if (strcmp(format, METRICS_FORMAT) != 0)
        return bn_fail(e, "--metrics %s: not a bnmpi metrics file (format \"%s\")", path, format);
    const char *tables[2] = {"epochs", "steps"};
    const hsize_t keep[2] = {(hsize_t)keep_epochs, (hsize_t)keep_steps};
    for (int i = 0; i < 2; i++) {
        hid_t d = H5Dopen2(f, tables[i], H5P_DEFAULT);
        if (d < 0) return bn_fail(e, "--metrics %s: no /%s table", path, tables[i]);
        hid_t space = H5Dget_space(d);
        hsize_t rows = 0;
        H5Sget_simple_extent_dims(space, &rows, NULL);
        H5Sclose(space);
        int rc = 0;
        if (rows < keep[i])
            rc = bn_fail(e, "--metrics %s: /%s has %llu rows, the checkpoint needs %llu (another run's file?)",
                         path, tables[i], (unsigned long long)rows, (unsigned long long)keep[i]);
        else if (rows > keep[i] && H5Dset_extent(d, &keep[i]) < 0)
            rc = bn_fail(e, "--metrics %s: cannot drop the rows of /%s after the checkpoint", path, tables[i]);
        H5Dclose(d);
        if (rc != 0) return BN_ERR;
    }
    if (H5Lexists(f, "summary", H5P_DEFAULT) > 0 && H5Ldelete(f, "summary", H5P_DEFAULT) < 0)
        return bn_fail(e, "--metrics %s: cannot replace /summary", path);
    if (H5Fflush(f, H5F_SCOPE_GLOBAL) < 0) return bn_fail(e, "%s: flush failed", path);
    return BN_OK;
}

int metrics_append_steps(metrics_file *m, const step_row *steps, int n_steps, bn_err *e) {
    double t0 = bn_now();
    if (n_steps > 0 && H5TBappend_records(m->file, "steps", (hsize_t)n_steps, sizeof(step_row), step_offsets,
                                          step_sizes, steps) < 0)
        return bn_fail(e, "%s: cannot append to /steps", m->path);
    if (H5Fflush(m->file, H5F_SCOPE_GLOBAL) < 0) return bn_fail(e, "%s: flush failed", m->path);
    bn_timers[T_IO] += bn_now() - t0;
    return BN_OK;
}

int metrics_append_epoch(metrics_file *m, const epoch_row *row, bn_err *e) {
    double t0 = bn_now();
    if (H5TBappend_records(m->file, "epochs", 1, sizeof(epoch_row), epoch_offsets, epoch_sizes, row) < 0)
        return bn_fail(e, "%s: cannot append to /epochs", m->path);
    if (H5Fflush(m->file, H5F_SCOPE_GLOBAL) < 0) return bn_fail(e, "%s: flush failed", m->path);
    bn_timers[T_IO] += bn_now() - t0;
    return BN_OK;
}

int metrics_write_summary(metrics_file *m, double test_loss, double test_acc, double total_time_s,
                          const char *params_sha256, bn_err *e) {
    hid_t g = H5Gcreate2(m->file, "summary", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) return bn_fail(e, "%s: cannot create /summary", m->path);
    int bad = h5_attr_double(g, "test_loss", test_loss) < 0;
    bad |= h5_attr_double(g, "test_acc", test_acc) < 0;
    bad |= h5_attr_double(g, "total_time_s", total_time_s) < 0;
    bad |= h5_attr_string(g, "params_sha256", params_sha256) < 0;
    H5Gclose(g);
    if (bad || H5Fflush(m->file, H5F_SCOPE_GLOBAL) < 0) return bn_fail(e, "%s: cannot write /summary", m->path);
    return BN_OK;
}

void metrics_close(metrics_file *m) {
    if (m->file >= 0) H5Fclose(m->file);
    m->file = -1;
}
