#!/usr/bin/python3
"""End-to-end tests of the bnmpi program: real ranks, real MNIST, real HDF5.

Usage: run_case.py CASE --bnmpi PATH --mpiexec PATH [--readme PATH]
Each CASE is one ctest test. Runs are short (--train-limit, 1 epoch) and go to
a temporary directory that is removed afterwards.
"""
import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np

ARGS = None
TMP = None
# Open MPI refuses root without these; they belong to the test harness only.
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
QUICK = ["--epochs", "1", "--train-limit", "4096", "--global-batch", "64", "--quiet"]


def run(np_, *flags, expect=0, timeout=120):
    """Runs bnmpi on np_ ranks; returns (returncode, stdout, stderr, seconds)."""
    cmd = [ARGS.mpiexec, "--oversubscribe", "-np", str(np_), ARGS.bnmpi, *flags]
    t0 = time.monotonic()
    p = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)
    took = time.monotonic() - t0
    if expect is not None and p.returncode != expect:
        sys.exit(f"FAIL: {' '.join(cmd)}\nexit {p.returncode}, expected {expect}\n"
                 f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p.returncode, p.stdout, p.stderr, took


def train(np_, name, *flags):
    path = os.path.join(TMP, name + ".h5")
    run(np_, *QUICK, "--metrics", path, *flags)
    return path


def steps(path):
    with h5py.File(path, "r") as f:
        return f["steps"][:]


def summary(path):
    with h5py.File(path, "r") as f:
        return dict(f["summary"].attrs)


def check(cond, msg):
    if not cond:
        sys.exit("FAIL: " + msg)


# --- cases ----------------------------------------------------------------

def case_np_invariance():
    """Sync BN makes training independent of the rank count: per-step losses at
    np 1, 2 and 4 agree to 1e-4 relative."""
    runs = {np_: steps(train(np_, f"np{np_}", "--bn", "sync")) for np_ in (1, 2, 4)}
    ref = runs[1]["loss"]
    check(len(ref) == 4096 // 64, f"expected 64 steps, got {len(ref)}")
    for np_ in (2, 4):
        rel = np.max(np.abs(runs[np_]["loss"] - ref) / np.abs(ref))
        print(f"np={np_}: max relative step-loss difference to np=1: {rel:.2e}")
        check(rel <= 1e-4, f"np={np_} step losses differ from np=1 by {rel:.2e} > 1e-4")
    # and the batches really differ per rank count: local BN at np=4 is another computation
    local4 = steps(train(4, "local4", "--bn", "local"))["loss"]
    check(np.max(np.abs(local4 - ref) / np.abs(ref)) > 1e-3, "local BN at np=4 should differ from sync")


def case_determinism():
    """Two runs with the same np and seed are bitwise identical; another seed is not."""
    a, b = train(2, "a"), train(2, "b")
    sa, sb = steps(a), steps(b)
    check(sa.tobytes() == sb.tobytes(), "per-step rows differ between two identical runs")
    check(summary(a)["params_sha256"] == summary(b)["params_sha256"], "final parameters differ")
    c = train(2, "c", "--seed", "2")
    check(summary(a)["params_sha256"] != summary(c)["params_sha256"], "--seed has no effect")


def case_local_equals_sync_np1():
    """At one rank, local and sync BN are the same computation, bit for bit."""
    a, b = train(1, "local", "--bn", "local"), train(1, "sync", "--bn", "sync")
    check(steps(a).tobytes() == steps(b).tobytes(), "local and sync per-step rows differ at np=1")
    check(summary(a)["params_sha256"] == summary(b)["params_sha256"], "final parameters differ")


def case_params_identical_np4():
    """Every rank ends with the same parameters (bnmpi checks rank 0's digest
    against each rank's every epoch and fails otherwise), in each BN mode."""
    for mode in ("none", "local", "sync"):
        path = train(4, "p4" + mode, "--bn", mode, "--epochs", "2", "--train-limit", "2048")
        check(len(summary(path)["params_sha256"]) == 64, "no parameter digest in /summary")


def case_hdf5_layout():
    """The metrics file holds the documented layout, read back with h5py and h5dump."""
    path = train(2, "layout", "--epochs", "2", "--train-limit", "2048", "--hidden", "32,16")
    with h5py.File(path, "r") as f:
        check(f.attrs["format"] == "bnmpi-metrics", "root attribute format (a str to h5py)")
        check(int(f.attrs["format_version"]) == 1, "root attribute format_version")
        cfg = f["config"].attrs
        for key in ("epochs", "global_batch", "bn", "bn_place", "hidden", "optimizer", "lr", "seed",
                    "n_ranks", "local_batch", "bn_batch", "threads", "bnmpi_version", "mpi_library",
                    "hostname", "start_time", "train_images_sha256", "test_labels_sha256", "data", "metrics"):
            check(key in cfg, f"/config lacks {key}")
        check(int(cfg["n_ranks"]) == 2 and int(cfg["local_batch"]) == 32 and int(cfg["global_batch"]) == 64,
              "batch sizes in /config")
        check(int(cfg["bn_batch"]) == 64, "sync BN batch is the global batch")
        check(int(cfg["threads"]) >= 1, "threads records the count used")
        check(os.path.isdir(cfg["data"]), "data records the folder used")
        check(cfg["train_images_sha256"] == "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
              "dataset sha256")
        check(cfg["bn"] == "sync" and cfg["hidden"] == "32,16" and cfg["lr"] == 0.001, "options as resolved")
        check(np.ndim(cfg["epochs"]) == 0 and np.ndim(f["summary"].attrs["test_acc"]) == 0, "scalar attributes")
        ep = f["epochs"][:]
        check(list(ep.dtype.names) == ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr",
                                       "time_s", "comm_s", "samples_per_s"], f"/epochs fields {ep.dtype.names}")
        check(list(ep["epoch"]) == [1, 2], "one /epochs row per epoch")
        check(np.all((ep["val_acc"] > 0.2) & (ep["val_acc"] <= 1)), "validation accuracy is a fraction, above chance")
        st = f["steps"][:]
        check(list(st.dtype.names) == ["step", "epoch", "loss", "acc", "lr"], f"/steps fields {st.dtype.names}")
        check(list(st["step"]) == list(range(1, 65)), "steps numbered 1..64 over two epochs of 32")
        check(list(st["epoch"]) == [1] * 32 + [2] * 32, "step rows carry their epoch")
        # the epoch's train loss is the mean of its step losses
        check(abs(st["loss"][:32].mean() - ep["train_loss"][0]) < 1e-6, "train_loss = mean step loss")
        sm = f["summary"].attrs
        check(0.2 < sm["test_acc"] <= 1 and sm["test_loss"] > 0 and sm["total_time_s"] > 0, "/summary")
    dump = subprocess.run(["h5dump", "-H", path], capture_output=True, text=True)
    check(dump.returncode == 0 and 'DATASET "steps"' in dump.stdout, "h5dump -H reads the file")


def case_cli_errors():
    """Bad input: one line on stderr naming the flag or file, the right exit code
    on every rank, within seconds, and no file touched."""
    existing = os.path.join(TMP, "existing.h5")
    with open(existing, "wb") as fh:
        fh.write(b"precious")
    digest = hashlib.sha256(open(existing, "rb").read()).hexdigest()
    cases = [
        (["--bogus"], 2, "unknown option '--bogus'"),
        (["--epochs", "ten"], 2, "--epochs: expected an integer"),
        (["--epochs", "0"], 2, "--epochs"),
        (["--batch", "-4"], 2, "--batch"),
        (["--lr", "0"], 2, "--lr"),
        (["--lr", "nan"], 2, "--lr"),
        (["--bn", "maybe"], 2, "--bn: expected one of none|local|sync"),
        (["--hidden", "256,,10"], 2, "--hidden"),
        (["--global-batch", "65"], 2, "--global-batch: 65 does not divide by the 2 ranks"),
        (["--batch", "16", "--global-batch", "64"], 2, "disagree"),
        (["--global-batch", "8192", "--train-limit", "4096"], 2, "exceeds the 4096 training samples"),
        (["--data", os.path.join(TMP, "nowhere")], 1, "fetch"),
        (["--metrics", existing], 1, "file exists"),
        (["--metrics", os.path.join(TMP, "missing-dir", "m.h5")], 1, "does not exist"),
        (["--metrics", "/proc/bnmpi-test.h5"], 1, "/proc/bnmpi-test.h5"),
        (["--epochs"], 2, "--epochs: expects a value"),
        (["stray"], 2, "unexpected argument 'stray'"),
    ]
    for flags, code, needle in cases:
        rc, out, err, took = run(2, *flags, expect=code, timeout=60)
        lines = [l for l in err.splitlines() if l.startswith("bnmpi:")]
        check(len(lines) == 1, f"{flags}: expected one 'bnmpi:' line on stderr, got {err!r}")
        check(needle in lines[0], f"{flags}: message {lines[0]!r} lacks {needle!r}")
        check(took < 30, f"{flags}: took {took:.1f} s")
        print(f"ok {flags}: {lines[0]}")
    check(hashlib.sha256(open(existing, "rb").read()).hexdigest() == digest, "existing file was modified")
    # --force is the explicit way to overwrite
    run(2, *QUICK, "--metrics", existing, "--force")
    with h5py.File(existing, "r") as f:
        check("summary" in f, "--force did not write a metrics file")


def case_default_metrics_path():
    """Without --metrics, each run gets a new file under runs/ named after its
    configuration; an earlier run is never overwritten."""
    cwd = os.path.join(TMP, "cwd")
    os.makedirs(cwd)
    for _ in range(2):
        subprocess.run([ARGS.mpiexec, "--oversubscribe", "-np", "2", ARGS.bnmpi, *QUICK, "--train-limit", "1024"],
                       env=ENV, cwd=cwd, check=True, capture_output=True, timeout=120)
    files = sorted(os.listdir(os.path.join(cwd, "runs")))
    check(len(files) == 2, f"expected two metrics files, got {files}")
    check(all(f.startswith("mnist-bn_sync-h256-adam-gb64-np2-seed1-") and f.endswith(".h5") for f in files),
          f"names {files}")


def case_readme_options():
    """The README's option table is exactly what bnmpi --help-markdown prints."""
    md = subprocess.run([ARGS.bnmpi, "--help-markdown"], capture_output=True, text=True, env=ENV, check=True).stdout
    text = open(ARGS.readme).read()
    begin, end = "<!-- options:begin -->\n", "<!-- options:end -->"
    check(begin in text and end in text, "README lacks the options markers")
    block = text.split(begin, 1)[1].split(end, 1)[0]
    check(block.strip() == md.strip(),
          "README option table is stale: regenerate it with tools/update-readme-options.sh")
    help_text = subprocess.run([ARGS.bnmpi, "--help"], capture_output=True, text=True, env=ENV).stdout
    for line in md.splitlines()[2:]:
        flag = line.split("`")[1].split()[0]
        check(flag in help_text, f"{flag} missing from --help")


def case_fashion():
    """--dataset fashion reads Debian's gzipped Fashion-MNIST through zlib."""
    path = train(2, "fashion", "--dataset", "fashion")
    with h5py.File(path, "r") as f:
        check(f["config"].attrs["dataset"] == "fashion", "dataset attribute")
        check(f["summary"].attrs["test_acc"] > 0.6, "fashion run learnt something")


def case_nonfinite():
    """A diverging run stops with a message naming the epoch and step, exit 1."""
    rc, out, err, _ = run(2, *QUICK, "--lr", "1e6", "--optimizer", "sgd",
                          "--metrics", os.path.join(TMP, "nan.h5"), expect=1)
    check("non-finite loss at epoch 1, step" in err, f"message: {err!r}")


def main():
    global ARGS, TMP
    cases = {k[5:]: v for k, v in globals().items() if k.startswith("case_")}
    p = argparse.ArgumentParser()
    p.add_argument("case", choices=sorted(cases))
    p.add_argument("--bnmpi", required=True)
    p.add_argument("--mpiexec", required=True)
    p.add_argument("--readme")
    ARGS = p.parse_args()
    TMP = tempfile.mkdtemp(prefix="bnmpi-e2e-")
    try:
        cases[ARGS.case]()
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
    print(f"{ARGS.case}: passed")


if __name__ == "__main__":
    main()
