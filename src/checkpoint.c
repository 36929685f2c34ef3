/* checkpoint.c: HDF5 checkpoints, written atomically by rank 0. */
#define _GNU_SOURCE
#include "bnmpi/checkpoint.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bnmpi/comm.h"
#include "bnmpi/h5image.h"

void state_add(state_list *s, const char *name, state_type type, void *data, int rows, int cols, state_place place) {
    if (s->n == STATE_MAX) bn_fatal("state list full at '%s'", name);
    if (place != ST_SAME && type != ST_F32)
        bn_fatal("state '%s': per-rank and node-shared entries must be float", name);
    state_entry *e = &s->e[s->n++];
    snprintf(e->name, sizeof e->name, "%s", name);
    e->type = type;
    e->data = data;
    e->rows = rows;
    e->cols = cols;
    e->place = place;
}

static size_t entry_count(const state_entry *e) { return (size_t)e->rows * e->cols; }

static hid_t h5_type(state_type t) {
    return t == ST_F32 ? H5T_NATIVE_FLOAT : t == ST_F64 ? H5T_NATIVE_DOUBLE : H5T_NATIVE_INT64;
}

/* Rank 0: builds the whole file in memory and writes it atomically to path.
 * gathered[i] holds entry i's data (all ranks' rows for per-rank entries). */
static int write_file(const char *path, const state_list *s, void **gathered, int n_ranks, const bn_config *c,
                      const run_facts *f, bn_err *e) {
    char what[BN_PATH + 16];
    snprintf(what, sizeof what, "--checkpoint %s", path);
    hid_t file = h5image_create();
    if (file < 0) return bn_fail(e, "%s: cannot create an HDF5 file in memory", what);
    int bad = h5_attr_string(file, "format", CHECKPOINT_FORMAT) < 0;
    bad |= h5_attr_int(file, "format_version", CHECKPOINT_FORMAT_VERSION) < 0;
    if (!bad && h5config_write(file, "config", c, f, e) != BN_OK) bad = 1;
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    for (int i = 0; i < s->n && !bad; i++) {
        const state_entry *en = &s->e[i];
        char name[64];
        snprintf(name, sizeof name, "state/%s", en->name);
        hsize_t dims[3] = {(hsize_t)n_ranks, (hsize_t)en->rows, (hsize_t)en->cols};
        hid_t space = en->place == ST_PER_RANK ? H5Screate_simple(3, dims, NULL) : H5Screate_simple(2, dims + 1, NULL);
        hid_t d = H5Dcreate2(file, name, h5_type(en->type), space, lcpl, H5P_DEFAULT, H5P_DEFAULT);
        bad |= d < 0 || H5Dwrite(d, h5_type(en->type), H5S_ALL, H5S_ALL, H5P_DEFAULT, gathered[i]) < 0;
        if (d >= 0) H5Dclose(d);
        H5Sclose(space);
    }
    H5Pclose(lcpl);
    return h5image_commit(file, bad, path, what, e);
}

int checkpoint_save(const char *path, const state_list *s, const bn_config *c, const run_facts *f, bn_err *e) {
    double t0 = bn_now();
    const int rank = comm_rank(), P = comm_size();
    void *gathered[STATE_MAX] = {0};
    void *owned[STATE_MAX] = {0};
    for (int i = 0; i < s->n; i++) {
        const state_entry *en = &s->e[i];
        gathered[i] = en->data;
        if (en->place != ST_PER_RANK) continue;
        if (rank == 0) owned[i] = gathered[i] = bn_calloc(entry_count(en) * (size_t)P, sizeof(float));
        comm_gather_f32(en->data, entry_count(en), gathered[i]);
    }
    int status = BN_OK;
    if (rank == 0) {
        status = write_file(path, s, gathered, P, c, f, e);
    }
    for (int i = 0; i < s->n; i++) free(owned[i]);
    bn_timers[T_IO] += bn_now() - t0;
    return comm_share(status, e);
}

/* Rank 0: opens path as a checkpoint, or says what it is instead. */
static hid_t open_checkpoint(const char *path, bn_err *e) {
    struct stat st;
    if (stat(path, &st) != 0) {
        bn_fail(e, "--resume %s: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        bn_fail(e, "--resume %s: not a regular file, expected a bnmpi checkpoint", path);
        return -1;
    }
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (H5Fis_hdf5(path) <= 0) {
        bn_fail(e, "--resume %s: not an HDF5 file (or a truncated one), expected a bnmpi checkpoint", path);
        return -1;
    }
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0) {
        bn_fail(e, "--resume %s: cannot open it as HDF5 (truncated or corrupt?)", path);
        return -1;
    }
    char format[64] = "";
    h5_attr_read_string(file, "format", format, sizeof format);
    if (strcmp(format, CHECKPOINT_FORMAT) != 0) {
        if (strcmp(format, "bnmpi-metrics") == 0)
            bn_fail(e, "--resume %s: this is a bnmpi metrics file; pass the --checkpoint file instead", path);
        else
            bn_fail(e, "--resume %s: HDF5 file without format = \"%s\", not a bnmpi checkpoint", path,
                    CHECKPOINT_FORMAT);
        H5Fclose(file);
        return -1;
    }
    return file;
}

int checkpoint_read_config(const char *path, bn_config *saved, saved_facts *f, bn_err *e) {
    int status = BN_OK;
    if (comm_rank() == 0) {
        hid_t file = open_checkpoint(path, e);
        if (file < 0) status = BN_ERR;
        else {
            status = h5config_read(file, "config", path, saved, f, e);
            if (status == BN_OK && f->n_ranks < 1) status = bn_fail(e, "--resume %s: /config lacks n_ranks", path);
            H5Fclose(file);
        }
    }
    if (comm_share(status, e) != BN_OK) return BN_ERR;
    comm_bcast_chars((char *)saved, sizeof *saved, 0);
    comm_bcast_chars((char *)f, sizeof *f, 0);
    return BN_OK;
}

/* Rank 0: reads entry en (saved by saved_ranks ranks) into buf. */
static int read_entry(hid_t file, const char *path, const state_entry *en, int saved_ranks, void *buf, bn_err *e) {
    char name[64];
    snprintf(name, sizeof name, "state/%s", en->name);
    if (H5Lexists(file, "state", H5P_DEFAULT) <= 0 || H5Lexists(file, name, H5P_DEFAULT) <= 0)
        return bn_fail(e, "--resume %s: no /%s, which this run needs (a checkpoint of another configuration?)",
                       path, name);
    hid_t d = H5Dopen2(file, name, H5P_DEFAULT);
    if (d < 0) return bn_fail(e, "--resume %s: cannot open /%s", path, name);
    hid_t space = H5Dget_space(d);
    hsize_t dims[3] = {0, 0, 0};
    int nd = H5Sget_simple_extent_ndims(space);
    if (nd >= 1 && nd <= 3) H5Sget_simple_extent_dims(space, dims, NULL);
    H5Sclose(space);
    int want_nd = en->place == ST_PER_RANK ? 3 : 2;
    hsize_t want[3] = {(hsize_t)saved_ranks, (hsize_t)en->rows, (hsize_t)en->cols};
    const hsize_t *w = en->place == ST_PER_RANK ? want : want + 1;
    int ok = nd == want_nd;
    for (int i = 0; ok && i < nd; i++) ok = dims[i] == w[i];
    if (!ok) {
        H5Dclose(d);
        if (nd == 2)
            return bn_fail(e, "--resume %s: /%s is %llux%llu, this run's is %dx%d (another model?)", path, name,
                           (unsigned long long)dims[0], (unsigned long long)dims[1], en->rows, en->cols);
        return bn_fail(e, "--resume %s: /%s has another shape than this run's %dx%d (another model?)", path, name,
                       en->rows, en->cols);
    }
    int rc = H5Dread(d, h5_type(en->type), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
    H5Dclose(d);
    return rc < 0 ? bn_fail(e, "--resume %s: reading /%s failed (truncated file?)", path, name) : BN_OK;
}

int checkpoint_load(const char *path, const state_list *s, int saved_ranks, bn_err *e) {
    const int rank = comm_rank();
    void *bufs[STATE_MAX] = {0};
    for (int i = 0; i < s->n; i++) {
        const state_entry *en = &s->e[i];
        bufs[i] = en->place == ST_PER_RANK ? bn_calloc(entry_count(en) * (size_t)saved_ranks, sizeof(float)) : en->data;
    }
    int status = BN_OK;
    if (rank == 0) {
        hid_t file = open_checkpoint(path, e);
        if (file < 0) status = BN_ERR;
        for (int i = 0; i < s->n && status == BN_OK; i++)
            status = read_entry(file, path, &s->e[i], saved_ranks, bufs[i], e);
        if (file >= 0) H5Fclose(file);
    }
    status = comm_share(status, e);
    for (int i = 0; i < s->n && status == BN_OK; i++) {
        const state_entry *en = &s->e[i];
        const size_t n = entry_count(en) * (size_t)(en->place == ST_PER_RANK ? saved_ranks : 1);
        if (en->place == ST_NODE_SHARED) comm_bcast_node_shared_f32(bufs[i], n);
        else if (en->type == ST_F32) comm_bcast_f32(bufs[i], n, 0);
        else if (en->type == ST_F64) comm_bcast_f64(bufs[i], n, 0);
        else comm_bcast_i64(bufs[i], n, 0);
        if (en->place == ST_PER_RANK)
            memcpy(en->data, (float *)bufs[i] + entry_count(en) * (size_t)(rank % saved_ranks),
                   entry_count(en) * sizeof(float));
    }
    for (int i = 0; i < s->n; i++)
        if (s->e[i].place == ST_PER_RANK) free(bufs[i]);
    return status;
}
