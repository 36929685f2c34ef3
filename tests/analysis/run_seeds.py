#!/usr/bin/python3
"""Tests of seeds in studies and analysis, on real short bnmpi runs: run-study.sh
--seeds, the tables and figures of bnmpi-analyze (mean ± 95% CI and n, bands and
error bars read back from the axes), the difference test and its verdict, and
bnmpi-claims' report of it; and the commands bnmpi-analyze / bnmpi-claims.

Usage: run_seeds.py CASE --bnmpi PATH --mpiexec PATH --tools DIR --jobs DIR --data DIR
Intervals are checked against scipy's Student t, computed here from the files
with h5py, not with the tools' own code. Runs are 1 epoch of 2048 samples.
"""
import csv
import json
import math
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
from scipy import stats

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
from cases import run_case  # noqa: E402

ARGS = None
TMP = None
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
QUICK = "--epochs 1 --train-limit 2048"


def absolute():
    for k in ("bnmpi", "mpiexec", "tools", "jobs", "data"):
        setattr(ARGS, k, os.path.abspath(getattr(ARGS, k)))


def check(cond, msg):
    if not cond:
        sys.exit("FAIL: " + msg)


def run(cmd, expect=0, env=None, timeout=600, cwd=None):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env or ENV, cwd=cwd or TMP)
    check(p.returncode == expect, f"{' '.join(cmd)}\nexit {p.returncode}, expected {expect}\n"
                                  f"stdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}")
    return p


def tool(name, *args, expect=0):
    """A tool through its command, bnmpi-<name>, with a python3 first on PATH that
    lacks h5py (if there is one): the command must run Debian's /usr/bin/python3."""
    return run([os.path.join(ARGS.tools, "bnmpi-" + name), *args], expect=expect)


def study(lines, seeds=None, name="seeded"):
    """Runs a study file through jobs/run-study.sh (with --seeds), returns its results folder."""
    path = os.path.join(TMP, name + ".tsv")
    with open(path, "w") as f:
        f.write("# name\tnp\toptions\n" + "".join(f"{n}\t1\t{o} {QUICK}\n" for n, o in lines))
    env = dict(ENV, BNMPI_DATA=ARGS.data, PATH=os.path.dirname(ARGS.mpiexec) + os.pathsep + ENV["PATH"])
    argv = [os.path.join(ARGS.jobs, "run-study.sh"), "--bnmpi", ARGS.bnmpi, "--mpirun", ARGS.mpiexec,
            "--no-report", "--results", os.path.join(TMP, "results")]
    argv += ["--seeds", str(seeds)] if seeds else []
    p = run(argv + [path], env=env)
    print(p.stdout.strip().splitlines()[-1])
    return os.path.join(TMP, "results", name)


def final(path, field="val_acc"):
    with h5py.File(path, "r") as f:
        return float(f["epochs"][field][-1])


def t_interval(vals):
    vals = np.asarray(vals, dtype=float)
    n = len(vals)
    half = stats.t.ppf(0.975, n - 1) * vals.std(ddof=1) / math.sqrt(n)
    return vals.mean(), vals.mean() - half, vals.mean() + half


def close(a, b, tol=1e-9):
    return abs(a - b) <= tol * max(1.0, abs(a), abs(b))


# --- cases ----------------------------------------------------------------------

def case_seeds_report():
    """run-study.sh --seeds 3 runs two BN modes at two global batches with seeds
    1-3 into <name>-seed<k>.h5; bnmpi-analyze's table gives each configuration's
    mean ± 95% CI with n = 3 (scipy's t from the files), the curves carry a 95%
    band per configuration and the batch-size points error bars, both read back
    from the axes; one seed of one configuration alone says n = 1."""
    absolute()
    res = study([(f"{bn}-gb{gb}", f"--bn {bn} --global-batch {gb}") for bn in ("none", "sync") for gb in (64, 128)],
                seeds=3)
    names = sorted(os.listdir(res))
    want = sorted(f"{bn}-gb{gb}-seed{k}.{ext}" for bn in ("none", "sync") for gb in (64, 128) for k in (1, 2, 3)
                  for ext in ("h5", "log"))
    check(names == want, f"files: {names}")
    for k in (1, 2, 3):
        with h5py.File(os.path.join(res, f"sync-gb64-seed{k}.h5"), "r") as f:
            check(int(f["config"].attrs["seed"]) == k, f"seed{k}.h5 has seed {f['config'].attrs['seed']}")
    out = os.path.join(TMP, "report")
    tool("analyze", res, "--out", out)
    with open(os.path.join(out, "summary_by_config.csv")) as fh:
        rows = {r["configuration"]: r for r in csv.DictReader(fh)}
    check(sorted(rows) == ["bn=none gb=128", "bn=none gb=64", "bn=sync gb=128", "bn=sync gb=64"], f"{sorted(rows)}")
    for bn in ("none", "sync"):
        for gb in (64, 128):
            row = rows[f"bn={bn} gb={gb}"]
            vals = [final(os.path.join(res, f"{bn}-gb{gb}-seed{k}.h5")) for k in (1, 2, 3)]
            m, lo, hi = t_interval(vals)
            check(row["n"] == "3" and row["seeds"] == "1 2 3", f"{bn} gb {gb}: n {row['n']} seeds {row['seeds']}")
            check(close(float(row["final_val_acc_mean"]), m) and close(float(row["final_val_acc_ci_lo"]), lo)
                  and close(float(row["final_val_acc_ci_hi"]), hi),
                  f"{bn} gb {gb}: interval {row['final_val_acc_ci_lo']}..{row['final_val_acc_ci_hi']}, "
                  f"scipy {lo}..{hi}")
    md = open(os.path.join(out, "summary.md")).read()
    want_row = rows["bn=sync gb=64"]
    m, lo, hi = (float(want_row[k]) for k in ("final_val_acc_mean", "final_val_acc_ci_lo", "final_val_acc_ci_hi"))
    cell = f"| bn=sync gb=64 | 3 | 1 2 3 | 1 | {100 * m:.2f}% ± {100 * (hi - m):.2f} |"
    check(cell in md, f"summary.md lacks {cell!r}:\n{md[:3000]}")
    check("95% CI" in md and "n = 1" in md, "summary.md explains the cells")

    figs = json.load(open(os.path.join(out, "figures.json")))
    acc, loss = figs["figures"]["curves.png"]["axes"]
    check(len(acc["lines"]) == 8, f"curves: a train and a val line per configuration: {acc['lines']}")
    check(all("(n = 3)" in t for t in acc["lines"]), f"curve labels say n: {acc['lines']}")
    check("95% CI" in figs["figures"]["curves.png"]["suptitle"], "curves title says what the band is")
    bands = {b["label"]: b for b in acc["bands"]}
    check(len(bands) == 8, f"one band per curve: {sorted(bands)}")
    b = bands["bn=sync gb=64 (n = 3) val"]
    vals = [final(os.path.join(res, f"sync-gb64-seed{k}.h5")) for k in (1, 2, 3)]
    _, lo, hi = t_interval(vals)
    check(b["x"] == [1.0] or len(b["x"]) >= 1, f"band x {b['x']}")
    check(close(b["lo"][-1], lo, 1e-6) and close(b["hi"][-1], hi, 1e-6), f"band {b}, scipy {lo}..{hi}")
    lbands = {x["label"]: x for x in loss["bands"]}
    tl = [final(os.path.join(res, f"none-gb128-seed{k}.h5"), "train_loss") for k in (1, 2, 3)]
    _, lo, hi = t_interval(tl)
    b = lbands["bn=none gb=128 (n = 3) train"]
    check(close(b["lo"][-1], lo, 1e-6) and close(b["hi"][-1], hi, 1e-6), f"loss band {b}, scipy {lo}..{hi}")

    acc, _ = figs["figures"]["batch_size.png"]["axes"]
    bars = {e["label"]: e for e in acc["errorbars"]}
    check(sorted(bars) == ["none", "sync"], f"batch_size error bars: {sorted(bars)}")
    for bn in ("none", "sync"):
        e = bars[bn]
        check(e["x"] == [64.0, 128.0], f"{bn} bars at {e['x']}")
        for i, gb in enumerate((64, 128)):
            _, lo, hi = t_interval([final(os.path.join(res, f"{bn}-gb{gb}-seed{k}.h5")) for k in (1, 2, 3)])
            check(close(e["lo"][i], lo, 1e-6) and close(e["hi"][i], hi, 1e-6), f"{bn} gb {gb}: bar {e}, {lo}..{hi}")
    check("95% CI (n = 3 seeds)" in figs["figures"]["batch_size.png"]["suptitle"], "batch_size title says n")

    # one seed alone: n = 1, no interval, said so
    one = os.path.join(TMP, "one")
    os.makedirs(one)
    for gb in (64, 128):
        shutil.copy(os.path.join(res, f"sync-gb{gb}-seed1.h5"), one)
    out1 = os.path.join(TMP, "report1")
    tool("analyze", one, "--out", out1)
    with open(os.path.join(out1, "summary_by_config.csv")) as fh:
        rows1 = list(csv.DictReader(fh))
    check(all(r["n"] == "1" and r["final_val_acc_ci_lo"] == "" for r in rows1), f"n = 1 rows: {rows1}")
    figs1 = json.load(open(os.path.join(out1, "figures.json")))
    check("n = 1" in figs1["figures"]["batch_size.png"]["suptitle"], figs1["figures"]["batch_size.png"]["suptitle"])
    check(figs1["figures"]["batch_size.png"]["axes"][0]["errorbars"] == [], "no error bars for n = 1")
    check(figs1["figures"]["curves.png"]["axes"][0]["bands"] == [], "no bands for n = 1")
    md1 = open(os.path.join(out1, "summary.md")).read()
    check(f"| bn=sync gb=64 | 1 | 1 | 1 | {100 * final(os.path.join(one, 'sync-gb64-seed1.h5')):.2f}% |" in md1,
          "n = 1 row in summary.md")


def case_seeds_verdict():
    """The difference test on real runs, built so that the verdict flips: a large
    effect (global batch 32 against 256 after one short epoch, paired over seeds
    1-3: the interval excludes zero, "higher") and no effect (the same
    configuration with seeds 1-3 against 4-6, Welch: the interval straddles
    zero, "not different"); the numbers agree with scipy. Then bnmpi-claims on a
    batch sweep with 3 seeds states the rule, the test and n, and each plateau
    verdict follows from its intervals."""
    absolute()
    sys.path.insert(0, ARGS.tools)
    from bnmpi_analysis import load_runs, seeds
    res = study([(f"{bn}-gb{gb}", f"--bn {bn} --global-batch {gb}") for bn in ("none", "sync")
                 for gb in (32, 64, 256)], seeds=3, name="sweep")
    more = study([(f"sync-gb64-seed{k}", f"--bn sync --global-batch 64 --seed {k}") for k in (4, 5, 6)], name="more")
    runs = load_runs([res, more])
    check(len(runs) == 21, f"{len(runs)} runs")

    def vals(name, ks, folder=res):
        return {k: final(os.path.join(folder, f"{name}-seed{k}.h5")) for k in ks}

    # a large effect, paired by seed
    a, b = vals("sync-gb32", (1, 2, 3)), vals("sync-gb256", (1, 2, 3))
    d = seeds.difference(a, b)
    diffs = [a[k] - b[k] for k in (1, 2, 3)]
    m, lo, hi = t_interval(diffs)
    check(d.paired and d.test == "paired t" and d.n_a == 3, f"paired: {d.as_dict()}")
    check(close(d.mean, m) and close(d.lo, lo, 1e-8) and close(d.hi, hi, 1e-8), f"{d.as_dict()} vs {lo}..{hi}")
    check(lo > 0 and seeds.verdict(d, 0.003) == "higher", f"gb 32 vs 256: {d.text()}")
    print("large effect:", d.text())
    # no effect: same configuration, other seeds (Welch)
    a, b = vals("sync-gb64", (1, 2, 3)), vals("sync-gb64", (4, 5, 6), more)
    d = seeds.difference(a, b)
    w = stats.ttest_ind(list(a.values()), list(b.values()), equal_var=False)
    check(not d.paired and d.test == "Welch t", f"Welch: {d.as_dict()}")
    va, vb = np.var(list(a.values()), ddof=1) / 3, np.var(list(b.values()), ddof=1) / 3
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    check(close(d.df, df, 1e-8) and close(d.hi - d.mean, half, 1e-7), f"Welch df {d.df} vs {df}, half {half}")
    check(d.lo < 0 < d.hi and w.pvalue > 0.05, f"same configuration, other seeds: {d.text()}, p {w.pvalue}")
    check(seeds.verdict(d, 0.003) == "not different", f"verdict {seeds.verdict(d, 0.003)}")
    # the same mean difference with one seed a side: no interval, the tolerance decides, and it says n = 1
    d1 = seeds.difference({1: a[1]}, {4: b[4]})
    check(d1.test == "none (n = 1)" and "no interval" in d1.text(), d1.text())
    print("no effect:", d.text())

    out = os.path.join(TMP, "claims")
    p = tool("claims", res, "--out", out)
    cj = json.load(open(os.path.join(out, "img", "claims", "claims.json")))
    md = open(os.path.join(out, "claims.md")).read()
    check("95% confidence interval excludes zero" in md and "paired t" in md and "Welch" in md,
          "claims.md states the rule")
    check("3 seeds per configuration" in md, "claims.md says n")
    plateau = cj["claims"]["batch_plateau"]
    check(plateau["verdict"] in ("supported", "not supported", "depends"), f"plateau: {plateau}")
    check("paired t" in plateau["because"] and "n = 3" in plateau["because"], plateau["because"])
    for mode, s in plateau["numbers"].items():
        t = s["tests"]["64 minus smallest"]
        check(t["paired"] and t["test"] == "paired t" and t["n_a"] == 3, f"{mode}: {t}")
        check(s["rises"] == (t["lo"] > 0), f"{mode}: rises {s['rises']} but interval {t['lo']}..{t['hi']}")
        above = [v for k, v in s["tests"].items() if k != "64 minus smallest"]
        check(s["plateau"] == all(v["lo"] <= 0 <= v["hi"] for v in above), f"{mode}: plateau {s['plateau']}: {above}")
    print(p.stdout.strip().splitlines()[-3])


def case_commands():
    """bnmpi-analyze and bnmpi-claims: run under Debian's python3 even with a
    python3 without numpy first on PATH, --help complete, exit 2 on bad input."""
    absolute()
    fake = os.path.join(TMP, "bin")
    os.makedirs(fake)
    with open(os.path.join(fake, "python3"), "w") as f:
        f.write("#!/bin/sh\necho 'not this python' >&2\nexit 3\n")
    os.chmod(os.path.join(fake, "python3"), 0o755)
    env = dict(ENV, PATH=fake + os.pathsep + ENV["PATH"])
    for name, words in (("analyze", ["summary_by_config.csv", "95%", "n = 1", "seed", "--out", "--max-curves",
                                     "exit status 2", "bnmpi-analyze"]),
                        ("claims", ["paired t", "Welch", "--tolerance", "n = 1", "--target", "--trains",
                                    "claims.md", "bnmpi-claims"])):
        p = run([os.path.join(ARGS.tools, "bnmpi-" + name), "--help"], env=env)
        for w in words:
            check(w in p.stdout, f"bnmpi-{name} --help lacks {w!r}")
        p = run([os.path.join(ARGS.tools, "bnmpi-" + name), os.path.join(TMP, "missing.h5"), "--out",
                 os.path.join(TMP, "o")], env=env, expect=2)
        check(p.stderr.startswith(f"bnmpi-{name}: ") and "does not exist" in p.stderr, p.stderr)
    # through a symlink on PATH, as an install puts it (bin/ -> share/bnmpi/tools)
    link = os.path.join(fake, "bnmpi-analyze")
    os.symlink(os.path.join(ARGS.tools, "bnmpi-analyze"), link)
    p = run(["bnmpi-analyze", "--help"], env=env)
    check("usage: bnmpi-analyze" in p.stdout, p.stdout[:200])


def options(p):
    p.add_argument("--bnmpi", required=True)
    p.add_argument("--mpiexec", required=True)
    p.add_argument("--tools", required=True, help="the tools/ folder (bnmpi-analyze, bnmpi_analysis/)")
    p.add_argument("--jobs", required=True, help="the jobs/ folder (run-study.sh)")
    p.add_argument("--data", required=True, help="the MNIST folder")


if __name__ == "__main__":
    run_case(globals(), "bnmpi-seeds-", options)
