/* gradsync.c: the gradient sum and update through node-shared memory. */
#include "bnmpi/gradsync.h"

#include <stdlib.h>
#include <string.h>

#include "bnmpi/comm.h"

enum { LINE = 16 }; /* floats per cache line */

static size_t shard_edge(size_t n, int r, int P) {
    size_t e = n * (size_t)r / (size_t)P / LINE * LINE;
    return r == P ? n : e;
}

void gradsync_init(gradsync *g, model *m, optimizer *o) {
    memset(g, 0, sizeof *g);
    g->on = 1;
    g->node_size = comm_node_size();
    g->node_rank = comm_node_rank();
    if (g->node_size > GRADSYNC_MAX_NODE_RANKS) /* main.c checks first */
        bn_fatal("%d ranks on one node: --reduce node handles at most %d", g->node_size, GRADSYNC_MAX_NODE_RANKS);
    const size_t n = m->n_params;
    g->lo = shard_edge(n, g->node_rank, g->node_size);
    g->hi = shard_edge(n, g->node_rank + 1, g->node_size);
    free(m->params);
    free(m->grads);
    free(o->m);
    free(o->v);
    m->params = comm_node_shared_alloc(sizeof(float) * n);
    o->m = comm_node_shared_alloc(sizeof(float) * n);
    o->v = o->kind == OPT_ADAM ? comm_node_shared_alloc(sizeof(float) * n) : NULL;
    m->grads = comm_node_shared_slots(n + MODEL_GRAD_TAIL, g->slots);
    m->shared = o->shared = 1;
    /* every rank zeroes its own slot; node rank 0 the single copies */
    memset(m->grads, 0, sizeof(float) * (n + MODEL_GRAD_TAIL));
    if (g->node_rank == 0) {
        memset(o->m, 0, sizeof(float) * n);
        if (o->v) memset(o->v, 0, sizeof(float) * n);
    }
    comm_node_fence(T_GRAD_COMM);
}

/* Its time, arithmetic included (as MPI_Allreduce's includes its sums), goes to T_GRAD_COMM. */
void gradsync_reduce(gradsync *g, const model *m, float tail_out[MODEL_GRAD_TAIL]) {
    const double t0 = bn_now();
    comm_node_fence(-1); /* every slot complete */
    const size_t n = m->n_params;
    float *mine = g->slots[g->node_rank];
    for (int q = 0; q < g->node_size; q++) {
        if (q == g->node_rank) continue;
        float *peer = g->slots[q];
        for (size_t i = g->lo; i < g->hi; i++) {
            mine[i] += peer[i];
            peer[i] = 0.0f;
        }
    }
    for (int k = 0; k < MODEL_GRAD_TAIL; k++) {
        float s = 0.0f;
        for (int q = 0; q < g->node_size; q++) s += g->slots[q][n + k];
        tail_out[k] = s;
    }
    bn_timers[T_GRAD_COMM] += bn_now() - t0;
    comm_cross_sum_f32(mine + g->lo, g->hi - g->lo, T_GRAD_COMM);
    comm_cross_sum_f32(tail_out, MODEL_GRAD_TAIL, T_GRAD_COMM);
}

void gradsync_update(gradsync *g, model *m, optimizer *o, int full_sum) {
    /* after a whole-slot sum the caller read the parameters (diagnostics):
     * no rank may change its shard before every rank has */
    if (full_sum) comm_node_fence(T_GRAD_COMM);
    optim_step_range(o, m, g->lo, g->hi);
    if (full_sum) { /* the slot was summed whole: zero what the update did not */
        memset(m->grads, 0, sizeof(float) * g->lo);
        memset(m->grads + g->hi, 0, sizeof(float) * (m->n_params - g->hi));
    }
    comm_node_fence(T_GRAD_COMM); /* every shard updated */
}
