/* arch.h: the network's hidden layers as the user wrote them: --arch, or
 * --hidden for an MLP. The input is the 28x28x1 image and the output layer
 * is always dense 10; batch norm and ReLU are placed by model.c.
 *
 * --arch grammar: comma-separated tokens
 *   convC    C output channels, 3x3 kernel, stride 1, zero padding keeping H, W
 *   convCkK  the same with a KxK kernel (K odd, 1 to 7)
 *   pool     2x2 max pooling, stride 2; an odd H or W is floored (7x7 -> 3x3)
 *   denseN   N units (flattens the image the first time)
 * Convolutions and pooling come before the first dense layer. */
#ifndef BNMPI_ARCH_H
#define BNMPI_ARCH_H

#include <stddef.h>

#include "bnmpi/common.h"

#define ARCH_MAX_TOKENS 16   /* layers in --arch */
#define ARCH_MAX_LINEAR 8    /* hidden conv and dense layers (each gets a BN) */
#define ARCH_MAX_UNITS 65536 /* dense units */
#define ARCH_MAX_CHANNELS 4096
#define ARCH_INPUT_SIDE 28
#define ARCH_OUTPUT 10

typedef enum { ARCH_DENSE, ARCH_CONV, ARCH_POOL } arch_kind;

typedef struct {
    arch_kind kind;
    int units;      /* dense: units; conv: output channels; pool: 0 */
    int k;          /* conv: kernel size */
    int h, w, c;    /* the output shape of one sample */
} arch_layer;

typedef struct {
    arch_layer layer[ARCH_MAX_TOKENS];
    int n;          /* hidden layers */
    int n_linear;   /* of which conv or dense */
    int convnet;    /* has a conv or pool layer */
} arch_spec;

/* From --arch text, or (when text is empty) from the --hidden widths.
 * Fails naming the token and what was expected. */
int arch_parse(arch_spec *a, const char *text, const char *hidden, bn_err *e);
/* "conv3x3x32 28x28x32, pool 14x14x32, ..., dense 10" for the header. */
void arch_describe(const arch_spec *a, char *out, size_t n);
/* For file names: "h256" or "h512x256" for an MLP, else the tokens joined
 * by '-' ("conv32-pool-conv64-pool-dense128"). */
void arch_file_tag(const arch_spec *a, const char *text, const char *hidden, char *out, size_t n);

#endif
