#!/usr/bin/python3
"""Peak memory of one MPI rank: rss_wrap.py OUTDIR CMD [ARGS...]

Runs CMD as a child (so `mpirun -np N rss_wrap.py DIR bnmpi ...` wraps every
rank) and writes OUTDIR/rss.<rank> (rank from OMPI_COMM_WORLD_RANK or PMI_RANK)
holding three numbers in KiB:
  maxrss    the child's peak resident set size (ru_maxrss from os.wait4: the
            kernel's VmHWM at exit). Shared pages count in full in every
            process that touches them.
  peak_pss  the largest proportional set size seen while sampling
            /proc/<pid>/smaps_rollup (every 5 ms for the first 2 s, then every
            50 ms): shared pages are divided among the processes sharing them,
            so summing it over the ranks gives the node's footprint. 0 when the
            child ended before the first sample.
  peak_rss  the largest sampled RSS (for comparison with maxrss).
Exits with the child's status. Needs only Python (GNU time is not on every CI
machine).
"""
import os
import sys
import time


def sample(pid):
    """(Pss, Rss) in KiB of pid, or None."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            vals = {}
            for line in f:
                parts = line.split()
                if parts and parts[0] in ("Pss:", "Rss:"):
                    vals[parts[0]] = int(parts[1])
        return vals.get("Pss:", 0), vals.get("Rss:", 0)
    except (OSError, ValueError):
        return None


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out_dir, cmd = sys.argv[1], sys.argv[2:]
    rank = os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("PMI_RANK", "0"))
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(cmd[0], cmd)
        finally:
            os._exit(127)
    t0 = time.monotonic()
    peak_pss = peak_rss = 0
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        s = sample(pid)
        if s:
            peak_pss, peak_rss = max(peak_pss, s[0]), max(peak_rss, s[1])
        time.sleep(0.005 if time.monotonic() - t0 < 2 else 0.05)
    with open(os.path.join(out_dir, f"rss.{rank}"), "w") as f:
        f.write(f"{usage.ru_maxrss} {peak_pss} {peak_rss}\n")
    code = os.waitstatus_to_exitcode(status)
    sys.exit(code if code >= 0 else 128 - code)  # killed by signal N: 128 + N, as shells report it


if __name__ == "__main__":
    main()
