"""The analysis report (bnmpi-analyze, tools/analyze.py): figures, summary.md,
summary.csv, summary_by_config.csv and figures.json from any bnmpi runs.

Runs that differ only in their seed form one configuration (seeds.py): the
figures draw their mean with its 95% interval (error bars at points, a band
around curves) and say n, and summary.md has one row per configuration (mean
± 95% CI, n) above the one row per run.
"""
import csv
import io
import json
import math
import os
import sys

from . import seeds
from .figures import (VARIANT_STYLES, Figures, ci_band, ci_errorbars, legend_below, mode_marker, n_text,
                      log2_axis, mpl, percent_axis, run_colors, say, shrink_png, variant_styles)
from .labels import (candidate_keys, common_description, distinguishing, fmt_value, label, line_order,
                     mode_sort_key, settings_text, sortable)
from .runs import KNOWN_FORMAT_VERSION, as_int, diag_rows, load_for_report, mode_label


FIGURES = ("curves.png", "batch_size.png", "bn_batch.png", "throughput.png", "diagnostics.png")


# Keys that are axes or averaged over in the batch-size figures, not line keys.
BATCH_KEYS = {"global_batch", "local_batch", "bn_batch", "n_ranks", "threads", "seed", "eval_batch",
              "lr_peak", "_mode", "bn", "bn_group", "ghost_batch", "n_params", "architecture"}


# Keys that can change the speed of a run, for the throughput figure's line keys.
SPEED_KEYS = ["hidden", "threads", "train_limit", "val_fraction", "eval_batch", "bn_eval"]


def run_labels(runs):
    """Legend text per run: what sets it apart (BN mode first), the file name
    for runs of the same configuration, and "(incomplete)" for unfinished runs."""
    keys = ["_mode"] + [k for k in distinguishing(runs, candidate_keys(runs)) if k != "_mode"]
    labels = {id(r): label(r, keys) for r in runs}
    repeats = [r for r in runs if sum(labels[id(q)] == labels[id(r)] for q in runs) > 1]
    for r in repeats:
        labels[id(r)] += f" [{os.path.splitext(r.name)[0]}]"
    return keys, {id(r): labels[id(r)] + ("" if r.complete else " (incomplete)") for r in runs}


def curve_items(runs):
    """What curves.png draws: each configuration run with two or more seeds (complete
    runs) as one item, its mean with a 95% band, and every other run on its own.
    Returns [(representative run, [runs])] in the order of the runs."""
    multi = [g for g in seeds.group([r for r in runs if r.complete]) if g.n >= 2]
    member = {id(r): g for g in multi for r in g.runs}
    items, seen = [], set()
    for r in runs:
        g = member.get(id(r))
        if g is None:
            items.append((r, [r]))
        elif id(g) not in seen:
            seen.add(id(g))
            items.append((g.runs[0], g.runs))
    return items


def curve_stats(rs, field):
    """Epochs, mean and 95% interval over the runs (seeds) of field per epoch."""
    import numpy as np
    n = min(r.n_epochs for r in rs)
    ivs = [seeds.interval([r.epochs[field][i] for r in rs]) for i in range(n)]
    return (rs[0].epochs["epoch"][:n], np.array([iv.mean for iv in ivs]), np.array([iv.lo for iv in ivs]),
            np.array([iv.hi for iv in ivs]))


def plot_curves(figs, runs, max_curves):
    plt, ticker = mpl()
    from matplotlib.lines import Line2D
    runs = [r for r in runs if r.n_epochs]
    if not runs:
        return figs.skip("curves.png", "no run has a completed epoch")
    items = curve_items(runs)
    reps = [rep for rep, _ in items]
    size = {id(rep): len(rs) for rep, rs in items}
    keys, labels = run_labels(reps)
    labels = {k: v + (f" (n = {size[k]})" if size[k] > 1 else "") for k, v in labels.items()}
    modes, by_mode, colors, color_of = run_colors(reps, max_curves)

    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.6))
    lw, alpha = (1.0, 0.55) if by_mode else (1.6, 0.95)
    for rep, rs in items:
        c, lab = color_of[id(rep)], labels[id(rep)]
        mk = "o" if rep.n_epochs <= 12 and not by_mode else None
        for ax, field, ls, what in ((ax_acc, "train_acc", "--", "train"), (ax_acc, "val_acc", "-", "val"),
                                    (ax_loss, "train_loss", "--", "train"), (ax_loss, "val_loss", "-", "val")):
            ep, mean, lo, hi = curve_stats(rs, field)
            ax.plot(ep, mean, ls=ls, color=c, lw=lw, alpha=alpha, marker=mk, ms=3, label=f"{lab} {what}")
            if len(rs) > 1:
                ci_band(ax, ep, lo, hi, c, f"{lab} {what}")
    ax_acc.set(title="Accuracy", xlabel="epoch", ylabel="accuracy (%)")
    ax_loss.set(title="Loss", xlabel="epoch", ylabel="cross-entropy loss (nats)")
    percent_axis(ax_acc, ticker)
    for ax in (ax_acc, ax_loss):
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    if by_mode:
        handles = [Line2D([], [], color=colors[m], lw=2,
                          label=f"{m} ({sum(size[id(r)] for r in reps if mode_label(r) == m)} runs)") for m in modes]
    else:
        handles = [Line2D([], [], color=color_of[id(r)], lw=2, label=labels[id(r)]) for r in reps]
    style_key = [Line2D([], [], color="black", ls="--", lw=1.4, label="train"),
                 Line2D([], [], color="black", ls="-", lw=1.4, label="validation")]
    legend_below(fig, handles, ncol=len(handles) if len(handles) <= 2 else 3, key=style_key)
    common = common_description(reps, skip=keys)
    sup = "Training (dashed) and validation (solid) per epoch"
    if by_mode:
        sup += f": {len(runs)} runs, coloured by BN mode"
    if any(size[id(r)] > 1 for r in reps):
        sup += f"; seeds averaged, band: 95% CI ({n_text(size.values())})"
    sup += f"\n{common}" if common else ""
    fig.suptitle(sup)
    fig.tight_layout()
    figs.save("curves.png", fig, sup)


def points(runs, x_of, y_of):
    """x -> list of y for the runs, finite values only."""
    pts = {}
    for r in runs:
        x, y = x_of(r), y_of(r)
        if x is not None and y is not None and math.isfinite(y):
            pts.setdefault(x, []).append(y)
    return pts


def seed_intervals(runs, x_of, y_of):
    """x -> the 95% interval over seeds of y (runs of one seed at one x, e.g. at
    other rank counts, are averaged first)."""
    by = {}
    for r in runs:
        x, y = x_of(r), y_of(r)
        if x is not None and y is not None and math.isfinite(y):
            by.setdefault(x, {}).setdefault(seeds.seed_of(r), []).append(y)
    return {x: seeds.interval([sum(v) / len(v) for v in per_seed.values()]) for x, per_seed in by.items()}


def draw_line(ax, pts, center, color, marker, ls, label):
    """A line through center(values) at each x, and each run as a small dot where a point has several."""
    import numpy as np
    xs = sorted(pts)
    ys = [center(pts[x]) for x in xs]
    ax.plot(xs, ys, color=color, marker=marker, ls=ls, lw=1.8, ms=6, label=label)
    for x in xs:
        if len(pts[x]) > 1:
            ax.plot([x] * len(pts[x]), pts[x], ls="none", marker=marker, ms=3.5, color=color, alpha=0.45,
                    label="_runs")
    return np.asarray(ys)


def draw_mean_line(ax, runs, x_of, y_of, color, marker, ls, label):
    """The mean over seeds at each x joined by a line, its 95% interval as error
    bars, the runs as small dots. Returns the seed counts of the points."""
    ivs = seed_intervals(runs, x_of, y_of)
    xs = sorted(ivs)
    ax.plot(xs, [ivs[x].mean for x in xs], color=color, marker=marker, ls=ls, lw=1.8, ms=6, label=label)
    ci_errorbars(ax, xs, [ivs[x] for x in xs], color, label)
    for x, ys in points(runs, x_of, y_of).items():
        if len(ys) > 1:
            ax.plot([x] * len(ys), ys, ls="none", marker=marker, ms=3.5, color=color, alpha=0.45, label="_runs")
    return [ivs[x].n for x in xs]


def points_note(ns):
    """The figure title's note on what a point is."""
    if max(ns, default=1) < 2:
        return "one seed per point (n = 1), no interval"
    return f"points: mean over seeds, bars: 95% CI ({n_text(ns)})"


def final_validation_axes(ax_acc, ax_loss, xlabel, ticker, xs):
    """Titles, labels and log2 x axes of the two panels of validation after the last epoch."""
    ax_acc.set(title="Final validation accuracy", xlabel=xlabel, ylabel="validation accuracy (%)")
    ax_loss.set(title="Final validation loss", xlabel=xlabel, ylabel="validation loss (nats)")
    percent_axis(ax_acc, ticker)
    for ax in (ax_acc, ax_loss):
        log2_axis(ax, ticker, xs)


def plot_batch_size(figs, runs):
    plt, ticker = mpl()
    done = [r for r in runs if r.complete and r.n_epochs]
    gbs = {r.get("global_batch") for r in done}
    if len(gbs) < 2:
        why = "only one global batch" if gbs else "no complete run"
        return figs.skip("batch_size.png", f"{why} among complete runs ({', '.join(map(str, sorted(gbs)))}); "
                                           "needs runs at two or more global batch sizes")
    other = distinguishing(done, [k for k in candidate_keys(done) if k not in BATCH_KEYS])
    lines = {}
    for r in done:
        lines.setdefault((mode_label(r),) + tuple(r.get(k) for k in other), []).append(r)
    # A mode whose BN batch is not the global batch (local, groups) changes with the
    # rank count: one line per rank count there.
    split = {}
    for key, rs in lines.items():
        uses_np = key[0] != "none" and any(r.get("bn_batch") != r.get("global_batch") for r in rs)
        if uses_np and len({r.get("n_ranks") for r in rs}) > 1:
            for r in rs:
                split.setdefault(key + (("np", r.get("n_ranks")),), []).append(r)
        else:
            split[key] = rs
    order = line_order(split, other, done, first=mode_sort_key)
    styles = variant_styles(order)
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.6))
    ns = []
    for key in order:
        rs = split[key]
        text = key[0] + settings_text(other, key[1:1 + len(other)], done)
        if len(key) > 1 + len(other):
            text += f" np={key[-1][1]}"
        c, m, ls = styles[key]
        ns += draw_mean_line(ax_acc, rs, lambda r: r.get("global_batch"), lambda r: r.last("val_acc"), c, m, ls, text)
        draw_mean_line(ax_loss, rs, lambda r: r.get("global_batch"), lambda r: r.last("val_loss"), c, m, ls, text)
    final_validation_axes(ax_acc, ax_loss, "global batch (samples per step, log2 scale)", ticker, gbs)
    handles = [h for h in ax_acc.get_lines() if not h.get_label().startswith("_")]
    legend_below(fig, handles)
    common = common_description(done, skip=set(other) | {"global_batch", "n_ranks"})
    sup = ("Batch size: validation after the last epoch, by BN mode; " + points_note(ns)
           + (f"\n{common}" if common else ""))
    fig.suptitle(sup)
    fig.tight_layout()
    figs.save("batch_size.png", fig, sup)


def plot_bn_batch(figs, runs):
    plt, ticker = mpl()
    from matplotlib.lines import Line2D
    done = [r for r in runs if r.complete and r.n_epochs and r.get("bn") != "none" and as_int(r.get("bn_batch"))]
    other = distinguishing(done, [k for k in candidate_keys(done) if k not in BATCH_KEYS])
    lines = {}
    for r in done:
        lines.setdefault((r.get("global_batch"),) + tuple(r.get(k) for k in other), []).append(r)
    lines = {k: rs for k, rs in lines.items() if len({r.get("bn_batch") for r in rs}) >= 2}
    if not lines:
        return figs.skip("bn_batch.png", "no global batch has complete BN runs at two or more BN batch sizes "
                                         "(e.g. sync and local at the same global batch with 2+ ranks)")
    order = line_order(lines, other, done, first=sortable)
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.6))
    xs_all, modes_seen, ns = set(), set(), []
    for i, key in enumerate(order):
        rs = lines[key]
        c = f"C{i % 10}"
        text = f"gb={key[0]}" + settings_text(other, key[1:], done)
        for ax, field in ((ax_acc, "val_acc"), (ax_loss, "val_loss")):
            ivs = seed_intervals(rs, lambda r: r.get("bn_batch"), lambda r: r.last(field))
            xs = sorted(ivs)
            ax.plot(xs, [ivs[x].mean for x in xs], color=c, lw=1.8, label=text)
            ci_errorbars(ax, xs, [ivs[x] for x in xs], c, text)
            ns += [ivs[x].n for x in xs] if field == "val_acc" else []
            for r in rs:  # each run, marked by its BN mode
                mode = mode_label(r)
                modes_seen.add(mode)
                ax.plot([r.get("bn_batch")], [r.last(field)], ls="none", color=c, ms=7, alpha=0.9,
                        marker=mode_marker(mode), label="_run")
            xs_all |= set(xs)
    final_validation_axes(ax_acc, ax_loss, "BN batch (samples per BN statistic, log2 scale)", ticker, xs_all)
    handles = [h for h in ax_acc.get_lines() if not h.get_label().startswith("_")]
    handles += [Line2D([], [], ls="none", color="black", marker=mode_marker(m), ms=7,
                       label=f"BN {m}") for m in sorted(modes_seen, key=mode_sort_key)]
    legend_below(fig, handles, ncol=len(handles) if len(handles) <= 7 else 4)
    common = common_description(done, skip=set(other) | {"global_batch", "n_ranks"})
    sup = ("BN batch at fixed global batch: validation after the last epoch; " + points_note(ns)
           + (f"\n{common}" if common else ""))
    fig.suptitle(sup)
    fig.tight_layout()
    figs.save("bn_batch.png", fig, sup)


# (field, panel title, y label, y scale)
DIAG_PANELS = [
    ("act_mean", "activation mean", "mean over units of the batch mean", "linear"),
    ("act_var", "activation variance", "mean over units of the batch variance", "log"),
    ("act_mean_drift", "drift of the mean", "|change of the mean| since the previous log", "log"),
    ("act_var_drift", "drift of the variance", "|change of the variance| since the previous log", "log"),
]


def plot_diagnostics(figs, runs, max_curves):
    plt, ticker = mpl()
    import numpy as np
    from matplotlib.lines import Line2D
    rows = {id(r): diag_rows(r) for r in runs}
    have = [r for r in runs if rows[id(r)] is not None]
    if not have:
        return figs.skip("diagnostics.png", "no run has /diagnostics (made by bnmpi --diagnostics N)")
    layers = sorted({int(l) for r in have for l, v in zip(rows[id(r)]["layer"], rows[id(r)]["act_var"])
                     if np.isfinite(v)})
    if not layers:
        return figs.skip("diagnostics.png", "no run's /diagnostics/layers has activation statistics "
                                            "(they exist for hidden layers only)")
    keys, labels = run_labels(have)
    modes, by_mode, colors, color_of = run_colors(have, max_curves)
    n_widths = len({str(r.get("hidden")) for r in have})
    fig, axes = plt.subplots(len(layers), len(DIAG_PANELS), figsize=(4.1 * len(DIAG_PANELS), 2.9 * len(layers) + 0.8),
                             squeeze=False)
    lw, alpha = (1.0, 0.6) if by_mode else (1.5, 0.9)
    for i, layer in enumerate(layers):
        for j, (field, title, ylabel, scale) in enumerate(DIAG_PANELS):
            ax = axes[i][j]
            for r in have:
                d = rows[id(r)]
                m = (d["layer"] == layer) & np.isfinite(d[field])
                if scale == "log":
                    m &= d[field] > 0
                if not m.any():
                    continue
                ls = "--" if str(r.get("bn_place")) == "before" and r.get("bn") != "none" else "-"
                ax.plot(d["step"][m], d[field][m], color=color_of[id(r)], lw=lw, alpha=alpha, ls=ls,
                        label=labels[id(r)])
            ax.set(title=f"hidden layer {layer + 1}: {title}", xlabel="step", ylabel=ylabel)
            vals = np.abs(np.concatenate([ln.get_ydata() for ln in ax.get_lines()] or [np.zeros(0)]))
            vals = vals[vals > 0]
            if scale == "linear" and len(vals) and vals.max() > 1e3 * np.median(vals):
                # a run that blew up would flatten the others: linear near 0, log beyond
                ax.set_yscale("symlog", linthresh=float(np.median(vals)))
            else:
                ax.set_yscale(scale)
            ax.yaxis.label.set_size(8.5)
            ax.xaxis.set_major_locator(ticker.MaxNLocator(5, integer=True))
    if by_mode:
        handles = [Line2D([], [], color=colors[m], lw=2,
                          label=f"{m} ({sum(mode_label(r) == m for r in have)} runs)") for m in modes]
    else:
        handles = [Line2D([], [], color=color_of[id(r)], lw=2, ls="--" if str(r.get("bn_place")) == "before"
                          and r.get("bn") != "none" else "-", label=labels[id(r)]) for r in have]
    legend_below(fig, handles, ncol=len(handles) if len(handles) <= 3 else 3)
    every = {rows[id(r)]["every"] for r in have}
    common = common_description(have, skip=keys)
    sup = ("Per-layer activation statistics over training, at the BN input (where BN would be, without BN)"
           + (f", logged every {every.pop()} steps" if len(every) == 1 else "")
           + ("; dashed: BN before the ReLU" if any(str(r.get("bn_place")) == "before" and r.get("bn") != "none"
                                                      for r in have) else "")
           + (f"\n{common}" if common else ""))
    if n_widths > 1:
        sup += ("\n" if not common else "; ") + "runs with fewer hidden layers appear in the upper rows only"
    fig.suptitle(sup)
    fig.tight_layout()
    figs.save("diagnostics.png", fig, sup)
    shrink_png(os.path.join(figs.out, "diagnostics.png"))


def plot_throughput(figs, runs):
    plt, ticker = mpl()
    import numpy as np
    timed = [r for r in runs if r.n_epochs and math.isfinite(r.median("samples_per_s"))]
    gbs = {r.get("global_batch") for r in timed}
    if len(gbs) < 2:
        why = "only one global batch" if gbs else "no run has a timed epoch"
        return figs.skip("throughput.png", f"{why} ({', '.join(map(str, sorted(gbs)))}); "
                                           "needs runs at two or more global batch sizes")
    # after the rank count (threads usually follow from it), what else sets the speed
    other = [k for k in distinguishing(timed, ["n_ranks"] + SPEED_KEYS) if k != "n_ranks"]
    lines = {}
    for r in timed:
        lines.setdefault((r.get("n_ranks"),) + tuple(r.get(k) for k in other), []).append(r)
    order = line_order(lines, other, timed, first=sortable)
    fig, (ax_sps, ax_time) = plt.subplots(1, 2, figsize=(12, 4.6))
    for i, key in enumerate(order):
        rs = lines[key]
        text = f"np={key[0]}" + settings_text(other, key[1:], timed)
        marker, ls = VARIANT_STYLES[i % len(VARIANT_STYLES)]
        c = f"C{i % 10}"
        draw_line(ax_sps, points(rs, lambda r: r.get("global_batch"), lambda r: r.median("samples_per_s")),
                   np.median, c, marker, "-", text)
        draw_line(ax_time, points(rs, lambda r: r.get("global_batch"), lambda r: r.median("time_s")),
                   np.median, c, marker, "-", text)
    ax_sps.set(title="Training throughput (median over epochs)", xlabel="global batch (samples per step, log2 scale)",
               ylabel="samples/s")
    ax_time.set(title="Time per epoch (median, training + validation)",
                xlabel="global batch (samples per step, log2 scale)", ylabel="time per epoch (s)")
    ax_sps.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    for ax in (ax_sps, ax_time):
        log2_axis(ax, ticker, gbs)
        ax.set_ylim(bottom=0)
    handles = [h for h in ax_sps.get_lines() if not h.get_label().startswith("_")]
    legend_below(fig, handles)
    common = common_description(timed, skip=set(other) | {"global_batch", "n_ranks"})
    sup = "Throughput by rank count" + (f"\n{common}" if common else "")
    fig.suptitle(sup)
    fig.tight_layout()
    figs.save("throughput.png", fig, sup)


# Columns that newer bnmpi versions record; each is in the table when any run has it.
BN_EXTRA = ("bn_group", "ghost_batch", "bn_eval")


LR_EXTRA = ("lr_scale", "lr_ref_batch", "warmup_epochs", "lr_peak")


def table_rows(runs):
    def present(keys):
        return [k for k in keys if any(k in r.cfg for r in runs)]

    bn_extra, lr_extra = present(BN_EXTRA), present(LR_EXTRA)
    rows = []
    for r in runs:
        s = r.summary or {}
        best, best_ep = r.best_val()
        row = {"file": r.name, "status": "complete" if r.complete else "incomplete",
               "dataset": r.get("dataset"), "bn": r.get("bn"), "bn_place": r.get("bn_place")}
        row.update({k: r.get(k) for k in bn_extra})
        row.update({"hidden": r.get("hidden"), "optimizer": r.get("optimizer"), "lr": r.get("lr")})
        row.update({k: r.get(k) for k in lr_extra})
        row.update({
            "n_ranks": r.get("n_ranks"), "local_batch": r.get("local_batch"), "global_batch": r.get("global_batch"),
            "bn_batch": r.get("bn_batch"), "epochs": r.n_epochs, "epochs_planned": r.planned,
            "final_train_acc": r.last("train_acc"), "final_train_loss": r.last("train_loss"),
            "final_val_acc": r.last("val_acc"), "final_val_loss": r.last("val_loss"),
            "best_val_acc": best, "best_val_epoch": best_ep,
            "test_acc": s.get("test_acc") if r.complete else None,
            "test_loss": s.get("test_loss") if r.complete else None,
            "median_epoch_time_s": r.median("time_s"), "median_samples_per_s": r.median("samples_per_s"),
            "path": r.path})
        rows.append(row)
    return rows


def _csv_value(v):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    return repr(float(v)) if isinstance(v, float) else str(v)


def write_csv(path, rows):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(list(rows[0]))
    for row in rows:
        w.writerow([_csv_value(v) for v in row.values()])
    with open(path, "w", newline="") as fh:
        fh.write(buf.getvalue())


def _md(v, kind):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if kind == "pct":
        return f"{100 * v:.2f}%"
    if kind == "loss":
        return f"{v:.4f}"
    if kind == "sec":
        return f"{v:.3g}"
    if kind == "rate":
        return f"{v:,.0f}"
    return fmt_value(v)


# summary_by_config: (column, what, field of a run or a function of it, kind)
CONFIG_METRICS = [
    ("final_val_acc", "val acc", lambda r: r.last("val_acc"), "pct"),
    ("final_val_loss", "val loss", lambda r: r.last("val_loss"), "loss"),
    ("final_train_acc", "train acc", lambda r: r.last("train_acc"), "pct"),
    ("test_acc", "test acc", lambda r: (r.summary or {}).get("test_acc"), "pct"),
    ("test_loss", "test loss", lambda r: (r.summary or {}).get("test_loss"), "loss"),
    ("median_epoch_time_s", "epoch time (s, median)", lambda r: r.median("time_s"), "sec"),
]


def config_rows(runs):
    """One row per configuration (complete runs that differ only in their seed):
    its label, n, the seeds, and each metric's Interval over the seeds."""
    done = [r for r in runs if r.complete and r.n_epochs]
    groups = seeds.group(done)
    if not groups:
        return []
    reps = [g.runs[0] for g in groups]
    keys = ["_mode"] + [k for k in distinguishing(reps, [k for k in candidate_keys(reps) if k != "seed"])
                        if k != "_mode"]
    rows = []
    for g in groups:
        row = {"configuration": label(g.runs[0], keys) or "all runs", "n": g.n,
               "seeds": " ".join(str(s) for s in g.seeds), "epochs": g.runs[0].n_epochs,
               "files": " ".join(r.name for r in g.runs)}
        for col, _, of, _ in CONFIG_METRICS:
            row[col] = g.interval(lambda r: None if of(r) is None else float(of(r)))
        rows.append(row)
    return rows


def config_table_md(rows):
    if not rows:
        return []
    def cell(iv, kind):
        scale, digits, unit = {"pct": (100, 2, "%"), "loss": (1, 4, ""), "sec": (1, 3, "")}[kind]
        if not iv.n:
            return "–"
        m = f"{scale * iv.mean:.{digits}f}{unit}"
        return m if iv.n < 2 else f"{m} ± {scale * iv.half:.{digits}f}"
    out = ["## By configuration: mean ± 95% CI over seeds", "",
           "Complete runs that differ only in their seed are one configuration. Each cell is the mean over "
           "its n seeds ± the half-width of the Student-t 95% confidence interval (t(0.975, n-1) s/sqrt(n)); "
           "with n = 1 there is no interval and the cell is the one run's value.", "",
           "| configuration | n | seeds | epochs | " + " | ".join(c[1] for c in CONFIG_METRICS) + " |",
           "|---|---:|---|---:|" + "|".join("---:" for _ in CONFIG_METRICS) + "|"]
    for row in rows:
        out.append(f"| {row['configuration']} | {row['n']} | {row['seeds']} | {row['epochs']} | "
                   + " | ".join(cell(row[c], kind) for c, _, _, kind in CONFIG_METRICS) + " |")
    out.append("")
    return out


def write_config_csv(path, rows):
    """summary_by_config.csv: per metric its mean, ci_lo, ci_hi (empty for n = 1), as fractions."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    head = ["configuration", "n", "seeds", "epochs"]
    for c, _, _, _ in CONFIG_METRICS:
        head += [c + "_mean", c + "_ci_lo", c + "_ci_hi"]
    w.writerow(head + ["files"])
    for row in rows:
        cells = [row["configuration"], row["n"], row["seeds"], row["epochs"]]
        for c, _, _, _ in CONFIG_METRICS:
            iv = row[c]
            cells += [_csv_value(iv.mean), _csv_value(iv.lo), _csv_value(iv.hi)]
        w.writerow(cells + [row["files"]])
    with open(path, "w", newline="") as fh:
        fh.write(buf.getvalue())


def write_md(path, rows, runs, figs, inputs, skipped_ckpt):
    def varies(keys):  # the newer columns only where the runs differ in them (the CSV has them all)
        return [k for k in keys if rows and k in rows[0]
                and len({row[k] for row, r in zip(rows, runs) if r.get("bn") != "none"}) > 1]

    names = {"bn_group": "BN group (ranks)", "ghost_batch": "ghost batch", "bn_eval": "BN eval",
             "lr_scale": "lr scaling", "lr_ref_batch": "lr ref batch", "warmup_epochs": "warm-up epochs",
             "lr_peak": "peak lr"}
    cols = ([("file", "file", None), ("status", "status", None), ("dataset", "dataset", None), ("bn", "bn", None),
             ("bn_place", "BN place", None)] + [(k, names[k], None) for k in varies(BN_EXTRA)] +
            [("hidden", "hidden", None), ("optimizer", "optimizer", None), ("lr", "lr", None)] +
            [(k, names[k], None) for k in varies(LR_EXTRA)] +
            [("n_ranks", "ranks", None), ("local_batch", "local batch", None),
             ("global_batch", "global batch", None), ("bn_batch", "BN batch", None), ("epochs", "epochs", None),
             ("final_train_acc", "train acc", "pct"), ("final_train_loss", "train loss", "loss"),
             ("final_val_acc", "val acc", "pct"), ("final_val_loss", "val loss", "loss"),
             ("best_val_acc", "best val acc (epoch)", "best"),
             ("test_acc", "test acc", "pct"), ("test_loss", "test loss", "loss"),
             ("median_epoch_time_s", "epoch time (s, median)", "sec"),
             ("median_samples_per_s", "samples/s (median)", "rate")])
    n_inc = sum(not r.complete for r in runs)
    out = [f"# bnmpi results: {len(runs)} run{'s' if len(runs) != 1 else ''}"
           + (f" ({n_inc} incomplete)" if n_inc else ""), ""]
    out.append("Made by `bnmpi-analyze` (tools/analyze.py) from " + ", ".join(f"`{p}`" for p in inputs) + ". "
               "Train, validation and loss columns are the last epoch's; the test columns come from "
               "`/summary`, which only a finished run has. Times are medians over epochs.")
    out.append("")
    out.append("| " + " | ".join(c[1] for c in cols) + " |")
    out.append("|" + "|".join("---:" if c[2] else "---" for c in cols) + "|")
    for row, r in zip(rows, runs):
        cells = []
        for key, _, kind in cols:
            v = row[key]
            if key == "status":
                v = r.status
            elif key in ("bn_batch",) + BN_EXTRA and r.get("bn") == "none":
                v = None
            elif key == "epochs" and r.planned and r.planned != r.n_epochs:
                v = f"{r.n_epochs}/{r.planned}"
            if kind == "best":
                cells.append(_md(v, "pct") + (f" ({row['best_val_epoch']})" if row["best_val_epoch"] else ""))
            else:
                cells.append(_md(v, kind) if kind else ("–" if v is None else str(v).replace("|", "\\|")))
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    out += config_table_md(config_rows(runs))
    out.append("## Figures")
    out.append("")
    for name in FIGURES:
        if name in figs.made:
            out.append(f"![{name}]({name})")
            out.append("")
        elif name in figs.skipped:
            out.append(f"- `{name}` skipped: {figs.skipped[name]}")
            out.append("")
    if skipped_ckpt:
        out.append("Skipped bnmpi checkpoints: " + ", ".join(f"`{p}`" for p in skipped_ckpt))
        out.append("")
    with open(path, "w") as fh:
        fh.write("\n".join(out))


def run(inputs, out, max_curves=8, prog="bnmpi-analyze"):
    """The whole report for the runs in inputs, into out. Returns the exit status
    (0 done, 1 an output that cannot be written, 2 bad input), with one line on
    stderr per problem."""
    runs, skipped, status = load_for_report(inputs, out, prog)
    if status:
        return status
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        sys.stderr.write(f"{prog}: --out {out}: cannot create the folder ({e.strerror})\n")
        return 2
    n_inc = sum(not r.complete for r in runs)
    groups = [g for g in seeds.group([r for r in runs if r.complete]) if g.n > 1]
    say(f"{len(runs)} run{'s' if len(runs) != 1 else ''}" + (f" ({n_inc} incomplete)" if n_inc else "")
        + (f", {len(skipped)} checkpoint(s) skipped" if skipped else "")
        + (f"; {len(groups)} configuration(s) with several seeds" if groups else ""))
    for r in runs:
        if r.version and r.version > KNOWN_FORMAT_VERSION:
            say(f"{r.path}: format_version {r.version} is newer than this tool's {KNOWN_FORMAT_VERSION}; "
                "reading the fields it knows")
    try:
        figs = Figures(out)
        plot_curves(figs, runs, max_curves)
        plot_batch_size(figs, runs)
        plot_bn_batch(figs, runs)
        plot_throughput(figs, runs)
        plot_diagnostics(figs, runs, max_curves)
        rows = table_rows(runs)
        write_csv(os.path.join(out, "summary.csv"), rows)
        write_config_csv(os.path.join(out, "summary_by_config.csv"), config_rows(runs))
        write_md(os.path.join(out, "summary.md"), rows, runs, figs, inputs, skipped)
        with open(os.path.join(out, "figures.json"), "w") as fh:
            json.dump({"runs": [r.name for r in runs], "incomplete": [r.name for r in runs if not r.complete],
                       "figures": figs.made, "skipped": figs.skipped}, fh, indent=1)
            fh.write("\n")
    except OSError as e:
        sys.stderr.write(f"{prog}: cannot write to --out {out}: {e}\n")
        return 1
    say(f"summary.md, summary.csv, summary_by_config.csv, figures.json: {out}")
    return 0
