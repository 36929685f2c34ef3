#!/usr/bin/python3
"""bench.py: bnmpi's performance benchmark in one command (see docs/benchmark.md).

For the MLP 784-256-10 with BN on MNIST it measures, in one run:
  1. bnmpi's training-loop throughput (samples/s, from its own HDF5 metrics:
     median over the epochs after the first) at np 1 and 2, global batches
     32, 64, 128, 512, --bn local and --bn sync;
  2. PyTorch 1.13 (Debian's python3-torch) on the same model, optimiser and
     data: single-process thread variants (the fastest is "tuned") and DDP over
     gloo with 2 processes x 1 thread (tools/bench/torch_bench.py);
  3. the hardware bound of the step: the step's GEMMs with cblas_sgemm at the
     per-rank batch and the gradient MPI_Allreduce (tools/bench/bound.c, built
     as bnmpi-bound), and bnmpi's throughput as a percentage of it;
  4. overheads: sync vs local BN time per epoch, from separate runs and from
     one np=2 run in which BN alternates between the two every K steps
     (BNMPI_BENCH_BN_BLOCKS; the machine's run-to-run spread is larger than
     sync's cost), communication share, and
     np=2 sync with --reduce mpi (one MPI_Allreduce; bnmpi's default sums in
     node-shared memory) and with --reduce mpi --overlap K (--overlap);
  5. peak memory per rank and per node at np 1, 2 and 4: RSS, PSS, and the
     node memory for data (MNIST run minus the same run on a small subset)
     (tools/bench/rss_wrap.py around each rank);
  6. the environment (OpenBLAS core, threads, OPENBLAS_CORETYPE).
Configurations are interleaved (round after round, batch by batch, bnmpi and
torch alternating) and figures are medians, because the machine is shared.
Each run also records how many cores other processes kept busy meanwhile
(others_cpu); medians use the quiet runs when a configuration has any
(--quiet-cpu), and a "best single measurement" table is printed as well.
The whole set is measured once per OPENBLAS_CORETYPE setting (--coretypes:
as the environment has it, and unset; one pass when these are the same).

Usage (from the source tree, after cmake --build build):
  /usr/bin/python3 tools/bench/bench.py                  # full run: ~10 min per pass on an idle 2-core VM
  /usr/bin/python3 tools/bench/bench.py --quick          # smoke: one batch, few steps, < 60 s
  /usr/bin/python3 tools/bench/bench.py --skip-torch     # bnmpi, the bound and memory only
  /usr/bin/python3 tools/bench/bench.py --out DIR --coretypes env,unset,Haswell --repeats 3
  /usr/bin/python3 tools/bench/bench.py --reanalyse DIR --quiet-cpu -1   # redo the tables, measure nothing
Options: --help. Output: tables on stdout (Markdown) and, in --out (default
bench-results/): report.md, throughput.csv, ratios.csv, bound.csv,
bound_raw.csv, overhead.csv, memory.csv, targets.csv, env.csv, runs.csv
(every single measurement), blocks.csv (every timed block of the interleaved
runs) and state.json (for --reanalyse). Exit status 0
when every run succeeded, 1 otherwise. PyTorch missing is not an error: the
run says so and the torch columns read n/a.

Needs /usr/bin/python3 with python3-h5py and python3-numpy (python3-torch for
part 2), Open MPI's mpirun, and the build tree's bnmpi and bnmpi-bound.
Open MPI's run-as-root variables are set for the runs this script launches only.
"""
import argparse
import csv
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
N_TRAIN = 48000
MEM_SUBSET = (5000, 1000)  # training and test images of the memory runs' small dataset
N_PARAMS = 204042  # 784*256 + 256 + 2*256 (BN gamma, beta) + 256*10 + 10
ROOT_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}

# Single-process PyTorch variants: name -> (torch.set_num_threads, env overrides
# (None = unset), Adam foreach). Debian's torch multiplies matrices in
# OpenBLAS (openblas-pthread), whose thread pool is separate from torch's
# OpenMP pool; two busy-waiting pools on 2 cores fight.
TORCH_VARIANTS = {
    "t1-ob2": (1, {"OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": None}, 1),
    "t1-ob1": (1, {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}, 1),
    "t2-ob1": (2, {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": None}, 1),
    "t2-ob2": (2, {"OPENBLAS_NUM_THREADS": None, "OMP_NUM_THREADS": None}, 1),
    "omp1-default": (0, {"OPENBLAS_NUM_THREADS": None, "OMP_NUM_THREADS": "1"}, 1),
    "t1-ob2-noforeach": (1, {"OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": None}, 0),
}
TORCH_VARIANT_HELP = {
    "t1-ob2": "torch.set_num_threads(1), OPENBLAS_NUM_THREADS=2",
    "t1-ob1": "torch.set_num_threads(1), OPENBLAS_NUM_THREADS=1, OMP_NUM_THREADS=1",
    "t2-ob1": "torch.set_num_threads(2), OPENBLAS_NUM_THREADS=1",
    "t2-ob2": "torch.set_num_threads(2), OpenBLAS default (2 threads): two pools",
    "omp1-default": "OMP_NUM_THREADS=1 only, torch and OpenBLAS defaults otherwise",
    "t1-ob2-noforeach": "as t1-ob2 but Adam(foreach=False), torch 1.13's CPU default",
}
# DDP: 2 processes x (1 torch thread, 1 OpenBLAS thread), Adam foreach.
DDP_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}

FULL = dict(batches=[32, 64, 128, 512], nps=[1, 2], modes=["local", "sync"], epochs=3, repeats=2,
            train_limit=0, torch_steps=200, torch_reps=2,
            torch_variants=["t1-ob2", "t1-ob1", "t2-ob1", "t2-ob2", "t1-ob2-noforeach"],
            bound_time=0.5, mem_nps=[1, 2, 4], coretypes=["env", "unset"], wait_idle=10.0, overlap=[0, 4])
QUICK = dict(batches=[64], nps=[1, 2], modes=["local", "sync"], epochs=2, repeats=1, train_limit=6400,
             torch_steps=40, torch_reps=1, torch_variants=["t1-ob2"], bound_time=0.05, mem_nps=[1, 2, 4],
             coretypes=["env"], wait_idle=0.0, overlap=[0])

FAILURES = []
# what --reanalyse needs to redo the tables
SAVED_ARGS = ["batches", "nps", "modes", "epochs", "repeats", "train_limit", "torch_steps", "quick", "overlap"]


# --- small helpers ------------------------------------------------------------

def say(msg):
    print(msg, file=sys.stderr, flush=True)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def ints(text):
    return [int(x) for x in text.split(",") if x.strip()]


def words(text):
    return [x.strip() for x in text.split(",") if x.strip()]


def fmt(x, digits=0, pct=False, ratio=False):
    if x is None:
        return "n/a"
    if pct:
        return f"{100 * x:.1f}%"
    if ratio:
        return f"{x:.2f}x"
    return f"{x:,.{digits}f}"


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except OSError:
        return None


def cpu_busy(interval=0.5):
    """Share of all CPUs busy (any process) over interval seconds, from /proc/stat."""
    def read():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]  # total, idle + iowait
    try:
        t0, i0 = read()
        time.sleep(interval)
        t1, i1 = read()
    except (OSError, ValueError, IndexError):
        return None
    return 1.0 - (i1 - i0) / (t1 - t0) if t1 > t0 else None


def busy_seconds():
    """CPU seconds all processes have spent busy since boot (/proc/stat)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


WAIT_LEFT = [0.0]  # seconds of waiting for idle CPUs left in this run (--wait-budget)


def wait_idle(limit):
    """Waits (up to limit seconds, within what is left of --wait-budget) until the CPUs are
    under 10% busy; returns the last busy share seen."""
    t0 = time.monotonic()
    deadline = t0 + min(limit, max(0.0, WAIT_LEFT[0]))
    busy = cpu_busy(0.3)
    while busy is not None and busy > 0.10 and time.monotonic() < deadline:
        busy = cpu_busy(0.5)
    WAIT_LEFT[0] -= time.monotonic() - t0
    return busy


def child_env(overrides):
    """os.environ plus overrides; a value None removes the variable."""
    env = dict(os.environ, **ROOT_ENV)
    for k, v in overrides.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


def interleaved_ratios(blocks):
    """Sync over local step time from BNMPI_BENCH_BN_BLOCKS rows: each sync block over
    the mean of the local blocks just before and after it (same run, same epoch)."""
    at = {(b["round"], b["epoch"], b["first_step"]): b for b in blocks}
    out = []
    for b in blocks:
        if b["bn"] != "sync":
            continue
        K = b["block_steps"]
        prev, nxt = (at.get((b["round"], b["epoch"], b["first_step"] + d)) for d in (-K, K))
        if prev and nxt and prev["bn"] == nxt["bn"] == "local":
            out.append(b["seconds"] / ((prev["seconds"] + nxt["seconds"]) / 2))
    return out


def median_ci(xs, reps=2000, seed=0):
    """The median and a 95% bootstrap interval for it."""
    import random
    rnd = random.Random(seed)
    meds = sorted(statistics.median(rnd.choices(xs, k=len(xs))) for _ in range(reps))
    return statistics.median(xs), meds[int(0.025 * reps)], meds[int(0.975 * reps) - 1]


def md_table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            w.writerow(["" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for v in r])


class Runner:
    """Launches mpirun, bnmpi, bnmpi-bound and torch_bench.py; collects raw rows."""

    def __init__(self, args, tmp):
        self.a = args
        self.tmp = tmp
        self.ncpu = os.cpu_count() or 1
        self.raw = []  # dicts, one per measurement (runs.csv)
        self.blocks = []  # dicts, one per timed block of the interleaved sync/local runs (blocks.csv)
        self.counter = 0

    def mpirun(self, np_, extra=()):
        cmd = [self.a.mpirun]
        if np_ > self.ncpu:
            cmd.append("--oversubscribe")
        return cmd + list(extra) + ["-np", str(np_)]

    def run(self, cmd, env, timeout, what):
        """Runs cmd; None on failure. Sets self.others: the CPUs (in cores) that other
        processes kept busy meanwhile (all busy time from /proc/stat minus our children's)."""
        self.others = None
        b0, c0, w0 = busy_seconds(), children_cpu(), time.monotonic()
        try:
            p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            FAILURES.append(f"{what}: timed out after {timeout} s")
            say(f"  FAILED {what}: timed out after {timeout} s")
            return None
        if p.returncode != 0:
            tail = "\n".join((p.stderr or p.stdout).strip().splitlines()[-5:])
            FAILURES.append(f"{what}: exit {p.returncode}: {tail}")
            say(f"  FAILED {what}: exit {p.returncode}\n{tail}")
            return None
        b1, c1, w1 = busy_seconds(), children_cpu(), time.monotonic()
        if b0 is not None and b1 is not None and w1 > w0:
            self.others = max(0.0, ((b1 - b0) - (c1 - c0)) / (w1 - w0))
        return p

    # -- bnmpi ---------------------------------------------------------------
    def bnmpi_args(self, G, bn, epochs):
        args = ["--quiet", "--epochs", str(epochs), "--global-batch", str(G), "--bn", bn]
        if self.a.train_limit:
            args += ["--train-limit", str(self.a.train_limit)]
        if self.a.threads:
            args += ["--threads", str(self.a.threads)]
        if self.a.data:
            args += ["--data", self.a.data]
        return args

    def bnmpi_cmd(self, np_, bn, G, mca=()):
        """The mpirun command of one measured bnmpi run, and the metrics file it writes."""
        self.counter += 1
        path = os.path.join(self.tmp, f"run{self.counter}.h5")
        return self.mpirun(np_, mca) + [self.a.bnmpi] + self.bnmpi_args(G, bn, self.a.epochs) + \
            ["--metrics", path, "--force"], path

    def steps_per_epoch(self, G):
        return (min(N_TRAIN, self.a.train_limit) if self.a.train_limit else N_TRAIN) // G

    def bnmpi(self, pass_name, env, round_, np_, bn, G, overlap=None):
        """One bnmpi run with its default --reduce; with overlap 0, --reduce mpi; with
        overlap K > 0, --reduce mpi --overlap K and Open MPI's ring algorithm for the
        nonblocking allreduce (libnbc's default for it takes twice the blocking
        MPI_Allreduce here: bnmpi-bound's iallreduce_wait_f32)."""
        import h5py
        mca = ("--mca", "coll_libnbc_iallreduce_algorithm", "1") if overlap else ()
        cmd, path = self.bnmpi_cmd(np_, bn, G, mca)
        if overlap is not None:
            cmd += ["--reduce", "mpi", "--overlap", str(overlap)]
        la = loadavg()
        busy = wait_idle(self.a.wait_idle) if self.a.wait_idle else cpu_busy(0.2)
        p = self.run(cmd, env, self.a.run_timeout, f"bnmpi np={np_} --bn {bn} --global-batch {G} --overlap {overlap}")
        if p is None:
            return
        with h5py.File(path, "r") as f:
            ep = f["epochs"][:]
            cfg = dict(f["config"].attrs)
        os.unlink(path)
        steps = self.steps_per_epoch(G)
        for row in ep:
            sps = float(row["samples_per_s"])
            self.raw.append(dict(
                pass_=pass_name, round=round_, impl="bnmpi",
                variant=f"np{np_}-{bn}" + (f"-mpi-overlap{overlap}" if overlap is not None else ""), np=np_, bn=bn,
                global_batch=G, local_batch=int(cfg.get("local_batch", G // np_)), threads=int(cfg.get("threads", 0)),
                epoch=int(row["epoch"]), samples_per_s=sps, train_s=steps * G / sps, time_s=float(row["time_s"]),
                comm_s=float(row["comm_s"]), steps=steps, extrapolated=0, loadavg=la, busy_before=busy,
                others_cpu=self.others))

    def bn_blocks(self, pass_name, env, round_, G):
        """np=2 --bn sync with BNMPI_BENCH_BN_BLOCKS=K: BN turns sync off and on every K
        steps (blocks of about 20 ms) inside one run and rank 0 times each block, so
        that sync and local are compared under the same machine conditions."""
        K = max(1, min(1280 // G, self.steps_per_epoch(G) // 6))
        cmd, path = self.bnmpi_cmd(2, "sync", G)
        csv_path = os.path.join(self.tmp, "blocks.csv")
        if self.a.wait_idle:
            wait_idle(self.a.wait_idle)
        p = self.run(cmd, dict(env, BNMPI_BENCH_BN_BLOCKS=str(K), BNMPI_BENCH_BN_CSV=csv_path),
                     self.a.run_timeout, f"bnmpi np=2 interleaved local/sync blocks, global batch {G}")
        if p is None:
            return
        os.unlink(path)
        with open(csv_path) as f:
            for row in csv.DictReader(f):
                self.blocks.append(dict(pass_=pass_name, round=round_, global_batch=G, block_steps=K,
                                        epoch=int(row["epoch"]), first_step=int(row["first_step"]),
                                        bn=row["bn"], seconds=float(row["seconds"]), others_cpu=self.others))
        os.unlink(csv_path)

    def header_line(self, env):
        """bnmpi's first line (core name, ranks, threads, MPI) from a short np=2 run."""
        path = os.path.join(self.tmp, "header.h5")
        cmd = self.mpirun(2) + [self.a.bnmpi, "--epochs", "1", "--train-limit", "1024", "--global-batch", "64",
                                "--metrics", path, "--force"] + (["--data", self.a.data] if self.a.data else []) + \
            (["--threads", str(self.a.threads)] if self.a.threads else [])
        p = self.run(cmd, env, 120, "bnmpi header run")
        if p is None:
            return "n/a"
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("bnmpi ")]
        return lines[0].strip() if lines else "n/a"

    # -- bound ---------------------------------------------------------------
    def bound(self, pass_name, env, round_, np_, batches, no_gemm=False, mca=()):
        if self.a.wait_idle:
            wait_idle(self.a.wait_idle)
        cmd = self.mpirun(np_, mca) + [self.a.bound, "--time", str(self.a.bound_time)]
        cmd += ["--no-gemm"] if no_gemm else ["--batches", ",".join(str(b) for b in batches)]
        p = self.run(cmd, env, self.a.run_timeout, f"bnmpi-bound np={np_} {' '.join(mca)}")
        if p is None:
            return None
        core = None
        rows = []
        for ln in p.stdout.splitlines():
            if ln.startswith("# core "):
                core = ln[len("# core "):].strip()
            elif ln and not ln.startswith("#") and not ln.startswith("kind,"):
                kind, npr, thr, batch, op, count, med, mn, reps = ln.split(",")
                rows.append(dict(pass_=pass_name, round=round_, kind=kind, np=int(npr), batch=int(batch), op=op,
                                 median_s=float(med), min_s=float(mn), reps=int(reps),
                                 variant="nosc" if mca else "default"))
        return core, rows

    # -- torch ---------------------------------------------------------------
    def torch(self, pass_name, env_base, round_, mode, variant, G):
        if mode == "ddp":
            threads, overrides, foreach = 1, DDP_ENV, 1
        else:
            threads, overrides, foreach = TORCH_VARIANTS[variant]
        env = dict(env_base)
        for k, v in overrides.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        cmd = [sys.executable, os.path.join(HERE, "torch_bench.py"), "--mode", mode, "--data", self.a.data_dir,
               "--batches", str(G), "--torch-threads", str(threads), "--foreach", str(foreach),
               "--steps", str(self.a.torch_steps), "--reps", str(self.a.torch_reps),
               "--warmup", str(min(20, self.a.torch_steps))]
        la = loadavg()
        busy = wait_idle(self.a.wait_idle) if self.a.wait_idle else cpu_busy(0.2)
        p = self.run(cmd, env, self.a.run_timeout, f"torch {variant} --global-batch {G}")
        if p is None:
            return
        for ln in p.stdout.splitlines():
            try:
                r = json.loads(ln)
            except ValueError:
                continue
            if "samples_per_s" not in r:
                continue
            self.raw.append(dict(
                pass_=pass_name, round=round_, impl="torch-ddp" if mode == "ddp" else "torch", variant=variant,
                np=2 if mode == "ddp" else 1, bn="local", global_batch=G, local_batch=r["local_batch"],
                threads=r["torch_threads"], epoch=r["rep"] + 1, samples_per_s=r["samples_per_s"],
                train_s=N_TRAIN // G * G / r["samples_per_s"], time_s=None, comm_s=None, steps=r["steps"],
                extrapolated=int(r["extrapolated"]), loadavg=la, busy_before=busy, others_cpu=self.others))

    # -- memory --------------------------------------------------------------
    def peak_mem(self, env, np_, bnmpi_args):
        """(per rank (maxrss, peak PSS) in KiB, the node's peak PSS in KiB) of bnmpi at np_
        ranks: rss_wrap.py around each rank for the first, NodePss for the second (the
        ranks' PSS summed at the same instant); None for what could not be read."""
        d = tempfile.mkdtemp(dir=self.tmp)
        cmd = self.mpirun(np_) + [sys.executable, os.path.join(HERE, "rss_wrap.py"), d, self.a.bnmpi] + bnmpi_args
        sampler = NodePss(self.a.bnmpi)
        sampler.start()
        p = self.run(cmd, env, self.a.run_timeout, f"peak memory np={np_} {' '.join(bnmpi_args[:2])}")
        node_peak = sampler.stop()
        if p is None:
            return None
        out = []
        for r in range(np_):
            try:
                with open(os.path.join(d, f"rss.{r}")) as f:
                    v = [int(x) for x in f.read().split()]
                out.append((v[0], v[1] or None if len(v) > 1 else None))
            except (OSError, ValueError, IndexError):
                out.append((None, None))
        return out, node_peak


class NodePss(threading.Thread):
    """Samples, every 10 ms, the PSS of every process running the given program and
    keeps the largest sum: the node's footprint at its peak. Summing each rank's own
    peak instead would overcount shared pages: while rank 0 fills the node-shared
    dataset, it alone holds those pages, and its peak counts them in full."""

    def __init__(self, program):
        super().__init__(daemon=True)
        self.program = os.path.realpath(program)
        self.peak = 0
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            total = 0
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    if os.path.realpath(f"/proc/{pid}/exe") != self.program:
                        continue
                    with open(f"/proc/{pid}/smaps_rollup") as f:
                        total += next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
                except (OSError, StopIteration, ValueError):
                    continue
            self.peak = max(self.peak, total)
            self.done.wait(0.01)

    def stop(self):
        self.done.set()
        self.join()
        return self.peak or None


def write_idx_subset(src_dir, dst_dir, n_train, n_test):
    """The first n_train / n_test images and labels of the IDX files in src_dir (plain or
    .gz), as plain IDX files in dst_dir: the same program and model on a small dataset."""
    import gzip
    import struct
    os.makedirs(dst_dir, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        for kind, item in (("images-idx3-ubyte", 28 * 28), ("labels-idx1-ubyte", 1)):
            name = f"{prefix}-{kind}"
            src = os.path.join(src_dir, name)
            opener = open if os.path.exists(src) else gzip.open
            with opener(src if os.path.exists(src) else src + ".gz", "rb") as f:
                head = f.read(16 if item > 1 else 8)
                body = f.read(n * item)
            head = head[:4] + struct.pack(">i", n) + head[8:]
            with open(os.path.join(dst_dir, name), "wb") as f:
                f.write(head + body)


# --- the measurement plan ---------------------------------------------------------

def coretype_passes(requested):
    """[(name, env overrides)] for each OPENBLAS_CORETYPE setting, duplicates dropped."""
    current = os.environ.get("OPENBLAS_CORETYPE")
    passes, seen = [], set()
    for c in requested:
        if c == "env":
            value = current
            name = f"env (OPENBLAS_CORETYPE={current!r})" if current is not None else "env (OPENBLAS_CORETYPE unset)"
        elif c == "unset":
            value, name = None, "OPENBLAS_CORETYPE unset"
        else:
            value, name = c, f"OPENBLAS_CORETYPE={c}"
        if value in seen:
            say(f"note: pass '{c}' is the same setting as an earlier pass "
                f"(OPENBLAS_CORETYPE={'unset' if value is None else value}); measured once")
            continue
        seen.add(value)
        passes.append((name, {"OPENBLAS_CORETYPE": value}))
    return passes


def torch_available():
    p = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"], capture_output=True,
                       text=True)
    return p.stdout.strip() if p.returncode == 0 else None


def measure_pass(R, pass_name, overrides, with_torch, bound_rows):
    a = R.a
    env = child_env(overrides)
    info = {"pass": pass_name, "OPENBLAS_CORETYPE": overrides["OPENBLAS_CORETYPE"] or "unset",
            "loadavg_start": loadavg()}
    say(f"== pass: {pass_name}")
    info["bnmpi_header"] = R.header_line(env)
    say(f"  {info['bnmpi_header']}")
    t0 = time.monotonic()
    for rnd in range(1, a.repeats + 1):
        # the bound: the per-rank batches of every (np, global batch)
        for np_ in a.nps:
            locals_ = sorted({G // np_ for G in a.batches if G % np_ == 0})
            res = R.bound(pass_name, env, rnd, np_, locals_)
            if res:
                info["bound_core"] = res[0]
                bound_rows += res[1]
            if np_ > 1 and not a.quick:
                res = R.bound(pass_name, env, rnd, np_, [], no_gemm=True,
                              mca=("--mca", "btl_vader_single_copy_mechanism", "none"))
                if res:
                    bound_rows += res[1]
        order = a.batches if rnd % 2 else list(reversed(a.batches))
        for G in order:
            say(f"  round {rnd}/{a.repeats}, global batch {G} ({time.monotonic() - t0:.0f} s)")
            configs = [(np_, bn) for np_ in a.nps for bn in a.modes if G % np_ == 0]
            if rnd % 2 == 0:
                configs.reverse()
            half = (len(configs) + 1) // 2
            # bnmpi, torch single, bnmpi, torch DDP: alternate the two programs
            for np_, bn in configs[:half]:
                R.bnmpi(pass_name, env, rnd, np_, bn, G)
            if with_torch:
                for v in (a.torch_variants if rnd % 2 else list(reversed(a.torch_variants))):
                    R.torch(pass_name, env, rnd, "single", v, G)
            for np_, bn in configs[half:]:
                R.bnmpi(pass_name, env, rnd, np_, bn, G)
            for k in a.overlap:
                if G % 2 == 0 and 2 in a.nps:
                    R.bnmpi(pass_name, env, rnd, 2, "sync", G, overlap=k)
            if G % 2 == 0 and 2 in a.nps and "sync" in a.modes:
                R.bn_blocks(pass_name, env, rnd, G)
            if with_torch and G % 2 == 0:
                R.torch(pass_name, env, rnd, "ddp", "ddp-2x1", G)
    info["loadavg_end"] = loadavg()
    info["seconds"] = time.monotonic() - t0
    return info


def measure_memory(R, env):
    """Peak memory per rank and per node at each np, three runs each: bnmpi --help (the
    baseline: after MPI_Init, before any data), a short run on MNIST, and the same run on
    a subset of it (MEM_SUBSET: 5,000 training and 1,000 test images); the node's memory for data is the difference of the
    last two (everything else, model, buffers, MPI, is the same in both)."""
    a = R.a
    rows = []
    data_dir = a.data_dir
    subset = os.path.join(R.tmp, "mnist-subset")
    write_idx_subset(data_dir, subset, MEM_SUBSET[0], MEM_SUBSET[1])
    run_args = ["--quiet", "--epochs", "1", "--train-limit", "2048", "--global-batch", "64", "--bn", "sync",
                "--metrics", os.path.join(R.tmp, "mem.h5"), "--force"]
    for np_ in a.mem_nps:
        base = R.peak_mem(env, np_, ["--help"]) or ([(None, None)] * np_, None)
        full = R.peak_mem(env, np_, run_args + ["--data", data_dir])
        small = R.peak_mem(env, np_, run_args + ["--data", subset]) or (None, None)
        if full is None:
            continue
        for r in range(np_):
            rows.append(dict(np=np_, rank=r, peak_rss_kib=full[0][r][0], baseline_rss_kib=base[0][r][0],
                             peak_pss_kib=full[0][r][1], baseline_pss_kib=base[0][r][1],
                             node_peak_pss_kib=full[1], node_baseline_pss_kib=base[1],
                             node_subset_pss_kib=small[1]))
    return rows


# --- analysis ---------------------------------------------------------------------

def analyse(R, passes_info, bound_rows, mem_rows, torch_version):
    a = R.a
    raw = R.raw
    blocks = R.blocks
    out = {"throughput": [], "ratios": [], "bound": [], "overhead": [], "targets": [], "md": []}
    md = out["md"]

    def sel(**kw):
        return [r for r in raw if all(r.get(k) == v for k, v in kw.items())]

    for info in passes_info:
        P = info["pass"]
        md.append(f"\n## Pass: {P}\n")
        md.append(f"bnmpi: `{info['bnmpi_header']}`; bnmpi-bound core: {info.get('bound_core', 'n/a')}; "
                  f"load average {fmt(info['loadavg_start'], 2)} at the start, {fmt(info['loadavg_end'], 2)} at "
                  f"the end; {info['seconds']:.0f} s.")
        oc = [r["others_cpu"] for r in raw if r["pass_"] == P and r["others_cpu"] is not None]
        if oc:
            nq = sum(1 for x in oc if x <= a.quiet_cpu)
            md.append(f"Other processes on the machine kept a median {median(oc):.2f} cores busy during the "
                      f"measured runs (max {max(oc):.2f}; `others_cpu` in runs.csv, per run); {nq} of {len(oc)} "
                      f"measurements were quiet (<= {a.quiet_cpu} cores). Medians below use a configuration's "
                      f"quiet measurements when it has any, else all of them (`n_quiet`, `samples_per_s_all` in "
                      f"throughput.csv). Bound times: the fastest round's median, since other jobs only slow the "
                      f"hardware down; bnmpi's share of the bound is given both ways: its median over rounds, and its "
                      f"fastest round against the bound's (like with like, the target's figure).\n")
        # ---- aggregated throughput
        agg = {}  # (impl, variant, G) -> dict
        keys = sorted({(r["impl"], r["variant"], r["np"], r["bn"], r["global_batch"]) for r in raw
                       if r["pass_"] == P})
        for impl, variant, np_, bn, G in keys:
            rows = sel(pass_=P, impl=impl, variant=variant, global_batch=G)
            if impl == "bnmpi":
                rows = [r for r in rows if r["epoch"] > 1] or rows  # the first epoch warms up
            all_sps = median([r["samples_per_s"] for r in rows])
            best_sps = max(r["samples_per_s"] for r in rows)
            quiet = [r for r in rows if r["others_cpu"] is not None and r["others_cpu"] <= a.quiet_cpu]
            if quiet and a.quiet_cpu >= 0:
                rows = quiet
            d = dict(impl=impl, variant=variant, np=np_, bn=bn, global_batch=G, local_batch=rows[0]["local_batch"],
                     threads=rows[0]["threads"], n=len(rows), n_quiet=len(quiet), samples_per_s_all=all_sps,
                     samples_per_s=median([r["samples_per_s"] for r in rows]),
                     min_sps=min(r["samples_per_s"] for r in rows), max_sps=best_sps,
                     train_s=median([r["train_s"] for r in rows]),
                     time_s=median([r["time_s"] for r in rows]), comm_s=median([r["comm_s"] for r in rows]),
                     comm_frac_time=median([r["comm_s"] / r["time_s"] for r in rows if r["comm_s"] is not None]),
                     comm_frac_train=median([r["comm_s"] / r["train_s"] for r in rows if r["comm_s"] is not None]),
                     extrapolated=rows[0]["extrapolated"], steps=rows[0]["steps"],
                     others_cpu=median([r["others_cpu"] for r in rows]),
                     best_round_sps=max(median([r["samples_per_s"] for r in rows if r["round"] == k])
                                        for k in {r["round"] for r in rows}))
            agg[(impl, variant, G)] = d
            out["throughput"].append(dict(d, pass_=P))

        def sps(impl, variant, G):
            d = agg.get((impl, variant, G))
            return d["samples_per_s"] if d else None

        def tuned(G):
            cands = [(d["samples_per_s"], v) for (i, v, g), d in agg.items() if i == "torch" and g == G]
            return max(cands) if cands else (None, None)

        # ---- table 1: throughput
        bn_cols = [(np_, bn) for np_ in a.nps for bn in a.modes]
        header = ["global batch"] + [f"bnmpi np={np_} {bn}" for np_, bn in bn_cols] + \
            ["torch tuned (variant)", "torch DDP gloo 2x1"]
        rows = []
        for G in a.batches:
            t, tv = tuned(G)
            rows.append([G] + [fmt(sps("bnmpi", f"np{np_}-{bn}", G)) for np_, bn in bn_cols] +
                        [f"{fmt(t)} ({tv})" if t else "n/a", fmt(sps("torch-ddp", "ddp-2x1", G))])
        md.append("### Throughput, samples/s (median)\n")
        md.append(md_table(header, rows))
        tv_names = sorted({v for (i, v, g) in agg if i == "torch"})
        if tv_names:
            md.append("\nPyTorch single-process variants, samples/s (median; "
                      + ("steps per measurement capped at %d, extrapolated to the 48,000-sample epoch" % a.torch_steps)
                      + "):\n")
            md.append(md_table(["global batch"] + tv_names,
                               [[G] + [fmt(sps("torch", v, G)) for v in tv_names] for G in a.batches]))
            md.append("\n" + "; ".join(f"`{v}`: {TORCH_VARIANT_HELP.get(v, v)}" for v in tv_names) + ".")
        # ---- table 2: ratios
        rrows = []
        for G in a.batches:
            t, tv = tuned(G)
            ddp = sps("torch-ddp", "ddp-2x1", G)
            entry = {"global_batch": G}
            for np_, bn in bn_cols:
                b = sps("bnmpi", f"np{np_}-{bn}", G)
                entry[f"np{np_}-{bn}/torch_tuned"] = b / t if b and t else None
                entry[f"np{np_}-{bn}/torch_ddp"] = b / ddp if b and ddp else None
            for k, v in entry.items():
                if k != "global_batch":
                    out["ratios"].append(dict(pass_=P, global_batch=G, ratio=k, value=v))
            rrows.append([G] + [fmt(entry[f"np{np_}-{bn}/torch_tuned"], ratio=True) for np_, bn in bn_cols] +
                         [fmt(entry[f"np{np_}-{bn}/torch_ddp"], ratio=True) for np_, bn in bn_cols if np_ > 1])
        one = [(G, sps("bnmpi", f"np1-{bn}", G), sps("torch", "t1-ob1", G), bn) for G in a.batches for bn in a.modes
               if 1 in a.nps]
        for G, b, t, bn in one:
            out["ratios"].append(dict(pass_=P, global_batch=G, ratio=f"np1-{bn}/torch_t1-ob1",
                                      value=b / t if b and t else None))
        md.append("\n### bnmpi / PyTorch (ratio of median samples/s)\n")
        if any(t for _, _, t, _ in one):
            for row in rrows:
                for bn in a.modes:
                    b, t = sps("bnmpi", f"np1-{bn}", row[0]), sps("torch", "t1-ob1", row[0])
                    row.append(fmt(b / t if b and t else None, ratio=True))
        md.append(md_table(["global batch"] + [f"np={np_} {bn} / torch tuned" for np_, bn in bn_cols] +
                           [f"np={np_} {bn} / torch DDP" for np_, bn in bn_cols if np_ > 1] +
                           ([f"np=1 {bn} / torch t1-ob1 (both one thread)" for bn in a.modes]
                            if any(t for _, _, t, _ in one) else []), rrows))
        # ---- table 2b: best single measurements, the nearest to an idle machine
        def best(impl, variant, G):
            d = agg.get((impl, variant, G))
            return d["max_sps"] if d else None

        def best_torch(G):
            v = [d["max_sps"] for (i, _, g), d in agg.items() if i == "torch" and g == G]
            return max(v) if v else None

        brows2 = []
        for G in a.batches:
            tb, db = best_torch(G), best("torch-ddp", "ddp-2x1", G)
            cells = [G] + [fmt(best("bnmpi", f"np{np_}-{bn}", G)) for np_, bn in bn_cols] + [fmt(tb), fmt(db)]
            for np_, bn in bn_cols:
                if np_ < 2:
                    continue
                b = best("bnmpi", f"np{np_}-{bn}", G)
                rt, rd = (b / tb if b and tb else None), (b / db if b and db else None)
                out["ratios"].append(dict(pass_=P, global_batch=G, ratio=f"np{np_}-{bn}/torch_tuned (best)", value=rt))
                out["ratios"].append(dict(pass_=P, global_batch=G, ratio=f"np{np_}-{bn}/torch_ddp (best)", value=rd))
                cells += [fmt(rt, ratio=True), fmt(rd, ratio=True)]
            brows2.append(cells)
        md.append("\n### Best single measurement (max over epochs and repetitions: the nearest to an idle machine)\n")
        md.append(md_table(["global batch"] + [f"bnmpi np={np_} {bn}" for np_, bn in bn_cols] +
                           ["torch single (best variant)", "torch DDP"] +
                           [h for np_, bn in bn_cols if np_ > 1
                            for h in (f"np={np_} {bn} / torch", f"np={np_} {bn} / DDP")], brows2))
        # ---- table 3: bound
        brows = [r for r in bound_rows if r["pass_"] == P]

        def bmed(kind, np_, batch, op, variant="default"):
            """The fastest round's median: other jobs only ever slow the hardware down."""
            v = [r["median_s"] for r in brows if r["kind"] == kind and r["np"] == np_ and r["batch"] == batch
                 and r["op"] == op and r["variant"] == variant]
            return min(v) if v else None

        ar = {np_: (bmed("allreduce", np_, 0, "sum_f32") if np_ > 1 else 0.0) for np_ in a.nps}
        ar_nosc = {np_: bmed("allreduce", np_, 0, "sum_f32", "nosc") for np_ in a.nps if np_ > 1}
        rows3 = []
        for np_ in a.nps:
            for G in a.batches:
                if G % np_:
                    continue
                b = G // np_
                gemm = bmed("gemm", np_, b, "step")
                adam = bmed("adam", np_, 0, "update")
                if gemm is None:
                    continue
                arr = ar.get(np_) or 0.0
                steps = N_TRAIN // G
                serial = gemm + arr
                d = dict(pass_=P, np=np_, global_batch=G, local_batch=b, steps_per_epoch=steps, gemm_s=gemm,
                         allreduce_s=arr if np_ > 1 else None, allreduce_nosc_s=ar_nosc.get(np_),
                         adam_s=adam, bound_epoch_s=steps * serial, bound_overlap_epoch_s=steps * max(gemm, arr),
                         bound_sps=G / serial, bound_overlap_sps=G / max(gemm, arr),
                         bound_adam_sps=G / (serial + adam) if adam else None)
                for bn in a.modes:
                    s = sps("bnmpi", f"np{np_}-{bn}", G)
                    d[f"bnmpi_{bn}_sps"] = s
                    d[f"pct_bound_{bn}"] = s / d["bound_sps"] if s else None
                    d[f"pct_overlap_{bn}"] = s / d["bound_overlap_sps"] if s else None
                    d[f"pct_bound_adam_{bn}"] = s / d["bound_adam_sps"] if s and d["bound_adam_sps"] else None
                    br = agg.get(("bnmpi", f"np{np_}-{bn}", G))
                    d[f"pct_bound_best_round_{bn}"] = br["best_round_sps"] / d["bound_sps"] if br else None
                out["bound"].append(d)
                rows3.append([np_, G, b, f"{gemm * 1e6:.0f}", f"{arr * 1e6:.0f}" if np_ > 1 else "-",
                              f"{adam * 1e6:.0f}" if adam else "n/a",
                              f"{d['bound_epoch_s']:.3f} / {d['bound_overlap_epoch_s']:.3f}",
                              fmt(d["bound_sps"]), fmt(d["bound_overlap_sps"])] +
                             [f"{fmt(d[f'pct_bound_{bn}'], pct=True)} / {fmt(d[f'pct_overlap_{bn}'], pct=True)}"
                              for bn in a.modes] +
                             [fmt(d[f"pct_bound_best_round_{bn}"], pct=True) for bn in a.modes] +
                             [fmt(d[f"pct_bound_adam_{a.modes[-1]}"], pct=True)])
        md.append("\n### Hardware bound of the step (bnmpi-bound, medians) and bnmpi as a share of it\n")
        md.append(md_table(["np", "global batch", "batch per rank", "GEMMs us", "allreduce us", "Adam us",
                            "bound s/epoch: steps x (GEMM+allreduce) / x max(GEMM, allreduce)",
                            "bound samples/s (GEMM+allreduce)", "bound with perfect overlap"] +
                           [f"bnmpi {bn}: % of bound / of overlap bound" for bn in a.modes] +
                           [f"bnmpi {bn}, fastest round: % of bound" for bn in a.modes] +
                           [f"{a.modes[-1]}: % of GEMM+Adam+allreduce"], rows3))
        if ar_nosc.get(2) is not None:
            md.append("\nAllreduce of the %d-float gradient buffer at np=2: %s us with Open MPI's default "
                      "(vader, single copy through CMA), %s us with `--mca btl_vader_single_copy_mechanism none`."
                      % (N_PARAMS + 2, fmt((ar.get(2) or 0) * 1e6), fmt((ar_nosc.get(2) or 0) * 1e6)))
        # ---- table 4: overheads
        rows4 = []
        for np_ in a.nps:
            for G in a.batches:
                dl, ds = agg.get(("bnmpi", f"np{np_}-local", G)), agg.get(("bnmpi", f"np{np_}-sync", G))
                if not dl or not ds:
                    continue
                d = dict(pass_=P, np=np_, global_batch=G, local_batch=G // np_, local_train_s=dl["train_s"],
                         sync_train_s=ds["train_s"], sync_over_local_train=ds["train_s"] / dl["train_s"],
                         local_time_s=dl["time_s"], sync_time_s=ds["time_s"],
                         sync_over_local_time=ds["time_s"] / dl["time_s"],
                         comm_frac_time_local=dl["comm_frac_time"], comm_frac_time_sync=ds["comm_frac_time"],
                         comm_frac_train_local=dl["comm_frac_train"], comm_frac_train_sync=ds["comm_frac_train"])
                out["overhead"].append(d)
                d["sync_minus_local_per_step_s"] = (ds["train_s"] - dl["train_s"]) / (N_TRAIN // G)
                ratios = interleaved_ratios([b for b in blocks if b["pass_"] == P and b["global_batch"] == G]) \
                    if np_ == 2 else []
                d["interleaved_pairs"] = len(ratios)
                d["interleaved_sync_over_local"], d["interleaved_lo"], d["interleaved_hi"] = \
                    median_ci(ratios) if ratios else (None, None, None)
                rows4.append([np_, G, G // np_, f"{dl['train_s']:.3f}", f"{ds['train_s']:.3f}",
                              f"{100 * (d['sync_over_local_train'] - 1):+.1f}%",
                              f"{d['sync_minus_local_per_step_s'] * 1e6:+.0f}",
                              (f"{100 * (d['interleaved_sync_over_local'] - 1):+.1f}% "
                               f"({100 * (d['interleaved_lo'] - 1):+.1f}..{100 * (d['interleaved_hi'] - 1):+.1f}%, "
                               f"{d['interleaved_pairs']})") if ratios else "-",
                              f"{100 * (d['sync_over_local_time'] - 1):+.1f}%",
                              fmt(dl["comm_frac_time"], pct=True), fmt(ds["comm_frac_time"], pct=True),
                              fmt(dl["comm_frac_train"], pct=True), fmt(ds["comm_frac_train"], pct=True)])
        md.append("\n### Overheads: sync vs local BN, and communication share\n")
        md.append(md_table(["np", "global batch", "batch per rank", "local: train s/epoch", "sync: train s/epoch",
                            "sync vs local (train)", "sync - local per step, us",
                            "sync vs local, interleaved in one run (95% CI, pairs)", "sync vs local (time_s)",
                            "comm/time_s local",
                            "comm/time_s sync", "comm/train local", "comm/train sync"], rows4))
        md.append("\n`train s/epoch` = steps x global batch / samples_per_s (the training loop); `time_s` adds "
                  "the validation pass. `comm` is bnmpi's `comm_s` (rank 0's time in the gradient allreduce and "
                  "the BN collectives), which includes waiting for the other rank. The first columns compare "
                  "separate runs, whose speed on a shared VM differs by more than sync's cost. `interleaved` "
                  "compares the two inside one np=2 run (`BNMPI_BENCH_BN_BLOCKS`): BN turns sync off and on "
                  "every K steps (about 20 ms), and each sync block is timed against the mean of the local "
                  "blocks around it; the median over all such pairs of every round, with a 95% bootstrap "
                  "interval. The training loop is the only part that differs between the modes, so this is "
                  "sync's extra training time per epoch.")
        bc = {op: bmed("bncomm", 2, 0, op) for op in ("moments_userop", "moments_sum", "backward_sum")}
        if bc["moments_sum"] and bc["backward_sum"]:
            md.append(f"\nSync BN's own collectives at np=2 (bnmpi-bound, one BN layer, MPI_SUM of 512 doubles "
                      f"each): the forward sums {bc['moments_sum'] * 1e6:.1f} us and the backward sums "
                      f"{bc['backward_sum'] * 1e6:.1f} us: {(bc['moments_sum'] + bc['backward_sum']) * 1e6:.1f} us "
                      f"per step (the forward as a moments merge with an MPI user op, as bnmpi did before: "
                      f"{fmt(bc['moments_userop'] and bc['moments_userop'] * 1e6, 1)} us). More than that in "
                      f"`sync - local` is waiting: each collective is a point where a rank that fell behind "
                      f"holds up the other.")
        # ---- how the gradients are summed
        ks = list(a.overlap or [])
        orows = []
        for G in a.batches:
            default = sps("bnmpi", "np2-sync", G)
            alts = [sps("bnmpi", f"np2-sync-mpi-overlap{k}", G) for k in ks]
            if any(alts):
                orows.append([G, fmt(default)] + [fmt(x) for x in alts] +
                             [fmt(x / default if x and default else None, ratio=True) for x in alts])
        if orows:
            names = ["--reduce mpi" if k == 0 else f"--reduce mpi --overlap {k}" for k in ks]
            md.append("\n### Gradient sums: bnmpi np=2 sync, the default --reduce node against MPI_Allreduce\n")
            md.append(md_table(["global batch", "--reduce node (default), samples/s"] +
                               [f"{n}, samples/s" for n in names] + [f"{n} / node" for n in names], orows))
            upd = {op: bmed("update", 2, 0, op) for op in ("allreduce_adam", "node_shared_adam")}
            if all(upd.values()):
                md.append(f"\nThe sum and the update alone at np=2 (bnmpi-bound, the gradient freshly written): "
                          f"MPI_Allreduce + Adam on every rank {upd['allreduce_adam'] * 1e6:.0f} us; fence + this "
                          f"rank's half summed from the shared slots + Adam on it + fence "
                          f"{upd['node_shared_adam'] * 1e6:.0f} us.")
            md.append("\n`--reduce node` sums the gradients in node-shared memory and each rank updates its half "
                      "of the one copy of the parameters; `--reduce mpi` is one MPI_Allreduce and a full update "
                      "on every rank; `--overlap K` starts the allreduce in K blocks during backward. The overlap "
                      "runs use `--mca coll_libnbc_iallreduce_algorithm 1` (ring): Open MPI's default nonblocking "
                      "allreduce takes twice the blocking one here (bnmpi-bound's `iallreduce_wait_f32` against "
                      "`sum_f32`).")
        # ---- targets
        tg = []

        def target(name, value, ok, threshold):
            tg.append(dict(pass_=P, target=name, value=value, threshold=threshold,
                           met=None if ok is None else int(ok)))

        for G, thr in ((64, 5.0), (128, 3.0)):
            for bn in a.modes:
                b, ddp = sps("bnmpi", f"np2-{bn}", G), sps("torch-ddp", "ddp-2x1", G)
                v = b / ddp if b and ddp else None
                target(f"bnmpi np=2 {bn} / torch DDP gloo at global batch {G}", v,
                       None if v is None else v >= thr, f">= {thr}x")
        for G in (128, 512):
            for bn in a.modes:
                b, (t, tv) = sps("bnmpi", f"np2-{bn}", G), tuned(G)
                v = b / t if b and t else None
                target(f"bnmpi np=2 {bn} / torch fastest single process at {G}", v,
                       None if v is None else v >= 1.5, ">= 1.5x")
        for d in out["bound"]:
            if d["np"] == 2 and d["global_batch"] == 128:
                for bn in a.modes:
                    v = d.get(f"pct_bound_best_round_{bn}")
                    target(f"bnmpi np=2 {bn} share of GEMM+allreduce bound at 128 (fastest rounds of both)", v,
                           None if v is None else v >= 0.70, ">= 70%")
        for d in out["overhead"]:
            if d["np"] > 1 and d["local_batch"] >= 16:
                iv = d.get("interleaved_sync_over_local")
                v = (iv if iv is not None else d["sync_over_local_train"]) - 1
                how = "interleaved in one run" if iv is not None else "separate runs"
                target(f"sync vs local extra time per epoch ({how}), np={d['np']} global batch "
                       f"{d['global_batch']}", v, v <= 0.03, "<= +3%")
        out["targets"] += tg
        md.append("\n### Targets\n")
        md.append(md_table(["target", "measured", "threshold", "met"],
                           [[t["target"], fmt(t["value"], pct=True) if "%" in t["threshold"]
                             else fmt(t["value"], ratio=True), t["threshold"],
                             {None: "n/a", 1: "yes", 0: "**no**"}[t["met"]]] for t in tg]))
    # ---- memory (once)
    if mem_rows:
        md.append("\n## Memory per node (bnmpi, 1 epoch, --train-limit 2048, global batch 64, sync)\n")
        node = {}
        mrows = []
        for np_ in sorted({r["np"] for r in mem_rows}):
            rs = [r for r in mem_rows if r["np"] == np_]
            rss = [r.get("peak_rss_kib") for r in rs]
            n = dict(rss=sum(rss) if all(rss) else None, pss=rs[0].get("node_peak_pss_kib"),
                     pss_base=rs[0].get("node_baseline_pss_kib"), subset=rs[0].get("node_subset_pss_kib"))
            n["pss_above"] = n["pss"] - n["pss_base"] if n["pss"] and n["pss_base"] else None
            n["data"] = n["pss"] - n["subset"] if n["pss"] and n["subset"] else None
            node[np_] = n
            mrows.append([np_, " / ".join(f"{v / 1024:.0f}" for v in rss if v), fmt(n["rss"] and n["rss"] / 1024),
                          fmt(n["pss"] and n["pss"] / 1024), fmt(n["pss_base"] and n["pss_base"] / 1024),
                          fmt(n["pss_above"] and n["pss_above"] / 1024), fmt(n["subset"] and n["subset"] / 1024),
                          fmt(n["data"] and n["data"] / 1024, 1)])
        n1 = node[min(node)]
        for row in mrows:
            n = node[row[0]]
            for k in ("rss", "pss", "pss_above", "data"):
                n[k + "_vs_np1"] = n[k] / n1[k] if n[k] and n1[k] else None
            row += [fmt(n["rss_vs_np1"], ratio=True), fmt(n["pss_above_vs_np1"], ratio=True),
                    fmt(n["data_vs_np1"], ratio=True)]
        md.append(md_table(["np", "peak RSS per rank, MiB", "node: sum of peak RSS", "node peak PSS",
                            "node PSS of bnmpi --help", "node peak PSS above that", "node peak PSS, small dataset",
                            "node memory for data (MNIST - small)", "RSS sum vs np=1",
                            "PSS above --help vs np=1", "memory for data vs np=1"], mrows))
        md.append("\nRSS counts shared pages (libraries, MPI's shared-memory segments, the node-shared dataset) in "
                  "full in every rank. PSS divides them among the ranks that share them; the node's PSS is the "
                  "ranks' PSS summed at the same instant, sampled every 10 ms, at its peak. The small dataset is "
                  f"the first {MEM_SUBSET[0]:,} training and {MEM_SUBSET[1]:,} test images of MNIST, with the same "
                  "program, model and options, so the difference of the two runs is the memory that holds the "
                  "data. The \"above --help\" column also holds each rank's own parameters, gradients, optimizer "
                  "state, forward buffers and Open MPI state, which are per rank by design.")
        top = max(node)
        key = "data_vs_np1" if node[top].get("data_vs_np1") else "pss_above_vs_np1"
        v = node[top].get(key)
        if top > 1 and v is not None:
            what = "MNIST minus the small dataset" if key == "data_vs_np1" else "PSS above --help"
            out["targets"].append(dict(pass_="memory", target=f"node memory for data, np={top} vs np=1 ({what})",
                                       value=v, threshold="<= 1.2x", met=int(v <= 1.2)))
            md.append(f"\nTarget node memory for data at np={top} <= 1.2x np=1 ({what}): measured {v:.2f}x "
                      f"({'met' if v <= 1.2 else '**missed**'}). The whole node above --help: "
                      f"{fmt(node[top].get('pss_above_vs_np1'), ratio=True)}.")
        out["memory_node"] = node
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Full usage: the docstring at the top of this file, and docs/benchmark.md.")
    p.add_argument("--out", default="bench-results", help="results folder (default: bench-results/)")
    p.add_argument("--quick", action="store_true", help="smoke mode: one batch, few steps, < 60 s")
    p.add_argument("--skip-torch", action="store_true", help="no PyTorch comparison")
    p.add_argument("--bnmpi", help="the bnmpi binary (default: build/bnmpi, else bnmpi on PATH)")
    p.add_argument("--bound", help="the bnmpi-bound binary (default: build/tools/bench/bnmpi-bound)")
    p.add_argument("--mpirun", help="mpirun (default: mpirun, else mpiexec, on PATH)")
    p.add_argument("--data", help="MNIST folder passed to bnmpi and torch (default: bnmpi's own search; "
                                  "torch reads data/mnist)")
    p.add_argument("--batches", type=ints, help="global batches (default 32,64,128,512)")
    p.add_argument("--nps", type=ints, help="rank counts for throughput (default 1,2)")
    p.add_argument("--modes", type=words, help="--bn modes (default local,sync)")
    p.add_argument("--epochs", type=int, help="bnmpi epochs per run; the first is dropped (default 3)")
    p.add_argument("--repeats", type=int, help="interleaved rounds (default 2)")
    p.add_argument("--threads", type=int, default=0, help="bnmpi --threads (default: bnmpi's own policy)")
    p.add_argument("--train-limit", type=int, help="bnmpi --train-limit (default 0 = all 48,000)")
    p.add_argument("--torch-steps", type=int, help="max timed torch steps per measurement (default 200)")
    p.add_argument("--torch-reps", type=int, help="torch measurements per run (default 2)")
    p.add_argument("--torch-variants", type=words,
                   help="single-process variants, of: " + ", ".join(TORCH_VARIANTS) +
                        " (default: all but omp1-default, which equals t1-ob1: OpenBLAS reads OMP_NUM_THREADS)")
    p.add_argument("--bound-time", type=float, help="bnmpi-bound seconds per measurement (default 0.5)")
    p.add_argument("--overlap", type=ints,
                   help="also run np=2 sync with --reduce mpi --overlap K for each K (default 0,4: the plain "
                        "MPI_Allreduce and 4 overlapped blocks)")
    p.add_argument("--mem-nps", type=ints, help="rank counts for peak RSS (default 1,2,4)")
    p.add_argument("--coretypes", type=words,
                   help="OPENBLAS_CORETYPE passes: env (as set), unset, or a core name (default env,unset)")
    p.add_argument("--torch-first-pass-only", action="store_true",
                   help="measure PyTorch in the first OPENBLAS_CORETYPE pass only")
    p.add_argument("--wait-idle", type=float,
                   help="before each run wait up to this many seconds for the CPUs to be < 10%% busy "
                        "(others' jobs); default 10, 0 in --quick")
    p.add_argument("--wait-budget", type=float, default=120,
                   help="at most this many seconds of such waiting in the whole run (default 120)")
    p.add_argument("--quiet-cpu", type=float, default=0.15,
                   help="medians use only the runs during which other processes kept at most this many cores "
                        "busy, when there are any (default 0.15; -1: use every run)")
    p.add_argument("--run-timeout", type=int, default=900, help="seconds before one run counts as failed")
    p.add_argument("--reanalyse", metavar="DIR",
                   help="measure nothing: redo the tables from DIR/state.json (an earlier run), e.g. with "
                        "another --quiet-cpu; writes into --out if given, else into DIR")
    a = p.parse_args()
    if a.reanalyse:
        with open(os.path.join(a.reanalyse, "state.json")) as f:
            state = json.load(f)
        for k, v in state["args"].items():
            setattr(a, k, v)
        if "--out" not in sys.argv:
            a.out = a.reanalyse
        os.makedirs(a.out, exist_ok=True)
        write_outputs(a, state)
        sys.exit(1 if FAILURES else 0)
    defaults = QUICK if a.quick else FULL
    for k, v in defaults.items():
        if getattr(a, k, None) is None:
            setattr(a, k, v)
    for v in a.torch_variants:
        if v not in TORCH_VARIANTS:
            p.error(f"--torch-variants: unknown {v!r} (one of {', '.join(TORCH_VARIANTS)})")

    a.bnmpi = a.bnmpi or next((c for c in (os.path.join(REPO, "build", "bnmpi"),) if os.access(c, os.X_OK)),
                              shutil.which("bnmpi"))
    a.bound = a.bound or os.path.join(REPO, "build", "tools", "bench", "bnmpi-bound")
    a.mpirun = a.mpirun or shutil.which("mpirun") or shutil.which("mpiexec")
    for name, path in (("bnmpi", a.bnmpi), ("bnmpi-bound", a.bound), ("mpirun", a.mpirun)):
        if not path or not os.access(path, os.X_OK):
            sys.exit(f"bench.py: {name} not found ({path}); build with "
                     f"cmake -S . -B build && cmake --build build, or pass --{name.split('-')[-1]}")
    a.data_dir = a.data or os.environ.get("BNMPI_DATA") or os.path.join(REPO, "data", "mnist")
    try:
        import h5py  # noqa: F401
    except ImportError:
        sys.exit("bench.py: h5py missing: run me with Debian's /usr/bin/python3 (apt-get install python3-h5py)")

    torch_version = None
    if not a.skip_torch:
        torch_version = torch_available()
        if not torch_version:
            say("note: PyTorch is not importable by %s (apt-get install python3-torch): "
                "skipping the PyTorch comparison" % sys.executable)
    WAIT_LEFT[0] = a.wait_budget
    os.makedirs(a.out, exist_ok=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    t_start = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="bnmpi-bench-")
    try:
        R = Runner(a, tmp)
        passes = coretype_passes(a.coretypes)
        bound_rows, infos = [], []
        for i, (name, overrides) in enumerate(passes):
            with_torch = bool(torch_version) and (i == 0 or not a.torch_first_pass_only)
            infos.append(measure_pass(R, name, overrides, with_torch, bound_rows))
        say("== memory")
        mem_rows = measure_memory(R, child_env({}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    # ---- environment
    try:
        git = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"], capture_output=True,
                             text=True).stdout.strip()
    except OSError:
        git = ""
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    env_rows = [("started", started), ("seconds", f"{time.monotonic() - t_start:.0f}"),
                ("command", " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])),
                ("git", git), ("cpu", cpu), ("cpus", str(os.cpu_count())),
                ("OPENBLAS_CORETYPE (environment)", os.environ.get("OPENBLAS_CORETYPE", "unset")),
                ("OPENBLAS_NUM_THREADS (environment)", os.environ.get("OPENBLAS_NUM_THREADS", "unset")),
                ("OMP_NUM_THREADS (environment)", os.environ.get("OMP_NUM_THREADS", "unset")),
                ("bnmpi", a.bnmpi), ("bnmpi --threads", str(a.threads or "auto (bnmpi's policy)")),
                ("torch", torch_version or ("skipped" if a.skip_torch else "not installed")),
                ("epochs per bnmpi run", str(a.epochs)), ("rounds", str(a.repeats)),
                ("train limit", str(a.train_limit or "all 48000"))]
    for info in infos:
        env_rows += [(f"pass {info['pass']}: bnmpi header", info["bnmpi_header"]),
                     (f"pass {info['pass']}: bnmpi-bound core", info.get("bound_core", "n/a"))]

    state = {"args": {k: getattr(a, k) for k in SAVED_ARGS}, "infos": infos, "raw": R.raw, "blocks": R.blocks,
             "bound_rows": bound_rows, "mem_rows": mem_rows, "env_rows": env_rows,
             "torch_version": torch_version, "failures": FAILURES}
    with open(os.path.join(a.out, "state.json"), "w") as f:
        json.dump(state, f)
    write_outputs(a, state)
    sys.exit(1 if FAILURES else 0)


def write_outputs(a, state):
    """Analyses a run's measurements (state.json) and writes the tables and CSV files into a.out."""
    R = argparse.Namespace(a=a, raw=state["raw"], blocks=state.get("blocks", []))
    infos, bound_rows, mem_rows = state["infos"], state["bound_rows"], state["mem_rows"]
    env_rows, torch_version = [tuple(r) for r in state["env_rows"]], state["torch_version"]
    FAILURES[:] = state.get("failures", [])
    res = analyse(R, infos, bound_rows, mem_rows, torch_version)
    # ---- files
    O = a.out
    write_csv(os.path.join(O, "env.csv"), ["key", "value"], env_rows)
    raw_cols = ["pass_", "round", "impl", "variant", "np", "bn", "global_batch", "local_batch", "threads", "epoch",
                "samples_per_s", "train_s", "time_s", "comm_s", "steps", "extrapolated", "loadavg", "busy_before",
                "others_cpu"]
    write_csv(os.path.join(O, "runs.csv"), ["pass"] + raw_cols[1:], [[r[c] for c in raw_cols] for r in R.raw])
    blk_cols = ["pass_", "round", "global_batch", "block_steps", "epoch", "first_step", "bn", "seconds", "others_cpu"]
    write_csv(os.path.join(O, "blocks.csv"), ["pass"] + blk_cols[1:], [[b[c] for c in blk_cols] for b in R.blocks])
    tcols = ["pass_", "impl", "variant", "np", "bn", "global_batch", "local_batch", "threads", "n", "n_quiet",
             "samples_per_s", "samples_per_s_all",
             "min_sps", "max_sps", "train_s", "time_s", "comm_s", "comm_frac_time", "comm_frac_train", "steps",
             "extrapolated", "others_cpu"]
    write_csv(os.path.join(O, "throughput.csv"), ["pass"] + tcols[1:],
              [[d[c] for c in tcols] for d in res["throughput"]])
    write_csv(os.path.join(O, "ratios.csv"), ["pass", "global_batch", "ratio", "value"],
              [[d["pass_"], d["global_batch"], d["ratio"], d["value"]] for d in res["ratios"]])
    bcols = sorted({k for d in res["bound"] for k in d} - {"pass_", "np", "global_batch", "local_batch"})
    bcols = ["pass_", "np", "global_batch", "local_batch"] + bcols
    write_csv(os.path.join(O, "bound.csv"), ["pass"] + bcols[1:], [[d.get(c) for c in bcols] for d in res["bound"]])
    write_csv(os.path.join(O, "bound_raw.csv"), ["pass", "round", "kind", "np", "batch", "op", "variant",
                                                  "median_s", "min_s", "reps"],
              [[r["pass_"], r["round"], r["kind"], r["np"], r["batch"], r["op"], r["variant"], r["median_s"],
                r["min_s"], r["reps"]] for r in bound_rows])
    ocols = ["pass_", "np", "global_batch", "local_batch", "local_train_s", "sync_train_s", "sync_over_local_train",
             "sync_minus_local_per_step_s", "interleaved_sync_over_local", "interleaved_lo", "interleaved_hi",
             "interleaved_pairs", "local_time_s", "sync_time_s", "sync_over_local_time", "comm_frac_time_local", "comm_frac_time_sync",
             "comm_frac_train_local", "comm_frac_train_sync"]
    write_csv(os.path.join(O, "overhead.csv"), ["pass"] + ocols[1:], [[d[c] for c in ocols] for d in res["overhead"]])
    mcols = ["np", "rank", "peak_rss_kib", "baseline_rss_kib", "peak_pss_kib", "baseline_pss_kib",
             "node_peak_pss_kib", "node_baseline_pss_kib", "node_subset_pss_kib"]
    write_csv(os.path.join(O, "memory.csv"), mcols, [[r.get(c) for c in mcols] for r in mem_rows])
    write_csv(os.path.join(O, "targets.csv"), ["pass", "target", "value", "threshold", "met"],
              [[t["pass_"], t["target"], t["value"], t["threshold"], "" if t["met"] is None else t["met"]]
               for t in res["targets"]])
    head = ["# bnmpi benchmark", "", "Command: `" + env_rows[2][1] + "`", ""]
    head += [f"- {k}: {v}" for k, v in env_rows if k != "command"]
    if not torch_version:
        head.append("- PyTorch comparison: " + ("skipped (--skip-torch)" if a.skip_torch else
                                                  "PyTorch not installed (apt-get install python3-torch)"))
    if FAILURES:
        head += ["", "FAILED runs:"] + [f"- {f}" for f in FAILURES]
    report = "\n".join(head + res["md"]) + "\n"
    with open(os.path.join(O, "report.md"), "w") as f:
        f.write(report)
    print(report)
    say(f"results: {os.path.abspath(O)} (report.md, throughput.csv, ratios.csv, bound.csv, overhead.csv, "
        f"memory.csv, targets.csv, env.csv, runs.csv, blocks.csv, bound_raw.csv, state.json)")


if __name__ == "__main__":
    main()
