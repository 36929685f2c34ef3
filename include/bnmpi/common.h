/* common.h: status values, error messages, checked allocation, timing.
 *
 * Library functions return BN_OK or BN_ERR and, on error, fill a bn_err with one
 * line that names the file or flag and what was expected. Only main() turns an
 * error into an exit (see comm_fail / comm_agree). Nothing here calls MPI. */
#ifndef BNMPI_COMMON_H
#define BNMPI_COMMON_H

#include <stddef.h>
#include <stdint.h>

#define BNMPI_VERSION "0.1.0"

enum { BN_OK = 0, BN_ERR = -1 };

#define BN_ERRLEN 512
typedef struct {
    char msg[BN_ERRLEN]; /* one line, no trailing newline */
} bn_err;

/* Formats msg into e (if non-NULL) and returns BN_ERR, so callers can write
 * `return bn_fail(e, "...", ...);`. Control characters (from a user's text
 * the message echoes) become '?', so a message is always one line. */
int bn_fail(bn_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Checked allocation: on failure calls the fatal handler (which aborts every
 * rank); never returns NULL. Zero-initialised. */
void *bn_calloc(size_t n, size_t size);
/* 64-byte aligned, zero-initialised, for the flat float buffers. Free with free(). */
float *bn_alloc_floats(size_t n);

/* The fatal handler: prints msg and ends the job. comm_init installs one that
 * calls MPI_Abort; before that it is exit(1). */
typedef void (*bn_fatal_fn)(const char *msg);
void bn_set_fatal(bn_fatal_fn fn);
void bn_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* Monotonic wall-clock seconds. */
double bn_now(void);

/* Timers by name: seconds accumulated since the last timers_reset (this rank). */
enum { T_GRAD_COMM, T_BN_COMM, T_EVAL, T_IO, T_COUNT };
extern double bn_timers[T_COUNT];
void bn_timers_reset(void);
/* Seconds in timer i over the whole run, across resets. */
double bn_timer_total(int i);

#define BN_MIN(a, b) ((a) < (b) ? (a) : (b))
#define BN_MAX(a, b) ((a) > (b) ? (a) : (b))

#endif
