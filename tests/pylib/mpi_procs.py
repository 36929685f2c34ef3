"""Process helpers shared by the Python tests (tests/e2e, tests/analysis)."""
import os
import signal
import subprocess


def children(pid):
    """PIDs whose parent is pid (read from /proc)."""
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry))
    return kids


def kill_ranks_then_mpirun(proc):
    """SIGKILL to the ranks mpirun/mpiexec started (each has its own process
    group, so killing mpirun's group would not reach them), then, if mpirun
    has not ended by itself within 20 s, to mpirun's process group."""
    if proc.poll() is not None:
        return
    for pid in children(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)
