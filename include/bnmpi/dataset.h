/* dataset.h: the four IDX files of MNIST or Fashion-MNIST, the train/validation
 * split, and batch gathering. Images stay uint8 in memory (60000 x 784 bytes);
 * a batch is converted to float in [0, 1] as it is gathered. */
#ifndef BNMPI_DATASET_H
#define BNMPI_DATASET_H

#include "bnmpi/idx.h"
#include "bnmpi/options.h"

#define MNIST_SIDE 28 /* images are MNIST_SIDE x MNIST_SIDE */
#define MNIST_PIXELS (MNIST_SIDE * MNIST_SIDE)
#define FASHION_DIR "/usr/share/datasets/fashion-mnist"

typedef struct {
    char dir[BN_PATH];
    idx_array train_images, train_labels, test_images, test_labels;
    int32_t *train_idx; /* (n_train) rows of train_images used for training */
    int32_t *val_idx;   /* (n_val) rows held out for validation */
    int32_t *test_idx;  /* (n_test) 0..n_test-1 */
    int n_train, n_val, n_test;
} dataset;

/* Where the data is: --data, else (mnist) $BNMPI_DATA, the installed copy
 * beside the executable (<bin>/../share/bnmpi/data/mnist), the source tree's
 * data/mnist; (fashion) /usr/share/datasets/fashion-mnist. The error lists
 * every place tried and how to fetch the data. */
int dataset_find_dir(const bn_config *c, char *out, size_t n, bn_err *e);
/* Loads and validates the four files (collective: the node's rank 0 reads
 * them into memory shared by the node's ranks, so the data is held once per
 * node), then splits the 60000 training images
 * into validation (the first round(val_fraction * n) of a permutation seeded
 * by split_seed) and training (the rest, cut to train_limit when set). */
int dataset_load(dataset *d, const bn_config *c, bn_err *e);
void dataset_free(dataset *d);

/* x (B, 784) = images[row] / 255 and y (B) = labels[row], in one pass, where
 * row = rows[pos[i]] (rows[i] when pos is NULL). */
void dataset_gather(float *x, uint8_t *y, const idx_array *images, const idx_array *labels, const int32_t *rows,
                    const int32_t *pos, int B);

#endif
