/* idx.c: IDX reader (plain or gzip via zlib's gz* API, which reads plain files
 * transparently), with full validation and a SHA-256 of the uncompressed bytes.
 *
 * Limitation inherited from zlib: bytes after a complete gzip member that are
 * not another gzip member are ignored silently (as `gzip -d` does, with a
 * warning). The decoded data is still checked and hashed in full. */
#define _POSIX_C_SOURCE 200809L
#include "bnmpi/idx.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "bnmpi/sha256.h"

enum {
    IDX_TYPE_UINT8 = 0x08,
    IDX_MAX_NDIM = 3,
    READ_CHUNK = 1 << 20, /* bytes per gzread call, and zlib's buffer size */
};
/* Refuse data larger than this: a corrupt header, not a dataset we train on. */
#define IDX_MAX_DATA_BYTES ((uint64_t)1 << 31)

typedef struct {
    const char *path;
    gzFile gz;
    sha256_ctx hash; /* over every uncompressed byte read so far */
} idx_reader;

static const char *ndim_role(int ndim)
{
    return ndim == 1 ? "labels" : ndim == 3 ? "images" : "unsupported";
}

/* "60000x28x28" */
static void format_dims(const uint32_t *dims, int ndim, char *buf, size_t n)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < ndim && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, i ? "x%u" : "%u", (unsigned)dims[i]);
}

/* Reports zlib's last error on r->gz. zlib prefixes its message with the
 * path, which our message already starts with, so that prefix is dropped. */
static int fail_gz(idx_reader *r, bn_err *e)
{
    int errnum = Z_OK;
    const char *msg = gzerror(r->gz, &errnum);
    if (errnum == Z_ERRNO)
        return bn_fail(e, "%s: read error: %s", r->path, strerror(errno));
    size_t path_len = strlen(r->path);
    if (strncmp(msg, r->path, path_len) == 0 && strncmp(msg + path_len, ": ", 2) == 0)
        msg += path_len + 2;
    return bn_fail(e, "%s: corrupt gzip stream: %s", r->path, msg);
}

/* Reads up to n bytes into buf, hashing them. *got receives the count, which
 * is short only at a clean end of file; a gzip error (including a stream cut
 * short, which zlib flags as Z_BUF_ERROR) returns BN_ERR. */
static int read_bytes(idx_reader *r, uint8_t *buf, size_t n, size_t *got, bn_err *e)
{
    *got = 0;
    while (*got < n) {
        size_t want = BN_MIN(n - *got, (size_t)READ_CHUNK);
        int nread = gzread(r->gz, buf + *got, (unsigned)want);
        if (nread < 0)
            return fail_gz(r, e);
        if (nread == 0)
            break;
        sha256_update(&r->hash, buf + *got, (size_t)nread);
        *got += (size_t)nread;
    }
    int errnum = Z_OK;
    gzerror(r->gz, &errnum);
    if (errnum != Z_OK)
        return fail_gz(r, e);
    return BN_OK;
}

/* Rejects a path that is missing, a directory, another non-regular file, or empty. */
static int check_regular_file(const char *path, bn_err *e)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return bn_fail(e, "%s: cannot open: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode))
        return bn_fail(e, "%s: is a directory, expected an IDX file", path);
    if (!S_ISREG(st.st_mode))
        return bn_fail(e, "%s: not a regular file, expected an IDX file", path);
    if (st.st_size == 0)
        return bn_fail(e, "%s: empty file", path);
    return BN_OK;
}

/* Magic is 0x00 0x00 type ndim; only type uint8 with ndim == expect_ndim passes. */
static int check_magic(const char *path, const uint8_t magic[4], int expect_ndim, bn_err *e)
{
    uint32_t found = ((uint32_t)magic[0] << 24) | ((uint32_t)magic[1] << 16) |
                     ((uint32_t)magic[2] << 8) | magic[3];
    uint32_t expected = ((uint32_t)IDX_TYPE_UINT8 << 8) | (uint32_t)expect_ndim;
    if (found == expected)
        return BN_OK;

    char why[96] = "";
    if (magic[0] == 0 && magic[1] == 0 && magic[2] == IDX_TYPE_UINT8)
        snprintf(why, sizeof why, ": file has %d dimension%s (%s), expected %s", magic[3],
                 magic[3] == 1 ? "" : "s", ndim_role(magic[3]), ndim_role(expect_ndim));
    else if (magic[0] == 0 && magic[1] == 0)
        snprintf(why, sizeof why, ": element type 0x%02x, only uint8 (0x08) is supported",
                 magic[2]);
    else
        snprintf(why, sizeof why, ": not an IDX file");
    return bn_fail(e, "%s: wrong magic 0x%08x, expected 0x%08x (IDX uint8, %d dimension%s)%s",
                   path, (unsigned)found, (unsigned)expected, expect_ndim,
                   expect_ndim == 1 ? "" : "s", why);
}

/* Reads magic and dims (header of 4 + 4*expect_ndim bytes) into dims[expect_ndim]. */
static int read_header(idx_reader *r, int expect_ndim, uint32_t *dims, bn_err *e)
{
    uint8_t header[4 + 4 * IDX_MAX_NDIM];
    size_t header_len = 4 + 4 * (size_t)expect_ndim;
    size_t got = 0;

    if (read_bytes(r, header, 4, &got, e) != BN_OK)
        return BN_ERR;
    if (got == 0)
        return bn_fail(e, "%s: empty file%s", r->path,
                       gzdirect(r->gz) ? "" : " (gzip stream decodes to 0 bytes)");
    if (got < 4)
        return bn_fail(e, "%s: truncated header: %zu bytes, expected %zu", r->path, got,
                       header_len);
    if (check_magic(r->path, header, expect_ndim, e) != BN_OK)
        return BN_ERR;

    size_t dims_got = 0;
    if (read_bytes(r, header + 4, header_len - 4, &dims_got, e) != BN_OK)
        return BN_ERR;
    if (dims_got < header_len - 4)
        return bn_fail(e, "%s: truncated header: %zu bytes, expected %zu", r->path,
                       4 + dims_got, header_len);
    for (int i = 0; i < expect_ndim; i++) {
        const uint8_t *p = header + 4 + 4 * i;
        dims[i] = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
    }
    return BN_OK;
}

/* Checks dims are non-zero, that count fits an int, and that the data size
 * stays within IDX_MAX_DATA_BYTES; writes that size into *data_len. */
static int check_dims(const char *path, const uint32_t *dims, int ndim, size_t *data_len,
                      bn_err *e)
{
    char shape[64];
    format_dims(dims, ndim, shape, sizeof shape);
    uint64_t total = 1;
    for (int i = 0; i < ndim; i++) {
        if (dims[i] == 0)
            return bn_fail(e, "%s: zero dimension in %s, expected every dimension >= 1", path,
                           shape);
        if (total > IDX_MAX_DATA_BYTES / dims[i])
            return bn_fail(e, "%s: dimensions %s exceed %llu bytes of data (corrupt header?)",
                           path, shape, (unsigned long long)IDX_MAX_DATA_BYTES);
        total *= dims[i];
    }
    for (int i = 0; i < ndim; i++) /* idx_array keeps count, rows and cols as int */
        if (dims[i] > INT_MAX)
            return bn_fail(e, "%s: dimension %u of %s does not fit an int (max %d)", path,
                           (unsigned)dims[i], shape, INT_MAX);
    *data_len = (size_t)total;
    return BN_OK;
}

/* Reads exactly data_len bytes, then requires end of file. */
static int read_data(idx_reader *r, const uint32_t *dims, int ndim, uint8_t *data,
                     size_t data_len, bn_err *e)
{
    size_t got = 0;
    if (read_bytes(r, data, data_len, &got, e) != BN_OK)
        return BN_ERR;
    if (got < data_len)
        return bn_fail(e, "%s: truncated data: %zu of %zu bytes", r->path, got, data_len);

    uint8_t scratch[4096];
    uint64_t trailing = 0;
    for (;;) { /* count everything after the data, stopping at EOF or a gzip error */
        size_t extra = 0;
        if (read_bytes(r, scratch, sizeof scratch, &extra, e) != BN_OK)
            return BN_ERR;
        trailing += extra;
        if (extra < sizeof scratch)
            break;
    }
    if (trailing > 0) {
        char shape[64];
        format_dims(dims, ndim, shape, sizeof shape);
        return bn_fail(e, "%s: %llu bytes after the data; dimensions %s disagree with the file size",
                       r->path, (unsigned long long)trailing, shape);
    }
    return BN_OK;
}

static int check_labels(const char *path, const uint8_t *labels, size_t count, bn_err *e)
{
    for (size_t i = 0; i < count; i++)
        if (labels[i] > 9)
            return bn_fail(e, "%s: label %u at index %zu, expected 0-9", path, (unsigned)labels[i], i);
    return BN_OK;
}

/* Everything after opening; the caller closes r->gz. With buf, the data goes
 * there and must be exactly buf_len bytes; without, into a new buffer that
 * *data receives (and the caller frees on error). */
static int read_opened(idx_reader *r, int expect_ndim, uint32_t *dims, uint8_t *buf, size_t buf_len,
                       uint8_t **data, int header_only, bn_err *e)
{
    size_t data_len = 0;
    if (read_header(r, expect_ndim, dims, e) != BN_OK ||
        check_dims(r->path, dims, expect_ndim, &data_len, e) != BN_OK)
        return BN_ERR;
    if (header_only)
        return BN_OK;
    if (buf && data_len != buf_len)
        return bn_fail(e, "%s: holds %zu bytes of data now, %zu when its header was read (file changed?)",
                       r->path, data_len, buf_len);
    *data = buf ? buf : bn_calloc(data_len, 1);
    if (read_data(r, dims, expect_ndim, *data, data_len, e) != BN_OK)
        return BN_ERR;
    if (expect_ndim == 1 && check_labels(r->path, *data, data_len, e) != BN_OK)
        return BN_ERR;
    return BN_OK;
}

static int read_file(const char *path, int expect_ndim, idx_array *out, uint8_t *buf, size_t buf_len,
                     int header_only, bn_err *e)
{
    memset(out, 0, sizeof *out);
    if (expect_ndim != 1 && expect_ndim != 3)
        return bn_fail(e, "%s: expect_ndim %d, expected 1 (labels) or 3 (images)", path,
                       expect_ndim);
    if (check_regular_file(path, e) != BN_OK)
        return BN_ERR;

    errno = 0;
    idx_reader r = {.path = path, .gz = gzopen(path, "rb")};
    if (r.gz == NULL)
        return bn_fail(e, "%s: cannot open: %s", path,
                       errno ? strerror(errno) : "out of memory in zlib");
    gzbuffer(r.gz, READ_CHUNK);
    sha256_init(&r.hash);

    uint32_t dims[IDX_MAX_NDIM] = {1, 1, 1};
    uint8_t *data = NULL;
    int status = read_opened(&r, expect_ndim, dims, buf, buf_len, &data, header_only, e);
    gzclose(r.gz);
    if (status != BN_OK || header_only)
        sha256_free(&r.hash); /* no digest of a failed read or of a header */
    if (status != BN_OK) {
        if (data != buf)
            free(data);
        return BN_ERR;
    }

    out->data = data;
    out->count = (int)dims[0];
    out->rows = (int)dims[1];
    out->cols = (int)dims[2];
    if (!header_only)
        sha256_final_hex(&r.hash, out->sha256);
    return BN_OK;
}

int idx_read(const char *path, int expect_ndim, idx_array *out, bn_err *e)
{
    return read_file(path, expect_ndim, out, NULL, 0, 0, e);
}

int idx_read_header(const char *path, int expect_ndim, idx_array *out, bn_err *e)
{
    return read_file(path, expect_ndim, out, NULL, 0, 1, e);
}

int idx_read_into(const char *path, int expect_ndim, idx_array *out, uint8_t *buf, size_t bytes, bn_err *e)
{
    return read_file(path, expect_ndim, out, buf, bytes, 0, e);
}

void idx_free(idx_array *a)
{
    if (a == NULL)
        return;
    if (!a->shared)
        free(a->data);
    memset(a, 0, sizeof *a);
}

int idx_find(const char *dir, const char *base, char *out, size_t n, bn_err *e)
{
    char gz_path[4096];
    int plain_len = snprintf(out, n, "%s/%s", dir, base);
    int gz_len = snprintf(gz_path, sizeof gz_path, "%s/%s.gz", dir, base);
    if (plain_len < 0 || (size_t)plain_len + 3 >= n || (size_t)gz_len >= sizeof gz_path)
        return bn_fail(e, "%s/%s: path too long for a %zu-byte buffer (plus \".gz\")", dir,
                       base, BN_MIN(n, sizeof gz_path));

    struct stat st;
    if (stat(out, &st) == 0)
        return BN_OK;
    if (stat(gz_path, &st) == 0) {
        memcpy(out, gz_path, (size_t)gz_len + 1);
        return BN_OK;
    }
    return bn_fail(e, "%s: not found, and neither is %s", out, gz_path);
}
