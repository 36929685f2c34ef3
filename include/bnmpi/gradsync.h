/* gradsync.h: the gradient sum and update through node-shared memory
 * (--reduce node).
 *
 * The node holds one copy of the parameters and of the optimizer state, and
 * one gradient slot (n_params + MODEL_GRAD_TAIL floats) per node rank, all in
 * MPI-3 shared windows. A step, on node rank r of P:
 *   backward adds into slot r                    (the rank's own gradient)
 *   fence
 *   shard r = [lo, hi) of the parameters: slot r[lo, hi) = sum over q of
 *     slot q[lo, hi), in node-rank order; slot q[lo, hi) = 0 for q != r;
 *     the tails of every slot are summed into tail_out (read only)
 *   across nodes: one MPI_Allreduce of shard r and of tail_out among the
 *     ranks with node rank r (every node has P ranks)
 *   the optimizer updates parameters [lo, hi) from slot r[lo, hi), zeroing it
 *   fence
 * so every slot is zero again, and each parameter was updated once per node.
 * Against one MPI_Allreduce of the whole gradient and P copies of the update,
 * no bytes are copied between ranks and the update work is split P ways.
 * Shard boundaries are multiples of 16 floats (one cache line). */
#ifndef BNMPI_GRADSYNC_H
#define BNMPI_GRADSYNC_H

#include <stddef.h>

#include "bnmpi/model.h"
#include "bnmpi/optim.h"

#define GRADSYNC_MAX_NODE_RANKS 256

typedef struct {
    int on;                   /* --reduce node */
    int node_size, node_rank;
    size_t lo, hi;            /* this rank's shard of the parameters */
    float *slots[GRADSYNC_MAX_NODE_RANKS]; /* node rank q's gradient slot */
} gradsync;

/* Moves the model's parameters and gradients and the optimizer's state into
 * node-shared memory (their earlier contents are dropped: call before the
 * parameters are set). Collective. */
void gradsync_init(gradsync *g, model *m, optimizer *o);
/* After backward: the shard sum and the tails, as above (the first fence
 * included). tail_out gets the global sums of the tail. */
void gradsync_reduce(gradsync *g, const model *m, float tail_out[MODEL_GRAD_TAIL]);
/* The update of this rank's shard, then the closing fence. With full_sum the
 * caller has summed the whole slot itself (an MPI_Allreduce, for diagnostics
 * that read the whole gradient and the parameters before the update): a fence
 * comes first, and the rest of the slot is zeroed here. */
void gradsync_update(gradsync *g, model *m, optimizer *o, int full_sum);

#endif
