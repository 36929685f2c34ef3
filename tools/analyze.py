#!/usr/bin/python3
"""Post-hoc analysis of bnmpi runs: figures and a results table from metrics files.

The command bnmpi-analyze; this file is its front end on the package
bnmpi_analysis (report.py does the work).

Reads one or more bnmpi metrics files (HDF5, root attribute format = "bnmpi-metrics";
see "The metrics file" in README.md) and writes into --out:

  curves.png       train (dashed) and validation (solid) accuracy and loss per epoch,
                   one line pair per run, labelled by what distinguishes the runs
                   (e.g. "bn=sync gb=64"); with more than --max-curves runs the lines
                   are coloured by BN mode instead, one legend entry per mode
  batch_size.png   final validation accuracy and loss against the global batch
                   (log2 axis), one line per BN mode: bn, plus bn_group=G when the
                   group is not the mode's own (1 for local, all ranks for sync)
                   and ghost_batch=K when ghost BN is on; a mode whose BN batch
                   depends on the rank count (local, groups) gets one line per
                   rank count, and other settings that differ (bn_eval, lr_scale,
                   hidden, ...) lines of their own
  bn_batch.png     final validation accuracy and loss against the BN batch (the
                   samples one BN statistic is computed over) at fixed global batch,
                   one line per global batch with two or more BN batch sizes
  throughput.png   training throughput (median over epochs of samples/s) and median
                   time per epoch against the global batch, one line per rank count
  diagnostics.png  per-layer activation statistics over training, from the runs
                   made with --diagnostics N (/diagnostics/layers): one row per
                   hidden layer; the activation mean and variance at the BN input
                   (where BN would be, in runs without BN) and their drift (the
                   change since the previous log) against the step, one line per
                   run, coloured by BN mode (none grey, local orange, sync blue);
                   skipped with a note when no run has diagnostics
  summary.md       the results by configuration (runs that differ only in their
                   seed: mean ± 95% CI over the seeds, and n), then the table of
                   runs, one row per run (accuracies in percent), then the figures
  summary_by_config.csv
                   the configurations: configuration, n, seeds, epochs, and for
                   the final validation accuracy and loss, final training
                   accuracy, test accuracy and loss and median epoch time their
                   mean, ci_lo and ci_hi (fractions; empty where n = 1), files
  summary.csv      the same table, accuracies as fractions at full precision.
                   Columns: file, status (complete, or incomplete: no /summary),
                   dataset, bn, bn_place, hidden, optimizer, lr, n_ranks,
                   local_batch, global_batch, bn_batch, epochs (done, planned),
                   the last epoch's train and validation accuracy and loss, the
                   best validation accuracy and its epoch, test accuracy and loss
                   (finished runs only), median epoch time, median samples/s;
                   plus bn_group, ghost_batch, bn_eval, lr_scale, lr_ref_batch,
                   warmup_epochs and lr_peak where the files record them (in
                   summary.md only where the runs differ). Rows are sorted by
                   dataset, model, optimizer, BN mode (none, local, sync, ...),
                   global batch and rank count.
  figures.json     each figure's axes titles, labels and line labels, and the
                   reason for each figure that was skipped (for tests and scripts)

Seeds: complete runs whose /config is the same except for seed (and where, when
and with how many threads they ran) are one configuration with n seeds. The
accuracy figures draw, at each point, the mean over the seeds with its Student-t
95% confidence interval as error bars (runs of one seed at other rank counts are
averaged first) and each run as a small dot; curves.png draws a configuration
with n >= 2 seeds as its mean per epoch with a 95% band, labelled "(n = 3)". Each
figure title says n; with one seed per point it says "n = 1, no interval"
(throughput: the median, without intervals). The interval logic is
bnmpi_analysis/seeds.py's, shared with bnmpi-claims. Accuracy plots use
complete runs only (a run without /summary stopped early, and its last epoch is not
"final"); the curves, throughput and the table include incomplete runs, marked as
such. A figure without the data it needs (e.g. a single global batch) is skipped with
a one-line note, and a stale copy of it in --out is removed. Files are read without
taking HDF5's file lock, so a run still in progress can be analysed (it shows as
incomplete).

A DIR argument is searched recursively for *.h5 files; bnmpi checkpoints found
there (format = "bnmpi-checkpoint") are skipped. A path that does not exist or
cannot be read, a file that is not HDF5, or an HDF5 file that is not a bnmpi metrics
file is an error: one line per bad input on stderr, exit status 2, nothing written.

Exit status: 0 done, 1 missing Python packages or an output that cannot be written,
2 bad command line or input.

Needs numpy, h5py and matplotlib: Debian's /usr/bin/python3 with python3-h5py and
python3-matplotlib. Started by another python3 that lacks them, it re-runs itself
with /usr/bin/python3 (bnmpi-analyze starts with it).
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.realpath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
from debian_python import ensure_packages  # noqa: E402

PROG = "analyze.py"


def parse_args(argv, prog=PROG):
    doc = __doc__.split("\n", 2)
    p = argparse.ArgumentParser(prog=prog, description=doc[0] + "\n" + doc[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                usage=f"{prog} RUN.h5|DIR [RUN.h5|DIR ...] --out DIR [--max-curves N]")
    p.add_argument("inputs", nargs="+", metavar="RUN.h5|DIR",
                   help="bnmpi metrics files, or folders searched recursively for *.h5")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for the figures and tables (made if missing; our files in it are replaced)")
    p.add_argument("--max-curves", type=int, default=8, metavar="N",
                   help="curves.png draws one colour per run (or configuration) up to N, beyond that one "
                        "colour per BN mode (default: 8)")
    a = p.parse_args(argv)
    if a.max_curves < 1:
        p.error("--max-curves: expected a positive integer")
    return a


def main(argv=None, prog=PROG, script=__file__):
    args = parse_args(sys.argv[1:] if argv is None else argv, prog)
    ensure_packages(prog, script)
    from bnmpi_analysis import report
    return report.run(args.inputs, args.out, args.max_curves, prog=prog)


if __name__ == "__main__":
    sys.exit(main())
