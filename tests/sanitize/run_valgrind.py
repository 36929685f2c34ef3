#!/usr/bin/python3
"""bnmpi under valgrind memcheck: a short np=1 training that a signal stops
mid-epoch (exit 75, a checkpoint), then its resume (exit 0).

Usage: run_valgrind.py --bnmpi PATH --source DIR --mpiexec PATH [--data DIR] [--keep]

Every run must exit as expected, and no memcheck error (invalid read or write,
use of uninitialised values, a syscall given uninitialised bytes, a definite or
possible leak, ...) whose stack has a frame in bnmpi's code may be left after
valgrind.supp, which suppresses the libraries' own leaks by library. A frame is
bnmpi's when its source file is under src/ or include/, or, without debug
information, when it is in the bnmpi executable (which holds bnmpi_core).
Errors with no bnmpi frame are printed and do not fail the test.
"""
import argparse
import glob
import os
import shutil
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
from mpi_procs import run_with_timeout  # noqa: E402

ARGS = None
SHORT = ["--train-limit", "512", "--epochs", "2", "--global-batch", "64", "--hidden", "32",
         "--val-fraction", "0.02", "--diagnostics", "3", "--threads", "1"]


def valgrind_cmd(logdir):
    here = os.path.dirname(os.path.abspath(__file__))
    return [ARGS.valgrind, "--tool=memcheck", "--leak-check=full", "--show-leak-kinds=definite,possible",
            "--errors-for-leak-kinds=definite,possible", "--track-origins=yes", "--num-callers=50",
            "--suppressions=" + os.path.join(here, "valgrind.supp"), "--gen-suppressions=all",
            "--xml=yes", "--xml-file=" + os.path.join(logdir, "memcheck.%p.xml")]


def is_bnmpi_frame(frame):
    src = os.path.realpath(ARGS.source)
    d = frame.findtext("dir")
    if d:
        d = os.path.realpath(d)
        return any(d == os.path.join(src, sub) or d.startswith(os.path.join(src, sub) + os.sep)
                   for sub in ("src", "include"))
    obj = frame.findtext("obj")
    return bool(obj) and os.path.realpath(obj) == os.path.realpath(ARGS.bnmpi) and \
        frame.findtext("fn") not in (None, "_start")


def describe(err):
    """The error as valgrind prints it: what, its stack, then each auxwhat and its stack."""
    lines = []
    for child in err:
        if child.tag in ("what", "auxwhat"):
            lines.append(("" if child.tag == "what" else "  ") + (child.text or ""))
        elif child.tag in ("xwhat", "xauxwhat"):
            lines.append(("" if child.tag == "xwhat" else "  ") + (child.findtext("text") or ""))
        elif child.tag == "stack":
            for f in child.findall("frame"):
                where = f"{f.findtext('dir')}/{f.findtext('file')}:{f.findtext('line')}" if f.findtext("file") \
                    else f.findtext("obj") or "?"
                lines.append(f"    {f.findtext('fn') or '???'} ({where})")
    return f"{err.findtext('kind')}: " + "\n".join(lines)


def check_logs(logdir):
    """(bnmpi's errors, others', problems) from every process's XML."""
    ours, theirs, problems = [], [], []
    files = sorted(glob.glob(os.path.join(logdir, "memcheck.*.xml")))
    if not files:
        problems.append(f"valgrind wrote no XML file in {logdir}")
    for path in files:
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError as exc:
            problems.append(f"{path}: unreadable valgrind XML ({exc}); the process died inside valgrind?")
            continue
        if "FINISHED" not in [s.findtext("state") for s in root.iter("status")]:
            problems.append(f"{path}: valgrind did not finish")
        for err in root.iter("error"):
            frames = [f for s in err.findall("stack") for f in s.findall("frame")]
            (ours if any(is_bnmpi_frame(f) for f in frames) else theirs).append(describe(err))
    return ours, theirs, problems


def run(argv, expect, env_extra, tmp, i):
    logdir = os.path.join(tmp, f"vg{i}")
    os.mkdir(logdir)
    cmd = [ARGS.mpiexec, "--oversubscribe", "-np", "1", *valgrind_cmd(logdir), ARGS.bnmpi, *argv]
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", **env_extra)
    hooks = " ".join(f"{k}={v}" for k, v in env_extra.items())
    print(f"$ {hooks + ' ' if hooks else ''}{' '.join(cmd)}", flush=True)
    t0 = time.monotonic()
    p = run_with_timeout(cmd, env, tmp, ARGS.timeout)
    print(f"  exit {p.returncode} (expected {expect}) in {time.monotonic() - t0:.1f} s", flush=True)
    ours, theirs, problems = check_logs(logdir)
    for text in ours:
        print("\nMEMCHECK ERROR IN BNMPI'S CODE:\n" + text)
    for text in theirs:
        print("\nmemcheck error outside bnmpi's code (not counted):\n" + text)
    failures = [f"{' '.join(cmd)}: {m}" for m in problems]
    if p.returncode != expect:
        failures.append(f"{' '.join(cmd)}: exit {p.returncode}, expected {expect}")
    if ours:
        failures.append(f"{' '.join(cmd)}: {len(ours)} memcheck error(s) in bnmpi's code")
    if failures:
        print("\nstdout:\n" + p.stdout[-4000:] + "\nstderr:\n" + p.stderr[-8000:])
    return failures


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--bnmpi", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--mpiexec", default="mpiexec")
    ap.add_argument("--valgrind", default=shutil.which("valgrind") or "valgrind")
    ap.add_argument("--data")
    ap.add_argument("--timeout", type=float, default=400)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ARGS = ap.parse_args()
    ARGS.data = ARGS.data or os.path.join(ARGS.source, "data", "mnist")
    ARGS.bnmpi, ARGS.source, ARGS.data = (os.path.abspath(p) for p in (ARGS.bnmpi, ARGS.source, ARGS.data))
    if not shutil.which(ARGS.valgrind):
        print(f"FAIL: {ARGS.valgrind} not found (Debian package valgrind; tools/setup.sh installs it)")
        return 1
    tmp = tempfile.mkdtemp(prefix="bnmpi-vg-")
    try:
        ck, metrics = os.path.join(tmp, "run.ckpt"), os.path.join(tmp, "run.h5")
        # 8 steps an epoch: rank 0 signals itself after global step 10, so the run
        # stops after step 11 (epoch 2, step 3) with a mid-epoch checkpoint
        failures = run([*SHORT, "--data", ARGS.data, "--metrics", metrics, "--checkpoint", ck,
                        "--checkpoint-every", "3"], 75, {"BNMPI_SIGNAL_RANK": "0", "BNMPI_SIGNAL_STEP": "10"}, tmp, 0)
        if not failures:
            failures = run(["--resume", ck, "--data", ARGS.data, "--threads", "1", "--quiet"], 0, {}, tmp, 1)
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
