/* h5config.h: HDF5 attribute helpers and the /config group that metrics files
 * and checkpoints share: one attribute per option (dashes become
 * underscores), then the run's facts. Only rank 0 calls these. */
#ifndef BNMPI_H5CONFIG_H
#define BNMPI_H5CONFIG_H

#include <hdf5.h>

#include "bnmpi/common.h"
#include "bnmpi/options.h"

/* Scalar attributes (h5py reads numbers, not 1-element arrays); strings are
 * variable-length UTF-8 (h5py reads str). An existing attribute is replaced.
 * Return < 0 on failure. */
int h5_attr_int(hid_t loc, const char *name, long long v);
int h5_attr_double(hid_t loc, const char *name, double v);
int h5_attr_string(hid_t loc, const char *name, const char *v);
/* Reads a string attribute into buf (n bytes); < 0 when absent or not a string. */
int h5_attr_read_string(hid_t loc, const char *name, char *buf, size_t n);

typedef struct {
    const char *mpi_library;
    const char *hostname;
    const char *start_time;     /* ISO 8601 */
    const char *sha256[4];      /* train images, train labels, test images, test labels */
    const char *run_id;         /* random hex, drawn when a run starts and kept across resumes */
    size_t n_params;            /* trainable parameters of the model */
} run_facts;
#define RUN_ID_LEN 32           /* hex digits */

/* What h5config_read finds of the facts; "" where the file predates a field. */
typedef struct {
    char sha256[4][65];
    char run_id[RUN_ID_LEN + 1];
    int n_ranks;                /* 0 when absent */
} saved_facts;
extern const char *const h5config_sha_names[4]; /* "train_images_sha256", ... */

/* A fresh run id: 128 random bits in hex. */
void h5config_new_run_id(char out[RUN_ID_LEN + 1]);

/* Creates group `name` under loc holding the configuration and the facts. */
int h5config_write(hid_t loc, const char *name, const bn_config *c, const run_facts *f, bn_err *e);
/* Reads the options of group `name` into c (defaults first, so options a
 * file predates keep their defaults), and the facts it keeps. */
int h5config_read(hid_t loc, const char *name, const char *path, bn_config *c, saved_facts *f, bn_err *e);

#endif
