/* watchdog.h: ends a job that makes no progress.
 *
 * A rank that is stopped, stalled or lost leaves the others waiting in a
 * collective forever, burning the allocation. The watchdog is a thread per
 * rank: when the main thread has not called watchdog_kick for `limit`
 * seconds, it prints on that rank what it waits in (the collective and the
 * step) and ends the job with MPI_Abort (comm_fail). */
#ifndef BNMPI_WATCHDOG_H
#define BNMPI_WATCHDOG_H

#include <stdint.h>

/* Starts the thread; limit <= 0 starts nothing. */
void watchdog_start(double limit_s);
/* Progress: a step, an evaluation block or a file written. */
void watchdog_kick(void);
/* Where training is, for the message: epoch (from 1) and global step done. */
void watchdog_at(int64_t epoch, int64_t global_step);

#endif
