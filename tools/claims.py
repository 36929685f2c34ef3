#!/usr/bin/python3
"""Tests the seed notebook's claims about batch norm on real bnmpi runs.

The command bnmpi-claims; this file is its front end on the package
bnmpi_analysis (claims.py does the work, seeds.py decides differences).

Reads bnmpi metrics files (folders searched recursively for *.h5, as
tools/analyze.py does) and writes, for each claim of the notebook
(shared/seed/batchnorm-study-notebook.txt), a figure, a table of the measured
numbers and a verdict:

  OUT/claims.md                     the report (e.g. --out docs: docs/claims.md)
  OUT/img/claims/<claim>.png        one figure per claim
  OUT/img/claims/claims.json        verdicts, numbers and what each figure shows

The claims, and the runs each one needs (jobs/study-claims.tsv has them all):

  convergence     BN converges faster: epochs and seconds to 97% validation
                  accuracy, with and without BN, at several global batches
  covariate_shift BN reduces internal covariate shift: the drift of each hidden
                  layer's activation statistics (runs with --diagnostics N)
  learning_rate   BN tolerates higher learning rates: a learning-rate sweep with
                  and without BN, per optimizer; a run that stops with a
                  non-finite loss counts as "did not train"
  initialisation  BN depends less on the initialisation: an --init-scale sweep
  regularisation  BN regularises, with noise from small BN batches: the gap
                  between validation and training loss, with and without BN and
                  against the BN batch (--ghost-batch, --bn local)
  batch_plateau   a larger batch improves accuracy up to a plateau at 64: a
                  global-batch sweep at a fixed number of epochs
  large_batch     BN requires large batches: validation accuracy against the BN
                  batch (samples per BN statistic), and BN minus no BN against
                  the global batch

Each claim's runs are the largest set of complete runs that differ only in what
the claim varies (runs repeated with other seeds or epochs count as repeats;
BN-only settings are ignored for runs without BN). "With BN" is the BN mode most
of those runs use (sync in the study). Runs of a comparison are compared at the
last epoch all of them reached: with a constant learning rate, epoch 3 of an
8-epoch run is a 3-epoch run. A claim without the runs it needs is reported as
"untested", with what is missing. The verdict of each claim (supported, not
supported, or depends, saying on what) follows from the numbers by the rule
printed beside it.

Seeds and differences: runs of a comparison that differ only in their seed are
repeats of one configuration. An accuracy difference between two configurations
(BN batch against the largest BN batch, BN minus no BN per global batch, batch
64 against the smallest and the larger batches) counts when its 95% confidence
interval excludes zero: paired t over the seeds when both sides have the same
seeds (n >= 2), Welch's t when both have n >= 2 but other seeds. With one seed on
a side there is no interval: then differences smaller than --tolerance count as
none, and the report says n = 1. The report states the rule, and each verdict
gives the difference, its interval, the test and n.

Bad inputs are refused as tools/analyze.py refuses them: a path that does not
exist, a file that is not HDF5 or not a bnmpi metrics file give one line each on
stderr and exit status 2, and nothing is written.

Exit status: 0 done, 1 missing Python packages or an output that cannot be
written, 2 bad command line or input.
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.realpath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
from debian_python import ensure_packages  # noqa: E402

PROG = "claims.py"
TARGET, TRAINS, TOLERANCE = 0.97, 0.90, 0.003  # bnmpi_analysis/claims.py's defaults


def parse_args(argv, prog=PROG):
    doc = __doc__.split("\n", 2)
    p = argparse.ArgumentParser(prog=prog, description=doc[0] + "\n" + doc[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                usage=f"{prog} RESULTS_DIR|RUN.h5 [...] --out DIR [--target PERCENT] [--trains PERCENT] "
                                      "[--tolerance POINTS]")
    p.add_argument("inputs", nargs="+", metavar="RESULTS_DIR|RUN.h5",
                   help="bnmpi metrics files, or folders searched recursively for *.h5")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="where claims.md goes; the figures go to DIR/img/claims (made if missing)")
    p.add_argument("--target", type=float, default=100 * TARGET, metavar="PERCENT",
                   help=f"the validation accuracy convergence is measured to (default {100 * TARGET:g})")
    p.add_argument("--trains", type=float, default=100 * TRAINS, metavar="PERCENT",
                   help=f"a finished run with at least this validation accuracy \"trains\" (default {100 * TRAINS:g})")
    p.add_argument("--tolerance", type=float, default=100 * TOLERANCE, metavar="POINTS",
                   help=f"only where a side has one seed (n = 1, no interval): accuracy differences below this "
                        f"many percentage points count as none (default {100 * TOLERANCE:.1f})")
    a = p.parse_args(argv)
    if not (0 <= a.tolerance < 100):
        p.error("--tolerance: expected percentage points in [0, 100)")
    for name in ("target", "trains"):
        if not (0 < getattr(a, name) <= 100):
            p.error(f"--{name}: expected a percentage in (0, 100]")
    return a


def main(argv=None, prog=PROG, script=__file__):
    args = parse_args(sys.argv[1:] if argv is None else argv, prog)
    ensure_packages(prog, script)
    from bnmpi_analysis import claims
    return claims.run(args.inputs, args.out, args.target / 100, args.trains / 100, args.tolerance / 100, prog=prog)


if __name__ == "__main__":
    sys.exit(main())
