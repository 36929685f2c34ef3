#!/usr/bin/python3
"""Tests of the job scripts in jobs/: the SLURM ones on a real single-node
cluster started here (tests/slurm/minicluster.py), the workstation one with
mpirun. Each case checks the HDF5 files the runs leave, with h5py.

    run_slurm.py CASE --bnmpi PATH --jobs DIR [--data DIR] [--keep]

Cases: slurm_train, slurm_requeue, slurm_array (exit 77 = skipped when SLURM
and munge are missing and cannot be installed), study_run_resume_skip,
study_cli. The Open MPI run-as-root variables come from the test environment.
"""
import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import minicluster  # noqa: E402

try:
    import h5py
    import numpy as np
except ImportError as exc:  # the other python3 on the PATH (pyenv) lacks them
    sys.exit(f"run_slurm.py: {exc}: run me with Debian's /usr/bin/python3 (python3-h5py)")

SKIP = 77
ARGS = None
TMP = None
TINY = "--epochs 1 --train-limit 2048"


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def log(msg):
    print(msg, flush=True)


def read_metrics(path):
    """The parts of a metrics file the checks look at."""
    check(os.path.isfile(path), f"{path}: missing")
    with h5py.File(path, "r", locking=False) as f:
        fmt = f.attrs.get("format")
        fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
        out = {"format": fmt,
               "config": {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f["config"].attrs.items()},
               "epochs": f["epochs"][:], "steps": f["steps"][:],
               "summary": dict(f["summary"].attrs) if "summary" in f else None}
    return out


def check_complete(path, epochs, **config):
    """A finished run: the format attribute, one /epochs row per epoch, contiguous
    /steps, /summary, and the /config values asked for."""
    m = read_metrics(path)
    check(m["format"] == "bnmpi-metrics", f"{path}: format {m['format']!r}")
    ep = m["epochs"]["epoch"].tolist()
    check(ep == list(range(1, epochs + 1)), f"{path}: /epochs rows {ep}, expected 1..{epochs}")
    st = m["steps"]["step"].tolist()
    check(st == list(range(1, len(st) + 1)) and len(st) > 0, f"{path}: /steps not 1..n without gaps: {st[:5]}...")
    check(m["summary"] is not None, f"{path}: no /summary")
    check(0.5 < m["summary"]["test_acc"] <= 1.0, f"{path}: test_acc {m['summary']['test_acc']}")
    for k, v in config.items():
        check(m["config"].get(k) == v, f"{path}: /config {k} = {m['config'].get(k)!r}, expected {v!r}")
    return m


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest(), os.stat(path).st_mtime_ns


def study_env(base=None):
    """The environment of the runs: BNMPI (and BNMPI_DATA) added to base."""
    env = dict(os.environ if base is None else base, BNMPI=ARGS.bnmpi)
    if ARGS.data:
        env["BNMPI_DATA"] = ARGS.data
    return env


# --- SLURM ------------------------------------------------------------------
def ensure_slurm():
    """SLURM and munge installed, or exit 77 (skip) when they cannot be."""
    missing = minicluster.missing_programs()
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        log(f"installing slurmctld slurmd slurm-client munge (missing: {' '.join(missing)})")
        r = subprocess.run(["apt-get", "install", "-y", "-q", "slurmctld", "slurmd", "slurm-client", "munge"],
                           env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=240)
        if r.returncode != 0:
            log(f"apt-get install failed ({r.returncode}): {r.stderr.strip()[-500:]}")
        missing = minicluster.missing_programs()
    if missing:
        log(f"SKIP: SLURM is not installed and cannot be installed here (missing: {' '.join(missing)})")
        sys.exit(SKIP)
    if os.geteuid() != 0:
        log("SKIP: the test cluster runs munged, slurmctld and slurmd as root")
        sys.exit(SKIP)


def cluster():
    ensure_slurm()
    return minicluster.MiniCluster(os.path.join(TMP, "cluster"), log=log)


def sbatch_wait(c, argv, timeout=150):
    """sbatch --wait, bounded by timeout; returns (job id, exit status)."""
    r = c.run(["timeout", str(timeout), "sbatch", "--wait", "--parsable", *argv], check=False,
              timeout=timeout + 10, cwd=TMP, env=study_env(c.env))
    jid = r.stdout.strip().split(";")[0]
    check(r.returncode != 124, f"sbatch --wait {' '.join(argv)}: not done within {timeout} s\n{c.logs_tail()}")
    check(jid.isdigit(), f"sbatch {' '.join(argv)}: no job id: {r.stdout!r} {r.stderr!r}")
    return jid, r.returncode


def job_info(c, jid):
    """scontrol's fields of the job, or None once it left the queue."""
    r = c.run(["scontrol", "show", "job", "-o", jid], check=False, timeout=10)
    if r.returncode != 0 or not r.stdout.strip():
        return None
    return dict(re.findall(r"(\w+)=(\S*)", r.stdout.splitlines()[0]))


def read(path):
    with open(path, errors="replace") as f:
        return f.read()


def case_slurm_train():
    """train.sbatch runs one run with srun --mpi=pmix and writes a complete metrics
    file under RESULTS_DIR/NAME.h5 (no checkpoint left); submitted again, it
    sees /summary and leaves the file alone; parameters come from arguments or
    the environment; a checkpoint bnmpi refuses is replaced by a fresh run."""
    with cluster() as c:
        jid, rc = sbatch_wait(c, [os.path.join(ARGS.jobs, "train.sbatch"), "tiny", *TINY.split(), "--bn", "local"])
        out = read(os.path.join(TMP, f"bnmpi-{jid}.out"))
        check(rc == 0, f"train.sbatch exit {rc}:\n{out}")
        path = os.path.join(TMP, "results", "slurm", "tiny.h5")
        m = check_complete(path, 1, bn="local", n_ranks=2, train_limit=2048)
        check(str(m["config"].get("slurm_job_id")) == jid, f"/config slurm_job_id {m['config'].get('slurm_job_id')} != {jid}")
        check(not os.path.exists(path.replace(".h5", ".ckpt.h5")), "the checkpoint of a finished run is left behind")
        check("srun --mpi=pmix" in out, f"not launched with srun --mpi=pmix:\n{out}")
        before = digest(path)
        jid2, rc = sbatch_wait(c, [os.path.join(ARGS.jobs, "train.sbatch"), "tiny", *TINY.split(), "--bn", "local"])
        out2 = read(os.path.join(TMP, f"bnmpi-{jid2}.out"))
        check(rc == 0 and "nothing to do" in out2, f"a complete run submitted again: exit {rc}:\n{out2}")
        check(digest(path) == before, "a complete metrics file was rewritten")
        # Parameters through the environment, and a bad option list refused.
        env_jid, rc = sbatch_wait(c, ["--export=ALL,RUN_NAME=byenv,BNMPI_OPTS=--epochs 1 --train-limit 2048 --bn none,"
                                      "RESULTS_DIR=out", os.path.join(ARGS.jobs, "train.sbatch")])
        check(rc == 0, f"train.sbatch with RUN_NAME/BNMPI_OPTS: exit {rc}:\n{read(os.path.join(TMP, f'bnmpi-{env_jid}.out'))}")
        check_complete(os.path.join(TMP, "out", "byenv.h5"), 1, bn="none")
        # A checkpoint the run's options no longer match (here: made by hand with
        # --hidden 64, the job asks for 128) is refused by bnmpi (exit 2); the job
        # starts again.
        res = os.path.join(TMP, "results", "slurm")
        r = subprocess.run([ARGS.mpiexec, "-n", "2", ARGS.bnmpi, *TINY.split(), "--hidden", "64",
                            "--metrics", os.path.join(res, "edited.h5"), "--checkpoint",
                            os.path.join(res, "edited.ckpt.h5"), "--quiet"],
                           env=dict(study_env(), BNMPI_SIGNAL_RANK="0", BNMPI_SIGNAL_STEP="10"),
                           capture_output=True, text=True, timeout=120)
        check(r.returncode == 75, f"making a checkpoint: exit {r.returncode}: {r.stderr}")
        ed, rc = sbatch_wait(c, [os.path.join(ARGS.jobs, "train.sbatch"), "edited", *TINY.split(), "--hidden", "128"])
        out_ed = read(os.path.join(TMP, f"bnmpi-{ed}.out"))
        check(rc == 0 and "refused the checkpoint: starting the run again" in out_ed, f"exit {rc}:\n{out_ed}")
        m = check_complete(os.path.join(res, "edited.h5"), 1)
        check(str(m["config"].get("hidden")) in ("128", "[128]"), f"hidden {m['config'].get('hidden')!r}, expected 128")
        check(not os.path.exists(os.path.join(res, "edited.ckpt.h5")), "checkpoint left after the redo")
        bad, rc = sbatch_wait(c, [os.path.join(ARGS.jobs, "train.sbatch"), "bad", "--metrics", "x.h5"])
        check(rc == 2 and "sets the metrics" in read(os.path.join(TMP, f"bnmpi-{bad}.out")),
              f"--metrics in the options: exit {rc}")
    log(f"slurm_train: jobs {jid}, {jid2}, {env_jid}, {ed}, {bad} as expected; stopped: {c.stop() or 'no'} slurmstepd left")


def case_slurm_requeue():
    """SIGUSR1 to the running job step (what --signal=USR1@T sends before the time
    limit) makes bnmpi checkpoint and exit 75; train.sbatch requeues the job,
    the second start resumes from the checkpoint, and the finished file equals an
    uninterrupted run's (all but the wall-clock columns)."""
    epochs = 12
    opts = f"--epochs {epochs} --train-limit 1024 --val-fraction 0.02 --threads 1".split()
    with cluster() as c:
        r = c.run(["sbatch", "--parsable", os.path.join(ARGS.jobs, "train.sbatch"), "rq", *opts],
                  cwd=TMP, env=study_env(c.env))
        jid = r.stdout.strip()
        path = os.path.join(TMP, "results", "slurm", "rq.h5")
        signalled = seen = None
        t0 = time.monotonic()
        end = t0 + 150
        while time.monotonic() < end:
            info = job_info(c, jid)
            state = info and info.get("JobState")
            now = (state, info and info.get("Reason"), info and info.get("Restarts"))
            if now != seen:
                log(f"{time.monotonic() - t0:5.1f} s: job {jid} {' '.join(map(str, now))}")
                seen = now
            if info is None or state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"):
                break
            if signalled is None and state == "RUNNING" and os.path.exists(path):
                try:
                    with h5py.File(path, "r", locking=False) as f:
                        rows = len(f["epochs"])
                except (OSError, KeyError):
                    rows = 0
                if rows >= 1:   # training runs on every rank: the handlers are in place
                    c.run(["scancel", "--signal=USR1", jid])
                    signalled = rows
                    log(f"{time.monotonic() - t0:5.1f} s: SIGUSR1 to job {jid} after {rows} epoch(s)")
            time.sleep(0.2)
        else:
            raise Failure(f"job {jid} not finished within 150 s\n{c.logs_tail()}")
        log(f"{time.monotonic() - t0:5.1f} s: job {jid} {info.get('JobState') if info else 'gone'}")
        out = read(os.path.join(TMP, f"bnmpi-{jid}.out"))
        check(signalled is not None, f"the job ended before it could be signalled:\n{out}")
        check(info is None or info.get("JobState") == "COMPLETED", f"job state {info and info.get('JobState')}:\n{out}")
        check("srun exit status 75" in out and "requeueing job" in out, f"no exit 75 and requeue:\n{out}")
        check("start 1," in out and "resuming from" in out, f"the requeued job did not resume:\n{out}")
        check(out.rstrip().endswith(f"done: results/slurm/rq.h5"), f"the second start did not finish:\n{out}")
        stopped = re.search(r"stopped by a signal after epoch (\d+) step (\d+)", out)
        check(stopped and int(stopped.group(1)) < epochs, f"bnmpi did not stop early:\n{out}")
        got = check_complete(path, epochs, n_ranks=2)
        check(not os.path.exists(path.replace(".h5", ".ckpt.h5")), "the checkpoint is left behind")
    # The same run without interruption, straight from mpirun.
    ref = os.path.join(TMP, "ref.h5")
    r = subprocess.run([ARGS.mpiexec, "-n", "2", ARGS.bnmpi, *opts, "--metrics", ref, "--quiet"],
                       env=study_env(), capture_output=True, text=True, timeout=240)
    check(r.returncode == 0, f"reference run: exit {r.returncode}: {r.stderr}")
    want = read_metrics(ref)
    for table, clock in (("epochs", ("time_s", "comm_s", "samples_per_s")), ("steps", ())):
        for field in got[table].dtype.names:
            if field in clock:
                continue
            check(np.array_equal(got[table][field], want[table][field]),
                  f"/{table}/{field} of the resumed run differs from the uninterrupted run's")
    check(got["summary"]["params_sha256"] == want["summary"]["params_sha256"], "final parameters differ")
    log(f"slurm_requeue: job {jid} stopped at epoch {stopped.group(1)} step {stopped.group(2)}, "
        f"requeued, resumed, finished {epochs} epochs; equal to an uninterrupted run")


def case_slurm_array():
    """study.sbatch as a job array: task k runs the k-th run line (comments and
    blank lines skipped) into results/<study>/<name>.h5, a line with more ranks
    than the job's tasks runs overcommitted, and a task past the last line fails
    with a message."""
    study = os.path.join(TMP, "tiny-study.tsv")
    with open(study, "w") as f:
        f.write("# a tiny study\n\n"
                f"one\t2\t--bn sync {TINY}\n"
                "# a comment between runs\n"
                f"two  1  --bn none {TINY}\n"
                f"three\t2\t--bn local --ghost-batch 8 {TINY}\n"
                f"four\t4\t--bn sync --bn-group 2 {TINY}\n")
    with cluster() as c:
        n = subprocess.run(["grep", "-cvE", r"^[[:space:]]*(#|$)", study], capture_output=True, text=True).stdout.strip()
        check(n == "4", f"the documented line count gives {n}")
        jid, rc = sbatch_wait(c, [f"--array=1-{n}", os.path.join(ARGS.jobs, "study.sbatch"), study])
        outs = {k: read(os.path.join(TMP, f"bnmpi-study-{jid}_{k}.out")) for k in (1, 2, 3, 4)}
        check(rc == 0, f"job array exit {rc}:\n" + "\n".join(outs.values()))
        res = os.path.join(TMP, "results", "tiny-study")
        check_complete(os.path.join(res, "one.h5"), 1, bn="sync", n_ranks=2)
        check_complete(os.path.join(res, "two.h5"), 1, bn="none", n_ranks=1)
        check_complete(os.path.join(res, "three.h5"), 1, bn="local", n_ranks=2, ghost_batch=8)
        # 4 ranks in a 2-task job: srun --overcommit.
        check_complete(os.path.join(res, "four.h5"), 1, bn="sync", n_ranks=4, bn_group=2)
        check("--overcommit" in outs[4], f"np=4 in a 2-task job without --overcommit:\n{outs[4]}")
        check(sorted(os.listdir(res)) == ["four.h5", "one.h5", "three.h5", "two.h5"], f"unexpected files: {os.listdir(res)}")
        bad, rc = sbatch_wait(c, ["--array=5", os.path.join(ARGS.jobs, "study.sbatch"), study])
        msg = read(os.path.join(TMP, f"bnmpi-study-{bad}_5.out"))
        check(rc != 0 and "has no run line 5 (it has 4)" in msg, f"task 5 of 4: exit {rc}: {msg}")
        # --seeds 2: task k is run k of run-study.sh --list (line (k-1)/2+1, seed (k-1)%2+1)
        seeded = os.path.join(TMP, "seeded.tsv")
        with open(seeded, "w") as f:
            f.write(f"# two lines, two seeds each\nsync\t1\t--bn sync {TINY}\nnone\t1\t--bn none {TINY}\n")
        n = subprocess.run([os.path.join(ARGS.jobs, "run-study.sh"), "--count", "--seeds", "2", seeded],
                           capture_output=True, text=True).stdout.strip()
        check(n == "4", f"run-study.sh --count --seeds 2: {n}")
        sid, rc = sbatch_wait(c, [f"--array=1-{n}", os.path.join(ARGS.jobs, "study.sbatch"), "--seeds", "2", seeded])
        outs = {k: read(os.path.join(TMP, f"bnmpi-study-{sid}_{k}.out")) for k in (1, 2, 3, 4)}
        check(rc == 0, f"seeded job array exit {rc}:\n" + "\n".join(outs.values()))
        res = os.path.join(TMP, "results", "seeded")
        for name, bn in (("sync", "sync"), ("none", "none")):
            for k in (1, 2):
                check_complete(os.path.join(res, f"{name}-seed{k}.h5"), 1, bn=bn, seed=k)
        check(sorted(os.listdir(res)) == ["none-seed1.h5", "none-seed2.h5", "sync-seed1.h5", "sync-seed2.h5"],
              f"unexpected files: {os.listdir(res)}")
    log(f"slurm_array: array job {jid} wrote one.h5, two.h5, three.h5, four.h5 (4 ranks, overcommitted); "
        f"task 5 refused; array job {sid} with --seeds 2 wrote <name>-seed1.h5 and -seed2.h5 for both lines")


# --- the workstation launcher -------------------------------------------------
def run_study(*argv, env=None, expect=0, timeout=240):
    r = subprocess.run([os.path.join(ARGS.jobs, "run-study.sh"), *argv], cwd=TMP, env=env or study_env(),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    check(r.returncode == expect, f"run-study.sh {' '.join(argv)}: exit {r.returncode}, expected {expect}\n"
          f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}")
    return r


def write_tiny_study():
    path = os.path.join(TMP, "tiny.tsv")
    with open(path, "w") as f:
        f.write("# name\tnp\toptions\n"
                "sync\t2\t--bn sync --epochs 20 --train-limit 2048\n"
                "none\t2\t--bn none --epochs 20 --train-limit 2048\n"
                "\n"
                "solo\t1\t--bn sync --global-batch 64 --epochs 20 --train-limit 2048\n")
    return path


def case_study_run_resume_skip():
    """run-study.sh: a study stopped by a signal exits 75 with a checkpoint; the
    same command resumes that run, runs the rest with --epochs-scale applied,
    writes the report; a third invocation skips every run and changes nothing;
    an incomplete file without a checkpoint, and a checkpoint that no longer
    matches its edited line, are redone from the start."""
    study = write_tiny_study()
    res = os.path.join(TMP, "results", "tiny")
    # First invocation: rank 0 of the first run signals itself at global step 40
    # (epoch 2 of 2 at --epochs-scale 0.1): checkpoint, exit 75, the study stops.
    env = dict(study_env(), BNMPI_SIGNAL_RANK="0", BNMPI_SIGNAL_STEP="40")
    r = run_study("--epochs-scale", "0.1", study, env=env, expect=75)
    check(re.search(r"^\[1/3\] sync +np=2 +[\d.]+ s  stopped by a signal", r.stdout, re.M), f"first run line:\n{r.stdout}")
    check("run the same command again to resume" in r.stderr, r.stderr)
    check(os.path.exists(os.path.join(res, "sync.ckpt.h5")), "no checkpoint after the signal")
    check(not os.path.exists(os.path.join(res, "none.h5")), "the study went on after the signal")
    m = read_metrics(os.path.join(res, "sync.h5"))
    check(m["summary"] is None and len(m["epochs"]) == 1, f"stopped run: {len(m['epochs'])} epochs, summary {m['summary']}")
    # Second: resumes 'sync', runs the others, writes the report.
    r = run_study("--epochs-scale", "0.1", study)
    lines = [l for l in r.stdout.splitlines() if l.startswith("[")]
    check(len(lines) == 3, f"one line per run expected:\n{r.stdout}")
    check(re.match(r"\[1/3\] sync +np=2 +[\d.]+ s  test acc \d+\.\d\d% \(resumed\)$", lines[0]), lines[0])
    check(re.match(r"\[2/3\] none +np=2 +[\d.]+ s  test acc \d+\.\d\d%$", lines[1]), lines[1])
    check(re.match(r"\[3/3\] solo +np=1 +[\d.]+ s  test acc \d+\.\d\d%$", lines[2]), lines[2])
    m = check_complete(os.path.join(res, "sync.h5"), 2, bn="sync", n_ranks=2)
    check(len(m["steps"]) == 2 * 32, f"resumed run has {len(m['steps'])} step rows, expected 64")
    check_complete(os.path.join(res, "none.h5"), 2, bn="none", n_ranks=2)
    check_complete(os.path.join(res, "solo.h5"), 2, bn="sync", n_ranks=1)
    check(not any(f.endswith(".ckpt.h5") for f in os.listdir(res)), f"checkpoints left: {os.listdir(res)}")
    for name in ("sync", "none", "solo"):
        check(os.path.getsize(os.path.join(res, name + ".log")) > 0, f"no log for {name}")
    analyze = os.path.join(ARGS.jobs, "..", "tools", "analyze.py")
    if os.path.exists(analyze):
        csv = os.path.join(res, "report", "summary.csv")
        check(os.path.exists(csv), f"no report: {r.stdout}")
        with open(csv) as f:
            check(len(f.read().strip().splitlines()) == 4, "summary.csv: expected a header and 3 rows")
    # Third: everything is complete; nothing is rerun or rewritten.
    before = {n: digest(os.path.join(res, n + ".h5")) for n in ("sync", "none", "solo")}
    r = run_study("--epochs-scale", "0.1", "--no-report", study)
    done = re.findall(r"^\[\d/3\] (\w+) +np=\d +done earlier +test acc \d+\.\d\d%$", r.stdout, re.M)
    check(done == ["sync", "none", "solo"], f"third invocation:\n{r.stdout}")
    check({n: digest(os.path.join(res, n + ".h5")) for n in before} == before, "a complete file was rewritten")
    # An incomplete file without a checkpoint (killed in its first epoch) is redone.
    os.remove(os.path.join(res, "none.h5"))
    with h5py.File(os.path.join(res, "none.h5"), "w") as f:
        f.attrs["format"] = "bnmpi-metrics"
    r = run_study("--epochs-scale", "0.1", "--no-report", study)
    check(re.search(r"^\[2/3\] none .* test acc \d+\.\d\d% \(redone\)$", r.stdout, re.M), r.stdout)
    check_complete(os.path.join(res, "none.h5"), 2, bn="none")
    # A stopped run whose line is then edited: bnmpi refuses the checkpoint
    # (exit 2), and the run is started again with the new options.
    os.remove(os.path.join(res, "solo.h5"))
    r = run_study("--epochs-scale", "0.1", "--no-report", study, env=env, expect=75)
    check(re.search(r"^\[3/3\] solo .* stopped by a signal", r.stdout, re.M), r.stdout)
    with open(study) as f:
        text = f.read()
    with open(study, "w") as f:
        f.write(text.replace("--global-batch 64", "--global-batch 32"))
    r = run_study("--epochs-scale", "0.1", "--no-report", study)
    check(re.search(r"^\[3/3\] solo .* test acc \d+\.\d\d% \(redone: checkpoint refused\)$", r.stdout, re.M), r.stdout)
    check_complete(os.path.join(res, "solo.h5"), 2, global_batch=32, n_ranks=1)
    check(not os.path.exists(os.path.join(res, "solo.ckpt.h5")), "checkpoint left after the redo")
    log("study_run_resume_skip: stopped and resumed, then all skipped, then an incomplete file redone, "
        "then a refused checkpoint redone")


def case_study_seeds():
    """run-study.sh --seeds 2: each line runs with --seed 1 and 2 into
    <name>-seed<k>.h5; a study stopped by a signal in seed 1 resumes that seed and
    runs seed 2; a finished study skips every seed; a line's own --seeds wins;
    --seed together with --seeds is refused; --list and --count give the runs."""
    study = os.path.join(TMP, "seeds.tsv")
    with open(study, "w") as f:
        f.write("sync\t2\t--bn sync --epochs 20 --train-limit 2048\n"
                "solo\t1\t--bn none --epochs 20 --train-limit 2048 --seeds 1\n")
    res = os.path.join(TMP, "results", "seeds")
    r = run_study("--list", "--seeds", "2", study)
    check(r.stdout.splitlines() == ["sync-seed1\t2\t--bn sync --epochs 20 --train-limit 2048 --seed 1",
                                    "sync-seed2\t2\t--bn sync --epochs 20 --train-limit 2048 --seed 2",
                                    "solo-seed1\t1\t--bn none --epochs 20 --train-limit 2048 --seed 1"], r.stdout)
    check(run_study("--count", "--seeds", "2", study).stdout.strip() == "3", "--count")
    check(run_study("--count", study).stdout.strip() == "2", "--count without --seeds")
    env = dict(study_env(), BNMPI_SIGNAL_RANK="0", BNMPI_SIGNAL_STEP="40")
    r = run_study("--seeds", "2", "--epochs-scale", "0.1", "--no-report", study, env=env, expect=75)
    check(re.search(r"^\[1/3\] sync-seed1 +np=2 +[\d.]+ s  stopped by a signal", r.stdout, re.M), r.stdout)
    check(os.path.exists(os.path.join(res, "sync-seed1.ckpt.h5")), "no checkpoint for seed 1")
    r = run_study("--seeds", "2", "--epochs-scale", "0.1", "--no-report", study)
    lines = [l for l in r.stdout.splitlines() if l.startswith("[")]
    check(len(lines) == 3 and lines[0].endswith("(resumed)") and "test acc" in lines[1]
          and "(resumed)" not in lines[1], r.stdout)
    for name, k, bn in (("sync", 1, "sync"), ("sync", 2, "sync"), ("solo", 1, "none")):
        check_complete(os.path.join(res, f"{name}-seed{k}.h5"), 2, bn=bn, seed=k)
    r = run_study("--seeds", "2", "--epochs-scale", "0.1", "--no-report", study)
    done = re.findall(r"^\[\d/3\] ([\w-]+) +np=\d +done earlier", r.stdout, re.M)
    check(done == ["sync-seed1", "sync-seed2", "solo-seed1"], r.stdout)
    bad = os.path.join(TMP, "bad-seeds.tsv")
    with open(bad, "w") as f:
        f.write("x\t1\t--bn sync --seed 3\n")
    r = run_study("--seeds", "2", bad, expect=2)
    check("bad-seeds.tsv:1:" in r.stderr and "--seed" in r.stderr, r.stderr)
    r = run_study("--seeds", "x", study, expect=2)
    check("--seeds x" in r.stderr, r.stderr)
    log("study_seeds: seeds 1-2 per line, stopped in seed 1 and resumed, then all skipped; bad --seeds refused")


def case_study_cli():
    """run-study.sh --dry-run prints the mpirun commands (scaled epochs, results
    paths, --oversubscribe beyond the cores, --np-max); bad study files and
    options give one line naming the line and exit 2; the default study parses."""
    study = write_tiny_study()
    with open(study, "a") as f:
        f.write(f"many\t{(os.cpu_count() or 1) + 2}\t--bn local --global-batch 64\n")
    r = run_study("--dry-run", "--epochs-scale", "0.25", "--np-max", "2", study)
    cmds = [l for l in r.stdout.splitlines() if l.startswith(("mpirun", "/"))]
    check(len(cmds) >= 3, f"dry run:\n{r.stdout}")
    check(all("--epochs 5 " in c for c in cmds[:3]), f"--epochs 20 x 0.25 should be 5:\n{r.stdout}")
    check("--metrics results/tiny/sync.h5 --checkpoint results/tiny/sync.ckpt.h5" in cmds[0], cmds[0])
    check(re.search(r"\[4/4\] many .*skipped: needs \d+ ranks, --np-max 2", r.stdout), r.stdout)
    check(not os.path.exists(os.path.join(TMP, "results")), "--dry-run made files")
    r = run_study("--dry-run", study)
    many = [l for l in r.stdout.splitlines() if " -np %d " % ((os.cpu_count() or 1) + 2) in l]
    check(many and "--oversubscribe" in many[0] and "--epochs" not in many[0], f"oversubscribed run:\n{r.stdout}")
    r = run_study("--dry-run", "--epochs-scale", "0.01", study)
    check(" --epochs 1 " in r.stdout, "at least one epoch")
    default = os.path.join(ARGS.jobs, "study-default.tsv")
    r = run_study("--dry-run", default)
    cmds = [l for l in r.stdout.splitlines() if "--metrics" in l]
    check(len(cmds) == 28 and all("--epochs 10" in c for c in cmds), f"default study: {len(cmds)} runs")
    for bad_line, needle in (("x\t0\t--bn sync", "rank count '0'"), ("a b\t2", "rank count 'b'"),
                             ("sync\t2\t--bn none", "run name sync is used twice"),
                             ("y\t2\t--metrics m.h5", "the launcher sets the metrics"),
                             ("../z\t2", "run name '../z'")):
        bad = os.path.join(TMP, "bad.tsv")
        shutil.copy(study, bad)
        with open(bad, "a") as f:
            f.write(bad_line + "\n")
        r = run_study(bad, expect=2)
        check(r.stderr.count("\n") == 1 and "bad.tsv:7:" in r.stderr and needle in r.stderr,
              f"{bad_line!r}: {r.stderr!r}")
    for argv, needle in ((["--epochs-scale", "0", study], "expected a number > 0"),
                         (["--np-max", "x", study], "expected a whole number"),
                         (["--bnmpi", "/nonexistent/bnmpi", study], "not an executable"),
                         (["--frobnicate", study], "unknown option"),
                         ([os.path.join(TMP, "missing.tsv")], "not a readable file"),
                         ([], "no study file")):
        r = run_study(*argv, expect=2)
        check(needle in r.stderr, f"{argv}: {r.stderr!r}")
    r = run_study("--help")
    check("--epochs-scale F" in r.stdout and "Exit status" in r.stdout, "--help")
    log("study_cli: dry runs, --np-max, --oversubscribe, epochs scaling and bad input as expected")


def main():
    global ARGS, TMP
    cases = {k[5:]: v for k, v in globals().items() if k.startswith("case_")}
    p = argparse.ArgumentParser()
    p.add_argument("case", choices=sorted(cases))
    p.add_argument("--bnmpi", required=True)
    p.add_argument("--jobs", required=True, help="the jobs/ folder under test")
    p.add_argument("--mpiexec", default="mpiexec")
    p.add_argument("--data", help="MNIST folder (BNMPI_DATA for the runs)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ARGS = p.parse_args()
    ARGS.bnmpi = os.path.abspath(ARGS.bnmpi)
    ARGS.jobs = os.path.abspath(ARGS.jobs)
    TMP = tempfile.mkdtemp(prefix=f"bnmpi-{ARGS.case}-")
    t0 = time.monotonic()
    try:
        cases[ARGS.case]()
    except Failure as exc:
        print(f"FAIL {ARGS.case}: {exc}\n(files in {TMP})", flush=True)
        sys.exit(1)
    except minicluster.ClusterError as exc:
        print(f"FAIL {ARGS.case}: the test cluster: {exc}\n(files in {TMP})", flush=True)
        sys.exit(1)
    log(f"PASS {ARGS.case} in {time.monotonic() - t0:.1f} s")
    if not ARGS.keep:
        shutil.rmtree(TMP, ignore_errors=True)


if __name__ == "__main__":
    main()
