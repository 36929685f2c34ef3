"""Shared by the reliability tests (kill_loop.py, full_disk.py).

- Job: one `mpiexec ... bnmpi` started in its own session, with every process
  of it (mpiexec, the ranks, anything they start) found in /proc by session id
  and remembered by (pid, start time), so "is every rank gone?" is answered for
  this job only, even after the ranks were orphaned by a SIGKILL to mpiexec and
  while other tests run bnmpi on the same machine. Ranks are told apart from
  the rest by /proc/PID/exe being the bnmpi binary.
- cleanup(): SIGKILL, one PID at a time, to whatever is left of every Job;
  run at exit and on SIGTERM/SIGINT/SIGHUP (a ctest timeout), before the
  scripts' own finally blocks unmount and remove their folders.
- checkpoint and metrics readers that say what is wrong in one line.
"""
import atexit
import hashlib
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
from mpi_procs import children  # noqa: E402

# Open MPI refuses root without these; they belong to the test harness only.
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1")


class Failure(Exception):
    """A requirement the program does not meet (or a broken test premise)."""


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def say(msg):
    print(msg, flush=True)


def _stat(pid):
    """(state, ppid, session, start time) of pid, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rindex(")") + 2:].split()
    return rest[0], int(rest[1]), int(rest[3]), int(rest[19])


def _exe(pid):
    try:
        return os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
    except OSError:
        return None


def _comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


class Job:
    """mpiexec -np NP BNMPI ARGS..., in a session of its own, output to files."""
    running = []

    def __init__(self, mpiexec, np_, bnmpi, args, logdir, name, env=None):
        self.bnmpi = os.path.realpath(bnmpi)
        self.cmd = [mpiexec, "--oversubscribe", "-np", str(np_), bnmpi, *args]
        self.name = name
        self.out_path = os.path.join(logdir, name + ".stdout")
        self.err_path = os.path.join(logdir, name + ".stderr")
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         env=dict(ENV, **(env or {})), start_new_session=True)
        self.t0 = time.monotonic()
        self.sid = self.proc.pid
        self.known = {}  # pid -> start time of every process seen in this job
        Job.running.append(self)

    def members(self):
        """Live (not zombie) processes of this job: those in its session, the
        children of its mpiexec while that lives, and any seen before."""
        mpiexec_alive = self.proc.poll() is None
        if mpiexec_alive:
            for pid in children(self.proc.pid):
                st = _stat(pid)
                if st:
                    self.known.setdefault(pid, st[3])
        live = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            st = _stat(pid)
            if st is None or st[0] in "ZX":
                continue
            if st[2] == self.sid or self.known.get(pid) == st[3]:
                self.known.setdefault(pid, st[3])
                live.append(pid)
        return live

    def is_rank(self, pid):
        return pid != self.proc.pid and (_exe(pid) == self.bnmpi or _comm(pid) == os.path.basename(self.bnmpi)[:15])

    def ranks(self):
        return [p for p in self.members() if self.is_rank(p)]

    def describe(self, pids):
        return ", ".join(f"{p} ({_comm(p)}, ppid {(_stat(p) or (0, '?'))[1]})" for p in pids) or "none"

    def wait_ranks(self, n, timeout):
        """Waits until n ranks run; returns their PIDs ([] if mpiexec ended or time ran out)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.ranks()
            if len(r) >= n:
                return r
            if self.proc.poll() is not None:
                return []
            time.sleep(0.02)
        return []

    def wait_gone(self, timeout):
        """Seconds until mpiexec has exited and no process of the job lives, or None."""
        t0 = time.monotonic()
        while True:
            self.proc.poll()
            if self.proc.returncode is not None and not self.members():
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                return None
            time.sleep(0.02)

    def finish(self, timeout):
        """Waits for mpiexec up to timeout s; returns its exit status, or None
        after a hang (the job is then killed)."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_all()
            return None

    def kill_all(self):
        """SIGKILL to every live process of the job, one PID at a time."""
        for _ in range(50):
            pids = self.members()
            if self.proc.poll() is None and self.proc.pid not in pids:
                pids.append(self.proc.pid)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def stderr(self):
        with open(self.err_path, errors="replace") as f:
            return f.read()

    def stdout(self):
        with open(self.out_path, errors="replace") as f:
            return f.read()

    def log_tail(self, n=2000):
        return (f"command: {' '.join(self.cmd)}\n--- stdout (tail) ---\n{self.stdout()[-n:]}"
                f"\n--- stderr (tail) ---\n{self.stderr()[-n:]}")


def cleanup():
    """Kills what is left of every job (on success nothing is), saying so."""
    for job in Job.running:
        left = job.members()
        if job.proc.poll() is None or left:
            say(f"cleanup: SIGKILL to what is left of {job.name}: {job.describe(left)}")
            job.kill_all()
    Job.running.clear()


def _on_signal(signum, frame):
    raise SystemExit(128 + signum)


def install_cleanup():
    atexit.register(cleanup)
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, _on_signal)


def _attr_str(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def checkpoint_position(path):
    """[epoch, step, global step] of a checkpoint that opens, says it is one and
    holds finite parameters; Failure otherwise."""
    try:
        with h5py.File(path, "r") as f:
            check(_attr_str(f.attrs.get("format", "")) == "bnmpi-checkpoint",
                  f"{path}: format attribute is {f.attrs.get('format')!r}")
            pos = [int(x) for x in f["state/position"][0]]
            w = f["state/params/dense0.W"][:]
            check(np.all(np.isfinite(w)), f"{path}: non-finite parameters")
            return pos
    except (OSError, KeyError) as e:
        raise Failure(f"{path}: checkpoint does not load: {e}")


def metrics_tables(path):
    """(epochs, steps) arrays of a metrics file that h5dump -H and h5py open,
    whose epoch and step numbers run 1, 2, ... without gap or repeat."""
    dump = subprocess.run(["h5dump", "-H", path], capture_output=True, text=True, timeout=60)
    check(dump.returncode == 0, f"{path}: h5dump -H exits {dump.returncode}: {dump.stderr.strip()[:300]}")
    try:
        with h5py.File(path, "r") as f:
            check(_attr_str(f.attrs.get("format", "")) == "bnmpi-metrics",
                  f"{path}: format attribute is {f.attrs.get('format')!r}")
            epochs, steps = f["epochs"][:], f["steps"][:]
    except (OSError, KeyError) as e:
        raise Failure(f"{path}: metrics file does not load in h5py: {e}")
    check(list(epochs["epoch"]) == list(range(1, len(epochs) + 1)), f"{path}: epochs {list(epochs['epoch'])}")
    check(list(steps["step"]) == list(range(1, len(steps) + 1)),
          f"{path}: step numbers are not 1..{len(steps)} (duplicated or missing rows)")
    return epochs, steps


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
