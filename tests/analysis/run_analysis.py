#!/usr/bin/python3
"""Tests of tools/analyze.py on real bnmpi runs: real ranks, real MNIST, real HDF5.

Usage: run_analysis.py CASE --bnmpi PATH --mpiexec PATH [--tool PATH]
Each CASE is one ctest test. Runs are short (--train-limit 2048, 2 epochs) and go
to a temporary directory that is removed afterwards.
"""
import csv
import json
import os
import shutil
import subprocess
import sys
import time

import h5py
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
from bad_inputs import make_bad_inputs  # noqa: E402
from cases import run_case  # noqa: E402
from mpi_procs import kill_ranks_then_mpirun  # noqa: E402

ARGS = None
TMP = None
HERE = os.path.dirname(os.path.abspath(__file__))
TOOL = os.path.join(HERE, "..", "..", "tools", "analyze.py")
# Open MPI refuses root without these; they belong to the test harness only.
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
QUICK = ["--epochs", "2", "--train-limit", "2048", "--quiet"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check(cond, msg):
    if not cond:
        sys.exit("FAIL: " + msg)


def train(np_, name, *flags, folder="runs"):
    """One short bnmpi run on np_ ranks; returns the metrics path."""
    os.makedirs(os.path.join(TMP, folder), exist_ok=True)
    path = os.path.join(TMP, folder, name + ".h5")
    cmd = [ARGS.mpiexec, "--oversubscribe", "-np", str(np_), ARGS.bnmpi, *QUICK, "--metrics", path, *flags]
    p = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
    check(p.returncode == 0, f"{' '.join(cmd)}\nexit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return path


def analyze(*args, expect=0, python=True):
    """Runs the tool (through this test's python, or by its shebang); returns the process."""
    cmd = ([sys.executable] if python else []) + [ARGS.tool, *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if expect is not None and p.returncode != expect:
        sys.exit(f"FAIL: {' '.join(cmd)}\nexit {p.returncode}, expected {expect}\n"
                 f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def read_csv(out):
    with open(os.path.join(out, "summary.csv"), newline="") as fh:
        return list(csv.DictReader(fh))


def figures(out):
    with open(os.path.join(out, "figures.json")) as fh:
        return json.load(fh)


def check_png(path):
    """A real PNG: the signature, then a decoder reads a plausible image."""
    with open(path, "rb") as fh:
        check(fh.read(8) == PNG_SIGNATURE, f"{path}: no PNG signature")
    img = mpimg.imread(path)
    check(img.ndim == 3 and img.shape[0] >= 300 and img.shape[1] >= 600, f"{path}: image {img.shape}")
    check(float(img.std()) > 0.01, f"{path}: blank image")
    return img.shape


def axes_of(figs, name):
    check(name in figs["figures"], f"{name} not in figures.json: {sorted(figs['figures'])}, "
                                   f"skipped {figs['skipped']}")
    return figs["figures"][name]["axes"]


# --- cases ----------------------------------------------------------------

def case_report():
    """Seven real runs (BN none/local/sync and ghost, global batch 64 and 128,
    np 1 and 2): every figure is made with the right axes, and the table has each
    run once, with the numbers in the files."""
    runs = {
        "none-gb64-np2": train(2, "none-gb64-np2", "--bn", "none", "--global-batch", "64", "--diagnostics", "8"),
        "sync-gb64-np2": train(2, "sync-gb64-np2", "--bn", "sync", "--global-batch", "64", "--diagnostics", "8"),
        "local-gb64-np2": train(2, "local-gb64-np2", "--bn", "local", "--global-batch", "64"),
        "sync-gb128-np2": train(2, "sync-gb128-np2", "--bn", "sync", "--global-batch", "128"),
        "none-gb128-np1": train(1, "none-gb128-np1", "--bn", "none", "--global-batch", "128"),
        "sync-gb64-np1": train(1, "sync-gb64-np1", "--bn", "sync", "--global-batch", "64"),
        "ghost8-gb64-np2": train(2, "ghost8-gb64-np2", "--bn", "local", "--ghost-batch", "8", "--global-batch", "64"),
    }
    out = os.path.join(TMP, "out")
    p = analyze(os.path.join(TMP, "runs"), "--out", out)
    print(p.stdout)
    # (matplotlib may note that it builds its font cache on a first run; nothing else)
    check("analyze.py:" not in p.stderr and "Traceback" not in p.stderr, f"stderr: {p.stderr!r}")
    for name in ("curves.png", "batch_size.png", "bn_batch.png", "throughput.png", "diagnostics.png"):
        shape = check_png(os.path.join(out, name))
        print(f"ok {name}: {shape[1]}x{shape[0]}")
    figs = figures(out)
    check(figs["skipped"] == {}, f"nothing should be skipped: {figs['skipped']}")
    check(sorted(figs["runs"]) == sorted(n + ".h5" for n in runs), f"runs in figures.json: {figs['runs']}")

    acc, loss = axes_of(figs, "curves.png")
    check(acc["title"] == "Accuracy" and acc["xlabel"] == "epoch" and "accuracy" in acc["ylabel"]
          and "%" in acc["ylabel"], f"curves accuracy axes: {acc}")
    check(loss["title"] == "Loss" and loss["xlabel"] == "epoch" and "loss" in loss["ylabel"], f"curves loss axes: {loss}")
    check(len(acc["lines"]) == 14 and len(loss["lines"]) == 14, f"a train and a val line per run: {acc['lines']}")
    legend = figs["figures"]["curves.png"]["legend"]
    for want in ("bn=none gb=64", "bn=sync gb=128", "bn=local gb=64", "bn=local ghost_batch=8 gb=64",
                 "train", "validation"):
        check(any(t.startswith(want) for t in legend), f"curves legend lacks {want!r}: {legend}")
    check(len(set(legend)) == len(legend) == 9, f"one legend entry per run plus train/validation: {legend}")
    check("dashed" in figs["figures"]["curves.png"]["suptitle"], "curves title explains the line styles")

    acc, loss = axes_of(figs, "batch_size.png")
    for ax in (acc, loss):
        check(ax["xlabel"].startswith("global batch") and ax["xscale"] == "log", f"batch_size x axis: {ax}")
    check("accuracy" in acc["ylabel"] and "%" in acc["ylabel"] and "loss" in loss["ylabel"], "batch_size y labels")
    check(acc["title"] == "Final validation accuracy" and loss["title"] == "Final validation loss", "batch_size titles")
    # one line per BN mode: bn, plus ghost_batch when ghost BN is on (local and ghost have one point each here)
    check(acc["lines"] == ["none", "local", "local ghost_batch=8", "sync"], f"batch_size lines: {acc['lines']}")

    acc, loss = axes_of(figs, "bn_batch.png")
    check(acc["xlabel"].startswith("BN batch") and acc["xscale"] == "log" and "accuracy" in acc["ylabel"],
          f"bn_batch axes: {acc}")
    check(acc["lines"] == ["gb=64"], f"only global batch 64 has BN batch sizes 8, 32, 64: {acc['lines']}")
    legend = figs["figures"]["bn_batch.png"]["legend"]
    for want in ("BN local", "BN local ghost_batch=8", "BN sync"):
        check(want in legend, f"bn_batch legend lacks the mode {want!r}: {legend}")

    sps, tpe = axes_of(figs, "throughput.png")
    check("samples/s" in sps["ylabel"] and "time per epoch (s)" == tpe["ylabel"], f"throughput y labels: {sps} {tpe}")
    check(sps["xscale"] == "log" and sps["xlabel"].startswith("global batch"), "throughput x axis")
    check(sps["lines"] == ["np=1", "np=2"], f"one throughput line per rank count: {sps['lines']}")

    # diagnostics.png: the two runs made with --diagnostics, one row of panels (one hidden layer)
    axes = axes_of(figs, "diagnostics.png")
    check([a["title"] for a in axes] == ["hidden layer 1: activation mean", "hidden layer 1: activation variance",
                                         "hidden layer 1: drift of the mean", "hidden layer 1: drift of the variance"],
          f"diagnostics titles: {[a['title'] for a in axes]}")
    for a in axes:
        check(a["xlabel"] == "step" and sorted(a["lines"]) == ["bn=none", "bn=sync"], f"diagnostics axes: {a}")
    check([a["yscale"] for a in axes] == ["linear", "log", "log", "log"], f"diagnostics scales: {axes}")

    rows = read_csv(out)
    check(sorted(r["file"] for r in rows) == sorted(n + ".h5" for n in runs), f"csv files: {[r['file'] for r in rows]}")
    check(all(r["status"] == "complete" for r in rows), "all runs complete")
    for name in ("sync-gb128-np2", "local-gb64-np2", "none-gb128-np1", "ghost8-gb64-np2"):
        row = next(r for r in rows if r["file"] == name + ".h5")
        with h5py.File(runs[name], "r") as f:
            cfg, ep, sm = f["config"].attrs, f["epochs"][:], f["summary"].attrs
            check(row["bn"] == cfg["bn"] and int(row["global_batch"]) == cfg["global_batch"]
                  and int(row["n_ranks"]) == cfg["n_ranks"] and int(row["local_batch"]) == cfg["local_batch"]
                  and int(row["bn_batch"]) == cfg["bn_batch"], f"{name}: configuration columns {row}")
            check(float(row["test_acc"]) == sm["test_acc"] and float(row["test_loss"]) == sm["test_loss"],
                  f"{name}: test columns {row['test_acc']} {row['test_loss']} vs {sm['test_acc']} {sm['test_loss']}")
            check(float(row["final_val_acc"]) == ep["val_acc"][-1] and float(row["final_train_loss"]) ==
                  ep["train_loss"][-1], f"{name}: final epoch columns")
            check(abs(float(row["median_samples_per_s"]) - np.median(ep["samples_per_s"])) < 1e-6 *
                  np.median(ep["samples_per_s"]), f"{name}: median samples/s")
            check(int(row["epochs"]) == 2, f"{name}: epochs")
    local = next(r for r in rows if r["file"] == "local-gb64-np2.h5")
    check(local["bn_batch"] == "32", "local BN at np 2 normalises over the local batch")
    ghost = next(r for r in rows if r["file"] == "ghost8-gb64-np2.h5")
    check(ghost["bn_batch"] == "8" and ghost["ghost_batch"] == "8", f"ghost BN batch: {ghost}")
    # sorted: bn none, local, sync; within a mode by global batch, then rank count
    order = [r["file"] for r in rows]
    check(order == ["none-gb64-np2.h5", "none-gb128-np1.h5", "local-gb64-np2.h5", "ghost8-gb64-np2.h5",
                    "sync-gb64-np1.h5", "sync-gb64-np2.h5", "sync-gb128-np2.h5"], f"row order {order}")

    md = open(os.path.join(out, "summary.md")).read()
    with h5py.File(runs["sync-gb128-np2"], "r") as f:
        want = f"{100 * f['summary'].attrs['test_acc']:.2f}%"
    line = next(l for l in md.splitlines() if l.startswith("| sync-gb128-np2.h5 "))
    check(want in line, f"summary.md shows the test accuracy in percent ({want}): {line}")
    check(md.count("| complete |") == 7, "summary.md: one row per run")
    for name in ("curves.png", "batch_size.png", "bn_batch.png", "throughput.png", "diagnostics.png"):
        check(f"]({name})" in md, f"summary.md links {name}")


def case_single_file():
    """One file works: the curves and the table; the comparisons are skipped with
    a note and no empty figure. Run through its #! line, as a user would."""
    path = train(2, "only", "--bn", "sync")
    out = os.path.join(TMP, "out")
    p = analyze(path, "--out", out, python=False)
    check_png(os.path.join(out, "curves.png"))
    for name in ("batch_size.png", "bn_batch.png", "throughput.png", "diagnostics.png"):
        check(not os.path.exists(os.path.join(out, name)), f"{name} made from one run")
        notes = [l for l in p.stdout.splitlines() if l.startswith(name + ": skipped")]
        check(len(notes) == 1, f"one note for the skipped {name}: {p.stdout!r}")
    check("only one global batch" in p.stdout, "the note says why")
    check("no run has /diagnostics" in p.stdout, "the diagnostics note says why")
    figs = figures(out)
    check(sorted(figs["skipped"]) == ["batch_size.png", "bn_batch.png", "diagnostics.png", "throughput.png"],
          f"{figs['skipped']}")
    check(figs["figures"]["curves.png"]["legend"][0] == "bn=sync", f"{figs['figures']['curves.png']['legend']}")
    rows = read_csv(out)
    check(len(rows) == 1 and rows[0]["file"] == "only.h5" and rows[0]["status"] == "complete", f"{rows}")
    # a stale figure from an earlier analysis of more runs is removed, not left to mislead
    open(os.path.join(out, "throughput.png"), "wb").write(b"stale")
    analyze(path, "--out", out)
    check(not os.path.exists(os.path.join(out, "throughput.png")), "stale throughput.png kept")
    # a python3 without numpy (a pyenv one first on PATH, say; here a copy of Debian's
    # interpreter started with -S, so it sees no dist-packages) re-runs the tool
    # under /usr/bin/python3 (tools/debian_python.py, shared with claims.py)
    bare = os.path.join(TMP, "bare", "python3")
    os.makedirs(os.path.dirname(bare))
    shutil.copy(os.path.realpath(sys.executable), bare)
    probe = subprocess.run([bare, "-S", "-c", "import numpy"], capture_output=True, text=True)
    check(probe.returncode != 0, "the bare interpreter sees numpy: the test would prove nothing")
    out2 = os.path.join(TMP, "out-bare")
    p = subprocess.run([bare, "-S", ARGS.tool, path, "--out", out2], capture_output=True, text=True, timeout=120)
    check(p.returncode == 0, f"under a python3 without numpy: exit {p.returncode}: {p.stderr!r}")
    check_png(os.path.join(out2, "curves.png"))
    # --help documents the outputs and the input rules
    h = analyze("--help").stdout
    for word in ("curves.png", "batch_size.png", "bn_batch.png", "throughput.png", "diagnostics.png", "summary.md",
                 "summary.csv", "figures.json", "--out", "recursively", "exit status 2", "incomplete"):
        check(word in h, f"--help lacks {word!r}")


def case_bad_input():
    """Each bad input gives one line naming the file and what was expected, exit
    status 2, and writes nothing, even when other inputs are good."""
    good = train(1, "good", "--bn", "none")
    bad = make_bad_inputs(os.path.join(TMP, "bad"))
    text, plain, other, ckpt, empty, missing = (bad[k] for k in ("text", "plain", "other", "ckpt", "empty", "missing"))
    out = os.path.join(TMP, "out")
    cases = [
        ([missing], missing, "does not exist"),
        ([text], text, "not an HDF5 file"),
        ([plain], plain, "without the root attribute format"),
        ([other], other, 'format is "someone-else"'),
        ([ckpt], ckpt, "checkpoint, not a metrics file"),
        ([empty], empty, "no *.h5 files"),
        ([good, text], text, "not an HDF5 file"),
    ]
    for inputs, named, needle in cases:
        p = analyze(*inputs, "--out", out, expect=2)
        lines = p.stderr.strip().splitlines()
        check(len(lines) == 1, f"{inputs}: expected one line on stderr, got {p.stderr!r}")
        check(lines[0].startswith("analyze.py: " + named + ":") and needle in lines[0]
              and "bnmpi metrics" in lines[0], f"{inputs}: message {lines[0]!r}")
        check(not os.path.exists(out), f"{inputs}: {out} was created")
        print(f"ok {lines[0]}")
    # several bad files: one line each
    p = analyze(good, text, plain, missing, "--out", out, expect=2)
    check(len(p.stderr.strip().splitlines()) == 3, f"one line per bad input: {p.stderr!r}")
    check(not os.path.exists(out), "output written despite bad inputs")
    # --out naming a file
    p = analyze(good, "--out", text, expect=2)
    check("--out" in p.stderr and "not a directory" in p.stderr, f"--out file: {p.stderr!r}")
    # a folder holding a checkpoint beside the runs: the checkpoint is skipped, not an error
    shutil.copy(ckpt, os.path.join(os.path.dirname(good), "ckpt.h5"))
    p = analyze(os.path.dirname(good), "--out", out)
    check("1 checkpoint(s) skipped" in p.stdout and len(read_csv(out)) == 1, f"checkpoint in a folder: {p.stdout}")


def case_incomplete():
    """A run without /summary is shown as incomplete, not a crash: a copy with
    /summary deleted, a run read while bnmpi is still writing it, and the same
    run after SIGKILL."""
    done = train(2, "done", "--bn", "sync", "--global-batch", "64")
    cut = os.path.join(TMP, "runs", "cut.h5")
    shutil.copy(done, cut)
    with h5py.File(cut, "a") as f:
        del f["summary"]
    # a long run, killed with SIGKILL after its first epochs
    killed = os.path.join(TMP, "runs", "killed.h5")
    cmd = [ARGS.mpiexec, "--oversubscribe", "-np", "2", ARGS.bnmpi, "--epochs", "500", "--train-limit", "2048",
           "--bn", "local", "--global-batch", "128", "--metrics", killed, "--quiet"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            check(proc.poll() is None, "the long run ended by itself")
            check(time.monotonic() < deadline, "the long run wrote no epoch in 90 s")
            try:
                with h5py.File(killed, "r", locking=False) as f:
                    if "epochs" in f and f["epochs"].shape[0] >= 1:
                        break
            except (OSError, KeyError):
                pass
            time.sleep(0.2)
        # read while bnmpi holds the file open for writing
        out = os.path.join(TMP, "out-live")
        analyze(os.path.join(TMP, "runs"), "--out", out)
        live = {r["file"]: r for r in read_csv(out)}
        check(live["killed.h5"]["status"] == "incomplete", f"running run: {live['killed.h5']}")
    finally:
        kill_ranks_then_mpirun(proc)
    out = os.path.join(TMP, "out")
    p = analyze(os.path.join(TMP, "runs"), "--out", out)
    print(p.stdout)
    check("3 runs (2 incomplete)" in p.stdout, f"count of incomplete runs: {p.stdout!r}")
    rows = {r["file"]: r for r in read_csv(out)}
    check(sorted(rows) == ["cut.h5", "done.h5", "killed.h5"], f"rows {sorted(rows)}")
    check(rows["done.h5"]["status"] == "complete" and rows["done.h5"]["test_acc"] != "", "complete run")
    for name in ("cut.h5", "killed.h5"):
        check(rows[name]["status"] == "incomplete", f"{name}: status {rows[name]['status']}")
        check(rows[name]["test_acc"] == "" and rows[name]["test_loss"] == "", f"{name}: test columns should be empty")
    check(rows["cut.h5"]["final_val_acc"] == rows["done.h5"]["final_val_acc"], "the cut run keeps its epochs")
    with h5py.File(killed, "r") as f:
        n = f["epochs"].shape[0]
        check("summary" not in f, "the killed run has no /summary")
    check(int(rows["killed.h5"]["epochs"]) == n >= 1 and rows["killed.h5"]["epochs_planned"] == "500",
          f"killed run epochs {rows['killed.h5']['epochs']} of {n}")
    md = open(os.path.join(out, "summary.md")).read()
    check(f"incomplete ({n}/500 epochs)" in md and "incomplete (2/2 epochs)" in md, "summary.md marks incomplete runs")
    figs = figures(out)
    check(sorted(figs["incomplete"]) == ["cut.h5", "killed.h5"], f"figures.json incomplete {figs['incomplete']}")
    check(any("(incomplete)" in t for t in figs["figures"]["curves.png"]["legend"]), "curves legend marks it")
    check_png(os.path.join(out, "curves.png"))
    # the accuracy comparisons use complete runs only: one global batch left, so skipped
    check("batch_size.png" in figs["skipped"], "batch_size.png should be skipped (one complete global batch)")
    check("throughput.png" in figs["figures"], "throughput uses the killed run's epochs (global batch 128)")


def options(p):
    p.add_argument("--bnmpi", required=True)
    p.add_argument("--mpiexec", required=True)
    p.add_argument("--tool", default=os.path.normpath(TOOL))


def main():
    run_case(globals(), "bnmpi-analysis-", options)


if __name__ == "__main__":
    main()
