#!/usr/bin/python3
"""Full disk: bnmpi on a small tmpfs that fills up during the run.

Usage: full_disk.py CASE --bnmpi PATH --mpiexec PATH --data DIR
  CASE checkpoint  the checkpoint write fails: --checkpoint and --metrics on a
                   tmpfs sized (from a reference run's file sizes) so that the
                   every-step checkpoints and the first metrics rewrite of epoch 1
                   fit, and the checkpoint at the end of epoch 1 (which then sits
                   beside the grown metrics file) does not;
       metrics     the metrics rewrite fails: --metrics on a tmpfs whose filler
                   file leaves room for the first rewrite (old file + new one)
                   but not the second; the checkpoint goes to a roomy folder;
       resume      --resume onto a nearly full disk: a checkpoint and metrics
                   file made on the tmpfs, a filler leaving one page free, then
                   --resume.
Each: mpiexec -np 2, --hidden 16 --train-limit 2000 (31 steps an epoch), and
- the run exits 1 (not 139, not a hang: 60 s timeout) with exactly one
  `bnmpi: ...` line on stderr that names the file and says the disk is full;
- every process of the job is gone within 5 s of mpiexec's exit;
- the files the run had written before are intact: the checkpoint loads and the
  metrics file opens in h5py and h5dump -H (resume: both unchanged, sha256);
- the checkpoint resumes: a copy in a roomy folder, with --metrics on a copy of
  the metrics file (resume: on the tmpfs once the filler is gone), runs to the
  end, exit 0, and its step and epoch rows equal a reference run's (all columns
  but the wall-clock ones), none missing or repeated.
The tmpfs is mounted by the test (root) and unmounted in a finally block, even on
failure or SIGTERM; where mount is not permitted the case exits 77 (skipped).
"""
import argparse
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from reliability import (Failure, Job, check, checkpoint_position, cleanup, install_cleanup,  # noqa: E402
                         metrics_tables, say, sha256)

PAGE = 4096
TRAIN = ["--hidden", "16", "--train-limit", "2000", "--quiet"]
EPOCHS = 3
SPE = 2000 // 64  # steps per epoch (global batch 64: 32 per rank x 2)
NOSPACE = re.compile(r"no space left|disk is full|disk full|ENOSPC", re.I)
WALL = ("time_s", "comm_s", "samples_per_s")
ARGS = None
TMP = None


def pages(nbytes):
    return math.ceil(nbytes / PAGE)


def run(name, flags, timeout=60, env=None):
    """Runs bnmpi on 2 ranks; returns (exit status or None after a hang, the Job)."""
    job = Job(ARGS.mpiexec, 2, ARGS.bnmpi, ["--data", ARGS.data, *flags], TMP, name, env=env)
    return job.finish(timeout), job


def run_ok(name, flags):
    rc, job = run(name, flags, timeout=120)
    check(rc == 0, f"{name}: exit {rc}, expected 0\n{job.log_tail()}")
    check(job.wait_gone(10) is not None, f"{name}: processes left: {job.describe(job.members())}")
    return job


def _mount(size_pages, mnt):
    os.mkdir(mnt)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_pages * PAGE // 1024}k,mode=0755", "tmpfs", mnt],
                          capture_output=True, text=True, timeout=30)


def probe_mount():
    """Exits 77 (skip) unless this process may mount a tmpfs."""
    if os.geteuid() != 0:
        say("SKIP: not root, cannot mount a tmpfs")
        sys.exit(77)
    mnt = os.path.join(TMP, "probe")
    p = _mount(1, mnt)
    if p.returncode != 0:
        say(f"SKIP: mount -t tmpfs not permitted here: {(p.stderr or p.stdout).strip()}")
        sys.exit(77)
    MOUNTS.append(mnt)
    unmount_all()
    say("mount -t tmpfs permitted (probe mounted and unmounted)")


def mount(size_pages):
    mnt = os.path.join(TMP, "disk")
    p = _mount(size_pages, mnt)
    check(p.returncode == 0, f"mount -t tmpfs failed after the probe worked: {p.stderr.strip()}")
    MOUNTS.append(mnt)
    say(f"mounted a {size_pages * PAGE // 1024}k tmpfs on {mnt}")
    return mnt


MOUNTS = []


def unmount_all():
    for mnt in reversed(MOUNTS):
        for attempt in range(20):
            if subprocess.run(["umount", mnt], capture_output=True).returncode == 0:
                break
            time.sleep(0.25)
        else:
            subprocess.run(["umount", "-l", mnt], capture_output=True)
            say(f"warning: {mnt} was busy; lazily unmounted")
    MOUNTS.clear()


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(mnt, leave):
    """Writes a filler file leaving `leave` bytes free (real pages, not a hole)."""
    n = free_bytes(mnt) - leave
    check(n >= 0, f"the tmpfs has only {free_bytes(mnt)} bytes free, {leave} wanted")
    with open(os.path.join(mnt, "filler"), "wb") as f:
        block = b"\xa5" * (1 << 16)
        while n > 0:
            n -= f.write(block[:min(n, len(block))])
    say(f"filler written: {free_bytes(mnt)} bytes free on the tmpfs")


def reference():
    """An uninterrupted run (roomy folder) and the sizes the tmpfs is cut to:
    checkpoint C, metrics after the first rewrite S1, and S0, the metrics file
    before any rewrite (a run stopped by BNMPI_FAULT at step 1)."""
    ref = os.path.join(TMP, "ref")
    os.mkdir(ref)
    run_ok("reference", [*TRAIN, "--epochs", str(EPOCHS), "--checkpoint", f"{ref}/ck.h5", "--checkpoint-every", "1",
                         "--metrics", f"{ref}/m.h5"])
    rc, job = run("s0", [*TRAIN, "--epochs", str(EPOCHS), "--metrics", f"{ref}/m0.h5"],
                  env={"BNMPI_FAULT_RANK": "0", "BNMPI_FAULT_STEP": "1"})
    check(rc == 1 and job.wait_gone(10) is not None, f"sizing run (BNMPI_FAULT): exit {rc}\n{job.log_tail()}")
    sizes = {k: os.path.getsize(f"{ref}/{f}") for k, f in (("C", "ck.h5"), ("S1", "m.h5"), ("S0", "m0.h5"))}
    say(f"reference run: exit 0; checkpoint {sizes['C']} B, metrics {sizes['S0']} B at the start and "
        f"{sizes['S1']} B after {EPOCHS} epochs")
    return ref, sizes


def expect_disk_full(rc, job, names):
    """The run that hit the full disk: exit 1, one `bnmpi:` line naming one of
    `names` and saying no space, every process gone."""
    err = job.stderr()
    check(rc is not None, f"the run hung (killed after 60 s)\n{job.log_tail()}")
    lines = [l for l in err.splitlines() if l.startswith("bnmpi:")]
    say(f"run on the full disk: exit {rc}; stderr bnmpi lines: {lines}")
    check(rc == 1, f"exit {rc}, expected 1{' (139: a segfault)' if rc in (139, -11) else ''}\n{job.log_tail()}")
    check(len(lines) == 1, f"{len(lines)} `bnmpi:` lines on stderr, expected 1\n{job.log_tail()}")
    check(any(n in lines[0] for n in names), f"the message does not name {' or '.join(names)}: {lines[0]}")
    check(NOSPACE.search(lines[0]), f"the message does not say the disk is full: {lines[0]}")
    gone = job.wait_gone(5)
    check(gone is not None, f"processes left 5 s after mpiexec's exit: {job.describe(job.members())}")
    say(f"one line naming the file and the full disk; every process gone {gone:.2f} s after mpiexec's exit")


def resume_copy(ck, metrics, ref, what):
    """Resumes copies of ck and metrics in a roomy folder; rows must equal the reference's."""
    d = tempfile.mkdtemp(prefix="resume-", dir=TMP)
    shutil.copy(ck, f"{d}/ck.h5")
    shutil.copy(metrics, f"{d}/m.h5")
    resume_and_compare(f"{d}/ck.h5", f"{d}/m.h5", ref, what)


def resume_and_compare(ck, metrics, ref, what, where="copies in a roomy folder"):
    pos = checkpoint_position(ck)
    run_ok(f"resume-{what}", ["--resume", ck, "--checkpoint", ck, "--metrics", metrics, "--quiet",
                              "--epochs", str(EPOCHS)])
    epochs, steps = metrics_tables(metrics)
    ref_epochs, ref_steps = metrics_tables(f"{ref}/m.h5")
    check(len(epochs) == EPOCHS and len(steps) == EPOCHS * SPE,
          f"resumed run: {len(epochs)} epochs and {len(steps)} steps, expected {EPOCHS} and {EPOCHS * SPE}")
    check(steps.tobytes() == ref_steps.tobytes(), "resumed run: step rows differ from the uninterrupted run's")
    for col in epochs.dtype.names:
        if col not in WALL:
            check(epochs[col].tobytes() == ref_epochs[col].tobytes(),
                  f"resumed run: epoch column {col} differs from the uninterrupted run's")
    say(f"resume from epoch {pos[0]} step {pos[1]} ({where}): exit 0; "
        f"{EPOCHS} epochs, {len(steps)} steps, equal to the uninterrupted run's")


def leftovers(mnt, keep):
    extra = sorted(set(os.listdir(mnt)) - set(keep))
    if extra:
        say(f"note: left on the tmpfs besides {sorted(keep)}: {extra}")


def case_checkpoint():
    ref, sz = reference()
    c, s0, s1 = pages(sz["C"]), pages(sz["S0"]), pages(sz["S1"])
    # every-step checkpoints need 2C + S0 (old, new, metrics); the first metrics
    # rewrite C + S0 + S1; the epoch-end checkpoint 2C + S1: give half-way between
    size = 2 * c + (s0 + s1) // 2
    check(2 * c + s0 < size < 2 * c + s1, f"cannot size the tmpfs from the file sizes {sz}")
    mnt = mount(size)
    ck, m = f"{mnt}/ck.h5", f"{mnt}/m.h5"
    rc, job = run("full", [*TRAIN, "--epochs", str(EPOCHS), "--checkpoint", ck, "--checkpoint-every", "1",
                           "--metrics", m])
    expect_disk_full(rc, job, [ck])
    check(os.path.exists(ck), "no checkpoint was left on the tmpfs")
    pos = checkpoint_position(ck)
    check(pos[2] >= 1, f"the checkpoint left is at {pos}, none written before the disk filled")
    epochs, steps = metrics_tables(m)
    say(f"previous checkpoint loads: epoch {pos[0]} step {pos[1]} (global {pos[2]}); metrics file opens "
        f"(h5py, h5dump -H) with {len(epochs)} epochs, {len(steps)} steps")
    check(pos[2] >= SPE - 1 and len(epochs) >= 1,
          f"the disk filled earlier than planned (checkpoint {pos}, {len(epochs)} epochs): the test's sizes are off")
    leftovers(mnt, ["ck.h5", "m.h5"])
    resume_copy(ck, m, ref, "checkpoint")


def case_metrics():
    ref, sz = reference()
    s0, s1 = pages(sz["S0"]), pages(sz["S1"])
    # the first rewrite needs S0 + S1 (old and new), the second about 2 S1
    room = s0 + s1 + (s1 - s0) // 2
    check(s0 + s1 < room < 2 * s1, f"cannot size the free space from the file sizes {sz}")
    mnt = mount(room + 64)
    fill(mnt, room * PAGE)
    roomy = tempfile.mkdtemp(prefix="ck-", dir=TMP)
    ck, m = f"{roomy}/ck.h5", f"{mnt}/m.h5"
    rc, job = run("full", [*TRAIN, "--epochs", str(EPOCHS), "--checkpoint", ck, "--checkpoint-every", "1",
                           "--metrics", m])
    expect_disk_full(rc, job, [m])
    epochs, steps = metrics_tables(m)
    check(len(epochs) >= 1, "the metrics file holds no epoch: the first rewrite failed too, the test's sizes are off")
    pos = checkpoint_position(ck)
    say(f"previous metrics file opens (h5py, h5dump -H): {len(epochs)} epochs, {len(steps)} steps; "
        f"checkpoint (roomy folder) loads at epoch {pos[0]} step {pos[1]}")
    leftovers(mnt, ["m.h5", "filler"])
    resume_copy(ck, m, ref, "metrics")


def case_resume():
    ref, sz = reference()
    mnt = mount(pages(sz["C"]) * 2 + pages(sz["S1"]) * 2 + 64)
    ck, m = f"{mnt}/ck.h5", f"{mnt}/m.h5"
    run_ok("first-epoch", [*TRAIN, "--epochs", "1", "--checkpoint", ck, "--metrics", m])
    pos = checkpoint_position(ck)
    metrics_tables(m)
    say(f"checkpoint and metrics made on the tmpfs (epoch 1 done, checkpoint at epoch {pos[0]} step {pos[1]})")
    before = {p: sha256(p) for p in (ck, m)}
    fill(mnt, PAGE)
    rc, job = run("full", ["--resume", ck, "--epochs", str(EPOCHS), "--checkpoint-every", "1", "--quiet"])
    expect_disk_full(rc, job, [ck, m])
    after = {p: sha256(p) for p in (ck, m)}
    for p in before:
        check(before[p] == after[p], f"{p} changed (sha256 {before[p][:16]}... -> {after[p][:16]}...)")
    say("checkpoint and metrics file unchanged byte for byte (sha256)")
    leftovers(mnt, ["ck.h5", "m.h5", "filler"])
    os.remove(f"{mnt}/filler")
    resume_and_compare(ck, m, ref, "after-filler-removed", "on the tmpfs, filler removed")


def main():
    global ARGS, TMP
    cases = {k[5:]: v for k, v in globals().items() if k.startswith("case_")}
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    p.add_argument("case", choices=sorted(cases))
    p.add_argument("--bnmpi", required=True)
    p.add_argument("--mpiexec", required=True)
    p.add_argument("--data", required=True)
    ARGS = p.parse_args()
    install_cleanup()
    TMP = tempfile.mkdtemp(prefix=f"bnmpi-fulldisk-{ARGS.case}-")
    t0 = time.monotonic()
    ok = False
    try:
        probe_mount()
        cases[ARGS.case]()
        ok = True
    except Failure as e:
        say(f"FAIL: {e}")
    finally:
        cleanup()
        unmount_all()
        shutil.rmtree(TMP, ignore_errors=True)
    say(f"full disk ({ARGS.case}): {'passed' if ok else 'FAILED'} in {time.monotonic() - t0:.0f} s")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
