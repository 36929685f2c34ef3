#!/usr/bin/python3
"""check_csv.py DIR: checks the CSV files bench.py wrote (the bench_smoke test).

Checks that each file has its columns, that the bnmpi throughput rows cover
np 1 and 2 in local and sync mode with positive samples/s, that the bound has
positive GEMM and allreduce times, that the interleaved sync/local run wrote
both kinds of block and gave np=2 a ratio, and that peak RSS was read for every
rank.
Asserts nothing about speed. Exit 0 when all is well, 1 with the reasons.
"""
import csv
import os
import sys

EXPECTED = {
    "throughput.csv": ["pass", "impl", "variant", "np", "bn", "global_batch", "local_batch", "threads", "n",
                       "samples_per_s", "train_s", "time_s", "comm_s", "comm_frac_time", "comm_frac_train"],
    "runs.csv": ["pass", "round", "impl", "variant", "np", "bn", "global_batch", "epoch", "samples_per_s",
                 "train_s"],
    "bound.csv": ["pass", "np", "global_batch", "local_batch", "gemm_s", "allreduce_s", "adam_s", "bound_sps",
                  "bound_overlap_sps", "pct_bound_sync", "pct_bound_local", "pct_bound_best_round_sync",
                  "pct_bound_best_round_local"],
    "overhead.csv": ["pass", "np", "global_batch", "local_batch", "local_train_s", "sync_train_s",
                     "sync_over_local_train", "interleaved_sync_over_local", "interleaved_pairs",
                     "comm_frac_time_sync"],
    "blocks.csv": ["pass", "round", "global_batch", "block_steps", "epoch", "first_step", "bn", "seconds"],
    "memory.csv": ["np", "rank", "peak_rss_kib", "baseline_rss_kib", "peak_pss_kib", "baseline_pss_kib",
                   "node_peak_pss_kib", "node_baseline_pss_kib", "node_subset_pss_kib"],
    "ratios.csv": ["pass", "global_batch", "ratio", "value"],
    "targets.csv": ["pass", "target", "value", "threshold", "met"],
    "env.csv": ["key", "value"],
}
problems = []


def positive(row, col, where):
    try:
        ok = float(row[col]) > 0
    except (KeyError, ValueError):
        ok = False
    if not ok:
        problems.append(f"{where}: {col} = {row.get(col)!r}, expected a positive number")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    d = sys.argv[1]
    tables = {}
    for name, cols in EXPECTED.items():
        path = os.path.join(d, name)
        if not os.path.exists(path):
            problems.append(f"{name}: missing")
            continue
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in cols if c not in (reader.fieldnames or [])]
            if missing:
                problems.append(f"{name}: missing columns {missing}")
            tables[name] = list(reader)
    if not os.path.exists(os.path.join(d, "report.md")):
        problems.append("report.md: missing")

    thr = [r for r in tables.get("throughput.csv", []) if r.get("impl") == "bnmpi"]
    for np_ in ("1", "2"):
        for bn in ("local", "sync"):
            rows = [r for r in thr if r["np"] == np_ and r["bn"] == bn]
            if not rows:
                problems.append(f"throughput.csv: no bnmpi row for np={np_} --bn {bn}")
            for r in rows:
                where = f"throughput.csv bnmpi np={np_} {bn} gb={r['global_batch']}"
                for c in ("samples_per_s", "train_s", "time_s"):
                    positive(r, c, where)
                if np_ == "2":
                    positive(r, "comm_s", where)
    bound = tables.get("bound.csv", [])
    if not any(r["np"] == "2" for r in bound):
        problems.append("bound.csv: no np=2 row")
    for r in bound:
        where = f"bound.csv np={r['np']} gb={r['global_batch']}"
        for c in ("gemm_s", "adam_s", "bound_sps", "bound_overlap_sps", "pct_bound_sync", "pct_bound_local",
                  "pct_bound_best_round_sync", "pct_bound_best_round_local"):
            positive(r, c, where)
        if r["np"] == "2":
            positive(r, "allreduce_s", where)
    for r in tables.get("overhead.csv", []):
        where = f"overhead.csv np={r['np']} gb={r['global_batch']}"
        positive(r, "sync_over_local_train", where)
        if r["np"] == "2":
            positive(r, "interleaved_sync_over_local", where)
    blocks = tables.get("blocks.csv", [])
    for bn in ("local", "sync"):
        if not any(b["bn"] == bn for b in blocks):
            problems.append(f"blocks.csv: no {bn} block")
    for b in blocks:
        positive(b, "seconds", f"blocks.csv epoch {b['epoch']} step {b['first_step']}")
    mem = tables.get("memory.csv", [])
    for np_ in ("1", "2", "4"):
        rows = [r for r in mem if r["np"] == np_]
        if len(rows) != int(np_):
            problems.append(f"memory.csv: {len(rows)} rank rows at np={np_}, expected {np_}")
        for r in rows:
            for c in ("peak_rss_kib", "baseline_rss_kib", "peak_pss_kib", "node_peak_pss_kib", "node_subset_pss_kib"):
                positive(r, c, f"memory.csv np={np_} rank {r['rank']}")
    if problems:
        print("check_csv.py: FAIL\n  " + "\n  ".join(problems))
        sys.exit(1)
    print(f"check_csv.py: OK ({len(thr)} bnmpi throughput rows, {len(bound)} bound rows, {len(mem)} memory rows)")


if __name__ == "__main__":
    main()
