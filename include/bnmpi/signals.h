/* signals.h: SIGTERM, SIGUSR1 (what SLURM's --signal sends before a time
 * limit) and SIGINT only raise a flag here. The training loop carries the
 * flag through the gradient allreduce, so every rank stops after the same
 * step, writes a checkpoint and exits with BN_EXIT_STOPPED. */
#ifndef BNMPI_SIGNALS_H
#define BNMPI_SIGNALS_H

#define BN_EXIT_STOPPED 75 /* EX_TEMPFAIL: stopped on a signal, checkpoint written; resume to continue */

void signals_install(void);
int signals_pending(void);   /* the signal number received, or 0 */

#endif
