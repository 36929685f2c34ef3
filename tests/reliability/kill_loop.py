#!/usr/bin/python3
"""Kill loop: SIGKILL a checkpointing bnmpi job at random moments, over and over.

Usage: kill_loop.py --bnmpi PATH --mpiexec PATH --data DIR [--kills N] [--min-resumes R] [--seed S]

One run is started (np=2, --train-limit 2048, --epochs 100000, --checkpoint-every 1,
the default MLP, whose checkpoint is 2.4 MB), then killed; each next run resumes
the checkpoint (--resume), and is killed in turn. Half of the N kills (shuffled)
go to mpiexec itself, half to one rank (one of mpiexec's children, chosen at
random). The moment is random: about a third at any time after the start (while
mpiexec launches, ranks load data, MPI starts, a checkpoint is read), the rest
at a random time after the run wrote its first new checkpoint (mid-training,
often mid-write: a checkpoint is written every step).

After every kill it checks, and prints one line per kill:
- every process of the job (found by session id and PID, not by name, so other
  tests' bnmpi runs do not count) is gone within --grace seconds (10): mpiexec
  must not hang after losing a rank, and ranks must not outlive a killed mpiexec;
  survivors are reported as orphans (a defect), then killed so the loop goes on;
- the checkpoint loads (format attribute, /state/position, finite parameters)
  and its position never goes back;
- the metrics file opens in h5dump -H and h5py, its epochs and steps run
  1..n without gap or repeat, and it holds the epochs the checkpoint finished
  (n is the checkpoint's epoch - 1, or its epoch when killed between the metrics
  rewrite and the epoch's checkpoint).
A resume "trained" when the checkpoint it leaves is further on than the one it
started from; at least --min-resumes must. At the end one more resume runs to the
end of the checkpoint's epoch (--epochs E) and must exit 0 with epochs 1..E.

Exit 0 when every check held; 1 with a FAIL line otherwise.
"""
import argparse
import os
import random
import shutil
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reliability import Failure, Job, check, checkpoint_position, cleanup, install_cleanup, metrics_tables, say  # noqa: E402

STEPS_PER_EPOCH = 2048 // 64  # --train-limit 2048 at the default global batch (32 per rank x 2)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("--bnmpi", required=True)
    p.add_argument("--mpiexec", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--kills", type=int, default=int(os.environ.get("BNMPI_KILL_LOOP_KILLS", 12)))
    p.add_argument("--min-resumes", type=int, default=int(os.environ.get("BNMPI_KILL_LOOP_MIN_RESUMES", 4)))
    p.add_argument("--seed", type=int, default=int(os.environ.get("BNMPI_KILL_LOOP_SEED", 2024)))
    p.add_argument("--grace", type=float, default=10.0, help="seconds every process of a killed job has to end")
    p.add_argument("--np", type=int, default=2)
    args = p.parse_args()
    install_cleanup()
    tmp = tempfile.mkdtemp(prefix="bnmpi-killloop-")
    t_start = time.monotonic()
    try:
        ok = kill_loop(args, tmp)
    except Failure as e:
        say(f"FAIL: {e}")
        ok = False
    finally:
        cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"kill loop: {'passed' if ok else 'FAILED'} in {time.monotonic() - t_start:.0f} s")
    sys.exit(0 if ok else 1)


def kill_loop(args, tmp):
    rng = random.Random(args.seed)
    ck, metrics = os.path.join(tmp, "run.ckpt"), os.path.join(tmp, "run.h5")
    common = ["--data", args.data, "--quiet", "--checkpoint", ck, "--checkpoint-every", "1"]
    targets = ["mpiexec"] * (args.kills // 2) + ["rank"] * (args.kills - args.kills // 2)
    rng.shuffle(targets)
    say(f"kill loop: {args.kills} SIGKILLs ({targets.count('mpiexec')} to mpiexec, {targets.count('rank')} to a rank), "
        f"np={args.np}, seed {args.seed}, grace {args.grace:.0f} s, in {tmp}")
    stats = {"mpiexec": 0, "rank": 0, "resumes": 0, "trained": 0, "orphans": 0, "slowest": 0.0}
    problems = []
    for i, target in enumerate(targets, 1):
        prev = checkpoint_position(ck) if os.path.exists(ck) else None
        if prev:
            flags = ["--resume", ck, *common]
            stats["resumes"] += 1
        else:
            flags = ["--train-limit", "2048", "--epochs", "100000", "--metrics", metrics, "--force", *common]
        before = _file_id(ck)
        job = Job(args.mpiexec, args.np, args.bnmpi, flags, tmp, f"run{i}")
        if target == "rank":
            check(job.wait_ranks(args.np, 60), f"kill {i}: the ranks never started\n{job.log_tail()}")
        if rng.random() < 0.35:
            moment = "any time"
            time.sleep(rng.uniform(0.0, 1.2))
        else:
            moment = "training"
            deadline = time.monotonic() + 60
            while _file_id(ck) == before and job.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            check(job.proc.poll() is None, f"kill {i}: the run ended by itself (exit {job.proc.returncode})\n"
                                           f"{job.log_tail()}")
            check(_file_id(ck) != before, f"kill {i}: no new checkpoint within 60 s\n{job.log_tail()}")
            time.sleep(rng.uniform(0.0, 0.8))
        check(job.proc.poll() is None,
              f"kill {i}: the run ended by itself (exit {job.proc.returncode})\n{job.log_tail()}")
        if target == "mpiexec":
            victim = job.proc.pid
        else:
            ranks = job.ranks()
            check(ranks, f"kill {i}: no rank to kill\n{job.log_tail()}")
            victim = rng.choice(ranks)
        at = time.monotonic() - job.t0
        job.members()  # remember the ranks before they are orphaned
        os.kill(victim, signal.SIGKILL)
        stats[target] += 1
        gone = job.wait_gone(args.grace)
        if gone is None:
            left = job.members()
            problems.append(f"kill {i} ({target}): {len(left)} process(es) of the job still alive {args.grace:.0f} s "
                            f"later: {job.describe(left)}")
            stats["orphans"] += len(left)
            say(f"kill {i}: DEFECT: {problems[-1]}; killing them")
            job.kill_all()
        else:
            stats["slowest"] = max(stats["slowest"], gone)
        rc = job.proc.returncode
        job_gone = f"all gone in {gone:.2f} s" if gone is not None else "ORPHANS"
        if not os.path.exists(ck):
            check(prev is None, f"kill {i}: the checkpoint {ck} disappeared")
            if os.path.exists(metrics):
                metrics_tables(metrics)
            say(f"kill {i}: SIGKILL to {target} {victim} at {at:.2f} s ({moment}, {'resume' if prev else 'fresh'}); "
                f"mpiexec exit {rc}; {job_gone}; no checkpoint written yet"
                f"{'; metrics readable' if os.path.exists(metrics) else ''}")
            continue
        pos = checkpoint_position(ck)
        check(prev is None or pos[2] >= prev[2], f"kill {i}: checkpoint went back from {prev} to {pos}")
        check(os.path.exists(metrics), f"kill {i}: checkpoint at {pos} but no metrics file {metrics}")
        epochs, steps = metrics_tables(metrics)
        n = len(epochs)
        check(pos[0] - 1 <= n <= pos[0],
              f"kill {i}: metrics hold {n} epochs, the checkpoint is at epoch {pos[0]} step {pos[1]}")
        check(len(steps) == n * STEPS_PER_EPOCH, f"kill {i}: {len(steps)} step rows for {n} epochs")
        trained = prev is not None and pos[2] > prev[2]
        stats["trained"] += trained
        what = "fresh" if prev is None else f"resume from step {prev[2]}{', trained' if trained else ', no progress'}"
        say(f"kill {i}: SIGKILL to {target} {victim} at {at:.2f} s ({moment}, {what}); mpiexec exit {rc}; {job_gone}; "
            f"checkpoint loads at epoch {pos[0]} step {pos[1]} (global {pos[2]}); metrics: {n} epochs, h5dump ok")
    say(f"kills: {stats['mpiexec']} to mpiexec, {stats['rank']} to a rank; {stats['resumes']} resumed runs, "
        f"{stats['trained']} of them trained; orphaned processes: {stats['orphans']}; "
        f"slowest job end after a kill: {stats['slowest']:.2f} s")
    check(stats["trained"] >= args.min_resumes,
          f"only {stats['trained']} resumed runs trained, at least {args.min_resumes} needed")
    check(os.path.exists(ck), "no checkpoint was ever written")
    # the checkpoint left by all those kills still finishes a run
    pos = checkpoint_position(ck)
    job = Job(args.mpiexec, args.np, args.bnmpi, ["--resume", ck, *common, "--epochs", str(pos[0])], tmp, "final")
    rc = job.finish(120)
    check(rc == 0, f"final resume to the end of epoch {pos[0]}: exit {rc}\n{job.log_tail()}")
    gone = job.wait_gone(args.grace)
    check(gone is not None, f"final resume: processes left: {job.describe(job.members())}")
    epochs, steps = metrics_tables(metrics)
    check(len(epochs) == pos[0] and len(steps) == pos[0] * STEPS_PER_EPOCH,
          f"final resume: metrics hold {len(epochs)} epochs and {len(steps)} steps, expected {pos[0]} epochs")
    say(f"final resume from epoch {pos[0]} step {pos[1]}: exit 0, metrics hold epochs 1..{pos[0]}, "
        f"{len(steps)} steps without gap or repeat")
    if problems:
        raise Failure(f"{len(problems)} kill(s) left processes behind:\n  " + "\n  ".join(problems))
    return True


def _file_id(path):
    try:
        st = os.stat(path)
        return st.st_ino, st.st_mtime_ns, st.st_size
    except FileNotFoundError:
        return None


if __name__ == "__main__":
    main()
