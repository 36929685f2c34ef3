/* dataset.c: locating, loading, splitting and gathering the data. */
#define _GNU_SOURCE
#include "bnmpi/dataset.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bnmpi/comm.h"
#include "bnmpi/rng.h"

#ifndef BNMPI_SOURCE_DATA_DIR
#define BNMPI_SOURCE_DATA_DIR ""
#endif

static const char *const file_base[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};

static int has_data(const char *dir) {
    char path[BN_PATH];
    bn_err ignored;
    return idx_find(dir, file_base[0], path, sizeof path, &ignored) == BN_OK;
}

int dataset_find_dir(const bn_config *c, char *out, size_t n, bn_err *e) {
    if (c->data[0]) {
        struct stat st;
        if (stat(c->data, &st) != 0 || !S_ISDIR(st.st_mode))
            return bn_fail(e, "--data %s: no such directory (fetch MNIST with data/fetch-mnist.sh DIR)", c->data);
        snprintf(out, n, "%s", c->data);
        return BN_OK;
    }
    if (c->dataset == DATA_FASHION) {
        if (!has_data(FASHION_DIR))
            return bn_fail(e, "Fashion-MNIST not found in %s (install it with: apt-get install "
                              "dataset-fashion-mnist), or pass --data DIR", FASHION_DIR);
        snprintf(out, n, "%s", FASHION_DIR);
        return BN_OK;
    }
    char candidates[3][BN_PATH] = {{0}};
    const char *env = getenv("BNMPI_DATA");
    if (env && env[0]) snprintf(candidates[0], BN_PATH, "%s", env);
    char exe[BN_PATH];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len > 0) {
        exe[len] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) *slash = '\0';
        snprintf(candidates[1], BN_PATH, "%.900s/../share/bnmpi/data/mnist", exe);
    }
    snprintf(candidates[2], BN_PATH, "%s", BNMPI_SOURCE_DATA_DIR);
    char tried[3 * BN_PATH + 8] = "";
    size_t used = 0;
    for (int i = 0; i < 3; i++) {
        if (!candidates[i][0]) continue;
        if (has_data(candidates[i])) {
            char canonical[PATH_MAX];
            snprintf(out, n, "%s", realpath(candidates[i], canonical) ? canonical : candidates[i]);
            return BN_OK;
        }
        used += (size_t)snprintf(tried + used, sizeof tried - used, "%s%s", used ? ", " : "", candidates[i]);
    }
    return bn_fail(e, "MNIST not found (looked in %s); fetch it with tools/setup.sh or data/fetch-mnist.sh, "
                      "or pass --data DIR", tried[0] ? tried : "no candidate directory");
}

/* The four files' paths in d->dir, and their headers cross-checked. */
static int read_headers(dataset *d, char path[4][BN_PATH], idx_array *arrays[4], bn_err *e) {
    for (int i = 0; i < 4; i++) {
        if (idx_find(d->dir, file_base[i], path[i], BN_PATH, e) != BN_OK) return BN_ERR;
        if (idx_read_header(path[i], i % 2 == 0 ? 3 : 1, arrays[i], e) != BN_OK) return BN_ERR;
    }
    for (int i = 0; i < 4; i += 2) {
        const idx_array *im = arrays[i], *lb = arrays[i + 1];
        if (im->rows != MNIST_SIDE || im->cols != MNIST_SIDE) /* each may be up to 2^31: no product */
            return bn_fail(e, "%s: images are %dx%d, expected 28x28", path[i], im->rows, im->cols);
        if (im->count != lb->count)
            return bn_fail(e, "%s holds %d labels but %s holds %d images", path[i + 1], lb->count, path[i],
                           im->count);
    }
    return BN_OK;
}

static size_t array_bytes(const idx_array *a) { return (size_t)a->count * a->rows * a->cols; }

int dataset_load(dataset *d, const bn_config *c, bn_err *e) {
    memset(d, 0, sizeof *d);
    if (dataset_find_dir(c, d->dir, sizeof d->dir, e) != BN_OK) return BN_ERR;
    /* one copy per node: the node's rank 0 checks the headers, every rank of
     * the node maps windows of the sizes they give, and rank 0 reads the data
     * (checked again in full) straight into them */
    idx_array *arrays[4] = {&d->train_images, &d->train_labels, &d->test_images, &d->test_labels};
    char path[4][BN_PATH];
    const int root = comm_node_rank() == 0;
    if (comm_node_share(root ? read_headers(d, path, arrays, e) : BN_OK, e) != BN_OK) return BN_ERR;
    uint8_t *shared[4];
    for (int i = 0; i < 4; i++) {
        comm_node_bcast_chars((char *)arrays[i], sizeof *arrays[i]); /* count, rows, cols */
        shared[i] = comm_node_shared_alloc(array_bytes(arrays[i]));
    }
    int status = BN_OK;
    for (int i = 0; i < 4 && root && status == BN_OK; i++)
        status = idx_read_into(path[i], i % 2 == 0 ? 3 : 1, arrays[i], shared[i], array_bytes(arrays[i]), e);
    if (comm_node_share(status, e) != BN_OK) return BN_ERR;
    for (int i = 0; i < 4; i++) {
        comm_node_bcast_chars(arrays[i]->sha256, sizeof arrays[i]->sha256);
        arrays[i]->data = shared[i];
        arrays[i]->shared = 1;
    }
    const int total = d->train_images.count;
    d->n_val = (int)lround(c->val_fraction * total);
    d->n_train = total - d->n_val;
    if (d->n_train < 1) return bn_fail(e, "--val-fraction %g leaves no training samples", c->val_fraction);
    if (d->n_val < 1)
        return bn_fail(e, "--val-fraction %g leaves no validation samples, so every validation metric would be NaN; "
                          "use at least %.2g (one of the %d training images)",
                       c->val_fraction, 1.0 / total, total);
    int32_t *perm = bn_calloc((size_t)total, sizeof(int32_t));
    for (int i = 0; i < total; i++) perm[i] = i;
    bn_rng r;
    rng_seed(&r, (uint64_t)c->split_seed, RNG_SPLIT, 0);
    rng_shuffle(&r, perm, total);
    d->val_idx = bn_calloc((size_t)BN_MAX(d->n_val, 1), sizeof(int32_t));
    d->train_idx = bn_calloc((size_t)d->n_train, sizeof(int32_t));
    memcpy(d->val_idx, perm, sizeof(int32_t) * (size_t)d->n_val);
    memcpy(d->train_idx, perm + d->n_val, sizeof(int32_t) * (size_t)d->n_train);
    free(perm);
    if (c->train_limit && c->train_limit < d->n_train) d->n_train = c->train_limit;
    d->n_test = d->test_images.count;
    d->test_idx = bn_calloc((size_t)d->n_test, sizeof(int32_t));
    for (int i = 0; i < d->n_test; i++) d->test_idx[i] = i;
    return BN_OK;
}

void dataset_free(dataset *d) {
    idx_free(&d->train_images);
    idx_free(&d->train_labels);
    idx_free(&d->test_images);
    idx_free(&d->test_labels);
    free(d->train_idx);
    free(d->val_idx);
    free(d->test_idx);
    memset(d, 0, sizeof *d);
}

/* The rows are random 784-byte pieces of a 47 MB array, mostly not in cache:
 * asking for row i + GATHER_AHEAD while converting row i took a 64-row gather
 * from ~50 us to ~21 us (a stand-alone copy of this loop, one core). */
enum { GATHER_AHEAD = 4 };

/* Row i of the batch: rows[pos[i]], or rows[i] without pos. */
static int32_t batch_row(const int32_t *rows, const int32_t *pos, int i) { return rows[pos ? pos[i] : i]; }

static const uint8_t *image(const idx_array *images, int32_t row) {
    return images->data + (size_t)row * MNIST_PIXELS;
}

static void prefetch(const uint8_t *src) {
    for (int o = 0; o < MNIST_PIXELS; o += 64) __builtin_prefetch(src + o, 0, 0);
}

void dataset_gather(float *x, uint8_t *y, const idx_array *images, const idx_array *labels, const int32_t *rows,
                    const int32_t *pos, int B) {
    const float scale = 1.0f / 255.0f;
    for (int i = 0; i < GATHER_AHEAD && i < B; i++) prefetch(image(images, batch_row(rows, pos, i)));
    for (int i = 0; i < B; i++) {
        if (i + GATHER_AHEAD < B) prefetch(image(images, batch_row(rows, pos, i + GATHER_AHEAD)));
        const int32_t row = batch_row(rows, pos, i);
        const uint8_t *src = image(images, row);
        float *dst = x + (size_t)i * MNIST_PIXELS;
        for (int p = 0; p < MNIST_PIXELS; p++) dst[p] = (float)src[p] * scale;
        y[i] = labels->data[row];
    }
}
