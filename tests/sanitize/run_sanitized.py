#!/usr/bin/python3
"""bnmpi under AddressSanitizer + UndefinedBehaviorSanitizer (-DBNMPI_SANITIZE=ON).

Usage: run_sanitized.py CASE --build DIR --source DIR --mpiexec PATH [--data DIR]
       run_sanitized.py --list

Each CASE is one ctest test (label sanitize): the C unit tests, or short trainings
at np=2 (np=4 for BN groups). A case passes when every run exits with its expected
status and no sanitizer report is left: an ASan error or a UBSan "runtime error:"
stops the process (halt_on_error), LeakSanitizer reports at exit. Leaks of the
libraries are suppressed by library in lsan.supp; a report whose stack passes
through bnmpi's code (src/, include/, tests/ or a binary of the build tree) is
named as bnmpi's. Each process writes its reports to its own log file
(log_path), so nothing is lost when mpiexec tears down the other ranks.
"""
import argparse
import glob
import os
import re
import shutil
import struct
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
from mpi_procs import run_with_timeout  # noqa: E402

ARGS = None
QUICK = ["--train-limit", "1024", "--epochs", "2", "--global-batch", "64", "--quiet"]

# case: list of runs (np or None for no mpiexec, argv after the program, expected
# exit status, extra environment). Programs: "bnmpi" or a test binary of the build.
CASES = {
    "unit_idx": [(None, "tests/test_idx", [], 0, {})],
    "unit_kernels": [(1, "tests/test_kernels", [], 0, {})],
    "unit_syncbn_np2": [(2, "tests/test_syncbn", [], 0, {})],
    "unit_conv": [(1, "tests/test_conv", [], 0, {})],
    "train_bn_sync": [(2, "bnmpi", ["--bn", "sync"], 0, {})],
    "train_bn_local": [(2, "bnmpi", ["--bn", "local"], 0, {})],
    "train_ghost_batch": [(2, "bnmpi", ["--bn", "local", "--ghost-batch", "8", "--batch", "32"], 0, {})],
    # groups of 2 need 4 ranks (at np=2, group 1 is --bn local and group 2 is sync)
    "train_bn_group_np4": [(4, "bnmpi", ["--bn", "sync", "--bn-group", "2"], 0, {})],
    # 16 steps an epoch: checkpoints every 5 steps, rank 1 signals itself after
    # global step 20, every rank stops after step 21 (epoch 2, step 5) and exits 75
    # with a mid-epoch checkpoint; the resumed run reads its /config back.
    "train_resume": [
        (2, "bnmpi", ["--checkpoint", "{tmp}/run.ckpt", "--checkpoint-every", "5"], 75,
         {"BNMPI_SIGNAL_RANK": "1", "BNMPI_SIGNAL_STEP": "20"}),
        (2, "bnmpi", ["--resume", "{tmp}/run.ckpt", "--quiet"], 0, {}),
    ],
    "train_bn_eval_recompute": [(2, "bnmpi", ["--bn-eval", "recompute"], 0, {})],
    "train_diagnostics": [(2, "bnmpi", ["--diagnostics", "5"], 0, {})],
    "train_overlap": [(2, "bnmpi", ["--reduce", "mpi", "--overlap", "4"], 0, {})],
    # the other optimizer, no BN, two hidden layers
    "train_sgd_bn_none": [(2, "bnmpi", ["--bn", "none", "--hidden", "64,32", "--optimizer", "sgd",
                                        "--momentum", "0.9", "--nesterov", "--weight-decay", "0.01"], 0, {})],
    # convolution and pooling layers (--arch), on fewer samples: they cost more
    "train_conv": [(2, "bnmpi", ["--arch", "conv4,pool,conv8k5,pool,dense16", "--epochs", "1", "--train-limit", "512",
                                 "--val-fraction", "0.05", "--eval-batch", "500"], 0, {})],
    # a usage error: every rank leaves through the error path with status 2
    "usage_error": [(2, "bnmpi", ["--hidden", "0"], 2, {})],
    # an image header of 65536 x 32768 pixels: rows * cols overflowed an int in read_headers
    "bad_idx_huge_header": [(2, "bnmpi", ["--data", "{huge_data}"], 1, {})],
}

REPORT_START = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|WARNING: AddressSanitizer"
                          r"|(Direct|Indirect) leak of")
FRAME = re.compile(r"^\s*#\d+ 0x[0-9a-f]+ (?:in (\S+) ?(\S*)|\s*\((\S+?)\+0x[0-9a-f]+\))")


def sanitizer_env(logdir):
    here = os.path.dirname(os.path.abspath(__file__))
    return {
        "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
        # fast_unwind_on_malloc=0: Open MPI, libevent and OpenBLAS have no frame
        # pointers, so the fast unwinder stops after one frame and a library's
        # leak could not be told from bnmpi's; the slow unwinder sees main().
        # Not detect_stack_use_after_return=1: gcc 12 places 64-byte-aligned
        # locals (zeroed with vmovdqa64 under -march=native with AVX-512) in the
        # fake stack at 32-byte alignment, and the store faults (SEGV in
        # finish_epoch's epoch_row), a toolchain fault rather than bnmpi's.
        "ASAN_OPTIONS": ":".join([
            "detect_leaks=1", "abort_on_error=0", "halt_on_error=1", "fast_unwind_on_malloc=0",
            "log_path=" + os.path.join(logdir, "asan")]),
        "LSAN_OPTIONS": ":".join(["suppressions=" + os.path.join(here, "lsan.supp"), "print_suppressions=0"]),
        "UBSAN_OPTIONS": ":".join(["print_stacktrace=1", "halt_on_error=1",
                                   "log_path=" + os.path.join(logdir, "ubsan")]),
    }


def bnmpi_frame(func, loc, module):
    """True when a stack frame is bnmpi's own code."""
    src = os.path.realpath(ARGS.source) + os.sep
    build = os.path.realpath(ARGS.build) + os.sep
    path = os.path.realpath(loc.split(":")[0]) if loc.startswith("/") else ""
    if path.startswith(src) and not path.startswith(build):
        return True
    return module.startswith("/") and os.path.realpath(module).startswith(build)


def split_reports(text):
    """Sanitizer reports in a log: one per error or per leak record."""
    reports, cur = [], None
    for line in text.splitlines():
        if REPORT_START.search(line):
            if cur:
                reports.append(cur)
            cur = [line]
        elif cur is not None:
            if line.startswith("SUMMARY:"):
                reports.append(cur)
                cur = None
            else:
                cur.append(line)
    if cur:
        reports.append(cur)
    return [r for r in reports if not re.search(r"ERROR: LeakSanitizer: detected memory leaks$", r[0])
            or len(r) > 2]


def is_bnmpi_report(lines):
    m = re.search(r"^(\S+?):\d+:\d+: runtime error:", lines[0])
    if m and bnmpi_frame("", m.group(1), ""):
        return True
    for line in lines:
        f = FRAME.match(line)
        if f and bnmpi_frame(f.group(1) or "", f.group(2) or "", f.group(3) or ""):
            return True
    return False


def huge_header_data(tmp):
    """The data folder with t10k-images replaced by a header of 1 x 65536 x 32768 (no data)."""
    d = os.path.join(tmp, "huge-data")
    if not os.path.isdir(d):
        os.mkdir(d)
        for f in os.listdir(ARGS.data):
            os.symlink(os.path.join(ARGS.data, f), os.path.join(d, f))
        os.unlink(os.path.join(d, "t10k-images-idx3-ubyte"))
        with open(os.path.join(d, "t10k-images-idx3-ubyte"), "wb") as f:
            f.write(b"\0\0\x08\x03" + struct.pack(">III", 1, 65536, 32768))
    return d


def run_one(np_, prog, argv, expect, extra_env, tmp, logdir):
    exe = os.path.join(ARGS.build, prog)
    argv = [a.format(tmp=tmp, huge_data=huge_header_data(tmp) if "{huge_data}" in a else "") for a in argv]
    if prog == "bnmpi":
        if "--resume" not in argv:
            argv = QUICK + argv
        if "--data" not in argv:
            argv = argv + ["--data", ARGS.data]
        argv = argv + ["--metrics", os.path.join(tmp, "run.h5")]
        if "--resume" not in argv:
            argv.append("--force")
    cmd = [exe, *argv] if np_ is None else [ARGS.mpiexec, "--oversubscribe", "-np", str(np_), exe, *argv]
    env = dict(os.environ, **sanitizer_env(logdir), **extra_env)
    hooks = " ".join(f"{k}={v}" for k, v in extra_env.items())
    print(f"$ {hooks + ' ' if hooks else ''}{' '.join(cmd)}", flush=True)
    t0 = time.monotonic()
    p = run_with_timeout(cmd, env, tmp, ARGS.timeout)
    print(f"  exit {p.returncode} (expected {expect}) in {time.monotonic() - t0:.1f} s", flush=True)
    return p, cmd


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("case", nargs="?")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--build")
    ap.add_argument("--source")
    ap.add_argument("--mpiexec", default="mpiexec")
    ap.add_argument("--data")
    ap.add_argument("--timeout", type=float, default=240)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ARGS = ap.parse_args()
    if ARGS.list:
        print("\n".join(CASES))
        return 0
    if ARGS.case not in CASES or not ARGS.build or not ARGS.source:
        ap.error(f"need CASE (one of {', '.join(CASES)}), --build and --source")
    ARGS.data = ARGS.data or os.path.join(ARGS.source, "data", "mnist")
    ARGS.build, ARGS.source, ARGS.data = (os.path.abspath(p) for p in (ARGS.build, ARGS.source, ARGS.data))

    tmp = tempfile.mkdtemp(prefix="bnmpi-san-")
    failures = []
    try:
        for i, (np_, prog, argv, expect, extra_env) in enumerate(CASES[ARGS.case]):
            logdir = os.path.join(tmp, f"logs{i}")
            os.mkdir(logdir)
            p, cmd = run_one(np_, prog, argv, expect, extra_env, tmp, logdir)
            logs = {"stderr": p.stderr}
            for path in sorted(glob.glob(os.path.join(logdir, "*"))):
                with open(path, errors="replace") as f:
                    logs[os.path.basename(path)] = f.read()
            ours, theirs = [], []
            for name, text in logs.items():
                for rep in split_reports(text):
                    (ours if is_bnmpi_report(rep) else theirs).append((name, rep))
            for name, rep in ours:
                print(f"\nSANITIZER REPORT IN BNMPI'S CODE ({name}):\n" + "\n".join(rep))
            for name, rep in theirs:
                print(f"\nsanitizer report outside bnmpi's code ({name}; suppress it by library in "
                      f"lsan.supp if it is a library's):\n" + "\n".join(rep))
            if p.returncode != expect:
                failures.append(f"{' '.join(cmd)}: exit {p.returncode}, expected {expect}")
            if ours:
                failures.append(f"{' '.join(cmd)}: {len(ours)} sanitizer report(s) in bnmpi's code")
            elif theirs:
                failures.append(f"{' '.join(cmd)}: {len(theirs)} sanitizer report(s) outside bnmpi's code")
            if failures:
                print("\nstdout:\n" + p.stdout[-4000:] + "\nstderr:\n" + p.stderr[-8000:])
                break
    finally:
        if ARGS.keep:
            print("kept", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print("\nFAIL: " + "\nFAIL: ".join(failures))
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
