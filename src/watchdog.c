/* watchdog.c: the no-progress thread (see watchdog.h). */
#define _POSIX_C_SOURCE 200809L
#include "bnmpi/watchdog.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>

#include "bnmpi/comm.h"

static double limit;
static _Atomic double last_kick;
static _Atomic int_fast64_t at_epoch, at_step;

void watchdog_kick(void) { atomic_store_explicit(&last_kick, bn_now(), memory_order_relaxed); }

void watchdog_at(int64_t epoch, int64_t global_step) {
    atomic_store_explicit(&at_epoch, epoch, memory_order_relaxed);
    atomic_store_explicit(&at_step, global_step, memory_order_relaxed);
    watchdog_kick();
}

static void *watch(void *arg) {
    (void)arg;
    /* checks ten times per limit, at most once a second */
    const double period = limit / 10 < 1 ? limit / 10 : 1;
    const struct timespec nap = {(time_t)period, (long)((period - (double)(time_t)period) * 1e9)};
    for (;;) {
        nanosleep(&nap, NULL);
        const double idle = bn_now() - atomic_load_explicit(&last_kick, memory_order_relaxed);
        if (comm_exiting()) return NULL; /* finalizing: nothing to watch */
        if (idle < limit) continue;
        char where[128], msg[BN_ERRLEN];
        comm_waiting_text(where, sizeof where);
        snprintf(msg, sizeof msg,
                 "rank %d: watchdog: no progress for %.0f s (--watchdog %g); waiting in %s in epoch %lld after "
                 "global step %lld; another rank is stopped, stalled or lost; aborting the job",
                 comm_rank(), idle, limit, where, (long long)atomic_load(&at_epoch), (long long)atomic_load(&at_step));
        comm_fail(msg);
    }
    return NULL;
}

void watchdog_start(double limit_s) {
    if (limit_s <= 0) return;
    limit = limit_s;
    watchdog_kick();
    pthread_t th;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&th, &attr, watch, NULL) != 0) bn_fatal("--watchdog: cannot start its thread");
    pthread_attr_destroy(&attr);
}
