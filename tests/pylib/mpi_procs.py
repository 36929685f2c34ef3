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


def run_with_timeout(cmd, env, cwd, timeout):
    """subprocess.run in a session of its own, but on timeout every rank is
    killed (then mpiexec) and the run counts as failed (returncode None)."""
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        kill_ranks_then_mpirun(proc)
        out, err = proc.communicate()
        code = None
        err += f"\n(timed out after {timeout:.0f} s; ranks killed)"
    return subprocess.CompletedProcess(cmd, code, out, err)
