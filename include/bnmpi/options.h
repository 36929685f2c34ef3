/* options.h: the one option table. It drives getopt_long, --help, the README's
 * option list (--help-markdown), the resolved-configuration printout and the
 * /config attributes of the metrics file, so none of them can drift. */
#ifndef BNMPI_OPTIONS_H
#define BNMPI_OPTIONS_H

#include <stdio.h>
#include "bnmpi/arch.h"
#include "bnmpi/common.h"

#define BN_MAX_HIDDEN ARCH_MAX_LINEAR /* hidden conv and dense layers */
#define BN_PATH 1024

typedef enum { BN_NONE, BN_LOCAL, BN_SYNC } bn_mode;
typedef enum { BN_BEFORE_RELU, BN_AFTER_RELU } bn_place;
typedef enum { OPT_ADAM, OPT_SGD } optim_kind;
typedef enum { DATA_MNIST, DATA_FASHION } dataset_kind;
typedef enum { BN_EVAL_RUNNING, BN_EVAL_RECOMPUTE } bn_eval_kind;
typedef enum { LR_SCALE_NONE, LR_SCALE_LINEAR, LR_SCALE_SQRT } lr_scale_kind;
typedef enum { REDUCE_AUTO, REDUCE_NODE, REDUCE_MPI } reduce_kind;

typedef struct {
    /* as given (or defaulted) on the command line */
    char data[BN_PATH];      /* "" = search the default places */
    int dataset;             /* dataset_kind */
    int epochs;
    int batch;               /* per rank; 0 = derive */
    int global_batch;        /* 0 = derive */
    int bn;                  /* bn_mode */
    int bn_place;            /* bn_place */
    double bn_momentum;
    double bn_eps;
    int bn_group;            /* ranks per BN group; 0 = by --bn (1 local, all sync) */
    int ghost_batch;         /* rows per ghost batch inside a rank's batch; 0 = off */
    int bn_eval;             /* bn_eval_kind */
    char hidden[128];        /* "256" or "512,256" */
    char arch[256];          /* "" = the MLP of --hidden */
    int optimizer;           /* optim_kind */
    double lr;               /* 0 = the optimizer's default */
    int lr_scale;            /* lr_scale_kind */
    int lr_ref_batch;
    double warmup_epochs;
    double beta1, beta2, adam_eps;
    double momentum;
    int nesterov;
    double weight_decay;
    int seed;
    double init_scale;
    int split_seed;
    double val_fraction;
    int train_limit;         /* 0 = all */
    int eval_batch;
    int diagnostics;         /* log per-layer diagnostics every N steps; 0 = off */
    char metrics[BN_PATH];   /* "" = a new file under runs/ */
    int force;
    int threads;             /* 0 = by policy */
    int reduce;              /* reduce_kind; main resolves auto */
    int overlap;             /* row blocks of the overlapped first-layer gradient; 0 = blocking allreduce */
    double watchdog;         /* seconds without progress before the job is ended; 0 = off */
    int quiet;
    char checkpoint[BN_PATH]; /* "" = none */
    int checkpoint_every;    /* steps; 0 = at epoch ends only */
    char resume[BN_PATH];    /* "" = a fresh run */

    unsigned char given[64]; /* given[i]: option i was on the command line */

    /* resolved by options_resolve */
    int n_ranks;
    arch_spec net;           /* the hidden layers, from --arch or --hidden */
    int bn_batch;            /* samples per BN statistic: ghost, or batch x bn_group */
    double lr_peak;          /* lr after --lr-scale: the rate after warm-up */
} bn_config;

typedef enum { PARSE_RUN, PARSE_EXIT_OK, PARSE_ERROR } parse_result;

/* Every option at its default, nothing given. */
void options_defaults(bn_config *c);

/* Fills defaults, parses argv. PARSE_EXIT_OK after --help/--version (text in
 * `out` already printed when print is set). Every rank parses; only print on one. */
parse_result options_parse(bn_config *c, int argc, char **argv, int print, bn_err *e);
/* Derives batch sizes, the layers, lr default; checks them against n_ranks. */
int options_resolve(bn_config *c, int n_ranks, bn_err *e);
/* "  name  value" lines for every option, after resolve. */
void options_print(const bn_config *c, FILE *f);
void options_help(FILE *f);
void options_help_markdown(FILE *f);

/* Walks the table for writers of the configuration (metrics, checkpoints). */
typedef enum { OV_INT, OV_DOUBLE, OV_STRING } opt_value_kind;
typedef struct {
    const char *name;        /* the flag without dashes, e.g. "global-batch" */
    opt_value_kind kind;
    long long i;
    double d;
    const char *s;           /* string value, or the choice's name */
} opt_value;
int options_count(void);
void options_value(const bn_config *c, int i, opt_value *v);
/* Sets option `name` from its command-line spelling, with the same checks. */
int options_set(bn_config *c, const char *name, const char *value, bn_err *e);
/* Resuming: c holds the command line, saved the checkpoint's configuration.
 * Options not given take the checkpoint's value (a few, such as --threads and
 * --data, take their default instead); a given option that would change the
 * computation (everything but --epochs, --threads, --data, --metrics,
 * --checkpoint*, --eval-batch, --quiet, --force, --batch) must equal the
 * checkpoint's. --batch is re-derived from the global batch. */
int options_merge_resume(bn_config *c, const bn_config *saved, bn_err *e);
/* Whether a and b (two saved configurations) describe the same computation:
 * every option that a resume may not change is equal (a sync run's BN group
 * of all ranks counts as equal at any rank count). Otherwise fails naming the
 * first option that differs, as "--NAME A (the other: B)". */
int options_same_computation(const bn_config *a, const bn_config *b, bn_err *e);

const char *bn_mode_name(int m);
const char *optimizer_name(int o);
const char *dataset_name(int d);

#endif
