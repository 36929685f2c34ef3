/* common.c: errors as values, checked allocation, the fatal handler, time. */
#define _POSIX_C_SOURCE 200809L
#include "bnmpi/common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int bn_fail(bn_err *e, const char *fmt, ...) {
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
        /* one line, whatever a user's text it echoes holds: control characters become '?' */
        for (char *p = e->msg; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
    }
    return BN_ERR;
}

static void fatal_exit(const char *msg) {
    fprintf(stderr, "bnmpi: %s\n", msg);
    exit(1);
}

static bn_fatal_fn fatal_handler = fatal_exit;

void bn_set_fatal(bn_fatal_fn fn) { fatal_handler = fn ? fn : fatal_exit; }

void bn_fatal(const char *fmt, ...) {
    char msg[BN_ERRLEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fatal_handler(msg);
    abort(); /* a handler must not return */
}

void *bn_calloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) bn_fatal("out of memory allocating %zu x %zu bytes", n, size);
    return p;
}

float *bn_alloc_floats(size_t n) {
    size_t bytes = ((n * sizeof(float) + 63) / 64) * 64;
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0)
        bn_fatal("out of memory allocating %zu floats", n);
    memset(p, 0, bytes ? bytes : 64);
    return p;
}

double bn_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double bn_timers[T_COUNT];
static double timers_before_reset[T_COUNT];

void bn_timers_reset(void) {
    for (int i = 0; i < T_COUNT; i++) timers_before_reset[i] += bn_timers[i];
    memset(bn_timers, 0, sizeof bn_timers);
}

double bn_timer_total(int i) { return timers_before_reset[i] + bn_timers[i]; }
