/* h5image.h: HDF5 files built in memory and written to disk with POSIX calls.
 *
 * HDF5 never holds a file on disk for writing: a file is made with the core
 * driver (no backing store), and h5image_commit copies its image to a
 * temporary file beside the target, fsyncs it, renames it over the target
 * and fsyncs the directory. A full disk or any other write error then costs
 * only the temporary file, which is removed; the previous file at the target
 * stays as it was, and HDF5 keeps no half-closed file that would crash at
 * MPI_Finalize. Only rank 0 calls these. */
#ifndef BNMPI_H5IMAGE_H
#define BNMPI_H5IMAGE_H

#include <hdf5.h>

#include "bnmpi/common.h"

/* A new, empty in-memory HDF5 file, or < 0. */
hid_t h5image_create(void);

/* Closes f (always) and, unless `failed`, writes its image to path
 * atomically: path + ".tmp", fsync, rename, fsync of the directory. Errors
 * name `what` (e.g. "--metrics runs/x.h5") and the cause, such as "No space
 * left on device". */
int h5image_commit(hid_t f, int failed, const char *path, const char *what, bn_err *e);

#endif
