/* fuzz_options.c: libFuzzer harness for the option parser and the resume
 * merge (src/options.c).
 *
 * Input: byte 0 gives the rank count of the command line (1 + b % 64; bit 7
 * also turns on printing of --help/--version, to a /dev/null stdout), byte 1
 * that of the saved run (1 + b % 64); the rest is text, one argv token per
 * line ('\n'; a byte 0x1e inside a token stands for a newline in it); a line
 * "%%" ends the command line and starts the saved run's arguments. Both get
 * argv[0] = "bnmpi".
 *
 * For each: options_parse, options_resolve, options_print to /dev/null and
 * options_value over all options. The saved run is then written and read back
 * as h5config does (options_value -> "%lld" / "%.17g" / string ->
 * options_set on the defaults), after main's own resolution of --reduce auto
 * and --threads auto. Then, as main does, options_merge_resume(c, &saved) on
 * the parsed command line followed by options_resolve; and, as well, the merge
 * on the already resolved command line followed by a second options_resolve.
 *
 * Findings (abort) besides ASan/UBSan/LSan:
 *   - an error message that is empty or has a newline; "unknown option 'X'"
 *     where X is not a token of the command line that starts with '-';
 *   - options_parse leaving state behind: a parse of "--epochs 3" right after
 *     does not give epochs 3;
 *   - a resolved configuration that breaks options.h's invariants (batch x
 *     ranks = global batch <= 2^24, BN group divides the ranks, BN batch >= 2,
 *     ghost batch divides the batch, lr > 0, ...);
 *   - a resolved configuration that the /config round trip does not give back
 *     exactly (or refuses: a checkpoint that cannot be resumed);
 *   - options_merge_resume accepting or refusing other than options.h says: a
 *     given option outside the free list must equal the checkpoint's value;
 *   - after merge + resolve, an option outside the free list that differs from
 *     the checkpoint's (other than a sync run's all-ranks BN group);
 *   - bn_fatal (the handler installed here aborts).
 */
#define _GNU_SOURCE
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bnmpi/common.h"
#include "bnmpi/options.h"

#define FAIL(...)                                                                   \
    do {                                                                            \
        fprintf(stderr, "fuzz_options: FINDING: " __VA_ARGS__);                    \
        fputc('\n', stderr);                                                        \
        abort();                                                                    \
    } while (0)

enum { MAX_TOKENS = 256 };

static FILE *devnull;

/* Options a resume may change: RESUME_FREE in src/options.c's table (run.sh reads
 * the table and passes them; the list below is the table of December 2026). */
#ifndef FUZZ_FREE_OPTIONS
#define FUZZ_FREE_OPTIONS "data", "epochs", "batch", "eval-batch", "metrics", "force", "threads", "reduce", \
                          "overlap", "watchdog", "quiet", "checkpoint", "checkpoint-every", "resume"
#endif
static const char *const free_options[] = {FUZZ_FREE_OPTIONS, NULL};

static int is_free(const char *name)
{
    for (int i = 0; free_options[i]; i++)
        if (strcmp(free_options[i], name) == 0) return 1;
    return 0;
}

/* The K_CHOICE options of the table: options_value names an out-of-range index "?". */
static int is_choice(const char *name)
{
    static const char *const choices[] = {"dataset", "bn", "bn-place", "bn-eval", "optimizer", "lr-scale", "reduce", NULL};
    for (int i = 0; choices[i]; i++)
        if (strcmp(choices[i], name) == 0) return 1;
    return 0;
}

static void fatal_abort(const char *msg)
{
    fprintf(stderr, "fuzz_options: FINDING: bn_fatal: %s\n", msg);
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    bn_set_fatal(fatal_abort);
    devnull = fopen("/dev/null", "w");
    if (!devnull || !freopen("/dev/null", "w", stdout)) {
        perror("/dev/null");
        exit(1);
    }
    options_help(devnull);
    options_help_markdown(devnull);
#ifdef FUZZ_N_OPTIONS
    if (options_count() != FUZZ_N_OPTIONS)
        fprintf(stderr, "fuzz_options: warning: run.sh read %d options from src/options.c, options_count() is %d\n",
                FUZZ_N_OPTIONS, options_count());
#endif
    return 0;
}

typedef struct {
    int argc;
    char *argv[MAX_TOKENS + 2];
} args;

/* Splits text[0..n) at '\n' into a->argv[1..]; returns where it stopped (after a "%%" line, or n). */
static size_t split_args(const uint8_t *text, size_t n, args *a, char *store)
{
    a->argc = 0;
    a->argv[a->argc++] = "bnmpi";
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && text[j] != '\n') j++;
        size_t len = j - i;
        if (len == 2 && text[i] == '%' && text[i + 1] == '%') {
            a->argv[a->argc] = NULL;
            return j < n ? j + 1 : n;
        }
        if (a->argc <= MAX_TOKENS) {
            for (size_t k = 0; k < len; k++) /* 0x1e stands for a newline inside a token */
                store[i + k] = text[i + k] == 0x1e ? '\n' : (char)text[i + k];
            store[i + len] = '\0'; /* a NUL inside the line ends the token, as in a real argv */
            a->argv[a->argc++] = store + i;
        }
        i = j + 1;
    }
    a->argv[a->argc] = NULL;
    return n;
}

static void check_msg(const char *what, const bn_err *e)
{
    size_t len = strnlen(e->msg, sizeof e->msg);
    if (len == 0 || len == sizeof e->msg) FAIL("%s: empty or unterminated error message", what);
    if (strchr(e->msg, '\n')) FAIL("%s: error message spans lines: \"%s\"", what, e->msg);
}

/* glibc's getopt keeps a pointer into the last argv; forget it (optind = 0 reinitialises). */
static void reset_getopt(void)
{
    static char a0[] = "reset";
    char *av[] = {a0, NULL};
    static const struct option none[] = {{0, 0, 0, 0}};
    optind = 0;
    opterr = 0;
    while (getopt_long(1, av, "", none, NULL) != -1) {
    }
}

static void describe(const args *a, char *buf, size_t n)
{
    size_t k = 0;
    buf[0] = '\0';
    for (int i = 1; i < a->argc && k + 4 < n; i++) k += (size_t)snprintf(buf + k, n - k, " '%s'", a->argv[i]);
}

/* options_parse on a copy of a (getopt_long permutes argv), with the follow-up checks. */
static parse_result parse(bn_config *c, const args *a, int print, bn_err *e)
{
    char *av[MAX_TOKENS + 2];
    memcpy(av, a->argv, sizeof(char *) * (size_t)(a->argc + 1));
    memset(e, 0, sizeof *e);
    parse_result r = options_parse(c, a->argc, av, print, e);
    if (r == PARSE_ERROR) {
        check_msg("options_parse", e);
        const char *p = strstr(e->msg, "unknown option '");
        if (p == e->msg) {
            /* the whole message, compared: a token may itself hold "' (see bnmpi --help)" */
            int found = 0;
            for (int i = 1; i < a->argc && !found; i++) {
                char want[sizeof e->msg];
                snprintf(want, sizeof want, "unknown option '%s' (see bnmpi --help)", a->argv[i]);
                found = a->argv[i][0] == '-' && strcmp(want, e->msg) == 0;
            }
            if (!found) {
                char d[2048];
                describe(a, d, sizeof d);
                FAIL("options_parse:%s: \"%s\" names no option token of the command line", d, e->msg);
            }
        }
    }
    { /* a parse leaves nothing behind */
        static char t0[] = "bnmpi", t1[] = "--epochs", t2[] = "3";
        char *cv[] = {t0, t1, t2, NULL};
        bn_config k;
        bn_err ke;
        parse_result kr = options_parse(&k, 3, cv, 0, &ke);
        if (kr != PARSE_RUN || k.epochs != 3) {
            char d[2048];
            describe(a, d, sizeof d);
            FAIL("options_parse('--epochs 3') right after options_parse(%s) gave %s (epochs %d): state "
                 "left behind by the previous parse",
                 d, kr == PARSE_RUN ? "RUN" : kr == PARSE_EXIT_OK ? "EXIT_OK" : ke.msg, k.epochs);
        }
    }
    reset_getopt();
    return r;
}

/* Compares option i of a and b by value (doubles bit for bit, as the merge's memcmp). */
static int same_value(const bn_config *a, const bn_config *b, int i)
{
    opt_value va, vb;
    char sa[BN_PATH];
    options_value(a, i, &va);
    if (va.kind == OV_STRING) snprintf(sa, sizeof sa, "%s", va.s); /* a choice's name is in a static buffer */
    options_value(b, i, &vb);
    if (va.kind != vb.kind) return 0;
    if (va.kind == OV_INT) return va.i == vb.i;
    if (va.kind == OV_DOUBLE) return memcmp(&va.d, &vb.d, sizeof va.d) == 0;
    return strcmp(sa, vb.s) == 0;
}

static void value_text(const bn_config *c, int i, char *buf, size_t n, const char **name)
{
    opt_value v;
    options_value(c, i, &v);
    *name = v.name;
    if (v.kind == OV_INT) snprintf(buf, n, "%lld", v.i);
    else if (v.kind == OV_DOUBLE) snprintf(buf, n, "%.17g", v.d);
    else snprintf(buf, n, "%s", v.s);
}

static void walk(const bn_config *c)
{
    options_print(c, devnull);
    for (int i = 0; i < options_count(); i++) {
        opt_value v;
        options_value(c, i, &v);
        if (!v.name || !v.name[0]) FAIL("options_value(%d): no name", i);
        if (v.kind == OV_STRING && !v.s) FAIL("options_value(--%s): NULL string", v.name);
        if (v.kind == OV_STRING && strcmp(v.s, "?") == 0 && is_choice(v.name))
            FAIL("options_value(--%s): choice out of range", v.name);
    }
}

static void check_resolved(const bn_config *c, int n, const char *what)
{
    if (c->n_ranks != n) FAIL("%s: n_ranks %d, resolved at %d", what, c->n_ranks, n);
    if (c->batch < 1 || (long long)c->batch * n != c->global_batch || c->global_batch > (1 << 24))
        FAIL("%s: batch %d x %d ranks vs global batch %d", what, c->batch, n, c->global_batch);
    if (!(c->lr > 0) || !isfinite(c->lr) || !(c->lr_peak > 0) || !isfinite(c->lr_peak))
        FAIL("%s: lr %g, lr_peak %g", what, c->lr, c->lr_peak);
    if (c->bn_group < 1 || n % c->bn_group != 0) FAIL("%s: BN group %d at %d ranks", what, c->bn_group, n);
    if (c->bn == BN_NONE ? c->bn_batch != 0 : c->bn_batch < 2) FAIL("%s: BN batch %d", what, c->bn_batch);
    if (c->ghost_batch && c->batch % c->ghost_batch != 0)
        FAIL("%s: ghost batch %d, batch %d", what, c->ghost_batch, c->batch);
    walk(c);
}

/* What main records in /config after options_resolve: --reduce and --threads resolved too. */
static void as_main_records(bn_config *c)
{
    if (c->reduce == REDUCE_AUTO) c->reduce = c->overlap ? REDUCE_MPI : REDUCE_NODE;
    if (c->threads == 0) c->threads = 1;
}

/* h5config_write then h5config_read: every option through its text. */
static void round_trip(const bn_config *w, bn_config *out, const char *what)
{
    static char a0[] = "bnmpi";
    char *av[] = {a0, NULL};
    bn_err e;
    if (options_parse(out, 1, av, 0, &e) != PARSE_RUN) FAIL("options_parse(no options): %s", e.msg);
    for (int i = 0; i < options_count(); i++) {
        char text[BN_PATH + 32];
        const char *name;
        value_text(w, i, text, sizeof text, &name);
        memset(&e, 0, sizeof e);
        if (options_set(out, name, text, &e) != BN_OK) {
            FAIL("%s: /config round trip: --%s '%s' of a resolved configuration is refused: %s (a checkpoint "
                 "that cannot be resumed)",
                 what, name, text, e.msg);
        }
    }
    for (int i = 0; i < options_count(); i++)
        if (!same_value(w, out, i)) {
            char a[BN_PATH + 32], b[BN_PATH + 32];
            const char *name;
            value_text(w, i, a, sizeof a, &name);
            value_text(out, i, b, sizeof b, &name);
            FAIL("%s: /config round trip changes --%s: '%s' -> '%s'", what, name, a, b);
        }
    out->n_ranks = w->n_ranks;
}

/* options.h: a given option outside the free list must equal the checkpoint's. */
static int merge_expected(const bn_config *c, const bn_config *saved, int *first)
{
    for (int i = 0; i < options_count(); i++) {
        opt_value v;
        options_value(c, i, &v);
        if (c->given[i] && !is_free(v.name) && !same_value(c, saved, i)) {
            *first = i;
            return BN_ERR;
        }
    }
    return BN_OK;
}

static void merge_and_check(const bn_config *c, const bn_config *saved, int n, const char *what)
{
    bn_config m = *c;
    bn_err e;
    memset(&e, 0, sizeof e);
    int first = -1;
    int want = merge_expected(c, saved, &first);
    int rc = options_merge_resume(&m, saved, &e);
    if (rc != BN_OK) check_msg(what, &e);
    if (rc != want) {
        char a[BN_PATH + 32], b[BN_PATH + 32];
        const char *name = "";
        if (first >= 0) {
            value_text(c, first, a, sizeof a, &name);
            value_text(saved, first, b, sizeof b, &name);
        }
        FAIL("%s: options_merge_resume %s (\"%s\"), expected %s%s%s%s%s%s", what, rc == BN_OK ? "accepted" : "refused",
             rc == BN_OK ? "" : e.msg, want == BN_OK ? "acceptance: every given option that must match does" : "a refusal of --",
             want == BN_OK ? "" : name, want == BN_OK ? "" : " ", want == BN_OK ? "" : a, want == BN_OK ? "" : " vs ",
             want == BN_OK ? "" : b);
    }
    if (rc != BN_OK) return;
    memset(&e, 0, sizeof e);
    if (options_resolve(&m, n, &e) != BN_OK) {
        check_msg(what, &e);
        return;
    }
    check_resolved(&m, n, what);
    const int sync_all = saved->bn == BN_SYNC && saved->bn_group == saved->n_ranks;
    for (int i = 0; i < options_count(); i++) {
        opt_value v;
        options_value(&m, i, &v);
        if (is_free(v.name) || same_value(&m, saved, i)) continue;
        if (strcmp(v.name, "bn-group") == 0 && sync_all && m.bn_group == n) continue;
        char a[BN_PATH + 32], b[BN_PATH + 32];
        const char *name;
        value_text(&m, i, a, sizeof a, &name);
        value_text(saved, i, b, sizeof b, &name);
        FAIL("%s: after merge and resolve --%s is '%s', the checkpoint's '%s': the resumed run computes "
             "something else",
             what, name, a, b);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    const int n1 = 1 + data[0] % 64, n2 = 1 + data[1] % 64, print = data[0] >> 7;
    const uint8_t *text = data + 2;
    size_t n = size - 2;
    char *store = malloc(n + 1);
    if (!store) abort();
    args a1, a2;
    size_t cut = split_args(text, n, &a1, store);
    split_args(text + cut, n - cut, &a2, store + cut);

    bn_config c1, c2, r1, saved, w;
    bn_err e;
    parse_result p1 = parse(&c1, &a1, print, &e);
    int ok1 = 0;
    if (p1 == PARSE_RUN) {
        walk(&c1);
        r1 = c1;
        memset(&e, 0, sizeof e);
        ok1 = options_resolve(&r1, n1, &e) == BN_OK;
        if (!ok1) check_msg("options_resolve", &e);
        else {
            check_resolved(&r1, n1, "options_resolve");
            w = r1;
            as_main_records(&w);
            bn_config back;
            round_trip(&w, &back, "command line");
        }
    }

    parse_result p2 = parse(&c2, &a2, 0, &e);
    int have_saved = 0;
    if (p2 == PARSE_RUN) {
        memset(&e, 0, sizeof e);
        if (options_resolve(&c2, n2, &e) == BN_OK) {
            check_resolved(&c2, n2, "options_resolve(saved)");
            as_main_records(&c2);
            round_trip(&c2, &saved, "saved run");
            have_saved = 1;
        } else {
            check_msg("options_resolve(saved)", &e);
        }
    }

    if (p1 == PARSE_RUN && have_saved) {
        merge_and_check(&c1, &saved, n1, "merge (as main)");
        if (ok1) merge_and_check(&r1, &saved, n1, "merge (resolved command line)");
    }
    free(store);
    return 0;
}
