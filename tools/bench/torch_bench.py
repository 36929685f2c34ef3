#!/usr/bin/python3
"""PyTorch reference for bnmpi's benchmark: the same MLP, optimiser and data.

Model: Linear(784,256) -> ReLU -> BatchNorm1d(256) -> Linear(256,10), i.e.
bnmpi's default --bn-place after; BN eps 1e-3 and momentum 0.01 (Keras'
0.99), Adam lr 1e-3 eps 1e-7, mean cross-entropy. Data: real MNIST read from
the IDX files with numpy, 48,000 training samples held in memory as one float
tensor; each step gathers its rows by a per-epoch permutation (as bnmpi does).

Modes:
  single  one process; torch.set_num_threads(--torch-threads). OpenBLAS and
          OpenMP threads come from the environment the caller sets
          (OPENBLAS_NUM_THREADS, OMP_NUM_THREADS): Debian's torch does its
          matrix products in OpenBLAS (openblas-pthread), whose pool is
          separate from torch's OpenMP pool.
  ddp     DistributedDataParallel, gloo backend, --world processes launched with
          torch.multiprocessing (torchrun crashes with Debian's torch 1.13 on
          Python 3.11); each takes its slice of every global batch, so the
          local batch is global/world, like bnmpi's ranks.

Each measurement times min(steps per epoch, --steps) steps and reports
samples/s (an epoch is 48,000 samples; fewer steps are extrapolated). --reps
measurements follow --warmup untimed steps. One JSON object per line on stdout:
  {"mode", "global_batch", "local_batch", "rep", "steps", "seconds",
   "samples_per_s", "torch_threads", "torch_version", ...}
"""
import argparse
import gzip
import json
import os
import socket
import sys
import time

import numpy as np

N_TRAIN = 48000


def read_idx(path):
    """An IDX file (plain or .gz, by content) as a numpy array."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find_idx(data_dir, base):
    for name in (base, base + ".gz"):
        path = os.path.join(data_dir, name)
        if os.path.exists(path):
            return path
    sys.exit(f"torch_bench: {base}[.gz] not found in {data_dir}")


def load_mnist(data_dir):
    import torch
    images = read_idx(find_idx(data_dir, "train-images-idx3-ubyte")).reshape(-1, 784)
    labels = read_idx(find_idx(data_dir, "train-labels-idx1-ubyte"))
    order = np.random.default_rng(42).permutation(len(images))[:N_TRAIN]
    x = torch.from_numpy(images[order].astype(np.float32) / 255.0)
    y = torch.from_numpy(labels[order].astype(np.int64))
    return x, y


def make_model(seed):
    import torch
    from torch import nn
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.BatchNorm1d(256, eps=1e-3, momentum=0.01),
                         nn.Linear(256, 10))


def train_steps(model, opt, x, y, perm, G, lo, hi, first, count):
    """count steps from step `first` of the permutation; each takes rows [lo, hi) of its global batch."""
    import torch.nn.functional as F
    loss_sum = 0.0
    for s in range(first, first + count):
        idx = perm[s * G + lo:s * G + hi]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        loss_sum += loss.item()
    return loss_sum


def measure(args, model, opt, x, y, G, lo, hi, barrier, emit):
    import torch
    steps_per_epoch = N_TRAIN // G
    count = min(steps_per_epoch, args.steps)
    gen = torch.Generator().manual_seed(1)
    perm = torch.randperm(N_TRAIN, generator=gen)
    train_steps(model, opt, x, y, perm, G, lo, hi, 0, min(args.warmup, steps_per_epoch))
    for rep in range(args.reps):
        perm = torch.randperm(N_TRAIN, generator=gen)
        barrier()
        t0 = time.perf_counter()
        train_steps(model, opt, x, y, perm, G, lo, hi, 0, count)
        barrier()
        sec = time.perf_counter() - t0
        emit({"global_batch": G, "local_batch": hi - lo, "rep": rep, "steps": count,
              "steps_per_epoch": steps_per_epoch, "extrapolated": count < steps_per_epoch,
              "seconds": sec, "samples_per_s": count * G / sec})


def emit_line(args, extra):
    import torch
    rec = {"mode": args.mode, "torch_threads": torch.get_num_threads(), "torch_version": torch.__version__,
           "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS", ""),
           "omp_num_threads": os.environ.get("OMP_NUM_THREADS", ""), "adam_foreach": args.foreach}
    rec.update(extra)
    print(json.dumps(rec), flush=True)


def run_single(args):
    import torch
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    x, y = load_mnist(args.data)
    for G in args.batches:
        model = make_model(1)
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7, foreach=args.foreach)
        measure(args, model, opt, x, y, G, 0, G, lambda: None, lambda r: emit_line(args, r))


def ddp_worker(rank, args, port):
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=args.world)
    x, y = load_mnist(args.data)
    for G in args.batches:
        if G % args.world:
            sys.exit(f"torch_bench: global batch {G} does not divide by {args.world} processes")
        b = G // args.world
        model = DDP(make_model(1), broadcast_buffers=args.broadcast_buffers)
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7, foreach=args.foreach)
        emit = (lambda r: emit_line(args, dict(r, world=args.world, broadcast_buffers=args.broadcast_buffers))) \
            if rank == 0 else (lambda r: None)
        measure(args, model, opt, x, y, G, rank * b, (rank + 1) * b, dist.barrier, emit)
    dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=["single", "ddp"], default="single")
    p.add_argument("--data", required=True, help="folder with the MNIST IDX files")
    p.add_argument("--batches", default="32,64,128,512", help="global batches, comma-separated")
    p.add_argument("--torch-threads", type=int, default=1, help="torch.set_num_threads (0: leave the default)")
    p.add_argument("--world", type=int, default=2, help="DDP processes")
    p.add_argument("--broadcast-buffers", type=int, default=1, help="DDP broadcast_buffers (BN buffers)")
    p.add_argument("--foreach", type=int, default=1,
                   help="Adam(foreach=...): 1 updates all parameters per op (faster on CPU), 0 one at a time")
    p.add_argument("--steps", type=int, default=300, help="at most this many steps per measurement")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps before the measurements")
    p.add_argument("--reps", type=int, default=3, help="measurements per batch")
    args = p.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    args.broadcast_buffers = bool(args.broadcast_buffers)
    args.foreach = bool(args.foreach)
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        print(json.dumps({"error": f"torch not importable: {exc}"}), flush=True)
        sys.exit(3)
    if args.mode == "single":
        run_single(args)
    else:
        import torch.multiprocessing as mp
        mp.spawn(ddp_worker, args=(args, free_port()), nprocs=args.world, join=True)


if __name__ == "__main__":
    main()
