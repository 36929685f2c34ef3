/* options.c: the option table and everything derived from it. */
#include "bnmpi/options.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef enum { K_INT, K_DOUBLE, K_STRING, K_CHOICE, K_FLAG } opt_kind;

typedef struct {
    const char *section;   /* non-NULL starts a --help section */
    const char *name;      /* long flag without dashes */
    opt_kind kind;
    size_t offset;         /* into bn_config */
    size_t size;           /* K_STRING buffer size */
    const char *def;       /* default, as typed on the command line */
    const char *meta;      /* argument name in --help */
    const char *choices;   /* K_CHOICE: "a|b|c", the index is stored */
    double lo, hi;         /* K_INT/K_DOUBLE inclusive range */
    int lo_open;           /* the range excludes lo */
    int auto_zero;         /* "auto" is accepted and stored as 0 */
    const char *help;
    int resume;            /* RESUME_* flags: how the option behaves at --resume */
} opt_def;

enum {
    RESUME_FREE = 1,    /* may differ from the checkpoint's value */
    RESUME_DEFAULT = 2, /* when not given, the default rather than the checkpoint's value */
};

#define F(field) offsetof(bn_config, field)
#define S(field) sizeof(((bn_config *)0)->field)

static const opt_def table[] = {
    {"Data", "data", K_STRING, F(data), S(data), "", "DIR", NULL, 0, 0, 0, 0,
     "folder holding the four IDX files under their original names, plain or .gz "
     "(default: $BNMPI_DATA, then the data fetched by tools/setup.sh)", RESUME_FREE | RESUME_DEFAULT},
    {NULL, "dataset", K_CHOICE, F(dataset), 0, "mnist", "NAME", "mnist|fashion", 0, 0, 0, 0,
     "MNIST, or Fashion-MNIST from Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist)", 0},
    {NULL, "val-fraction", K_DOUBLE, F(val_fraction), 0, "0.2", "F", NULL, 0, 0.9, 0, 0,
     "share of the 60000 training images held out for validation", 0},
    {NULL, "split-seed", K_INT, F(split_seed), 0, "42", "N", NULL, 0, 2147483647, 0, 0,
     "seed of the train/validation split (fixed, like the notebook's random_state=42)", 0},
    {NULL, "train-limit", K_INT, F(train_limit), 0, "0", "N", NULL, 0, 2147483647, 0, 0,
     "use only the first N training samples of the split, for quick runs (0 = all)", 0},

    {"Model", "hidden", K_STRING, F(hidden), S(hidden), "256", "LIST", NULL, 0, 0, 0, 0,
     "the MLP's hidden layer widths, e.g. 256 or 512,256 (input 784, output 10)", 0},
    {NULL, "arch", K_STRING, F(arch), S(arch), "", "LAYERS", NULL, 0, 0, 0, 0,
     "hidden layers instead of --hidden, e.g. conv32,pool,conv64,pool,dense128: convC (3x3, C channels, padding "
     "keeps the size), convCkK (KxK, K odd), pool (2x2 max, stride 2, odd sizes floored), denseN; input 28x28x1, "
     "output dense 10, BN and ReLU after every conv and dense layer", 0},
    {NULL, "bn", K_CHOICE, F(bn), 0, "sync", "MODE", "none|local|sync", 0, 0, 0, 0,
     "batch norm on every hidden layer: none, local (each rank's own batch statistics) or sync (statistics over the global batch)", 0},
    {NULL, "bn-place", K_CHOICE, F(bn_place), 0, "after", "WHERE", "before|after", 0, 0, 0, 0,
     "BN before the ReLU (Ioffe & Szegedy) or after it (the notebook)", 0},
    {NULL, "bn-momentum", K_DOUBLE, F(bn_momentum), 0, "0.99", "M", NULL, 0, 1, 0, 0,
     "running statistics: r = M*r + (1-M)*batch (Keras convention)", 0},
    {NULL, "bn-group", K_INT, F(bn_group), 0, "auto", "G", NULL, 1, 1 << 20, 0, 1,
     "synchronise BN statistics within groups of G consecutive ranks (G divides the rank count); "
     "auto: 1 for --bn local, all ranks for --bn sync; BN batch = batch x G", 0},
    {NULL, "ghost-batch", K_INT, F(ghost_batch), 0, "0", "K", NULL, 0, 1 << 20, 0, 0,
     "ghost batch norm: statistics over virtual batches of K samples inside a rank's batch (with --bn "
     "local; K divides --batch); 0 = off", 0},
    {NULL, "bn-eval", K_CHOICE, F(bn_eval), 0, "running", "HOW", "running|recompute", 0, 0, 0, 0,
     "statistics for evaluation: the running averages, or recomputed before each evaluation from one "
     "pass over the training set (count-weighted over ranks, Bessel-corrected)", 0},
    {NULL, "bn-eps", K_DOUBLE, F(bn_eps), 0, "0.001", "E", NULL, 0, 1, 1, 0,
     "added to the variance inside the square root (Keras default)", 0},

    {"Training", "epochs", K_INT, F(epochs), 0, "10", "N", NULL, 1, 100000, 0, 0,
     "number of epochs", RESUME_FREE},
    {NULL, "batch", K_INT, F(batch), 0, "auto", "N", NULL, 1, 1 << 20, 0, 1,
     "samples per rank per step; auto: global-batch / ranks, or 32", RESUME_FREE},
    {NULL, "global-batch", K_INT, F(global_batch), 0, "auto", "N", NULL, 1, 1 << 24, 0, 1,
     "samples per step over all ranks; must divide by the number of ranks; auto: batch x ranks", 0},
    {NULL, "optimizer", K_CHOICE, F(optimizer), 0, "adam", "NAME", "adam|sgd", 0, 0, 0, 0,
     "Adam with Keras defaults, or SGD (with --momentum, --nesterov, --weight-decay)", 0},
    {NULL, "lr", K_DOUBLE, F(lr), 0, "auto", "LR", NULL, 0, 1e9, 1, 1,
     "learning rate; auto: 0.001 for adam, 0.01 for sgd (Keras defaults)", 0},
    {NULL, "lr-scale", K_CHOICE, F(lr_scale), 0, "none", "RULE", "none|linear|sqrt", 0, 0, 0, 0,
     "scale --lr by global-batch / lr-ref-batch (linear, Goyal et al.) or its square root (Hoffer et al.)", 0},
    {NULL, "lr-ref-batch", K_INT, F(lr_ref_batch), 0, "32", "N", NULL, 1, 1 << 24, 0, 0,
     "the global batch at which --lr is meant", 0},
    {NULL, "warmup-epochs", K_DOUBLE, F(warmup_epochs), 0, "0", "E", NULL, 0, 1e6, 0, 0,
     "raise the learning rate linearly from 0 to its scaled value over the first E epochs, per step", 0},
    {NULL, "beta1", K_DOUBLE, F(beta1), 0, "0.9", "B", NULL, 0, 1, 0, 0, "Adam beta1", 0},
    {NULL, "beta2", K_DOUBLE, F(beta2), 0, "0.999", "B", NULL, 0, 1, 0, 0, "Adam beta2", 0},
    {NULL, "adam-eps", K_DOUBLE, F(adam_eps), 0, "1e-7", "E", NULL, 0, 1, 1, 0,
     "Adam epsilon (Keras places it outside the square root, after bias correction)", 0},
    {NULL, "momentum", K_DOUBLE, F(momentum), 0, "0", "M", NULL, 0, 1, 0, 0, "SGD momentum", 0},
    {NULL, "nesterov", K_FLAG, F(nesterov), 0, "0", NULL, NULL, 0, 0, 0, 0,
     "Nesterov momentum for SGD", 0},
    {NULL, "weight-decay", K_DOUBLE, F(weight_decay), 0, "0", "WD", NULL, 0, 1, 0, 0,
     "SGD L2 penalty on dense weights (not biases, not BN's gamma and beta)", 0},
    {NULL, "init-scale", K_DOUBLE, F(init_scale), 0, "1", "S", NULL, 0, 1e6, 1, 0,
     "multiply the initial (Glorot-uniform) weights by S, to test sensitivity to initialisation", 0},
    {NULL, "seed", K_INT, F(seed), 0, "1", "N", NULL, 0, 2147483647, 0, 0,
     "seed of the initial weights and the per-epoch shuffles", 0},

    {"Run", "eval-batch", K_INT, F(eval_batch), 0, "1000", "N", NULL, 1, 1 << 20, 0, 0,
     "samples per forward block in validation and test", RESUME_FREE},
    {NULL, "diagnostics", K_INT, F(diagnostics), 0, "0", "N", NULL, 0, 2147483647, 0, 0,
     "every N steps, log per-layer activation statistics, BN batch noise, gradient, weight and update "
     "norms and communication time to /diagnostics (0 = off)", 0},
    {NULL, "metrics", K_STRING, F(metrics), S(metrics), "", "PATH", NULL, 0, 0, 0, 0,
     "HDF5 metrics file (default: a new file under runs/ named after the configuration)", RESUME_FREE},
    {NULL, "force", K_FLAG, F(force), 0, "0", NULL, NULL, 0, 0, 0, 0,
     "overwrite an existing --metrics file", RESUME_FREE | RESUME_DEFAULT},
    {NULL, "threads", K_INT, F(threads), 0, "auto", "N", NULL, 1, 1024, 0, 1,
     "OpenBLAS threads per rank; auto: the cores this rank may use, shared among the ranks on its node, at least 1", RESUME_FREE | RESUME_DEFAULT},
    {NULL, "reduce", K_CHOICE, F(reduce), 0, "auto", "HOW", "auto|node|mpi", 0, 0, 0, 0,
     "how gradients are summed: node = the ranks of a node sum them in shared memory and each updates its "
     "1/P share of the node's one copy of the parameters and optimizer state (across nodes, one "
     "MPI_Allreduce per share); mpi = one MPI_Allreduce of the whole gradient, and every rank updates its own "
     "copy; auto = node when every node has as many ranks (at most 256) and --overlap is 0, else mpi",
     RESUME_FREE | RESUME_DEFAULT},
    {NULL, "overlap", K_INT, F(overlap), 0, "0", "K", NULL, 0, 32, 0, 0,
     "overlap the gradient allreduce with backward: the first layer's weight gradient (most of the "
     "gradient) is made in K row blocks, each summed by MPI_Iallreduce while the next is made, and the "
     "next batch is gathered while the sums finish; 0 = one MPI_Allreduce after backward, the faster on one "
     "node (docs/benchmark.md); with --reduce mpi; ignored with one rank",
     RESUME_FREE},
    {NULL, "watchdog", K_DOUBLE, F(watchdog), 0, "600", "SECONDS", NULL, 0, 1e7, 0, 0,
     "end the job with a message naming the collective and step when no step, evaluation block or checkpoint "
     "completes for SECONDS (a rank stopped, stalled or lost would otherwise leave the others waiting "
     "forever); 0 = off", RESUME_FREE | RESUME_DEFAULT},
    {NULL, "quiet", K_FLAG, F(quiet), 0, "0", NULL, NULL, 0, 0, 0, 0,
     "print only errors and the final summary", RESUME_FREE | RESUME_DEFAULT},

    {"Checkpoints", "checkpoint", K_STRING, F(checkpoint), S(checkpoint), "", "PATH", NULL, 0, 0, 0, 0,
     "write a checkpoint to PATH at the end of every epoch (atomically: a temporary file, fsync, "
     "rename)", RESUME_FREE},
    {NULL, "checkpoint-every", K_INT, F(checkpoint_every), 0, "0", "N", NULL, 0, 2147483647, 0, 0,
     "also write it every N steps (0 = at epoch ends only)", RESUME_FREE},
    {NULL, "resume", K_STRING, F(resume), S(resume), "", "PATH", NULL, 0, 0, 0, 0,
     "continue the run saved in checkpoint PATH; --epochs stays the total; the metrics file is "
     "appended to", RESUME_FREE | RESUME_DEFAULT},
};
#define N_OPTS ((int)(sizeof table / sizeof table[0]))

static const char *choice_name(const char *choices, int index, char *buf, size_t n) {
    const char *p = choices;
    for (int i = 0; i < index && p; i++) {
        p = strchr(p, '|');
        if (p) p++;
    }
    if (!p) return "?";
    size_t len = strcspn(p, "|");
    if (len >= n) len = n - 1;
    memcpy(buf, p, len);
    buf[len] = '\0';
    return buf;
}

static int choice_index(const char *choices, const char *s) {
    char buf[32];
    for (int i = 0;; i++) {
        const char *name = choice_name(choices, i, buf, sizeof buf);
        if (strcmp(name, "?") == 0) return -1;
        if (strcmp(name, s) == 0) return i;
    }
}

static const char *mode_names[] = {"none", "local", "sync"};
const char *bn_mode_name(int m) { return m >= 0 && m < 3 ? mode_names[m] : "?"; }
const char *optimizer_name(int o) { return o == OPT_SGD ? "sgd" : "adam"; }
const char *dataset_name(int d) { return d == DATA_FASHION ? "fashion" : "mnist"; }

static void range_text(const opt_def *o, char *buf, size_t n) {
    if (o->kind == K_INT)
        snprintf(buf, n, "an integer from %.0f to %.0f", o->lo, o->hi);
    else
        snprintf(buf, n, "a number %s %g and <= %g", o->lo_open ? ">" : ">=", o->lo, o->hi);
}

static int has_control(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f) return 1;
    return 0;
}

static int set_value(bn_config *c, const opt_def *o, const char *arg, bn_err *e) {
    char *p = (char *)c + o->offset;
    char expected[96];
    if (o->auto_zero && strcmp(arg, "auto") == 0) {
        if (o->kind == K_INT) *(int *)p = 0;
        else *(double *)p = 0.0;
        return BN_OK;
    }
    switch (o->kind) {
    case K_FLAG:
        *(int *)p = strcmp(arg, "1") == 0;
        return BN_OK;
    case K_STRING:
        if (strlen(arg) >= o->size)
            return bn_fail(e, "--%s: value longer than %zu characters", o->name, o->size - 1);
        strcpy(p, arg);
        return BN_OK;
    case K_CHOICE: {
        int i = choice_index(o->choices, arg);
        if (i < 0)
            return bn_fail(e, "--%s: expected one of %s, got '%s'", o->name, o->choices, arg);
        *(int *)p = i;
        return BN_OK;
    }
    case K_INT: {
        char *end;
        errno = 0;
        long v = strtol(arg, &end, 10);
        range_text(o, expected, sizeof expected);
        if (errno || end == arg || *end != '\0' || v < o->lo || v > o->hi)
            return bn_fail(e, "--%s: expected %s%s, got '%s'", o->name, expected,
                           o->auto_zero ? " or auto" : "", arg);
        *(int *)p = (int)v;
        return BN_OK;
    }
    case K_DOUBLE: {
        char *end;
        errno = 0;
        double v = strtod(arg, &end);
        range_text(o, expected, sizeof expected);
        if (errno || end == arg || *end != '\0' || !isfinite(v) || v > o->hi ||
            (o->lo_open ? v <= o->lo : v < o->lo))
            return bn_fail(e, "--%s: expected %s%s, got '%s'", o->name, expected,
                           o->auto_zero ? " or auto" : "", arg);
        *(double *)p = v;
        return BN_OK;
    }
    }
    return BN_ERR;
}

enum { ID_HELP = 1000, ID_VERSION, ID_HELP_MD };

static int option_index(const char *name) {
    for (int i = 0; i < N_OPTS; i++)
        if (strcmp(table[i].name, name) == 0) return i;
    return -1;
}

void options_defaults(bn_config *c) {
    memset(c, 0, sizeof *c);
    for (int i = 0; i < N_OPTS; i++)
        if (set_value(c, &table[i], table[i].def, NULL) != BN_OK) bn_fatal("option table: bad default of --%s", table[i].name);
}

parse_result options_parse(bn_config *c, int argc, char **argv, int print, bn_err *e) {
    options_defaults(c);

    struct option longopts[N_OPTS + 4];
    for (int i = 0; i < N_OPTS; i++)
        longopts[i] = (struct option){table[i].name,
                                      table[i].kind == K_FLAG ? no_argument : required_argument,
                                      NULL, i};
    longopts[N_OPTS] = (struct option){"help", no_argument, NULL, ID_HELP};
    longopts[N_OPTS + 1] = (struct option){"version", no_argument, NULL, ID_VERSION};
    longopts[N_OPTS + 2] = (struct option){"help-markdown", no_argument, NULL, ID_HELP_MD};
    longopts[N_OPTS + 3] = (struct option){0, 0, 0, 0};

    opterr = 0;
    optind = 0; /* glibc: start over, including the place inside a cluster like -hx */
    int id, token = 1;
    /* "+": stop at the first non-option (an error below), so that argv[token]
     * is always the token getopt_long is reading */
    while ((token = optind ? optind : 1, id = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
        if (id == ID_HELP || id == 'h') {
            if (print) options_help(stdout);
            return PARSE_EXIT_OK;
        }
        if (id == ID_HELP_MD) {
            if (print) options_help_markdown(stdout);
            return PARSE_EXIT_OK;
        }
        if (id == ID_VERSION) {
            if (print) printf("bnmpi %s\n", BNMPI_VERSION);
            return PARSE_EXIT_OK;
        }
        if (id == '?' || id == ':') {
            /* getopt_long reports an unknown flag and a missing value alike */
            const char *bad = argv[token];
            for (int i = 0; i < N_OPTS; i++)
                if (strncmp(bad, "--", 2) == 0 && strcmp(bad + 2, table[i].name) == 0) {
                    bn_fail(e, "--%s: expects a value (%s)", table[i].name, table[i].meta);
                    return PARSE_ERROR;
                }
            if (has_control(bad))
                bn_fail(e, "unknown option at argument %d, with a control character in it (see bnmpi --help)", token);
            else
                bn_fail(e, "unknown option '%s' (see bnmpi --help)", bad);
            return PARSE_ERROR;
        }
        if (set_value(c, &table[id], table[id].kind == K_FLAG ? "1" : optarg, e) != BN_OK)
            return PARSE_ERROR;
        c->given[id] = 1;
    }
    if (optind < argc) {
        bn_fail(e, "unexpected argument '%s' (options start with --; see bnmpi --help)", argv[optind]);
        return PARSE_ERROR;
    }
    return PARSE_RUN;
}

int options_resolve(bn_config *c, int n_ranks, bn_err *e) {
    c->n_ranks = n_ranks;
    if (c->arch[0] && c->given[option_index("hidden")])
        return bn_fail(e, "--arch and --hidden: give one of them (--hidden W is --arch denseW)");
    if (arch_parse(&c->net, c->arch, c->hidden, e) != BN_OK) return BN_ERR;
    if (c->arch[0]) c->hidden[0] = '\0'; /* --arch says it all; --hidden shows as - */
    if (c->overlap && c->net.convnet)
        return bn_fail(e, "--overlap: overlaps the first dense layer's weight gradient, so it needs an MLP "
                          "(--hidden), not --arch %s", c->arch);
    if (c->global_batch && c->global_batch % n_ranks != 0)
        return bn_fail(e, "--global-batch: %d does not divide by the %d ranks", c->global_batch, n_ranks);
    if (c->global_batch && c->batch && c->global_batch != c->batch * n_ranks)
        return bn_fail(e, "--batch %d and --global-batch %d disagree at %d ranks (expected %d)",
                       c->batch, c->global_batch, n_ranks, c->batch * n_ranks);
    if (!c->batch) c->batch = c->global_batch ? c->global_batch / n_ranks : 32;
    if (c->batch > (1 << 20)) /* what --batch accepts, so that /config can be read back */
        return bn_fail(e, "--global-batch %d at %d ranks: %d samples per rank, above --batch's limit of %d",
                       c->global_batch, n_ranks, c->batch, 1 << 20);
    if ((long long)c->batch * n_ranks > (1 << 24))
        return bn_fail(e, "--batch: %d per rank x %d ranks exceeds 16777216", c->batch, n_ranks);
    c->global_batch = c->batch * n_ranks;
    if (c->lr == 0.0) c->lr = c->optimizer == OPT_SGD ? 0.01 : 0.001;
    if (c->overlap && c->reduce == REDUCE_NODE)
        return bn_fail(e, "--overlap: overlaps MPI_Allreduce, so it needs --reduce mpi (or auto)");
    if (c->nesterov && c->optimizer != OPT_SGD)
        return bn_fail(e, "--nesterov: applies to --optimizer sgd only");
    if (c->nesterov && c->momentum == 0.0)
        return bn_fail(e, "--nesterov: needs --momentum > 0");
    if (c->bn == BN_NONE && (c->bn_group > 1 || c->ghost_batch))
        return bn_fail(e, "--%s: needs batch norm, but --bn is none", c->ghost_batch ? "ghost-batch" : "bn-group");
    if (c->bn == BN_LOCAL && c->bn_group > 1)
        return bn_fail(e, "--bn-group %d: --bn local means groups of 1; use --bn sync --bn-group %d", c->bn_group,
                       c->bn_group);
    if (!c->bn_group) c->bn_group = c->bn == BN_SYNC ? n_ranks : 1;
    if (n_ranks % c->bn_group != 0)
        return bn_fail(e, "--bn-group %d: does not divide the %d ranks", c->bn_group, n_ranks);
    if (c->ghost_batch) {
        if (c->bn_group > 1)
            return bn_fail(e, "--ghost-batch: works within one rank's batch; use it with --bn local (the BN group "
                              "here is %d ranks)", c->bn_group);
        if (c->batch % c->ghost_batch != 0)
            return bn_fail(e, "--ghost-batch %d: does not divide the per-rank batch %d", c->ghost_batch, c->batch);
    }
    c->bn_batch = c->bn == BN_NONE ? 0 : c->ghost_batch ? c->ghost_batch : c->batch * c->bn_group;
    if (c->bn != BN_NONE && c->bn_batch < 2)
        return bn_fail(e, "--bn %s: needs at least 2 samples per BN batch, got %d", bn_mode_name(c->bn), c->bn_batch);
    if (c->bn != BN_NONE && c->bn_eval == BN_EVAL_RUNNING && c->bn_momentum == 1.0)
        return bn_fail(e, "--bn-momentum 1: the running statistics would never leave their start (mean 0, "
                          "variance 1), and evaluation uses them; use a value below 1, or --bn-eval recompute");
    if (c->watchdog > 0 && c->watchdog < 1)
        return bn_fail(e, "--watchdog %g: expected 0 (off) or at least 1 second", c->watchdog);
    const double ratio = (double)c->global_batch / c->lr_ref_batch;
    c->lr_peak = c->lr * (c->lr_scale == LR_SCALE_LINEAR ? ratio : c->lr_scale == LR_SCALE_SQRT ? sqrt(ratio) : 1.0);
    return BN_OK;
}

int options_count(void) { return N_OPTS; }

_Static_assert(N_OPTS <= (int)sizeof(((bn_config *)0)->given), "bn_config.given is too small");

int options_set(bn_config *c, const char *name, const char *value, bn_err *e) {
    for (int i = 0; i < N_OPTS; i++)
        if (strcmp(table[i].name, name) == 0) return set_value(c, &table[i], value, e);
    return bn_fail(e, "unknown option '%s'", name);
}

static size_t field_size(const opt_def *o) {
    switch (o->kind) {
    case K_DOUBLE: return sizeof(double);
    case K_STRING: return o->size;
    default: return sizeof(int);
    }
}

/* Whether option o holds the same value in a and b (a string up to its NUL). */
static int same_value(const opt_def *o, const bn_config *a, const bn_config *b) {
    const char *pa = (const char *)a + o->offset, *pb = (const char *)b + o->offset;
    return o->kind == K_STRING ? strcmp(pa, pb) == 0 : memcmp(pa, pb, field_size(o)) == 0;
}

static void value_text(const bn_config *c, int i, char *buf, size_t n) {
    opt_value v;
    options_value(c, i, &v);
    if (v.kind == OV_INT) snprintf(buf, n, "%lld", v.i);
    else if (v.kind == OV_DOUBLE) snprintf(buf, n, "%g", v.d);
    else snprintf(buf, n, "%s", v.s);
}

/* A sync run over all its ranks: its group follows the rank count. */
static int sync_all(const bn_config *c) { return c->bn == BN_SYNC && c->bn_group == c->n_ranks; }

int options_merge_resume(bn_config *c, const bn_config *saved, bn_err *e) {
    for (int i = 0; i < N_OPTS; i++) {
        const opt_def *o = &table[i];
        char *dst = (char *)c + o->offset;
        const char *src = (const char *)saved + o->offset;
        const size_t size = field_size(o);
        if (c->given[i]) {
            if (!(o->resume & RESUME_FREE) && !same_value(o, c, saved)) {
                char mine[BN_PATH], theirs[BN_PATH];
                value_text(c, i, mine, sizeof mine);
                value_text(saved, i, theirs, sizeof theirs);
                return bn_fail(e, "--%s %s differs from the checkpoint's %s; a resumed run continues the same "
                                  "computation (start a new run to change it)", o->name, mine, theirs);
            }
            continue;
        }
        if (o->resume & RESUME_DEFAULT) continue; /* c holds the default */
        memcpy(dst, src, size);
    }
    if (!c->given[option_index("batch")]) c->batch = 0; /* re-derived from the global batch */
    /* a sync run's group was "all ranks": it stays that at another rank count */
    if (!c->given[option_index("bn-group")] && sync_all(saved))
        c->bn_group = 0;
    return BN_OK;
}

int options_same_computation(const bn_config *a, const bn_config *b, bn_err *e) {
    for (int i = 0; i < N_OPTS; i++) {
        const opt_def *o = &table[i];
        if (o->resume & RESUME_FREE) continue;
        if (strcmp(o->name, "bn-group") == 0 && sync_all(a) && sync_all(b)) continue;
        if (!same_value(o, a, b)) {
            char va[BN_PATH], vb[BN_PATH];
            value_text(a, i, va, sizeof va);
            value_text(b, i, vb, sizeof vb);
            return bn_fail(e, "--%s %s (the other: %s)", o->name, va, vb);
        }
    }
    return BN_OK;
}

void options_value(const bn_config *c, int i, opt_value *v) {
    static char choice_buf[N_OPTS][32];
    const opt_def *o = &table[i];
    const char *p = (const char *)c + o->offset;
    v->name = o->name;
    v->kind = OV_INT;
    v->i = 0;
    v->d = 0;
    v->s = NULL;
    switch (o->kind) {
    case K_INT:
    case K_FLAG:
        v->kind = OV_INT;
        v->i = *(const int *)p;
        break;
    case K_DOUBLE:
        v->kind = OV_DOUBLE;
        v->d = *(const double *)p;
        break;
    case K_STRING:
        v->kind = OV_STRING;
        v->s = p;
        break;
    case K_CHOICE:
        v->kind = OV_STRING;
        v->s = choice_name(o->choices, *(const int *)p, choice_buf[i], sizeof choice_buf[i]);
        break;
    }
}

void options_print(const bn_config *c, FILE *f) {
    int col = 0;
    fprintf(f, "config:");
    col = 7;
    for (int i = 0; i < N_OPTS; i++) {
        opt_value v;
        char item[BN_PATH + 256];
        options_value(c, i, &v);
        if (v.kind == OV_INT) snprintf(item, sizeof item, "%s=%lld", v.name, v.i);
        else if (v.kind == OV_DOUBLE) snprintf(item, sizeof item, "%s=%g", v.name, v.d);
        else snprintf(item, sizeof item, "%.64s=%.*s", v.name, BN_PATH, v.s[0] ? v.s : "-");
        int len = (int)strlen(item);
        if (col + 1 + len > 100) {
            fprintf(f, "\n       ");
            col = 7;
        }
        fprintf(f, " %s", item);
        col += 1 + len;
    }
    fprintf(f, "\n");
}

static void arg_text(const opt_def *o, char *buf, size_t n, int choices_inline) {
    if (o->kind == K_FLAG) snprintf(buf, n, "--%s", o->name);
    else snprintf(buf, n, "--%s %s", o->name, choices_inline && o->choices ? o->choices : o->meta);
}

/* Prints text word-wrapped to 79 columns, continuation lines indented by indent. */
static void print_wrapped(FILE *f, const char *text, int col, int indent) {
    const char *p = text;
    while (*p) {
        size_t word = strcspn(p, " ");
        if (col > indent && col + 1 + (int)word > 79) {
            fprintf(f, "\n%*s", indent, "");
            col = indent;
        } else if (col > indent) {
            fputc(' ', f);
            col++;
        }
        fprintf(f, "%.*s", (int)word, p);
        col += (int)word;
        p += word;
        while (*p == ' ') p++;
    }
    fputc('\n', f);
}

void options_help(FILE *f) {
    fprintf(f,
            "Usage: mpirun -np N bnmpi [options]\n"
            "Data-parallel training of an MLP (--hidden) or a convnet (--arch) on MNIST or\n"
            "Fashion-MNIST with batch norm: none, local (per-rank statistics), sync\n"
            "(statistics over the global batch), in groups of ranks or ghost batches; in a\n"
            "convnet each statistic spans every position (spatial BN). Metrics go to HDF5.\n");
    for (int i = 0; i < N_OPTS; i++) {
        const opt_def *o = &table[i];
        char arg[64], text[512];
        if (o->section) fprintf(f, "\n%s:\n", o->section);
        arg_text(o, arg, sizeof arg, 1);
        if (o->kind == K_FLAG || !o->def[0]) snprintf(text, sizeof text, "%s", o->help);
        else snprintf(text, sizeof text, "%s [default: %s]", o->help, o->def);
        int col = 25;
        if (strlen(arg) > 22) fprintf(f, "  %s\n%25s", arg, "");
        else fprintf(f, "  %-22s ", arg);
        print_wrapped(f, text, col, 25);
    }
    fprintf(f,
            "\nOther:\n"
            "  %-22s print this help\n"
            "  %-22s print the option list as the README's Markdown table\n"
            "  %-22s print the version\n"
            "\nExit status: 0 done; 1 runtime error (data, file, non-finite loss); 2 bad\n"
            "command line or configuration; 75 stopped by SIGTERM/SIGUSR1/SIGINT after\n"
            "writing a checkpoint (continue with --resume).\n",
            "--help", "--help-markdown", "--version");
}

void options_help_markdown(FILE *f) {
    fprintf(f, "| option | default | meaning |\n|---|---|---|\n");
    for (int i = 0; i < N_OPTS; i++) {
        const opt_def *o = &table[i];
        char arg[64], choices[128] = "";
        arg_text(o, arg, sizeof arg, 0);
        if (o->choices) {
            size_t k = (size_t)snprintf(choices, sizeof choices, "; one of `");
            for (const char *p = o->choices; *p && k + 4 < sizeof choices; p++)
                k += (size_t)snprintf(choices + k, sizeof choices - k, "%s", *p == '|' ? "`, `" : (char[]){*p, 0});
            snprintf(choices + k, sizeof choices - k, "`");
        }
        fprintf(f, "| `%s` | %s | %s%s |\n", arg, o->kind == K_FLAG ? "off" : o->def[0] ? o->def : "-", o->help,
                choices);
    }
}
