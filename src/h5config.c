/* h5config.c: scalar HDF5 attributes and the shared /config group. */
#define _GNU_SOURCE
#include "bnmpi/h5config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

void h5config_new_run_id(char out[RUN_ID_LEN + 1]) {
    uint64_t words[2];
    if (getrandom(words, sizeof words, 0) != (ssize_t)sizeof words) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        words[0] = (uint64_t)ts.tv_sec * 1000000007u ^ (uint64_t)ts.tv_nsec;
        words[1] = (uint64_t)getpid() * 0x9E3779B97F4A7C15u ^ (uint64_t)clock();
    }
    snprintf(out, RUN_ID_LEN + 1, "%016llx%016llx", (unsigned long long)words[0], (unsigned long long)words[1]);
}

const char *const h5config_sha_names[4] = {"train_images_sha256", "train_labels_sha256", "test_images_sha256",
                                           "test_labels_sha256"};

static int attr_scalar(hid_t loc, const char *name, hid_t type, const void *value) {
    hid_t space = H5Screate(H5S_SCALAR);
    if (H5Aexists(loc, name) > 0) H5Adelete(loc, name);
    hid_t a = H5Acreate2(loc, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    int rc = a < 0 ? -1 : H5Awrite(a, type, value);
    if (a >= 0) H5Aclose(a);
    H5Sclose(space);
    return rc;
}

int h5_attr_int(hid_t loc, const char *name, long long v) { return attr_scalar(loc, name, H5T_NATIVE_LLONG, &v); }

int h5_attr_double(hid_t loc, const char *name, double v) { return attr_scalar(loc, name, H5T_NATIVE_DOUBLE, &v); }

static hid_t vlen_utf8(void) {
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, H5T_VARIABLE);
    H5Tset_cset(type, H5T_CSET_UTF8);
    return type;
}

int h5_attr_string(hid_t loc, const char *name, const char *v) {
    hid_t type = vlen_utf8();
    int rc = attr_scalar(loc, name, type, &v);
    H5Tclose(type);
    return rc;
}

int h5_attr_read_string(hid_t loc, const char *name, char *buf, size_t n) {
    if (H5Aexists(loc, name) <= 0) return -1;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t ftype = H5Aget_type(a);
    int rc = -1;
    if (H5Tget_class(ftype) == H5T_STRING) {
        if (H5Tis_variable_str(ftype) > 0) {
            hid_t type = vlen_utf8();
            char *s = NULL;
            if (H5Aread(a, type, &s) >= 0 && s) {
                snprintf(buf, n, "%s", s);
                H5free_memory(s);
                rc = 0;
            }
            H5Tclose(type);
        } else {
            size_t len = H5Tget_size(ftype);
            char *tmp = calloc(len + 1, 1);
            if (tmp && H5Aread(a, ftype, tmp) >= 0) {
                snprintf(buf, n, "%s", tmp);
                rc = 0;
            }
            free(tmp);
        }
    }
    H5Tclose(ftype);
    H5Aclose(a);
    return rc;
}

/* Any numeric attribute as a C string in its command-line spelling. */
static int attr_text(hid_t loc, const char *name, opt_value_kind kind, char *buf, size_t n) {
    if (kind == OV_STRING) return h5_attr_read_string(loc, name, buf, n);
    if (H5Aexists(loc, name) <= 0) return -1;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return -1;
    int rc;
    if (kind == OV_INT) {
        long long v = 0;
        rc = H5Aread(a, H5T_NATIVE_LLONG, &v);
        snprintf(buf, n, "%lld", v);
    } else {
        double v = 0;
        rc = H5Aread(a, H5T_NATIVE_DOUBLE, &v);
        snprintf(buf, n, "%.17g", v);
    }
    H5Aclose(a);
    return rc < 0 ? -1 : 0;
}

static void attr_name(const char *option, char *out, size_t n) {
    snprintf(out, n, "%s", option);
    for (char *p = out; *p; p++)
        if (*p == '-') *p = '_';
}

int h5config_write(hid_t loc, const char *name, const bn_config *c, const run_facts *f, bn_err *e) {
    hid_t g = H5Gcreate2(loc, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (g < 0) return bn_fail(e, "cannot create the HDF5 group /%s", name);
    int bad = 0;
    for (int i = 0; i < options_count(); i++) {
        opt_value v;
        char aname[64];
        options_value(c, i, &v);
        attr_name(v.name, aname, sizeof aname);
        if (v.kind == OV_INT) bad |= h5_attr_int(g, aname, v.i) < 0;
        else if (v.kind == OV_DOUBLE) bad |= h5_attr_double(g, aname, v.d) < 0;
        else bad |= h5_attr_string(g, aname, v.s) < 0;
    }
    bad |= h5_attr_int(g, "n_ranks", c->n_ranks) < 0;
    bad |= h5_attr_int(g, "local_batch", c->batch) < 0;
    bad |= h5_attr_int(g, "global_batch", c->global_batch) < 0;
    bad |= h5_attr_int(g, "bn_batch", c->bn_batch) < 0;
    bad |= h5_attr_double(g, "lr_peak", c->lr_peak) < 0;
    char arch[1024];
    arch_describe(&c->net, arch, sizeof arch);
    bad |= h5_attr_string(g, "architecture", arch) < 0;
    bad |= h5_attr_int(g, "n_params", (long long)f->n_params) < 0;
    bad |= h5_attr_string(g, "bnmpi_version", BNMPI_VERSION) < 0;
    bad |= h5_attr_string(g, "mpi_library", f->mpi_library) < 0;
    bad |= h5_attr_string(g, "hostname", f->hostname) < 0;
    bad |= h5_attr_string(g, "start_time", f->start_time) < 0;
    const char *job = getenv("SLURM_JOB_ID");
    if (job && job[0]) bad |= h5_attr_string(g, "slurm_job_id", job) < 0;
    for (int i = 0; i < 4; i++) bad |= h5_attr_string(g, h5config_sha_names[i], f->sha256[i]) < 0;
    if (f->run_id && f->run_id[0]) bad |= h5_attr_string(g, "run_id", f->run_id) < 0;
    H5Gclose(g);
    return bad ? bn_fail(e, "cannot write the /%s attributes", name) : BN_OK;
}

int h5config_read(hid_t loc, const char *name, const char *path, bn_config *c, saved_facts *f, bn_err *e) {
    options_defaults(c);
    memset(f, 0, sizeof *f);
    if (H5Lexists(loc, name, H5P_DEFAULT) <= 0) return bn_fail(e, "%s: no /%s group", path, name);
    hid_t g = H5Gopen2(loc, name, H5P_DEFAULT);
    if (g < 0) return bn_fail(e, "%s: cannot open /%s", path, name);
    int status = BN_OK;
    for (int i = 0; i < options_count() && status == BN_OK; i++) {
        opt_value v;
        char aname[64], text[BN_PATH];
        options_value(c, i, &v);
        attr_name(v.name, aname, sizeof aname);
        if (H5Aexists(g, aname) <= 0) continue; /* an option newer than the file: its default */
        if (attr_text(g, aname, v.kind, text, sizeof text) < 0)
            status = bn_fail(e, "%s: cannot read /%s/%s", path, name, aname);
        else if (options_set(c, v.name, text, e) != BN_OK)
            status = bn_fail(e, "%s: /%s/%s = '%s' is not a valid value", path, name, aname, text);
    }
    for (int i = 0; i < 4 && status == BN_OK; i++)
        if (h5_attr_read_string(g, h5config_sha_names[i], f->sha256[i], sizeof f->sha256[i]) < 0)
            f->sha256[i][0] = '\0';
    if (h5_attr_read_string(g, "run_id", f->run_id, sizeof f->run_id) < 0) f->run_id[0] = '\0';
    char text[32];
    if (status == BN_OK && attr_text(g, "n_ranks", OV_INT, text, sizeof text) == 0) c->n_ranks = f->n_ranks = atoi(text);
    H5Gclose(g);
    return status;
}
