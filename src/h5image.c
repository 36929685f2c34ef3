/* h5image.c: HDF5 files built in memory, written with POSIX calls (see h5image.h). */
#define _GNU_SOURCE
#include "bnmpi/h5image.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { IMAGE_INCREMENT = 1 << 20 }; /* the core driver grows its buffer by this */

hid_t h5image_create(void) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0) return -1;
    hid_t f = H5Pset_fapl_core(fapl, IMAGE_INCREMENT, 0) < 0
                  ? -1
                  : H5Fcreate("bnmpi-image", H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    return f;
}

static int write_all(int fd, const char *buf, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return -1;
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Writes n bytes to tmp and fsyncs it; on failure tmp is removed and errno kept. */
static int write_tmp(const char *tmp, const void *buf, size_t n) {
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) return -1;
    int rc = write_all(fd, buf, n) == 0 && fsync(fd) == 0 ? 0 : -1;
    int saved = errno;
    if (close(fd) != 0 && rc == 0) {
        rc = -1;
        saved = errno;
    }
    if (rc != 0) {
        unlink(tmp);
        errno = saved;
    }
    return rc;
}

static int fsync_dir(const char *path) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    int fd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int h5image_commit(hid_t f, int failed, const char *path, const char *what, bn_err *e) {
    ssize_t size = failed || H5Fflush(f, H5F_SCOPE_GLOBAL) < 0 ? -1 : H5Fget_file_image(f, NULL, 0);
    void *image = size > 0 ? malloc((size_t)size) : NULL;
    if (image && H5Fget_file_image(f, image, (size_t)size) != size) size = -1;
    if (H5Fclose(f) < 0) size = -1;
    if (failed || size <= 0 || !image) {
        free(image);
        return bn_fail(e, "%s: building the HDF5 file in memory failed", what);
    }
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int status = BN_OK;
    if (write_tmp(tmp, image, (size_t)size) != 0)
        status = bn_fail(e, "%s: writing %s failed: %s (the previous file, if any, is unchanged)", what, tmp,
                         strerror(errno));
    else if (rename(tmp, path) != 0) {
        status = bn_fail(e, "%s: rename from %s failed: %s", what, tmp, strerror(errno));
        unlink(tmp);
    } else if (fsync_dir(path) != 0)
        status = bn_fail(e, "%s: fsync of its directory failed: %s", what, strerror(errno));
    free(image);
    return status;
}
