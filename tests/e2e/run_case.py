#!/usr/bin/python3
"""End-to-end tests of the bnmpi program: real ranks, real MNIST, real HDF5.

Usage: run_case.py CASE --bnmpi PATH --mpiexec PATH [--readme PATH]
Each CASE is one ctest test. Runs are short (--train-limit, 1 epoch) and go to
a temporary directory that is removed afterwards.
"""
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
from cases import run_case  # noqa: E402
from mpi_procs import kill_ranks_then_mpirun  # noqa: E402

ARGS = None
TMP = None
# Open MPI refuses root without these; they belong to the test harness only.
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
QUICK = ["--epochs", "1", "--train-limit", "4096", "--global-batch", "64", "--quiet"]
# the last commit with the fixed MLP struct: the layer list must train its MLPs bit for bit
MLP_BASELINE = "024d842"


def run(np_, *flags, expect=0, timeout=120, env=None):
    """Runs bnmpi on np_ ranks, with ENV plus env (test hooks); returns (returncode,
    stdout, stderr, seconds)."""
    cmd = [ARGS.mpiexec, "--oversubscribe", "-np", str(np_), ARGS.bnmpi, *flags]
    t0 = time.monotonic()
    p = subprocess.run(cmd, env=dict(ENV, **(env or {})), capture_output=True, text=True, timeout=timeout)
    took = time.monotonic() - t0
    if expect is not None and p.returncode != expect:
        hooks = " ".join(f"{k}={v!r}" for k, v in (env or {}).items())
        sys.exit(f"FAIL: {hooks + ' ' if hooks else ''}{' '.join(cmd)}\nexit {p.returncode}, expected {expect}\n"
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


def case_overlap():
    """--overlap K (the gradient sum started in K blocks during backward, the
    next batch gathered while it finishes) trains the same model as the
    blocking allreduce: bitwise with one block; to float rounding with blocks,
    whose GEMMs may sum in another order."""
    for mode in ("sync", "local"):
        base = steps(train(2, "blocking" + mode, "--bn", mode, "--overlap", "0"))
        one = steps(train(2, "one" + mode, "--bn", mode, "--overlap", "1"))
        check(base.tobytes() == one.tobytes(), f"--overlap 1 per-step rows differ from --overlap 0 ({mode})")
        for k in (5, 32):
            other = steps(train(2, f"k{k}{mode}", "--bn", mode, "--overlap", str(k)))
            rel = np.max(np.abs(other["loss"] - base["loss"]) / np.abs(base["loss"]))
            print(f"{mode}, --overlap {k}: max relative step-loss difference to blocking: {rel:.2e}")
            check(rel <= 1e-3, f"--overlap {k} step losses differ from blocking by {rel:.2e} ({mode})")
            check(np.array_equal(other["acc"] > 0, base["acc"] > 0), "accuracy column broken")
    # a signal on one rank mid-epoch stops every rank after the same step (the stop
    # flag rides in the first nonblocking sum), and the resumed run, whose first
    # batch is gathered afresh, matches the uninterrupted one bit for bit
    ovl = ["--overlap", "4"]
    full = os.path.join(TMP, "ovl-full.h5")
    run(2, *CKPT, *ovl, "--metrics", full)
    part, ck = os.path.join(TMP, "ovl-part.h5"), os.path.join(TMP, "ovl.ckpt")
    run(2, *CKPT, *ovl, "--metrics", part, "--checkpoint", ck, expect=75,
        env={"BNMPI_SIGNAL_RANK": "1", "BNMPI_SIGNAL_STEP": "70"})
    check(load_checkpoint(ck) == [2, 7, 71], f"stopped after the next step, at {load_checkpoint(ck)}")
    run(2, "--resume", ck, "--quiet")
    same_metrics(full, part, "--overlap 4 resumed after a signal")


def case_reduce():
    """--reduce node (gradients summed in node-shared memory, each rank updating
    its share of one copy of the parameters per node) trains the same model as
    --reduce mpi (one MPI_Allreduce, every rank updating its own copy), for Adam
    and for SGD with weight decay (applied per tensor, across share edges), on
    one node and on "nodes" of 2 and 1 ranks (BNMPI_TEST_NODE_SIZE), where the
    shares also cross nodes through MPI. The header says which path ran."""
    for opt in (["--optimizer", "adam"], ["--optimizer", "sgd", "--momentum", "0.9", "--weight-decay", "0.01"]):
        ref = steps(train(4, "mpi-" + opt[1], "--reduce", "mpi", *opt))["loss"]
        for node_size in (None, "2", "1"):
            path = os.path.join(TMP, f"node{node_size}-{opt[1]}.h5")
            _, out, _, _ = run(4, *QUICK[:-1], "--metrics", path, "--force", "--reduce", "node", *opt,
                               env={"BNMPI_TEST_NODE_SIZE": node_size} if node_size else None)
            per_node = {None: 4, "2": 2, "1": 1}[node_size]
            want = f"gradients: summed in node-shared memory by {per_node} rank"
            check(want in out, f"header lacks {want!r}: {out[:400]!r}")
            check((per_node < 4) == ("across nodes" in out), f"cross-node note wrong: {out[:400]!r}")
            rel = np.max(np.abs(steps(path)["loss"] - ref) / np.abs(ref))
            print(f"{opt[1]}, {per_node} ranks per node: max relative step-loss difference to mpi: {rel:.2e}")
            check(rel <= 1e-4, f"--reduce node ({per_node} per node, {opt[1]}) differs from mpi by {rel:.2e}")
    # auto picks node; --overlap makes it mpi; both together is a usage error
    _, out, _, _ = run(2, *QUICK[:-1], "--metrics", os.path.join(TMP, "auto.h5"))
    check("gradients: summed in node-shared memory" in out and "reduce=node" in out, "auto is not node")
    _, out, _, _ = run(2, *QUICK[:-1], "--overlap", "2", "--metrics", os.path.join(TMP, "ovl.h5"))
    check("gradients: one MPI_Allreduce per step, overlapped" in out and "reduce=mpi" in out, "--overlap is not mpi")
    _, _, err, _ = run(2, *QUICK, "--reduce", "node", "--overlap", "2", expect=2)
    check("--overlap" in err and "--reduce mpi" in err, f"message: {err!r}")


def case_bench_blocks():
    """BNMPI_BENCH_BN_BLOCKS=K, the benchmark's sync-against-local timer: BN runs
    local in even blocks of K steps and sync in odd ones, and rank 0 writes one
    row per whole block after the first. The first block trains exactly as --bn
    local; the next step, with sync statistics, does not. Bad settings are usage
    errors that name the variable."""
    K, n_steps = 8, 4096 // 64
    csv_path = os.path.join(TMP, "blocks.csv")
    path = os.path.join(TMP, "blocks.h5")
    _, _, err, _ = run(2, *QUICK, "--bn", "sync", "--metrics", path,
                       env={"BNMPI_BENCH_BN_BLOCKS": str(K), "BNMPI_BENCH_BN_CSV": csv_path})
    check("BNMPI_BENCH_BN_BLOCKS=8" in err and "timing only" in err, f"no notice: {err!r}")
    with open(csv_path) as f:
        lines = f.read().split()
    check(lines[0] == "epoch,first_step,steps,bn,seconds", f"header {lines[0]!r}")
    rows = [ln.split(",") for ln in lines[1:]]
    firsts = [int(r[1]) for r in rows]
    check(firsts == list(range(K, n_steps, K)), f"blocks start at {firsts}")
    for r in rows:
        check(r[0] == "1" and r[2] == str(K) and float(r[4]) > 0, f"row {r}")
        check(r[3] == ("sync" if int(r[1]) // K % 2 else "local"), f"block {r[1]} is {r[3]}")
    mixed, local = steps(path), steps(train(2, "plain-local", "--bn", "local"))
    check(mixed[:K].tobytes() == local[:K].tobytes(), "the first (local) block differs from --bn local")
    check(mixed["loss"][K] != local["loss"][K], "the first sync step computes what local computes")
    for value, csv_value, flags, want in (("0", csv_path, ["--bn", "sync"], "BNMPI_BENCH_BN_BLOCKS=0"),
                                          ("8", csv_path, ["--bn", "local"], "needs --bn sync"),
                                          ("8", "", ["--bn", "sync"], "BNMPI_BENCH_BN_CSV"),
                                          ("8", os.path.join(TMP, "no", "such", "dir.csv"), ["--bn", "sync"],
                                           "no/such/dir.csv")):
        _, _, err, _ = run(2, *QUICK, *flags, "--metrics", os.path.join(TMP, "bad.h5"), "--force", expect=2,
                           env={"BNMPI_BENCH_BN_BLOCKS": value, "BNMPI_BENCH_BN_CSV": csv_value})
        check(want in err, f"BNMPI_BENCH_BN_BLOCKS={value} BNMPI_BENCH_BN_CSV={csv_value!r} {flags}: "
              f"stderr {err!r}")


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
        # accepted by the parser once, then NaN metrics, frozen statistics or an out-of-memory kill
        (["--hidden", "65536,65536"], 2, "GB per rank"),
        (["--val-fraction", "0"], 1, "no validation samples"),
        (["--bn-momentum", "1"], 2, "--bn-momentum 1: the running statistics would never leave"),
        (["--watchdog", "0.5"], 2, "--watchdog 0.5: expected 0 (off) or at least 1 second"),
        # found by tests/fuzz: a short-option cluster, a value with a newline, a batch /config could not read back
        (["-xy"], 2, "unknown option '-xy'"),
        (["--bn", "sync\nlocal"], 2, "--bn: expected one of none|local|sync, got 'sync?local'"),
        (["--global-batch", "4000000"], 2, "2000000 samples per rank, above --batch's limit of 1048576"),
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


# --- checkpoints, resume, signals, faults ------------------------------------

TIMING = ("time_s", "comm_s", "samples_per_s")


def same_metrics(a, b, what):
    """/steps equal bit for bit; /epochs equal except the wall-clock columns;
    the same final parameters."""
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        sa, sb = fa["steps"][:], fb["steps"][:]
        check(len(sa) == len(sb), f"{what}: {len(sb)} step rows, expected {len(sa)} (duplicated or missing rows)")
        check(sa.tobytes() == sb.tobytes(), f"{what}: step rows differ")
        ea, eb = fa["epochs"][:], fb["epochs"][:]
        check(list(ea["epoch"]) == list(eb["epoch"]), f"{what}: epochs {list(eb['epoch'])} vs {list(ea['epoch'])}")
        for field in ea.dtype.names:
            if field not in TIMING:
                check(ea[field].tobytes() == eb[field].tobytes(), f"{what}: /epochs/{field} differs")
        check(fa["summary"].attrs["params_sha256"] == fb["summary"].attrs["params_sha256"],
              f"{what}: final parameters differ")


def load_checkpoint(path):
    """What a user relies on: it opens, says what it is, and holds the state."""
    with h5py.File(path, "r") as f:
        check(f.attrs["format"] == "bnmpi-checkpoint", f"{path}: format attribute")
        st = f["state"]
        for key in ("params/dense0.W", "params/dense1.b", "optimizer/m", "optimizer/t", "position", "epoch_sums",
                    "epoch_steps", "rng/shuffle_seed"):
            check(key in st, f"{path}: /state/{key} missing")
        check(np.all(np.isfinite(st["params/dense0.W"][:])), f"{path}: non-finite parameters")
        return [int(x) for x in st["position"][0]]


CKPT = ["--train-limit", "4096", "--global-batch", "64", "--quiet", "--epochs", "3"]


def case_resume_exact():
    """Stopped after an epoch, or mid-epoch, then resumed at the same rank
    count: metric rows and final parameters are bitwise identical to an
    uninterrupted run, and the metrics file has no duplicated or missing rows."""
    full = os.path.join(TMP, "full.h5")
    run(2, *CKPT, "--metrics", full)
    # after epoch 1: a 1-epoch run with a checkpoint, resumed to 3 epochs
    part, ck = os.path.join(TMP, "part.h5"), os.path.join(TMP, "part.ckpt")
    run(2, *CKPT, "--epochs", "1", "--metrics", part, "--checkpoint", ck)
    check(load_checkpoint(ck) == [2, 0, 64], "checkpoint after epoch 1 is at epoch 2, step 0")
    run(2, "--resume", ck, "--epochs", "3", "--quiet")
    same_metrics(full, part, "resumed after epoch 1")
    # mid-epoch: checkpoints every 10 steps, a fault after step 95 (epoch 2, step 31);
    # the last checkpoint is at step 90; the metrics file holds epoch 1 only
    mid, ck2 = os.path.join(TMP, "mid.h5"), os.path.join(TMP, "mid.ckpt")
    env = dict(ENV, BNMPI_FAULT_RANK="1", BNMPI_FAULT_STEP="95")
    p = subprocess.run([ARGS.mpiexec, "--oversubscribe", "-np", "2", ARGS.bnmpi, *CKPT, "--metrics", mid,
                        "--checkpoint", ck2, "--checkpoint-every", "10"], env=env, capture_output=True, text=True,
                       timeout=120)
    check(p.returncode != 0 and "injected fault" in p.stderr, f"fault run: {p.returncode} {p.stderr!r}")
    check(load_checkpoint(ck2) == [2, 26, 90], f"mid-epoch checkpoint position {load_checkpoint(ck2)}")
    run(2, "--resume", ck2, "--quiet")
    same_metrics(full, mid, "resumed mid-epoch after a crash")


def case_signals():
    """SIGUSR1 or SIGTERM to mpirun, or a signal to one rank only, ends the step
    on every rank, writes a checkpoint and exits 75; resuming it gives the
    uninterrupted run's results."""
    full = os.path.join(TMP, "full.h5")
    run(2, *CKPT, "--metrics", full)
    # one rank signals itself after global step 70: the others learn at the next step
    one, ck = os.path.join(TMP, "one.h5"), os.path.join(TMP, "one.ckpt")
    env = dict(ENV, BNMPI_SIGNAL_RANK="1", BNMPI_SIGNAL_STEP="70")
    p = subprocess.run([ARGS.mpiexec, "--oversubscribe", "-np", "2", ARGS.bnmpi, *CKPT, "--metrics", one,
                        "--checkpoint", ck], env=env, capture_output=True, text=True, timeout=120)
    check(p.returncode == 75, f"one-rank signal: exit {p.returncode}, expected 75: {p.stderr!r}")
    check(load_checkpoint(ck) == [2, 7, 71], f"stopped after the next step, at {load_checkpoint(ck)}")
    check("--resume " + ck in p.stderr, "the message says how to resume")
    run(2, "--resume", ck, "--quiet")
    same_metrics(full, one, "resumed after a one-rank signal")
    # signals to mpirun itself, which forwards them to every rank
    for sig in (signal.SIGUSR1, signal.SIGTERM):
        path = os.path.join(TMP, f"sig{int(sig)}.h5")
        proc = subprocess.Popen([ARGS.mpiexec, "--oversubscribe", "-np", "2", ARGS.bnmpi, "--epochs", "100",
                                 "--train-limit", "8192", "--quiet", "--metrics", path], env=ENV,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.5)  # mid-training
        t0 = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        # the ranks exit 75; mpirun passes that on for SIGUSR1, but after a SIGTERM
        # of its own it reports 1 (documented in the README)
        expected = 75 if sig == signal.SIGUSR1 else 1
        check(proc.returncode == expected, f"{sig.name} to mpirun: exit {proc.returncode}, expected {expected}: {err!r}")
        check("bnmpi: stopped by a signal" in err, f"{sig.name}: no stop message: {err!r}")
        check(time.monotonic() - t0 < 10, f"{sig.name}: took {time.monotonic() - t0:.1f} s to stop")
        epoch, step, gstep = load_checkpoint(path[:-3] + ".ckpt.h5")
        check(gstep > 0, f"{sig.name}: checkpoint at global step {gstep}")
        print(f"{sig.name} to mpirun: stopped at epoch {epoch} step {step}, exit {proc.returncode}")


def case_elastic_resume():
    """A checkpoint from np=2 resumes at np=4 and one from np=4 at np=2 with
    the global batch unchanged: sync BN continues the same computation up to
    floating-point order. The first steps after the resume agree to 1e-5 (the
    state came across whole); later single steps may not, because the
    trajectory is chaotic here: a 1e-7 relative perturbation of dense0.W in
    the epoch-1 checkpoint moves one step's loss 8 steps later by 6% (seen),
    so the epochs' mean losses (1e-3) and the test accuracy (0.5 points) are
    compared. In local mode the BN batch changes: a warning says so."""
    for src, dst in ((2, 4), (4, 2)):
        full = os.path.join(TMP, f"full{src}.h5")
        run(src, *CKPT, "--metrics", full)
        part, ck = os.path.join(TMP, f"part{src}.h5"), os.path.join(TMP, f"part{src}.ckpt")
        run(src, *CKPT, "--epochs", "1", "--metrics", part, "--checkpoint", ck)
        run(dst, "--resume", ck, "--epochs", "3", "--quiet")
        with h5py.File(full, "r") as fa, h5py.File(part, "r") as fb:
            la, lb = fa["steps"]["loss"], fb["steps"]["loss"]
            check(len(la) == len(lb), "same number of steps")
            first = slice(4096 // 64, 4096 // 64 + 5)  # the first 5 steps after the resume
            rel = float(np.max(np.abs(la[first] - lb[first]) / np.abs(la[first])))
            print(f"np {src} -> {dst}: max relative step-loss difference over the first 5 resumed steps {rel:.2e}")
            check(rel < 1e-5, f"np {src} -> {dst}: the first resumed step losses differ by {rel:.2e}")
            ea, eb = fa["epochs"]["train_loss"], fb["epochs"]["train_loss"]
            rel = float(np.max(np.abs(ea - eb) / np.abs(ea)))
            print(f"np {src} -> {dst}: max relative epoch train-loss difference {rel:.2e}")
            check(rel < 1e-3, f"np {src} -> {dst}: epoch train losses differ by {rel:.2e}")
            check(abs(fa["summary"].attrs["test_acc"] - fb["summary"].attrs["test_acc"]) < 0.005, "test accuracy")
    ck = os.path.join(TMP, "local.ckpt")
    run(2, *CKPT, "--epochs", "1", "--bn", "local", "--metrics", os.path.join(TMP, "local.h5"), "--checkpoint", ck)
    rc, out, err, _ = run(4, "--resume", ck, "--epochs", "2", "--quiet")
    check("warning" in err and "BN batch changes from 32 to 16" in err, f"local-mode warning: {err!r}")


def case_one_rank_fault():
    """An error on one rank only brings down every rank within seconds, with
    that rank's message: no hang (np=4)."""
    env = dict(ENV, BNMPI_FAULT_RANK="2", BNMPI_FAULT_STEP="5")
    t0 = time.monotonic()
    p = subprocess.run([ARGS.mpiexec, "--oversubscribe", "-np", "4", ARGS.bnmpi, *QUICK,
                        "--metrics", os.path.join(TMP, "f.h5")], env=env, capture_output=True, text=True,
                       timeout=120)
    took = time.monotonic() - t0
    check(p.returncode != 0, "a failed rank must fail the job")
    check("bnmpi: rank 2: injected fault after global step 5" in p.stderr, f"message: {p.stderr!r}")
    check(took < 30, f"took {took:.1f} s")
    print(f"one-rank fault at np=4: exit {p.returncode} after {took:.1f} s")


def case_nonfinite_keeps_checkpoint():
    """A diverging run leaves the last good checkpoint as it was."""
    ck = os.path.join(TMP, "good.ckpt")
    rc, out, err, _ = run(2, *QUICK, "--lr", "1e6", "--optimizer", "sgd", "--checkpoint", ck,
                          "--checkpoint-every", "2", "--metrics", os.path.join(TMP, "nan.h5"), expect=1)
    check("non-finite loss at epoch 1, step 5" in err, f"message: {err!r}")
    check(load_checkpoint(ck) == [1, 4, 4], "the checkpoint is the last good one, at step 4")
    with h5py.File(os.path.join(TMP, "nan.h5"), "r") as f:
        check(len(f["steps"]) == 5 and not np.isfinite(f["steps"]["loss"][-1]), "steps up to the failure kept")


def case_sigkill_leaves_readable_files():
    """SIGKILL at random moments: the checkpoint (written every step) always
    loads as one complete checkpoint, and the metrics file opens in h5dump and
    h5py with every completed epoch."""
    rng = np.random.default_rng(7)
    path, ck = os.path.join(TMP, "k.h5"), os.path.join(TMP, "k.ckpt")
    for i in range(8):
        resume = ["--resume", ck] if os.path.exists(ck) else ["--metrics", path, "--checkpoint", ck]
        proc = subprocess.Popen([ARGS.mpiexec, "--oversubscribe", "-np", "2", ARGS.bnmpi, "--train-limit", "2048",
                                 "--epochs", "1000", "--quiet", "--checkpoint-every", "1", *resume], env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while not os.path.exists(ck) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(float(rng.uniform(0.2, 1.5)))
        kill_ranks_then_mpirun(proc)
        epoch, step, gstep = load_checkpoint(ck)
        dump = subprocess.run(["h5dump", "-H", path], capture_output=True, text=True)
        check(dump.returncode == 0, f"kill {i}: h5dump cannot read the metrics file: {dump.stderr[:300]}")
        with h5py.File(path, "r") as f:
            done = list(f["epochs"]["epoch"])
            check(done == list(range(1, len(done) + 1)) and len(done) >= epoch - 1,
                  f"kill {i}: epochs {done} in the metrics, the checkpoint is in epoch {epoch}")
        print(f"kill {i}: checkpoint at epoch {epoch} step {step} (global step {gstep}); metrics readable")


def case_bad_checkpoints():
    """--resume of something that is not this run's checkpoint: one line naming
    the file and the mismatch; nothing written."""
    ck = os.path.join(TMP, "h128.ckpt")
    run(2, *QUICK, "--hidden", "128", "--checkpoint", ck, "--metrics", os.path.join(TMP, "h128.h5"))
    text = os.path.join(TMP, "notes.txt")
    open(text, "w").write("not a checkpoint\n")
    truncated = os.path.join(TMP, "cut.ckpt")
    data = open(ck, "rb").read()
    open(truncated, "wb").write(data[: len(data) // 2])
    metrics = os.path.join(TMP, "h128.h5")
    before = {p: hashlib.sha256(open(p, "rb").read()).hexdigest() for p in (ck, text, truncated, metrics)}
    cases = [
        (["--resume", ck, "--hidden", "256"], 2, "--hidden 256 differs from the checkpoint's 128"),
        (["--resume", ck, "--bn", "none"], 2, "--bn none differs from the checkpoint's sync"),
        (["--resume", truncated], 1, "truncated"),
        (["--resume", text], 1, "not an HDF5 file"),
        (["--resume", metrics], 1, "this is a bnmpi metrics file"),
        (["--resume", os.path.join(TMP, "missing.ckpt")], 1, "No such file"),
        (["--resume", TMP], 1, "not a regular file"),
        (["--resume", ck, "--global-batch", "128"], 2, "--global-batch 128 differs"),
        (["--checkpoint", ck, "--metrics", os.path.join(TMP, "new.h5")], 1, "file exists"),
        (["--resume", ck, "--epochs", "1"], 2, "the checkpoint has finished 1 epochs; pass --epochs above 1"),
    ]
    for flags, code, needle in cases:
        rc, out, err, took = run(2, *flags, expect=code, timeout=60)
        lines = [l for l in err.splitlines() if l.startswith("bnmpi:")]
        check(len(lines) == 1 and needle in lines[0], f"{flags}: expected one line with {needle!r}, got {err!r}")
        print(f"ok {flags}: {lines[0]}")
    after = {p: hashlib.sha256(open(p, "rb").read()).hexdigest() for p in before}
    check(before == after, "a file was modified")
    check(not os.path.exists(os.path.join(TMP, "new.h5")), "a refused run created its metrics file")


IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def case_bad_idx():
    """Each malformed data file gets one line naming the file and what was
    wrong, exit 1 on every rank."""
    import gzip
    import struct
    src = ARGS.data
    def variant(name, mutate):
        d = os.path.join(TMP, name)
        os.makedirs(d)
        for f in IDX_FILES:
            os.symlink(os.path.join(src, f), os.path.join(d, f))
        mutate(d)
        return d
    def replace(d, f, data):
        os.unlink(os.path.join(d, f))
        with open(os.path.join(d, f), "wb") as fh:
            fh.write(data)
    labels = open(os.path.join(src, "train-labels-idx1-ubyte"), "rb").read()
    images = open(os.path.join(src, "t10k-images-idx3-ubyte"), "rb").read()
    bad_label = bytearray(labels); bad_label[8 + 100] = 11
    cases = [
        ("magic", lambda d: replace(d, "train-labels-idx1-ubyte", b"\0\0\x08\x03" + labels[4:]), "wrong magic"),
        ("header", lambda d: replace(d, "train-labels-idx1-ubyte", labels[:6]), "truncated header"),
        ("data", lambda d: replace(d, "t10k-images-idx3-ubyte", images[:100000]), "truncated data"),
        ("trailing", lambda d: replace(d, "t10k-images-idx3-ubyte", images + b"\0" * 7), "disagree"),
        ("label", lambda d: replace(d, "train-labels-idx1-ubyte", bytes(bad_label)), "label 11"),
        ("count", lambda d: replace(d, "train-labels-idx1-ubyte",
                                    labels[:4] + struct.pack(">I", 59999) + labels[8:-1]), "59999 labels"),
        ("empty", lambda d: replace(d, "train-labels-idx1-ubyte", b""), "empty"),
        ("dir", lambda d: (os.unlink(os.path.join(d, "train-labels-idx1-ubyte")),
                           os.mkdir(os.path.join(d, "train-labels-idx1-ubyte"))), "directory"),
        ("gz", lambda d: (os.unlink(os.path.join(d, "train-labels-idx1-ubyte")),
                          open(os.path.join(d, "train-labels-idx1-ubyte.gz"), "wb").write(
                              gzip.compress(labels)[:20000])), "corrupt gzip"),
        # rows x cols overflows an int: the check must not multiply them (UBSan caught it)
        ("huge", lambda d: replace(d, "t10k-images-idx3-ubyte", b"\0\0\x08\x03" + struct.pack(">III", 1, 65536, 32768)),
         "images are 65536x32768, expected 28x28"),
    ]
    for name, mutate, needle in cases:
        d = variant(name, mutate)
        rc, out, err, took = run(2, *QUICK, "--data", d, "--metrics", os.path.join(TMP, name + ".h5"), expect=1)
        lines = [l for l in err.splitlines() if l.startswith("bnmpi:")]
        check(len(lines) == 1 and needle in lines[0] and d in lines[0],
              f"{name}: expected one line naming {d} with {needle!r}, got {err!r}")
        check(not os.path.exists(os.path.join(TMP, name + ".h5")), f"{name}: a metrics file was created")
        print(f"ok {name}: {lines[0]}")


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def one_error_line(err, flags):
    lines = [l for l in err.splitlines() if l.startswith("bnmpi:")]
    check(len(lines) == 1, f"{flags}: expected one 'bnmpi:' line on stderr, got {err!r}")
    return lines[0]


def case_resume_foreign_metrics():
    """--resume A --metrics B, where B is another run's metrics file (the same
    configuration, or another one), is refused with a line naming both files,
    and B is left byte for byte as it was; A's own file still continues."""
    a_ck, a_m = os.path.join(TMP, "a.ckpt"), os.path.join(TMP, "a.h5")
    run(2, *CKPT, "--metrics", a_m, "--checkpoint", a_ck, expect=75,
        env={"BNMPI_SIGNAL_RANK": "0", "BNMPI_SIGNAL_STEP": "70"})
    same = train(2, "same-config", *CKPT)  # an identical configuration, another run
    other = train(2, "other-config", *CKPT, "--hidden", "32")
    for b, why in ((same, "run id"), (other, "--hidden 32")):
        before = sha(b)
        flags = ["--resume", a_ck, "--metrics", b]
        rc, out, err, _ = run(2, *flags, expect=1)
        line = one_error_line(err, flags)
        check(a_ck in line and b in line and why in line, f"{flags}: message {line!r} should name both files and {why!r}")
        check(sha(b) == before, f"{b} was modified by a refused resume")
        print(f"ok refused: {line}")
    run(2, "--resume", a_ck, "--quiet")
    with h5py.File(a_m, "r") as f:
        check(list(f["epochs"]["epoch"]) == [1, 2, 3] and "summary" in f, "A's own metrics did not continue")
        check(len(f["config"].attrs["run_id"]) == 32, "/config/run_id missing")


def case_same_output_files():
    """Two outputs that are one file (the same path, ./x and x, a symlink, a
    file and the other's .tmp, the metrics and the --resume checkpoint) are
    refused before any training, exit 2, and nothing is written."""
    cwd = os.path.join(TMP, "cwd")
    os.makedirs(cwd)
    open(os.path.join(cwd, "target.h5"), "wb").write(b"precious")
    os.symlink("target.h5", os.path.join(cwd, "link.h5"))
    os.symlink("m2.h5", os.path.join(cwd, "m2.ckpt.h5"))  # the signal checkpoint of m2.h5 would be m2.h5
    ck = os.path.join(TMP, "r.ckpt")
    run(2, *QUICK, "--metrics", os.path.join(TMP, "r.h5"), "--checkpoint", ck)
    cases = [
        ["--metrics", "x.h5", "--checkpoint", "x.h5"],
        ["--metrics", "./y.h5", "--checkpoint", "y.h5"],
        ["--metrics", os.path.join(cwd, "z.h5"), "--checkpoint", "sub/../z.h5"],
        ["--metrics", "target.h5", "--checkpoint", "link.h5", "--force"],
        ["--metrics", "w.h5.tmp", "--checkpoint", "w.h5"],
        ["--metrics", "m2.h5"],
        ["--resume", ck, "--metrics", ck, "--epochs", "2"],
    ]
    os.makedirs(os.path.join(cwd, "sub"))
    for flags in cases:
        before = sorted(os.listdir(cwd)), sha(os.path.join(cwd, "target.h5")), sha(ck)
        cmd = [ARGS.mpiexec, "--oversubscribe", "-np", "2", ARGS.bnmpi, *QUICK, *flags]
        p = subprocess.run(cmd, env=ENV, cwd=cwd, capture_output=True, text=True, timeout=60)
        check(p.returncode == 2, f"{flags}: exit {p.returncode}, expected 2\n{p.stderr}")
        line = one_error_line(p.stderr, flags)
        check("one file" in line, f"{flags}: message {line!r}")
        check(not p.stdout.strip(), f"{flags}: printed {p.stdout!r} before refusing")
        after = sorted(os.listdir(cwd)), sha(os.path.join(cwd, "target.h5")), sha(ck)
        check(before == after, f"{flags}: files changed: {before} -> {after}")
        print(f"ok {flags}: {line}")


def procs_with_env(entry):
    """PIDs whose environment holds entry ("NAME=value")."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if entry.encode() in open(f"/proc/{pid}/environ", "rb").read().split(b"\0"):
                found.append(int(pid))
        except OSError:
            pass
    return found


def case_watchdog():
    """A rank that stops (SIGSTOP after step 10, at np=4) would leave the
    others waiting forever: with --watchdog 4 they print what they wait in and
    at which step, and the whole job ends within seconds, leaving no rank."""
    token = f"watchdog-{os.getpid()}"
    env = {"BNMPI_STALL_RANK": "2", "BNMPI_STALL_STEP": "10", "BNMPI_TEST_TOKEN": token}
    flags = [*QUICK, "--watchdog", "4", "--metrics", os.path.join(TMP, "stall.h5")]
    rc, out, err, took = run(4, *flags, expect=None, timeout=90, env=env)
    check(rc != 0, f"exit {rc} after a stalled rank")
    lines = [l for l in err.splitlines() if l.startswith("bnmpi:")]
    check(lines and all("watchdog" in l for l in lines), f"no watchdog message: {err!r}")
    check(any("waiting in MPI_" in l and "after global step 10" in l for l in lines), f"message lacks where: {lines}")
    check(took < 60, f"took {took:.1f} s to end the job")
    time.sleep(1)
    left = procs_with_env(f"BNMPI_TEST_TOKEN={token}")
    check(not left, f"ranks left behind: {left}")
    print(f"ended after {took:.1f} s: {lines[0]}")
    # off, and a run that makes progress is never stopped by it
    run(2, *QUICK, "--watchdog", "0", "--metrics", os.path.join(TMP, "off.h5"))
    run(2, *QUICK, "--watchdog", "2", "--metrics", os.path.join(TMP, "on.h5"))


# --- convolutional networks -------------------------------------------------

CNN = ["--arch", "conv4,pool,conv8,pool,dense16"]
CNN_QUICK = ["--epochs", "1", "--train-limit", "1024", "--global-batch", "64", "--quiet", *CNN]


def cnn_train(np_, name, *flags):
    path = os.path.join(TMP, name + ".h5")
    run(np_, *CNN_QUICK, "--metrics", path, *flags)
    return path


def rel_diff(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b)) / np.maximum(np.abs(np.asarray(b)), 1e-30)))


def case_cnn_np_invariance():
    """A convnet with sync spatial BN (each statistic over every sample and
    position of the global batch of 64) trains the same at np 1, 2 and 4:
    per-step losses agree to 1e-4 relative; local BN at np=4 does not."""
    runs = {np_: steps(cnn_train(np_, f"np{np_}", "--bn", "sync")) for np_ in (1, 2, 4)}
    ref = runs[1]["loss"]
    check(len(ref) == 1024 // 64, f"expected 16 steps, got {len(ref)}")
    for np_ in (2, 4):
        rel = rel_diff(runs[np_]["loss"], ref)
        print(f"np={np_}: max relative step-loss difference to np=1: {rel:.2e}")
        check(rel <= 1e-4, f"np={np_} step losses differ from np=1 by {rel:.2e} > 1e-4")
    local4 = steps(cnn_train(4, "local4", "--bn", "local"))["loss"]
    check(rel_diff(local4, ref) > 1e-3, "local BN at np=4 should differ from sync")
    with h5py.File(cnn_train(2, "layout", "--bn", "sync"), "r") as f:
        c = dict(f["config"].attrs)
        check(c["arch"] == "conv4,pool,conv8,pool,dense16" and c["hidden"] == "", f"/config arch {c['arch']!r}")
        check("conv3x3 28x28x4" in c["architecture"] and "pool 7x7x8" in c["architecture"], c["architecture"])
        check(c["n_params"] == 4 * 9 + 4 + 8 * 36 + 8 + 392 * 16 + 16 + 16 * 10 + 10 + 2 * (4 + 8 + 16), f"n_params {c['n_params']}")


def case_cnn_resume():
    """A convnet's run stopped mid-epoch by a signal resumes bitwise (same
    rows and final parameters as the uninterrupted run); a checkpoint from
    np=2 resumes at np=4, its first steps agreeing to 1e-5."""
    flags = [*CNN, "--train-limit", "1024", "--global-batch", "64", "--quiet", "--epochs", "2"]
    full = os.path.join(TMP, "full.h5")
    run(2, *flags, "--metrics", full)
    part, ck = os.path.join(TMP, "part.h5"), os.path.join(TMP, "part.ckpt")
    run(2, *flags, "--metrics", part, "--checkpoint", ck, "--checkpoint-every", "4", expect=75,
        env={"BNMPI_SIGNAL_RANK": "1", "BNMPI_SIGNAL_STEP": "21"})
    check(load_checkpoint(ck) == [2, 6, 22], f"stopped after the next step, at {load_checkpoint(ck)}")
    run(2, "--resume", ck, "--quiet")
    same_metrics(full, part, "convnet resumed mid-epoch")
    el, ck4 = os.path.join(TMP, "elastic.h5"), os.path.join(TMP, "elastic.ckpt")
    run(2, *flags, "--epochs", "1", "--metrics", el, "--checkpoint", ck4)
    run(4, "--resume", ck4, "--epochs", "2", "--quiet")
    la, lb = steps(full)["loss"], steps(el)["loss"]
    check(len(la) == len(lb), "same number of steps")
    rel = rel_diff(lb[16:21], la[16:21])
    print(f"np 2 -> 4: max relative step-loss difference over the first 5 resumed steps {rel:.2e}")
    check(rel < 1e-5, f"np 2 -> 4: resumed step losses differ by {rel:.2e}")


def case_cnn_groups_and_ghosts():
    """With the parameters held still (--lr 1e-30), each step's loss depends only
    on which samples share a BN statistic. --bn-group 2 at np=4 is then two
    independent 2-rank sync runs: its step k averages steps 2k and 2k+1 of a
    2-rank run at global batch 32. Ghost batches of 8 at np=1 are BN over
    8-sample slices, which is what --bn local at np=4 (8 per rank) computes."""
    still = ["--lr", "1e-30"]
    g4 = steps(cnn_train(4, "group", "--bn", "sync", "--bn-group", "2", *still))["loss"]
    s2 = steps(cnn_train(2, "pairs", "--bn", "sync", "--global-batch", "32", *still))["loss"]
    check(len(s2) == 2 * len(g4), f"{len(s2)} steps vs {len(g4)}")
    rel = rel_diff(g4, (s2[0::2] + s2[1::2]) / 2)
    print(f"--bn-group 2 at np=4 vs two 2-rank runs: max relative step-loss difference {rel:.2e}")
    check(rel <= 1e-5, f"group BN differs from independent 2-rank runs by {rel:.2e}")
    sync4 = steps(cnn_train(4, "sync4", "--bn", "sync", *still))["loss"]
    check(rel_diff(sync4, g4) > 1e-4, "groups of 2 should differ from one group of 4")
    ghost = steps(cnn_train(1, "ghost", "--bn", "local", "--global-batch", "32", "--ghost-batch", "8", *still))["loss"]
    local = steps(cnn_train(4, "local", "--bn", "local", "--global-batch", "32", *still))["loss"]
    rel = rel_diff(ghost, local)
    print(f"ghost 8 at np=1 vs local BN at np=4 x 8: max relative step-loss difference {rel:.2e}")
    check(rel <= 1e-5, f"ghost batches differ from 8-sample BN slices by {rel:.2e}")
    whole = steps(cnn_train(1, "whole", "--bn", "local", "--global-batch", "32", *still))["loss"]
    check(rel_diff(whole, ghost) > 1e-4, "ghost batches should differ from BN over the whole batch")


def case_cnn_options():
    """Every BN option runs for a convnet: recomputed evaluation statistics,
    local evaluation statistics, diagnostics (one row per conv and dense
    layer); and a bad --arch gets one line naming the token, exit 2."""
    rc = cnn_train(2, "recompute", "--bn", "sync", "--bn-eval", "recompute", "--epochs", "2")
    with h5py.File(rc, "r") as f:
        check(f["summary"].attrs["test_acc"] > 0.5, f"recompute: test accuracy {f['summary'].attrs['test_acc']}")
    lo = cnn_train(2, "local", "--bn", "local", "--bn-place", "before", "--epochs", "2")
    with h5py.File(lo, "r") as f:
        check(np.all(np.isfinite(f["epochs"]["val_loss"])), "local evaluation statistics")
    dg = cnn_train(2, "diag", "--diagnostics", "4", "--bn", "local", "--ghost-batch", "8")
    with h5py.File(dg, "r") as f:
        rows = f["diagnostics/layers"][:]
        check(sorted(set(rows["layer"])) == [0, 1, 2, 3], f"diagnostics layers {sorted(set(rows['layer']))}")
        hidden = rows[rows["layer"] < 3]
        check(np.all(np.isfinite(hidden["act_var"])) and np.all(hidden["bn_noise"] > 0), "diagnostics values")
    cases = [
        ("conv32,poo,dense8", "'poo' (layer 2) is not a layer"),
        ("conv0", "'conv0' (layer 1): expected convC"),
        ("conv5000", "'conv5000' (layer 1): expected convC"),
        ("conv8k4", "expected an odd kernel size"),
        ("dense8,conv4", "conv4 (layer 2) after a dense layer"),
        ("pool,pool,pool,pool,pool", "pool (layer 5) on a 1x1 map"),
        ("conv4,,pool", "empty layer 2"),
        (",".join(["conv2"] * 9), "at most 8 conv and dense layers"),
        ("dense0", "'dense0' (layer 1): expected denseN"),
    ]
    for spec, needle in cases:
        rc_, out, err, _ = run(2, *QUICK, "--arch", spec, expect=2)
        line = one_error_line(err, spec)
        check(needle in line, f"--arch {spec}: message {line!r} lacks {needle!r}")
        print(f"ok --arch {spec}: {line}")
    rc_, out, err, _ = run(2, *QUICK, "--arch", "dense8", "--hidden", "16", expect=2)
    check("give one of them" in one_error_line(err, "arch+hidden"), err)
    rc_, out, err, _ = run(2, *QUICK, *CNN, "--overlap", "2", "--reduce", "mpi", expect=2)
    check("needs an MLP" in one_error_line(err, "overlap"), err)


def case_mlp_unchanged():
    """The layer list did not move the MLP: the last commit before it
    (MLP_BASELINE, built here from git) and this build give bitwise the same
    per-step rows and final parameters, on this machine, for several MLPs."""
    base = os.path.join(TMP, "baseline")
    tree = subprocess.run(["git", "-C", ARGS.source, "archive", MLP_BASELINE], capture_output=True)
    if tree.returncode != 0:
        print(f"SKIP: {ARGS.source} has no commit {MLP_BASELINE} (not a full clone): {tree.stderr.decode()[:200]}")
        sys.exit(77)
    os.makedirs(base)
    subprocess.run(["tar", "-x", "-C", base], input=tree.stdout, check=True)
    t0 = time.monotonic()
    for cmd in (["cmake", "-S", base, "-B", base + "/build", "-DBNMPI_TESTS=OFF", "-DCMAKE_BUILD_TYPE=Release"],
                ["cmake", "--build", base + "/build", "--target", "bnmpi", "-j", str(os.cpu_count() or 1)]):
        p = subprocess.run(cmd, capture_output=True, text=True)
        check(p.returncode == 0, f"building {MLP_BASELINE}: {' '.join(cmd)}\n{p.stdout[-2000:]}{p.stderr[-2000:]}")
    print(f"built {MLP_BASELINE} in {time.monotonic() - t0:.0f} s")
    old = base + "/build/bnmpi"
    flags = ["--train-limit", "2048", "--epochs", "2", "--quiet", "--data", ARGS.data]
    for i, (np_, extra) in enumerate(((2, []), (2, ["--bn", "local", "--bn-place", "before", "--checkpoint-every", "0"]),
                       (1, ["--bn", "none", "--hidden", "512,256"]),
                       (4, ["--optimizer", "sgd", "--momentum", "0.9", "--weight-decay", "1e-4", "--bn-group", "2"]),
                       (2, ["--bn", "local", "--ghost-batch", "8", "--bn-eval", "recompute"]),
                       (2, ["--reduce", "mpi", "--overlap", "4"]))):
        got = {}
        for name, exe in (("baseline", old), ("now", ARGS.bnmpi)):
            path = os.path.join(TMP, f"{name}-{i}.h5")
            cmd = [ARGS.mpiexec, "--oversubscribe", "-np", str(np_), exe, *flags, *extra, "--metrics", path]
            p = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
            check(p.returncode == 0, f"{' '.join(cmd)}: exit {p.returncode}\n{p.stderr}")
            with h5py.File(path, "r") as f:
                got[name] = (f["steps"][:].tobytes(), f["summary"].attrs["params_sha256"],
                             f["epochs"]["train_loss"][:].tobytes(), f["epochs"]["val_loss"][:].tobytes())
        check(got["baseline"] == got["now"], f"np={np_} {extra}: per-step rows or parameters differ from {MLP_BASELINE}")
        print(f"np={np_} {' '.join(extra) or '(defaults)'}: bitwise the same, parameters {got['now'][1][:16]}")


def case_readonly_metrics_dir():
    """A metrics path in a directory this user cannot write: one line, exit 1.
    Root writes anywhere, so the run goes through a non-root user when the
    test is root (skipped where no such user exists)."""
    d = os.path.join(TMP, "ro")
    os.makedirs(d)
    os.chmod(d, 0o555)
    os.chmod(TMP, 0o755)
    # the user must reach the program and a working directory: the build tree
    # may sit in a folder only root can enter, so run a copy from TMP
    exe = os.path.join(TMP, "bnmpi")
    shutil.copy(ARGS.bnmpi, exe)
    cmd = [ARGS.mpiexec, "-np", "2", exe, *QUICK, "--metrics", os.path.join(d, "m.h5")]
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            print("SKIP: runuser missing")
            return
        cmd = ["runuser", "-u", "nobody", "--", *cmd]
    p = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120, cwd=TMP)
    lines = [l for l in p.stderr.splitlines() if l.startswith("bnmpi:")]
    check(p.returncode == 1 and len(lines) == 1 and "is not writable" in lines[0],
          f"exit {p.returncode}, stderr {p.stderr!r}")
    print(f"ok: {lines[0]}")


def case_study_options():
    """The three batch sizes are separate knobs: BN groups, ghost batches, the
    learning-rate rule and warm-up, and recomputed evaluation statistics, each
    recorded in /config and visible in the metrics."""
    def cfg(path):
        with h5py.File(path, "r") as f:
            return dict(f["config"].attrs)
    g = train(4, "group", "--bn-group", "2")
    c = cfg(g)
    check((c["bn_group"], c["bn_batch"], c["local_batch"], c["global_batch"]) == (2, 32, 16, 64),
          f"group: {c['bn_group']}, {c['bn_batch']}")
    gh = train(2, "ghost", "--bn", "local", "--ghost-batch", "8")
    c = cfg(gh)
    check((c["ghost_batch"], c["bn_batch"], c["bn_group"]) == (8, 8, 1), "ghost batch sizes")
    sy = train(2, "sync")
    check(cfg(sy)["bn_group"] == 2 and cfg(sy)["bn_batch"] == 64, "sync is a group of all ranks")
    lr = train(2, "lr", "--lr-scale", "linear", "--lr-ref-batch", "32", "--warmup-epochs", "0.5")
    c = cfg(lr)
    check(abs(c["lr_peak"] - 0.002) < 1e-12, f"linear scaling 64/32: {c['lr_peak']}")
    st = steps(lr)
    check(abs(st["lr"][0] - 0.002 / 32) < 1e-12 and abs(st["lr"][31] - 0.002) < 1e-12 and st["lr"][-1] == 0.002,
          f"warm-up over 32 steps: {st['lr'][:3]} ... {st['lr'][30:33]}")
    sq = train(2, "sqrt", "--lr-scale", "sqrt", "--lr-ref-batch", "16")
    check(abs(cfg(sq)["lr_peak"] - 0.002) < 1e-12, "sqrt scaling sqrt(64/16)")
    for mode in ("sync", "local"):
        rc = train(2, "recompute" + mode, "--bn", mode, "--bn-eval", "recompute")
        with h5py.File(rc, "r") as f:
            check(f["summary"].attrs["test_acc"] > 0.8, "recomputed statistics evaluate well")
    for flags, needle in ((["--bn-group", "3"], "does not divide the 4 ranks"),
                          (["--bn", "local", "--bn-group", "2"], "--bn local means groups of 1"),
                          (["--bn", "local", "--ghost-batch", "5"], "does not divide the per-rank batch 16"),
                          (["--ghost-batch", "4"], "use it with --bn local"),
                          (["--bn", "none", "--bn-group", "2"], "needs batch norm")):
        rc, out, err, _ = run(4, *QUICK, *flags, expect=2)
        check(needle in err, f"{flags}: {err!r}")


def case_diagnostics():
    """--diagnostics N writes the documented /diagnostics tables, with BN batch
    noise where there are several BN batches per step, and resumes exactly."""
    def diag(path):
        with h5py.File(path, "r") as f:
            check(int(f["diagnostics"].attrs["every"]) == 8, "every attribute")
            return f["diagnostics/layers"][:], f["diagnostics/comm"][:]
    rows = {}
    for name, flags in (("local", ["--bn", "local"]), ("ghost", ["--bn", "local", "--ghost-batch", "4"]),
                        ("sync", []), ("none", ["--bn", "none"])):
        layers, comm = diag(train(2, name, "--diagnostics", "8", *flags))
        check(len(layers) == (64 // 8) * 2 and len(comm) == 64 // 8, f"{name}: rows {len(layers)}, {len(comm)}")
        check(list(layers["step"][::2]) == list(range(8, 65, 8)), f"{name}: logged steps")
        hidden, out = layers[layers["layer"] == 0], layers[layers["layer"] == 1]
        check(np.all(np.isfinite(hidden["act_var"])) and np.all(np.isnan(out["act_var"])), f"{name}: act stats")
        check(np.isnan(hidden["act_mean_drift"][0]) and np.all(np.isfinite(hidden["act_mean_drift"][1:])), "drift")
        check(np.all(layers["grad_norm"] > 0) and np.all(layers["update_norm"] > 0), f"{name}: norms")
        check(np.all(comm["grad_comm_s"] >= 0) and np.all(comm["interval_s"] > 0), f"{name}: comm times")
        rows[name] = hidden["bn_noise"]
    check(np.all(np.isnan(rows["sync"])) and np.all(np.isnan(rows["none"])), "one BN batch per step: no noise")
    check(np.all(np.isfinite(rows["local"])), "local: noise measured")
    # BN batch 4 (ghost) is noisier than BN batch 32 (local); ~1/sqrt(n): 0.5 vs 0.18
    check(np.median(rows["ghost"]) > 1.5 * np.median(rows["local"]),
          f"noise ghost {np.median(rows['ghost']):.3f} vs local {np.median(rows['local']):.3f}")
    print(f"BN noise: local (32) {np.median(rows['local']):.3f}, ghost (4) {np.median(rows['ghost']):.3f}")
    # exact resume keeps the diagnostics rows (timings aside)
    full = train(2, "dfull", "--diagnostics", "8", "--epochs", "2")
    part, ck = os.path.join(TMP, "dpart.h5"), os.path.join(TMP, "dpart.ckpt")
    env = dict(ENV, BNMPI_FAULT_RANK="0", BNMPI_FAULT_STEP="77")
    subprocess.run([ARGS.mpiexec, "--oversubscribe", "-np", "2", ARGS.bnmpi, *QUICK, "--epochs", "2",
                    "--diagnostics", "8", "--metrics", part, "--checkpoint", ck, "--checkpoint-every", "20"],
                   env=env, capture_output=True, timeout=120)
    run(2, "--resume", ck, "--quiet")
    a, b = diag(full)[0], diag(part)[0]
    check(a.tobytes() == b.tobytes(), "diagnostics rows differ after a resume")


def options(p):
    p.add_argument("--bnmpi", required=True)
    p.add_argument("--mpiexec", required=True)
    p.add_argument("--readme")
    p.add_argument("--data", help="the MNIST folder, for tests that make broken copies of it")
    p.add_argument("--source", help="the source tree (a git checkout), for tests that build an older commit")


def main():
    run_case(globals(), "bnmpi-e2e-", options)


if __name__ == "__main__":
    main()
