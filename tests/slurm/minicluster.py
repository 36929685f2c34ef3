#!/usr/bin/python3
"""A throw-away single-node SLURM cluster on localhost, for tests.

munged, slurmctld and slurmd run by hand (no systemd), as root, in the
foreground of processes this module starts, with every state, spool, log and
TmpFS folder under one temporary folder and free TCP ports picked at start, so
two clusters (two ctest jobs) do not meet. stop() ends every process it started
by PID, and the slurmstepd processes the jobs left behind (they outlive slurmd),
found by their open files inside the folder.

    with MiniCluster(tmpdir) as c:          # starts, waits for the node to be idle
        c.run(["sbatch", ...])              # SLURM_CONF is set in c.env
    # all daemons stopped here

Command line, for poking at it by hand:
    minicluster.py start DIR    # prints "export SLURM_CONF=DIR/slurm.conf"
    minicluster.py stop DIR
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

DAEMONS = ("munged", "slurmctld", "slurmd")


class ClusterError(RuntimeError):
    pass


def missing_programs():
    """The daemons and client commands that are not installed."""
    need = {"munged": "/usr/sbin/munged", "slurmctld": "/usr/sbin/slurmctld",
            "slurmd": "/usr/sbin/slurmd", "sbatch": "sbatch", "scontrol": "scontrol",
            "srun": "srun", "squeue": "squeue", "scancel": "scancel", "sinfo": "sinfo"}
    return [n for n, p in need.items() if not (shutil.which(p) or os.access(p, os.X_OK))]


def free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _which(name):
    for d in ("/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    p = shutil.which(name)
    if not p:
        raise ClusterError(f"{name} is not installed")
    return p


class MiniCluster:
    def __init__(self, root, cpus=None, log=print):
        self.root = os.path.abspath(root)
        self.cpus = cpus or os.cpu_count() or 1
        self.log = log
        self.conf = os.path.join(self.root, "slurm.conf")
        self.env = dict(os.environ, SLURM_CONF=self.conf)
        # sbatch, srun and friends read these; the caller's would leak in.
        for k in list(self.env):
            if k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_")) and k != "SLURM_CONF":
                del self.env[k]
        self.procs = {}

    # --- files -----------------------------------------------------------
    def _path(self, *parts):
        return os.path.join(self.root, *parts)

    def _write_files(self):
        for d in ("munge", "state", "spool", "log", "tmp"):
            os.makedirs(self._path(d), exist_ok=True)
        # munged refuses a socket folder of mode 0700 and a key readable by others.
        os.chmod(self.root, 0o755)
        os.chmod(self._path("munge"), 0o755)
        key = self._path("munge", "munge.key")
        with open(key, "wb") as f:
            f.write(os.urandom(128))
        os.chmod(key, 0o600)
        ctld_port, d_port = free_ports(2)
        mem = 1024
        try:
            with open("/proc/meminfo") as f:
                mem = int(f.readline().split()[1]) // 1024 // 2
        except (OSError, ValueError, IndexError):
            pass
        conf = f"""\
# Written by tests/slurm/minicluster.py: one node, localhost, everything under {self.root}
ClusterName=bnmpitest
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: how long a requeued job waits before it may start again
# (SLURM's default is 120 s; starting it sooner fails with "credential revoked").
AuthInfo=socket={self._path("munge", "munge.socket.2")},cred_expire=10
StateSaveLocation={self._path("state")}
SlurmdSpoolDir={self._path("spool")}
SlurmctldPidFile={self._path("slurmctld.pid")}
SlurmdPidFile={self._path("slurmd.pid")}
SlurmctldLogFile={self._path("log", "slurmctld.log")}
SlurmdLogFile={self._path("log", "slurmd.log")}
TmpFS={self._path("tmp")}
# linuxproc + task/none: with cgroup tracking (no cgroup v2 delegation here) every
# job "completes" at once with exit 0 and no output.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/builtin
# Test pending jobs every 2 s, not every 60 s (a requeued job becomes eligible
# while nothing else happens).
SchedulerParameters=sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
# Finished jobs leave the queue after 5 s: sbatch --wait then polls every 2 s.
MinJobAge=5
# Impossible requests are refused at submission instead of pending forever.
EnforcePartLimits=ALL
# The node's real CPU count may differ from the one configured here.
SlurmdParameters=config_overrides
KillWait=5
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
NodeName=localhost CPUs={self.cpus} RealMemory={mem} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
"""
        with open(self.conf, "w") as f:
            f.write(conf)

    # --- processes -------------------------------------------------------
    def _spawn(self, name, argv):
        out = open(self._path("log", name + ".stdout"), "ab")
        # Daemons get /dev/null and their own files, never the caller's pipes
        # (ctest would wait for a pipe a daemon keeps open).
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             env=self.env, start_new_session=True, close_fds=True)
        out.close()
        self.procs[name] = p
        self._save_pids()

    def _save_pids(self):
        with open(self._path("pids.json"), "w") as f:
            json.dump({n: p.pid for n, p in self.procs.items()}, f)

    def run(self, argv, check=True, timeout=60, **kw):
        """Run a client command with this cluster's SLURM_CONF; returns CompletedProcess."""
        r = subprocess.run(argv, env=kw.pop("env", self.env), stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=timeout, **kw)
        if check and r.returncode != 0:
            raise ClusterError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()}")
        return r

    def _wait_for(self, what, test, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for n, p in self.procs.items():
                if p.poll() is not None:
                    raise ClusterError(f"{n} exited with {p.returncode} while waiting for {what}; "
                                       f"see {self._path('log')}\n{self.logs_tail()}")
            try:
                if test():
                    return
            except (subprocess.TimeoutExpired, OSError):
                pass
            time.sleep(0.2)
        raise ClusterError(f"timed out after {timeout} s waiting for {what}\n{self.logs_tail()}")

    def start(self, timeout=30):
        self._write_files()
        sock = self._path("munge", "munge.socket.2")
        self._spawn("munged", [_which("munged"), "--foreground", "--force",
                               f"--socket={sock}", f"--key-file={self._path('munge', 'munge.key')}",
                               f"--pid-file={self._path('munge', 'munged.pid')}",
                               f"--log-file={self._path('log', 'munged.log')}",
                               f"--seed-file={self._path('munge', 'munged.seed')}"])
        self._wait_for("the munge socket", lambda: os.path.exists(sock), timeout)
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", self.conf])
        self._wait_for("slurmctld", lambda: self.run(["scontrol", "ping"], check=False,
                                                     timeout=5).stdout.count("UP") > 0, timeout)
        self._spawn("slurmd", [_which("slurmd"), "-D", "-f", self.conf])
        self._wait_for("node localhost to be idle", self._node_idle, timeout)
        return self

    def _node_idle(self):
        r = self.run(["sinfo", "-h", "-n", "localhost", "-o", "%t"], check=False, timeout=5)
        return r.returncode == 0 and r.stdout.strip() in ("idle", "mix", "alloc")

    def stepd_pids(self):
        """slurmstepd processes of this cluster: those with a file open under root."""
        pids = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/comm") as f:
                    if f.read().strip() != "slurmstepd":
                        continue
                links = [os.readlink(f"/proc/{d}/fd/{fd}") for fd in os.listdir(f"/proc/{d}/fd")]
                links.append(os.readlink(f"/proc/{d}/cwd"))
            except OSError:
                continue
            if any(l.startswith(self.root + "/") for l in links):
                pids.append(int(d))
        return pids

    def stop(self):
        """Cancel the jobs left, then end every daemon and slurmstepd by PID."""
        if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
            try:
                self.run(["scancel", "--full", "--user", str(os.getuid())], check=False, timeout=10)
                end = time.monotonic() + 10
                while time.monotonic() < end:
                    q = self.run(["squeue", "-h", "-t", "running,completing"], check=False, timeout=5)
                    if q.returncode != 0 or not q.stdout.strip():
                        break
                    time.sleep(0.3)
            except (subprocess.TimeoutExpired, OSError):
                pass
        stepds = self.stepd_pids()
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.get(name)
            if p and p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
        stepds = sorted(set(stepds) | set(self.stepd_pids()))
        for pid in stepds:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.procs_left = [pid for pid in stepds if os.path.exists(f"/proc/{pid}")]
        return stepds

    def logs_tail(self, n=15):
        out = []
        for name in ("slurmctld.log", "slurmd.log", "munged.log"):
            p = self._path("log", name)
            if os.path.exists(p):
                with open(p, errors="replace") as f:
                    lines = f.readlines()[-n:]
                out.append(f"--- {p} (last {len(lines)} lines)\n" + "".join(lines))
        return "\n".join(out)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()


def _stop_from_files(root):
    """Stop a cluster started by `minicluster.py start` in another process."""
    c = MiniCluster(root)
    with open(os.path.join(c.root, "pids.json")) as f:
        pids = json.load(f)
    subprocess.run(["scancel", "--full", "--user", str(os.getuid())], env=c.env,
                   stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
    time.sleep(1)
    stepds = c.stepd_pids()
    for name in ("slurmd", "slurmctld", "munged"):
        if name in pids:
            try:
                os.kill(pids[name], signal.SIGTERM)
            except ProcessLookupError:
                pass
    time.sleep(2)
    for pid in stepds + c.stepd_pids() + list(pids.values()):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop"):
        sys.exit(__doc__)
    if sys.argv[1] == "start":
        c = MiniCluster(sys.argv[2])
        try:
            c.start()
        except BaseException:
            c.stop()
            raise
        # Leave the daemons running; they are in their own sessions.
        print(f"export SLURM_CONF={c.conf}")
    else:
        _stop_from_files(sys.argv[2])
