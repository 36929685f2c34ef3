/* idx.h: reading IDX files (LeCun's MNIST format), plain or gzip-compressed.
 *
 * Format: big-endian magic 0x00 0x00 type ndim, then ndim big-endian uint32
 * dimensions, then prod(dims) bytes of data. bnmpi accepts type 0x08 (uint8)
 * only: images have ndim 3 (count, rows, cols), labels ndim 1 (count). */
#ifndef BNMPI_IDX_H
#define BNMPI_IDX_H

#include "bnmpi/common.h"

typedef struct {
    uint8_t *data;     /* (count, rows, cols) for images, (count) for labels; malloc'd */
    int count;
    int rows, cols;    /* 1, 1 for labels */
    char sha256[65];   /* of the uncompressed file bytes, header included */
    int shared;        /* data lives in a node-shared window: idx_free leaves it */
} idx_array;

/* Reads `path` (gzip is detected by content, so a plain file named .gz or a gz
 * file without the suffix both work). expect_ndim is 3 for images, 1 for labels.
 * Validates: the file opens and is a regular file, the magic, ndim, the
 * element type, that dimensions are non-zero, that the data length equals the
 * product of the dimensions (no missing and no trailing bytes), a gzip stream
 * that decodes cleanly, and for labels (ndim 1) that every value is 0..9.
 * Each error message starts with the path. */
int idx_read(const char *path, int expect_ndim, idx_array *out, bn_err *e);
/* The same checks of the header only: count, rows and cols, no data. */
int idx_read_header(const char *path, int expect_ndim, idx_array *out, bn_err *e);
/* idx_read into a buffer the caller owns, which must hold exactly the data
 * (bytes = count * rows * cols, as idx_read_header said); out->data = buf. */
int idx_read_into(const char *path, int expect_ndim, idx_array *out, uint8_t *buf, size_t bytes, bn_err *e);
void idx_free(idx_array *a);

/* Finds "<dir>/<base>" or "<dir>/<base>.gz", whichever exists (plain first).
 * Writes the path into out (size n). Returns BN_ERR naming both candidates when
 * neither exists. */
int idx_find(const char *dir, const char *base, char *out, size_t n, bn_err *e);

#endif
