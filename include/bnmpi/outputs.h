/* outputs.h: where a run writes, and the rule that no two outputs are one file.
 *
 * A run writes its metrics file, its checkpoint (--checkpoint, or the one a
 * signal writes beside the metrics file) and, for each, a temporary file
 * PATH.tmp; --resume names the checkpoint it reads. Two of these that
 * resolve to one file (the same path, a symlink, ./x and x) would destroy
 * each other, so a run refuses them before it trains. */
#ifndef BNMPI_OUTPUTS_H
#define BNMPI_OUTPUTS_H

#include <stddef.h>

#include "bnmpi/common.h"

/* The checkpoint a signal writes when --checkpoint is not given: the metrics
 * path with ".h5" replaced by ".ckpt.h5". */
void outputs_signal_checkpoint(const char *metrics, char *out, size_t n);

/* Fails when the metrics file and the checkpoint (or either's .tmp and the
 * other) are one file, or when the metrics file is the --resume checkpoint
 * (resume may be ""). Files need not exist. Names both flags and paths. */
int outputs_check_distinct(const char *metrics, const char *checkpoint, const char *resume, bn_err *e);

#endif
