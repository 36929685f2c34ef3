#!/usr/bin/python3
"""Tests of bnmpi's --diagnostics output, tools/analyze.py's diagnostics.png and
tools/claims.py, on real short bnmpi runs (real ranks, real MNIST, real HDF5).

Usage: run_claims.py CASE --bnmpi PATH --mpiexec PATH [--analyze PATH] [--claims PATH]
Each CASE is one ctest test. Runs are short (--epochs 1 --train-limit 2048, so 32
steps at global batch 64) and go to a temporary folder that is removed afterwards.
"""
import json
import os
import shutil
import subprocess
import sys

import h5py
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
from bad_inputs import make_bad_inputs  # noqa: E402
from cases import run_case  # noqa: E402

ARGS = None
TMP = None
HERE = os.path.dirname(os.path.abspath(__file__))
TOOLS = os.path.normpath(os.path.join(HERE, "..", "..", "tools"))
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
QUICK = ["--epochs", "1", "--train-limit", "2048", "--quiet"]
EVERY = 8
STEPS = 2048 // 64
CLAIM_KEYS = ["convergence", "covariate_shift", "learning_rate", "initialisation", "regularisation",
              "batch_plateau", "large_batch"]
VERDICTS = {"supported", "not supported", "depends", "untested"}


def check(cond, msg):
    if not cond:
        sys.exit("FAIL: " + msg)


def train(np_, name, *flags, expect=0):
    os.makedirs(os.path.join(TMP, "runs"), exist_ok=True)
    path = os.path.join(TMP, "runs", name + ".h5")
    cmd = [ARGS.mpiexec, "--oversubscribe", "-np", str(np_), ARGS.bnmpi, *QUICK, "--metrics", path, *flags]
    p = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
    check(p.returncode == expect, f"{' '.join(cmd)}\nexit {p.returncode}, expected {expect}\n"
                                  f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return path, p


def tool(path, *args, expect=0):
    cmd = [sys.executable, path, *args]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if expect is not None and p.returncode != expect:
        sys.exit(f"FAIL: {' '.join(cmd)}\nexit {p.returncode}, expected {expect}\n"
                 f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def check_png(path, max_kb=150):
    with open(path, "rb") as fh:
        check(fh.read(8) == b"\x89PNG\r\n\x1a\n", f"{path}: no PNG signature")
    check(os.path.getsize(path) < max_kb * 1024, f"{path}: {os.path.getsize(path) // 1024} KB, over {max_kb} KB")
    img = mpimg.imread(path)
    check(img.ndim == 3 and img.shape[0] >= 300 and img.shape[1] >= 500, f"{path}: image {img.shape}")
    check(float(img.std()) > 0.01, f"{path}: blank image")


# --- the runs ----------------------------------------------------------------------

def make_runs():
    """Eight 1-epoch runs that give every claim something to decide, and one
    diverging run (SGD at lr 1e6: exit 1, "non-finite loss"). One rank where the
    BN batch does not depend on it (none, sync, ghost batches), to save time."""
    d = ("--diagnostics", str(EVERY))
    runs = {}
    for name, np_, flags in [
        ("none-gb64", 1, ("--bn", "none", "--global-batch", "64") + d),
        ("sync-gb64", 1, ("--bn", "sync", "--global-batch", "64") + d),
        ("local-gb64", 2, ("--bn", "local", "--global-batch", "64") + d),       # BN batch 32
        ("ghost8-gb64", 1, ("--bn", "local", "--ghost-batch", "8", "--global-batch", "64") + d),
        ("none-gb32", 1, ("--bn", "none", "--global-batch", "32")),
        ("sync-gb32", 1, ("--bn", "sync", "--global-batch", "32")),
        ("none-init10", 1, ("--bn", "none", "--global-batch", "64", "--init-scale", "10")),
        ("sync-init10", 1, ("--bn", "sync", "--global-batch", "64", "--init-scale", "10")),
    ]:
        runs[name] = train(np_, name, *flags)[0]
    runs["sgd-diverge"], p = train(1, "sgd-diverge", "--bn", "sync", "--global-batch", "64", "--optimizer", "sgd",
                                   "--lr", "1e6", "--diagnostics", "2", expect=1)
    check("non-finite loss" in p.stderr, f"the diverging run says why: {p.stderr!r}")
    return runs


def check_diagnostics_files(runs):
    """What --diagnostics N writes: a row per dense layer every N steps; the
    activation statistics of the hidden layer (NaN for the output layer); drift
    = |change since the previous log|; BN noise only where a step has several BN
    batches, about 1/sqrt(BN batch); and nothing without the option."""
    for name in ("none-gb64", "sync-gb64", "local-gb64", "ghost8-gb64"):
        with h5py.File(runs[name], "r") as f:
            check(int(f["diagnostics"].attrs["every"]) == EVERY, f"{name}: every")
            t = f["diagnostics/layers"][:]
            c = f["diagnostics/comm"][:]
        logs = list(range(EVERY, STEPS + 1, EVERY))
        check(list(t["step"]) == [s for s in logs for _ in (0, 1)] and list(t["layer"]) == [0, 1] * len(logs),
              f"{name}: rows {list(zip(t['step'], t['layer']))}")
        check(list(c["step"]) == logs and np.all(c["interval_s"] > 0), f"{name}: comm rows {c}")
        hid, out = t[t["layer"] == 0], t[t["layer"] == 1]
        check(np.all(np.isfinite(hid["act_mean"])) and np.all(hid["act_var"] > 0), f"{name}: hidden statistics")
        check(np.all(np.isnan(out["act_mean"])) and np.all(np.isnan(out["act_var"])), f"{name}: output layer has none")
        check(np.isnan(hid["act_mean_drift"][0]) and np.isnan(hid["act_var_drift"][0]), f"{name}: no drift at the first log")
        check(np.allclose(hid["act_mean_drift"][1:], np.abs(np.diff(hid["act_mean"])), rtol=1e-9, atol=0)
              and np.allclose(hid["act_var_drift"][1:], np.abs(np.diff(hid["act_var"])), rtol=1e-9, atol=0),
              f"{name}: drift is not the change since the previous log")
        for col in ("grad_norm", "weight_norm", "update_norm"):
            check(np.all(t[col] > 0) and np.all(np.isfinite(t[col])), f"{name}: {col}")
        noise = hid["bn_noise"]
        if name in ("none-gb64", "sync-gb64"):
            check(np.all(np.isnan(noise)), f"{name}: one BN batch per step (or none), so no BN noise: {noise}")
        else:
            check(np.all(np.isfinite(noise)) and np.all(noise > 0), f"{name}: BN noise {noise}")
        if name == "ghost8-gb64":  # 8 ghost batches of 8 per step: ~1/sqrt(8) = 0.354
            check(0.25 < np.median(noise) < 0.45, f"{name}: BN noise {np.median(noise)} not about 1/sqrt(8)")
    with h5py.File(runs["none-gb32"], "r") as f:
        check("diagnostics" not in f, "a run without --diagnostics has no /diagnostics")
    with h5py.File(runs["sgd-diverge"], "r") as f:
        steps, t = f["steps"][:], f["diagnostics/layers"][:]
        check("summary" not in f and not np.isfinite(steps["loss"][-1]), "the diverging run ends on a non-finite loss")
        check(len(t) and t["step"].max() < steps["step"][-1], "the diverging run keeps the logs before the failure")
    print("ok --diagnostics files")


# --- cases ---------------------------------------------------------------------------

def case_claims():
    """Short real runs (one diverging): analyze.py's diagnostics.png shows the
    runs with diagnostics with the expected axes, and claims.py makes a figure
    and a verdict for every claim, from numbers that match the files."""
    runs = make_runs()
    check_diagnostics_files(runs)
    rundir = os.path.join(TMP, "runs")

    # analyze.py: diagnostics.png
    out = os.path.join(TMP, "analysis")
    p = tool(ARGS.analyze, rundir, "--out", out)
    check("diagnostics.png: " + os.path.join(out, "diagnostics.png") in p.stdout, f"analyze stdout: {p.stdout}")
    check_png(os.path.join(out, "diagnostics.png"), max_kb=250)
    with open(os.path.join(out, "figures.json")) as fh:
        figs = json.load(fh)
    axes = figs["figures"]["diagnostics.png"]["axes"]
    check([a["title"] for a in axes] == ["hidden layer 1: activation mean", "hidden layer 1: activation variance",
                                         "hidden layer 1: drift of the mean", "hidden layer 1: drift of the variance"],
          f"diagnostics.png titles {[a['title'] for a in axes]}")
    check(all(a["xlabel"] == "step" for a in axes), "x axis: step")
    check([a["yscale"] for a in axes[1:]] == ["log"] * 3, "variance and drifts on log axes")
    # the diverging run's activations explode: the mean panel switches to symlog so the others stay visible
    check(axes[0]["yscale"] == "symlog", f"activation mean axis: {axes[0]['yscale']}")
    lines = axes[0]["lines"]
    check(len(lines) == 5 and sum("(incomplete)" in l for l in lines) == 1,
          f"one line per run with diagnostics (4 + the diverging one): {lines}")
    for want in ("bn=none", "bn=sync", "bn=local", "ghost_batch=8"):
        check(any(want in l for l in lines), f"diagnostics lines lack {want!r}: {lines}")
    print("ok analyze.py diagnostics.png:", lines)

    # claims.py: every claim gets a figure and a verdict. The runs are one epoch
    # of 2048 samples, so the convergence target and the "trains" threshold are lowered.
    docs = os.path.join(TMP, "docs")
    p = tool(ARGS.claims, rundir, "--out", docs, "--target", "80", "--trains", "50")
    print(p.stdout)
    check("9 runs: 8 complete, 1 diverged" in p.stdout, f"claims.py counts the diverging run: {p.stdout}")
    img = os.path.join(docs, "img", "claims")
    with open(os.path.join(img, "claims.json")) as fh:
        cj = json.load(fh)
    check(list(cj["claims"]) == CLAIM_KEYS, f"claims {list(cj['claims'])}")
    check(cj["runs"]["sgd-diverge.h5"] == "diverged", f"run states {cj['runs']}")
    md = open(os.path.join(docs, "claims.md")).read()
    for i, key in enumerate(CLAIM_KEYS, 1):
        c = cj["claims"][key]
        check(c["verdict"] in VERDICTS - {"untested"}, f"{key}: verdict {c['verdict']!r} ({c['because']})")
        check(c["figure"] == key + ".png", f"{key}: figure {c['figure']}")
        check_png(os.path.join(img, key + ".png"))
        ax = cj["figures"][key + ".png"]["axes"]
        check(all(a["xlabel"] or a["title"] for a in ax) and all(a["ylabel"] or not a["lines"] for a in ax),
              f"{key}: axes without labels {ax}")
        check(f"## {i}. {c['title']}" in md, f"claims.md lacks the section of {key}")
        check(f"**Verdict: {c['verdict']}**: {c['because']}" in md, f"claims.md lacks {key}'s verdict")
        check(f"](img/claims/{key}.png)" in md, f"claims.md lacks {key}'s figure")
    check(md.count("**Verdict: ") == len(CLAIM_KEYS), "one verdict per claim")

    def val_acc(name, epoch=1):
        with h5py.File(runs[name], "r") as f:
            ep = f["epochs"][:]
        return float(ep["val_acc"][ep["epoch"] == epoch][0])

    # the learning-rate claim: the diverging run is "diverged", at the step bnmpi stopped at
    lr = cj["claims"]["learning_rate"]
    check("sgd-diverge.h5" in lr["runs"], f"learning_rate runs {lr['runs']}")
    check(lr["numbers"]["sgd (no momentum)"]["bn_max_lr"] is None, f"lr numbers {lr['numbers']}")
    adam = lr["numbers"]["adam"]
    want = (lambda v: 0.001 if v >= 0.5 else None)
    check(adam["bn_max_lr"] == want(val_acc("sync-gb64")) and adam["none_max_lr"] == want(val_acc("none-gb64")),
          f"adam max lr {adam} from val acc {val_acc('sync-gb64')} / {val_acc('none-gb64')}")
    with h5py.File(runs["sgd-diverge"], "r") as f:
        last = int(f["steps"]["step"][-1])
    row = next(l for l in md.splitlines() if "sgd-diverge.h5" in l and "diverged" in l)
    check(f"epoch 1, step {last}" in row, f"claims.md names the step the run stopped at ({last}): {row}")
    check("## Runs stopped by a non-finite loss" in md, "claims.md lists the diverged runs")
    # the batch-size claim reads the files' validation accuracy at the common epoch
    plateau = cj["claims"]["batch_plateau"]["numbers"]
    for mode, prefix in (("no BN", "none"), ("BN sync", "sync")):
        for gb in (32, 64):
            got = plateau[mode]["acc"][str(gb)]
            check(abs(got - val_acc(f"{prefix}-gb{gb}")) < 1e-12, f"plateau {mode} gb {gb}: {got}")
    # the initialisation claim: the spread over init scales 1 and 10
    spread = cj["claims"]["initialisation"]["numbers"]["spread"]
    for mode, prefix in (("no BN", "none"), ("BN sync", "sync")):
        want = abs(val_acc(f"{prefix}-gb64") - val_acc(f"{prefix}-init10"))
        check(abs(spread[mode] - want) < 1e-12, f"init spread {mode}: {spread[mode]} vs {want}")
    # convergence: epochs to 80% = the first epoch at or above it (here 1 or never)
    conv = cj["claims"]["convergence"]["numbers"]["epochs_to_target"]
    for gb in (32, 64):
        bn_e, none_e = conv[str(gb)]
        check(bn_e == (1 if val_acc(f"sync-gb{gb}") >= 0.8 else None)
              and none_e == (1 if val_acc(f"none-gb{gb}") >= 0.8 else None), f"convergence gb {gb}: {conv[str(gb)]}")
    # the large-batch claim measures BN noise where a step has several BN batches
    large = cj["claims"]["large_batch"]["numbers"]["mnist"]
    check(sorted(large["acc_by_bn_batch"]) == ["32", "64", "8"], f"BN batches {large}")

    # fewer runs: claims without their runs are "untested", and their old figures go
    few = os.path.join(TMP, "few")
    os.makedirs(few)
    for name in ("none-gb64", "sync-gb64"):
        shutil.copy(runs[name], few)
    p = tool(ARGS.claims, few, "--out", docs)
    with open(os.path.join(img, "claims.json")) as fh:
        cj = json.load(fh)
    for key in ("learning_rate", "initialisation", "batch_plateau", "large_batch"):
        check(cj["claims"][key]["verdict"] == "untested", f"{key} with two runs: {cj['claims'][key]}")
        check(not os.path.exists(os.path.join(img, key + ".png")), f"stale {key}.png left in place")
        check(f"{key}: untested" in p.stdout, f"the note for {key}: {p.stdout}")
    md = open(os.path.join(docs, "claims.md")).read()
    check(md.count("**Verdict: ") == len(CLAIM_KEYS) and md.count("**Verdict: untested.**") >= 4, "untested claims")
    h = tool(ARGS.claims, "--help").stdout
    for word in ("claims.md", "img/claims", "claims.json", "--target", "--tolerance", "untested", "exit status 2"):
        check(word in h, f"--help lacks {word!r}")


def case_claims_bad_input():
    """claims.py refuses what analyze.py refuses: one line per bad input naming
    it, exit status 2, nothing written."""
    good, _ = train(1, "good", "--bn", "none")
    bad = make_bad_inputs(os.path.join(TMP, "bad"))
    text, other, ckpt, missing = (bad[k] for k in ("text", "other", "ckpt", "missing"))
    out = os.path.join(TMP, "docs")
    for inputs, named, needle in [([missing], missing, "does not exist"), ([text], text, "not an HDF5 file"),
                                  ([other], other, 'format is "someone-else"'),
                                  ([ckpt], ckpt, "checkpoint, not a metrics file"),
                                  ([good, text], text, "not an HDF5 file")]:
        p = tool(ARGS.claims, *inputs, "--out", out, expect=2)
        lines = p.stderr.strip().splitlines()
        check(len(lines) == 1 and lines[0].startswith("claims.py: " + named + ":") and needle in lines[0]
              and "bnmpi metrics" in lines[0], f"{inputs}: {p.stderr!r}")
        check(not os.path.exists(out), f"{inputs}: {out} was created")
        print("ok", lines[0])
    p = tool(ARGS.claims, good, text, other, "--out", out, expect=2)
    check(len(p.stderr.strip().splitlines()) == 2 and not os.path.exists(out), f"one line per bad input: {p.stderr!r}")
    p = tool(ARGS.claims, good, "--out", text, expect=2)
    check("--out" in p.stderr and "not a directory" in p.stderr, f"--out naming a file: {p.stderr!r}")
    p = tool(ARGS.claims, good, "--out", out, "--target", "0", expect=2)
    check("--target" in p.stderr and not os.path.exists(out), f"--target 0: {p.stderr!r}")


def options(p):
    p.add_argument("--bnmpi", required=True)
    p.add_argument("--mpiexec", required=True)
    p.add_argument("--analyze", default=os.path.join(TOOLS, "analyze.py"))
    p.add_argument("--claims", default=os.path.join(TOOLS, "claims.py"))


def main():
    run_case(globals(), "bnmpi-claims-", options)


if __name__ == "__main__":
    main()
