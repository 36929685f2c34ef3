#!/usr/bin/python3
"""Post-hoc analysis of bnmpi runs: figures and a results table from metrics files.

Reads one or more bnmpi metrics files (HDF5, root attribute format = "bnmpi-metrics";
see "The metrics file" in README.md) and writes into --out:

  curves.png       train (dashed) and validation (solid) accuracy and loss per epoch,
                   one line pair per run, labelled by what distinguishes the runs
                   (e.g. "bn=sync gb=64"); with more than --max-curves runs the lines
                   are coloured by BN mode instead, one legend entry per mode
  batch_size.png   final validation accuracy and loss against the global batch
                   (log2 axis), one line per BN mode: bn, plus bn_group=G when the
                   group is not the mode's own (1 for local, all ranks for sync)
                   and ghost_batch=K when ghost BN is on; a mode whose BN batch
                   depends on the rank count (local, groups) gets one line per
                   rank count, and other settings that differ (bn_eval, lr_scale,
                   hidden, ...) lines of their own
  bn_batch.png     final validation accuracy and loss against the BN batch (the
                   samples one BN statistic is computed over) at fixed global batch,
                   one line per global batch with two or more BN batch sizes
  throughput.png   training throughput (median over epochs of samples/s) and median
                   time per epoch against the global batch, one line per rank count
  diagnostics.png  per-layer activation statistics over training, from the runs
                   made with --diagnostics N (/diagnostics/layers): one row per
                   hidden layer; the activation mean and variance at the BN input
                   (where BN would be, in runs without BN) and their drift (the
                   change since the previous log) against the step, one line per
                   run, coloured by BN mode (none grey, local orange, sync blue);
                   skipped with a note when no run has diagnostics
  summary.md       the results table, one row per run (accuracies in percent),
                   followed by the figures
  summary.csv      the same table, accuracies as fractions at full precision.
                   Columns: file, status (complete, or incomplete: no /summary),
                   dataset, bn, bn_place, hidden, optimizer, lr, n_ranks,
                   local_batch, global_batch, bn_batch, epochs (done, planned),
                   the last epoch's train and validation accuracy and loss, the
                   best validation accuracy and its epoch, test accuracy and loss
                   (finished runs only), median epoch time, median samples/s;
                   plus bn_group, ghost_batch, bn_eval, lr_scale, lr_ref_batch,
                   warmup_epochs and lr_peak where the files record them (in
                   summary.md only where the runs differ). Rows are sorted by
                   dataset, model, optimizer, BN mode (none, local, sync, ...),
                   global batch and rank count.
  figures.json     each figure's axes titles, labels and line labels, and the
                   reason for each figure that was skipped (for tests and scripts)

Several runs at the same point of a line (other seeds, other rank counts) are drawn
as small dots and joined by their mean (median for throughput). Accuracy plots use
complete runs only (a run without /summary stopped early, and its last epoch is not
"final"); the curves, throughput and the table include incomplete runs, marked as
such. A figure without the data it needs (e.g. a single global batch) is skipped with
a one-line note, and a stale copy of it in --out is removed. Files are read without
taking HDF5's file lock, so a run still in progress can be analysed (it shows as
incomplete).

A DIR argument is searched recursively for *.h5 files; bnmpi checkpoints found
there (format = "bnmpi-checkpoint") are skipped. A path that does not exist or
cannot be read, a file that is not HDF5, or an HDF5 file that is not a bnmpi metrics
file is an error: one line per bad input on stderr, exit status 2, nothing written.

Exit status: 0 done, 1 missing Python packages or an output that cannot be written,
2 bad command line or input.

Needs numpy, h5py and matplotlib: Debian's /usr/bin/python3 with python3-h5py and
python3-matplotlib. Started by another python3 that lacks them, it re-runs itself
with /usr/bin/python3.
"""
import argparse
import csv
import io
import json
import math
import os
import sys

from debian_python import ensure_packages

PROG = "analyze.py"
FORMAT = "bnmpi-metrics"
CHECKPOINT_FORMAT = "bnmpi-checkpoint"
KNOWN_FORMAT_VERSION = 1
FIGURES = ("curves.png", "batch_size.png", "bn_batch.png", "throughput.png", "diagnostics.png")
EPOCH_FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "time_s", "samples_per_s")
DIAG_FIELDS = ("step", "layer", "act_mean", "act_var", "act_mean_drift", "act_var_drift")
BN_ORDER = {"none": 0, "local": 1, "sync": 2, "group": 3, "ghost": 4}
MODE_COLORS = {"none": "#4d4d4d", "local": "#ff7f0e", "sync": "#1f77b4", "group": "#2ca02c", "ghost": "#9467bd"}
MODE_FAMILIES = {"none": "Greys", "local": "Oranges", "sync": "Blues", "group": "Greens", "ghost": "Purples"}
MODE_MARKERS = {"none": "X", "local": "s", "sync": "o", "group": "^", "ghost": "D"}
VARIANT_STYLES = [("o", "-"), ("s", "--"), ("^", ":"), ("D", "-."), ("v", "-"), ("P", "--")]

# /config attributes that can tell runs apart, in the order a label names them,
# with their short names in labels. Later keys only appear when the earlier ones
# do not already distinguish the runs (bn_batch follows from the BN mode, gb and
# np; lr_peak from lr, lr_scale and gb). "_mode" is the BN mode (mode_label).
LABEL_KEYS = [
    ("_mode", "bn"), ("bn", "bn"), ("bn_place", "place"), ("bn_eval", "bn_eval"),
    ("global_batch", "gb"), ("n_ranks", "np"), ("local_batch", "lb"), ("bn_batch", "bn_batch"),
    ("bn_group", "bn_group"), ("ghost_batch", "ghost_batch"),
    ("dataset", "data"), ("hidden", "h"), ("optimizer", "opt"), ("lr", "lr"), ("lr_scale", "lr_scale"),
    ("lr_ref_batch", "lr_ref"), ("warmup_epochs", "warmup"), ("lr_peak", "lr_peak"), ("momentum", "mom"),
    ("nesterov", "nesterov"), ("weight_decay", "wd"), ("beta1", "beta1"), ("beta2", "beta2"),
    ("adam_eps", "adam_eps"), ("bn_momentum", "bn_mom"), ("bn_eps", "bn_eps"), ("epochs", "epochs"),
    ("init_scale", "init_scale"), ("train_limit", "limit"), ("val_fraction", "val_frac"), ("split_seed", "split_seed"),
    ("seed", "seed"), ("threads", "threads"), ("eval_batch", "eval_batch"),
]
SHORT = dict(LABEL_KEYS)
# Attributes that describe where or when a run happened, not what it computed.
NOT_CONFIG = {"metrics", "data", "start_time", "hostname", "force", "quiet", "slurm_job_id", "batch",
              "bnmpi_version", "mpi_library", "checkpoint", "checkpoint_every", "resume", "diagnostics"}
# Keys that are axes or averaged over in the batch-size figures, not line keys.
BATCH_KEYS = {"global_batch", "local_batch", "bn_batch", "n_ranks", "threads", "seed", "eval_batch",
              "lr_peak", "_mode", "bn", "bn_group", "ghost_batch"}
# Keys that can change the speed of a run, for the throughput figure's line keys.
SPEED_KEYS = ["hidden", "threads", "train_limit", "val_fraction", "eval_batch", "bn_eval"]


def say(line):
    """A progress line on stdout; a closed stdout (| head) does not stop the work."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        sys.stdout = open(os.devnull, "w")


class InputError(Exception):
    """A bad input file: the message names the file and what was expected."""


# --- reading -------------------------------------------------------------------

def _native(v):
    """An attribute value as a plain Python scalar (str, int, float)."""
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if hasattr(v, "shape") and getattr(v, "shape", ()) != () and v.size == 1:
        v = v.reshape(())
    if hasattr(v, "item"):
        v = v.item()
        if isinstance(v, bytes):
            return v.decode("utf-8", "replace")
    return v


class Run:
    """One metrics file: its /config, /epochs and /summary (not /steps), in memory."""

    def __init__(self, path, cfg, epochs, summary, version, diag=None):
        self.path = path
        self.diag = diag          # /diagnostics/layers: field -> numpy array, or None
        self.name = os.path.basename(path)
        self.cfg = cfg            # /config attributes as Python scalars
        self.epochs = epochs      # field -> numpy array, one entry per epoch, sorted by epoch
        self.summary = summary    # /summary attributes, or None for a run that did not finish
        self.version = version
        self.n_epochs = len(epochs["epoch"])
        self.planned = _int(cfg.get("epochs"))

    @property
    def complete(self):
        return self.summary is not None and "test_acc" in self.summary and "test_loss" in self.summary

    @property
    def status(self):
        if self.complete:
            return "complete"
        planned = f"/{self.planned}" if self.planned else ""
        return f"incomplete ({self.n_epochs}{planned} epochs)"

    def get(self, key, default=None):
        if key == "_mode":
            return mode_label(self)
        return self.cfg.get(key, default)

    def last(self, field):
        return float(self.epochs[field][-1]) if self.n_epochs else math.nan

    def median(self, field):
        import numpy as np
        vals = self.epochs[field][np.isfinite(self.epochs[field])] if self.n_epochs else []
        return float(np.median(vals)) if len(vals) else math.nan

    def best_val(self):
        import numpy as np
        if not self.n_epochs or not np.any(np.isfinite(self.epochs["val_acc"])):
            return math.nan, None
        i = int(np.nanargmax(self.epochs["val_acc"]))
        return float(self.epochs["val_acc"][i]), int(self.epochs["epoch"][i])


def _int(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _open_h5(path):
    """Opens read-only without HDF5's file lock, so that a file a running bnmpi
    still holds open for writing can be read."""
    import h5py
    try:
        return h5py.File(path, "r", locking=False)
    except TypeError:  # h5py < 3.5 has no locking argument
        os.environ.setdefault("HDF5_USE_FILE_LOCKING", "FALSE")
        return h5py.File(path, "r")


def read_format(path):
    """The root attribute format of an HDF5 file, or raises InputError for a path
    that is not a readable HDF5 file."""
    import h5py
    if not os.path.exists(path):
        raise InputError(f"{path}: does not exist (expected a bnmpi metrics .h5 file or a folder of them)")
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, expected a bnmpi metrics .h5 file")
    try:
        with open(path, "rb") as fh:
            fh.read(8)
    except OSError as e:
        raise InputError(f"{path}: cannot read it ({e.strerror or e})")
    try:
        is_hdf5 = h5py.is_hdf5(path)
    except Exception:  # noqa: BLE001 - h5py raises several kinds here
        is_hdf5 = False
    if not is_hdf5:
        raise InputError(f"{path}: not an HDF5 file (expected a bnmpi metrics file, "
                         f"HDF5 with root attribute format = \"{FORMAT}\")")
    try:
        with _open_h5(path) as f:
            return _native(f.attrs["format"]) if "format" in f.attrs else None
    except OSError as e:
        raise InputError(f"{path}: cannot open it as HDF5 (truncated or corrupt?): {e}")


def load_run(path):
    """Reads one metrics file; raises InputError naming the file and what was expected."""
    import numpy as np
    fmt = read_format(path)
    if fmt != FORMAT:
        what = ("a bnmpi checkpoint, not a metrics file" if fmt == CHECKPOINT_FORMAT else
                f"root attribute format is \"{fmt}\"" if fmt is not None else
                "HDF5 file without the root attribute format")
        raise InputError(f"{path}: {what}; expected a bnmpi metrics file (format = \"{FORMAT}\")")
    try:
        with _open_h5(path) as f:
            version = _int(_native(f.attrs.get("format_version", 0)))
            if "config" not in f:
                raise InputError(f"{path}: bnmpi metrics file without /config (expected the layout of "
                                 f"format_version {KNOWN_FORMAT_VERSION}, see README.md)")
            cfg = {k: _native(v) for k, v in f["config"].attrs.items()}
            if "bn" not in cfg:
                raise InputError(f"{path}: /config lacks the attribute bn (expected the layout of "
                                 f"format_version {KNOWN_FORMAT_VERSION}, see README.md)")
            if "epochs" in f:
                table = f["epochs"][()]
                names = table.dtype.names or ()
                missing = [n for n in EPOCH_FIELDS if n not in names]
                if missing:
                    raise InputError(f"{path}: /epochs lacks the field(s) {', '.join(missing)} "
                                     f"(expected {', '.join(EPOCH_FIELDS)})")
                epochs = {n: np.asarray(table[n], dtype=float) for n in names}
                epochs["epoch"] = np.asarray(table["epoch"], dtype=int)
            else:  # killed before the table was made
                epochs = {n: np.zeros(0) for n in EPOCH_FIELDS}
                epochs["epoch"] = np.zeros(0, dtype=int)
            summary = ({k: _native(v) for k, v in f["summary"].attrs.items()} if "summary" in f else None)
            diag = None
            if "diagnostics" in f and "layers" in f["diagnostics"]:
                table = f["diagnostics"]["layers"][()]
                names = table.dtype.names or ()
                missing = [n for n in DIAG_FIELDS if n not in names]
                if missing:
                    raise InputError(f"{path}: /diagnostics/layers lacks the field(s) {', '.join(missing)} "
                                     f"(expected {', '.join(DIAG_FIELDS)}, see README.md)")
                diag = {n: np.asarray(table[n], dtype=float) for n in names}
                for n in ("step", "layer"):
                    diag[n] = np.asarray(table[n], dtype=int)
                diag["every"] = _int(_native(f["diagnostics"].attrs.get("every", 0)))
    except InputError:
        raise
    except (OSError, KeyError, ValueError) as e:
        raise InputError(f"{path}: cannot read the bnmpi metrics layout (truncated or corrupt?): {e}")
    # A resumed run may repeat an epoch: keep the last row written for each epoch.
    if len(epochs["epoch"]):
        order = {}
        for i, ep in enumerate(epochs["epoch"]):
            order[int(ep)] = i
        idx = np.array([order[k] for k in sorted(order)], dtype=int)
        epochs = {n: v[idx] for n, v in epochs.items()}
    return Run(path, cfg, epochs, summary, version, diag)


def expand_inputs(args):
    """The .h5 files named by the arguments (folders searched recursively) as
    (path, found_in_a_folder), and the errors for arguments that name nothing usable."""
    files, errors, seen = [], [], set()

    def add(p, from_dir):
        real = os.path.realpath(p)
        if real not in seen:
            seen.add(real)
            files.append((p, from_dir))

    for a in args:
        if os.path.isdir(a):
            found = []
            for root, dirs, names in os.walk(a, onerror=lambda e: errors.append(
                    f"{e.filename}: cannot read the folder ({e.strerror})")):
                dirs.sort()
                found += [os.path.join(root, n) for n in sorted(names) if n.endswith(".h5")]
            if not found:
                errors.append(f"{a}: no *.h5 files under this folder (expected bnmpi metrics files)")
            for p in found:
                add(p, True)
        elif os.path.exists(a) or os.path.islink(a):
            add(a, False)
        else:
            errors.append(f"{a}: does not exist (expected a bnmpi metrics .h5 file or a folder of them)")
    return files, errors


def load_all(args):
    files, errors = expand_inputs(args)
    runs, skipped = [], []
    for path, from_dir in files:
        try:
            if from_dir and read_format(path) == CHECKPOINT_FORMAT:
                skipped.append(path)
                continue
            runs.append(load_run(path))
        except InputError as e:
            errors.append(str(e))
    # Show file names; where two inputs share a name, their paths.
    counts = {}
    for r in runs:
        counts[r.name] = counts.get(r.name, 0) + 1
    for r in runs:
        if counts[r.name] > 1:
            r.name = os.path.relpath(r.path)
    return runs, skipped, errors


# --- labels and grouping -------------------------------------------------------------

def fmt_value(v):
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def candidate_keys(runs):
    keys = [k for k, _ in LABEL_KEYS]
    extra = sorted({k for r in runs for k in r.cfg} - set(keys) - NOT_CONFIG)
    return keys + [k for k in extra if not k.endswith("_sha256")]


def distinguishing(runs, keys):
    """The keys, in order, that split runs not yet told apart by the keys chosen
    before them. Runs lacking a key count as having the value None."""
    chosen, classes = [], [list(runs)]
    for k in keys:
        if any(len({r.get(k) for r in c}) > 1 for c in classes):
            chosen.append(k)
            new = []
            for c in classes:
                groups = {}
                for r in c:
                    groups.setdefault(r.get(k), []).append(r)
                new += groups.values()
            classes = new
    return chosen


def label(run, keys):
    return " ".join(f"{SHORT.get(k, k)}={fmt_value(run.get(k))}" for k in keys if run.get(k) is not None)


def usual(k, runs):
    """The value of k that most runs have."""
    counts = {}
    for r in runs:
        counts[r.get(k)] = counts.get(r.get(k), 0) + 1
    return max(counts, key=lambda x: (counts[x], str(x)))


def settings_text(other, values, runs):
    """ " k=v" for the settings in other where values differ from the value most
    runs have (so the usual configuration reads as just its mode or batch)."""
    return "".join(f" {SHORT.get(k, k)}={fmt_value(v)}" for k, v in zip(other, values) if v != usual(k, runs))


def _sortable(v):
    return (0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v))


def line_order(keys, other, runs, first=lambda v: v):
    """Sorts line keys (first value, then the settings in other): the usual
    settings before the unusual ones."""
    def sort_key(key):
        rest = key[1:1 + len(other)]
        return (first(key[0]), [v != usual(k, runs) for k, v in zip(other, rest)],
                [_sortable(v) for v in rest], [_sortable(v[1]) for v in key[1 + len(other):]])
    return sorted(keys, key=sort_key)


def mode_label(run):
    """The BN mode: /config bn, plus bn_group when it is not the mode's own (1 for
    local, all ranks for sync) and ghost_batch when ghost BN is on (> 0)."""
    bn = str(run.cfg.get("bn"))
    if bn == "none":
        return bn
    parts = [bn]
    group, ghost = _int(run.cfg.get("bn_group")), _int(run.cfg.get("ghost_batch"))
    own = _int(run.cfg.get("n_ranks")) if bn == "sync" else 1
    if group and group > 0 and group != own:
        parts.append(f"bn_group={group}")
    if ghost and ghost > 0:
        parts.append(f"ghost_batch={ghost}")
    return " ".join(parts)


def mode_marker(mode):
    if "ghost_batch=" in mode:
        return "D"
    if "bn_group=" in mode:
        return "^"
    return MODE_MARKERS.get(_head(mode), "v")


def mode_sort_key(mode):
    return (BN_ORDER.get(_head(mode), len(BN_ORDER)), mode)


def run_sort_key(r):
    def num(k):
        v = r.get(k)
        return (0, v) if isinstance(v, (int, float)) else (1, str(v))
    widths = tuple(_int(w) or 0 for w in str(r.get("hidden", "")).split(","))
    return (str(r.get("dataset", "")), widths, str(r.get("optimizer", "")), num("lr"),
            mode_sort_key(mode_label(r)), str(r.get("bn_place", "")), num("global_batch"), num("n_ranks"),
            num("bn_batch"), num("seed"), r.name)


def common_description(runs, skip=()):
    """Short text of the settings all the runs share, for figure titles."""
    def same(k):
        vals = {r.get(k) for r in runs}
        return next(iter(vals)) if len(vals) == 1 and k not in skip else None

    parts = []
    if same("dataset") is not None:
        parts.append({"mnist": "MNIST", "fashion": "Fashion-MNIST"}.get(same("dataset"), same("dataset")))
    if same("hidden") is not None:
        parts.append("MLP 784-" + str(same("hidden")).replace(",", "-") + "-10")
    opt, lr = same("optimizer"), same("lr")
    if opt is not None:
        parts.append(f"{opt} lr {fmt_value(lr)}" if lr is not None else str(opt))
    if same("lr_scale") not in (None, "none"):
        parts.append(f"lr scaled {same('lr_scale')} from global batch {same('lr_ref_batch')}")
    if same("warmup_epochs"):
        parts.append(f"{fmt_value(same('warmup_epochs'))} warm-up epochs")
    if same("bn_eval") not in (None, "running"):
        parts.append(f"BN eval {same('bn_eval')}")
    if same("global_batch") is not None:
        parts.append(f"global batch {same('global_batch')}")
    if same("n_ranks") is not None:
        n = same("n_ranks")
        parts.append(f"{n} rank" + ("s" if n != 1 else ""))
    if same("train_limit"):
        parts.append(f"{same('train_limit')} training samples")
    return ", ".join(parts)


def _head(mode):
    return mode.split()[0]


def mode_colors(modes):
    """One colour per BN mode label: none grey, local orange, sync blue; variants
    of a mode (ghost_batch=8, bn_group=2, ...) in lighter shades of its colour;
    unknown modes from the rest of the palette."""
    plt, _ = _mpl()
    extra = iter(["#d62728", "#8c564b", "#e377c2", "#bcbd22", "#17becf"] * 4)
    heads = {}
    for m in sorted(set(modes), key=mode_sort_key):
        heads.setdefault(_head(m), []).append(m)
    colors = {}
    for head, ms in heads.items():
        base = MODE_COLORS.get(head) or next(extra)
        cmap = plt.get_cmap(MODE_FAMILIES.get(head, "Greys"))
        for i, m in enumerate(ms):
            colors[m] = base if i == 0 or head not in MODE_FAMILIES else cmap(0.5 - 0.15 * (i - 1) / max(1, len(ms) - 2))
    return colors


def variant_styles(line_keys):
    """Colour by BN mode; lines of one mode (other rank counts or settings)
    differ in marker and line style."""
    colors = mode_colors([k[0] for k in line_keys])
    styles, seen = {}, {}
    for key in line_keys:
        n = seen.get(_head(key[0]), 0)
        seen[_head(key[0])] = n + 1
        marker, ls = VARIANT_STYLES[n % len(VARIANT_STYLES)]
        styles[key] = (colors[key[0]], marker, ls)
    return styles


# --- figures ---------------------------------------------------------------------

def _mpl():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib import ticker
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 100, "axes.grid": True, "grid.alpha": 0.3,
                         "axes.spines.top": False, "axes.spines.right": False, "font.size": 10,
                         "axes.titlesize": 11, "legend.fontsize": 9, "legend.frameon": False})
    return plt, ticker


class Figures:
    """Saves figures and records what each one holds, for figures.json."""

    def __init__(self, out):
        self.out = out
        self.made, self.skipped = {}, {}

    def skip(self, name, reason):
        self.skipped[name] = reason
        stale = os.path.join(self.out, name)
        if os.path.isfile(stale):
            os.remove(stale)
        say(f"{name}: skipped: {reason}")

    def save(self, name, fig, suptitle):
        plt, _ = _mpl()
        desc = {"suptitle": suptitle, "axes": [], "legend": []}
        for ax in fig.axes:
            lg = ax.get_legend()
            desc["axes"].append({
                "title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(),
                "xscale": ax.get_xscale(), "yscale": ax.get_yscale(),
                "lines": [ln.get_label() for ln in ax.get_lines() if not ln.get_label().startswith("_")],
                "legend": [t.get_text() for t in lg.get_texts()] if lg else []})
        for lg in fig.legends:
            desc["legend"] += [t.get_text() for t in lg.get_texts() if t.get_text().strip()]
        path = os.path.join(self.out, name)
        fig.savefig(path, bbox_inches="tight", pad_inches=0.15)
        plt.close(fig)
        self.made[name] = desc
        say(f"{name}: {path}")


def _percent_axis(ax, ticker):
    """Fractions shown as percent, with as few decimals as the tick spacing needs."""
    class Percent(ticker.Formatter):
        decimals = 0

        def format_ticks(self, values):
            # the fewest decimals that show every tick exactly (2.5% steps need one)
            self.decimals = next((d for d in range(4) if all(
                abs(round(100 * v, d) - 100 * v) < 1e-6 for v in values)), 3)
            return [self(v) for v in values]

        def __call__(self, v, pos=None):
            return f"{100 * v:.{self.decimals}f}%"

    ax.yaxis.set_major_formatter(Percent())


def _log2_axis(ax, ticker, xs):
    ax.set_xscale("log", base=2)
    xs = sorted(set(xs))
    ax.xaxis.set_major_locator(ticker.FixedLocator(xs))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    if len(xs) > 1:
        lo, hi = math.log2(xs[0]), math.log2(xs[-1])
        pad = 0.08 * (hi - lo)
        ax.set_xlim(2 ** (lo - pad), 2 ** (hi + pad))


def _legend_below(fig, handles, ncol=None, key=()):
    """One legend under the axes, filled row by row; the handles in key (a style
    key such as train/validation) start a row of their own."""
    from matplotlib.lines import Line2D
    if not handles:
        return
    ncol = ncol or (len(handles) if len(handles) <= 6 else 4)
    if key:
        ncol = max(ncol, len(key))
    blank = lambda: Line2D([], [], alpha=0, label=" ")
    rows = [list(handles[i:i + ncol]) for i in range(0, len(handles), ncol)]
    rows = [r + [blank() for _ in range(ncol - len(r))] for r in rows]
    if key:
        rows.append(list(key) + [blank() for _ in range(ncol - len(key))])
    by_column = [rows[i][j] for j in range(ncol) for i in range(len(rows))]  # matplotlib fills columns
    fig.legend(handles=by_column, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=ncol,
               handlelength=2.6, columnspacing=1.6)


def run_colors(runs, max_curves):
    """Colours for runs drawn one line each: with more than max_curves runs one
    colour per BN mode; else shades of the mode's colour (up to 4 runs a mode),
    else the default cycle. Returns (modes, by_mode, mode -> colour, id(run) -> colour)."""
    plt, _ = _mpl()
    modes = sorted({mode_label(r) for r in runs}, key=mode_sort_key)
    by_mode, colors = len(runs) > max_curves, {}
    if by_mode:
        colors = mode_colors(modes)
        color_of = {id(r): colors[mode_label(r)] for r in runs}
    elif all(_head(m) in MODE_FAMILIES for m in modes) and all(
            sum(_head(mode_label(r)) == h for r in runs) <= 4 for h in {_head(m) for m in modes}):
        # shades of one colour per BN mode: BN against no BN at a glance
        color_of = {}
        for h in {_head(m) for m in modes}:
            these = [r for r in runs if _head(mode_label(r)) == h]
            cmap = plt.get_cmap(MODE_FAMILIES[h])
            for i, r in enumerate(these):
                color_of[id(r)] = (MODE_COLORS[h] if len(these) == 1 else
                                   cmap(0.9 - 0.45 * i / (len(these) - 1)))
    else:
        color_of = {id(r): f"C{i % 10}" for i, r in enumerate(runs)}
    return modes, by_mode, colors, color_of


def run_labels(runs):
    """Legend text per run: what sets it apart (BN mode first), the file name
    for runs of the same configuration, and "(incomplete)" for unfinished runs."""
    keys = ["_mode"] + [k for k in distinguishing(runs, candidate_keys(runs)) if k != "_mode"]
    labels = {id(r): label(r, keys) for r in runs}
    repeats = [r for r in runs if sum(labels[id(q)] == labels[id(r)] for q in runs) > 1]
    for r in repeats:
        labels[id(r)] += f" [{os.path.splitext(r.name)[0]}]"
    return keys, {id(r): labels[id(r)] + ("" if r.complete else " (incomplete)") for r in runs}


def plot_curves(figs, runs, max_curves):
    plt, ticker = _mpl()
    from matplotlib.lines import Line2D
    runs = [r for r in runs if r.n_epochs]
    if not runs:
        return figs.skip("curves.png", "no run has a completed epoch")
    keys, labels = run_labels(runs)
    modes, by_mode, colors, color_of = run_colors(runs, max_curves)

    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.6))
    lw, alpha = (1.0, 0.55) if by_mode else (1.6, 0.95)
    for r in runs:
        ep, c, lab = r.epochs["epoch"], color_of[id(r)], labels[id(r)]
        mk = "o" if r.n_epochs <= 12 and not by_mode else None
        ax_acc.plot(ep, r.epochs["train_acc"], ls="--", color=c, lw=lw, alpha=alpha, marker=mk, ms=3,
                    label=f"{lab} train")
        ax_acc.plot(ep, r.epochs["val_acc"], ls="-", color=c, lw=lw, alpha=alpha, marker=mk, ms=3,
                    label=f"{lab} val")
        ax_loss.plot(ep, r.epochs["train_loss"], ls="--", color=c, lw=lw, alpha=alpha, marker=mk, ms=3,
                     label=f"{lab} train")
        ax_loss.plot(ep, r.epochs["val_loss"], ls="-", color=c, lw=lw, alpha=alpha, marker=mk, ms=3,
                     label=f"{lab} val")
    ax_acc.set(title="Accuracy", xlabel="epoch", ylabel="accuracy (%)")
    ax_loss.set(title="Loss", xlabel="epoch", ylabel="cross-entropy loss (nats)")
    _percent_axis(ax_acc, ticker)
    for ax in (ax_acc, ax_loss):
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    if by_mode:
        handles = [Line2D([], [], color=colors[m], lw=2,
                          label=f"{m} ({sum(mode_label(r) == m for r in runs)} runs)") for m in modes]
    else:
        handles = [Line2D([], [], color=color_of[id(r)], lw=2, label=labels[id(r)]) for r in runs]
    style_key = [Line2D([], [], color="black", ls="--", lw=1.4, label="train"),
                 Line2D([], [], color="black", ls="-", lw=1.4, label="validation")]
    _legend_below(fig, handles, ncol=len(handles) if len(handles) <= 2 else 3, key=style_key)
    common = common_description(runs, skip=keys)
    sup = "Training (dashed) and validation (solid) per epoch"
    if by_mode:
        sup += f": {len(runs)} runs, coloured by BN mode"
    sup += f"\n{common}" if common else ""
    fig.suptitle(sup)
    fig.tight_layout()
    figs.save("curves.png", fig, sup)


def _points(runs, x_of, y_of):
    """x -> list of y for the runs, finite values only."""
    pts = {}
    for r in runs:
        x, y = x_of(r), y_of(r)
        if x is not None and y is not None and math.isfinite(y):
            pts.setdefault(x, []).append(y)
    return pts


def _draw_line(ax, pts, center, color, marker, ls, label):
    import numpy as np
    xs = sorted(pts)
    ys = [center(pts[x]) for x in xs]
    ax.plot(xs, ys, color=color, marker=marker, ls=ls, lw=1.8, ms=6, label=label)
    for x in xs:
        if len(pts[x]) > 1:
            ax.plot([x] * len(pts[x]), pts[x], ls="none", marker=marker, ms=3.5, color=color, alpha=0.45,
                    label="_runs")
    return np.asarray(ys)


def _final_validation_axes(ax_acc, ax_loss, xlabel, ticker, xs):
    """Titles, labels and log2 x axes of the two panels of validation after the last epoch."""
    ax_acc.set(title="Final validation accuracy", xlabel=xlabel, ylabel="validation accuracy (%)")
    ax_loss.set(title="Final validation loss", xlabel=xlabel, ylabel="validation loss (nats)")
    _percent_axis(ax_acc, ticker)
    for ax in (ax_acc, ax_loss):
        _log2_axis(ax, ticker, xs)


def plot_batch_size(figs, runs):
    plt, ticker = _mpl()
    import numpy as np
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
    for key in order:
        rs = split[key]
        text = key[0] + settings_text(other, key[1:1 + len(other)], done)
        if len(key) > 1 + len(other):
            text += f" np={key[-1][1]}"
        c, m, ls = styles[key]
        _draw_line(ax_acc, _points(rs, lambda r: r.get("global_batch"), lambda r: r.last("val_acc")),
                   np.mean, c, m, ls, text)
        _draw_line(ax_loss, _points(rs, lambda r: r.get("global_batch"), lambda r: r.last("val_loss")),
                   np.mean, c, m, ls, text)
    _final_validation_axes(ax_acc, ax_loss, "global batch (samples per step, log2 scale)", ticker, gbs)
    handles = [h for h in ax_acc.get_lines() if not h.get_label().startswith("_")]
    _legend_below(fig, handles)
    common = common_description(done, skip=set(other) | {"global_batch", "n_ranks"})
    sup = "Batch size: validation after the last epoch, by BN mode" + (f"\n{common}" if common else "")
    fig.suptitle(sup)
    fig.tight_layout()
    figs.save("batch_size.png", fig, sup)


def plot_bn_batch(figs, runs):
    plt, ticker = _mpl()
    import numpy as np
    from matplotlib.lines import Line2D
    done = [r for r in runs if r.complete and r.n_epochs and r.get("bn") != "none" and _int(r.get("bn_batch"))]
    other = distinguishing(done, [k for k in candidate_keys(done) if k not in BATCH_KEYS])
    lines = {}
    for r in done:
        lines.setdefault((r.get("global_batch"),) + tuple(r.get(k) for k in other), []).append(r)
    lines = {k: rs for k, rs in lines.items() if len({r.get("bn_batch") for r in rs}) >= 2}
    if not lines:
        return figs.skip("bn_batch.png", "no global batch has complete BN runs at two or more BN batch sizes "
                                         "(e.g. sync and local at the same global batch with 2+ ranks)")
    order = line_order(lines, other, done, first=_sortable)
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.6))
    xs_all, modes_seen = set(), set()
    for i, key in enumerate(order):
        rs = lines[key]
        c = f"C{i % 10}"
        text = f"gb={key[0]}" + settings_text(other, key[1:], done)
        for ax, field in ((ax_acc, "val_acc"), (ax_loss, "val_loss")):
            pts = _points(rs, lambda r: r.get("bn_batch"), lambda r: r.last(field))
            xs = sorted(pts)
            ax.plot(xs, [np.mean(pts[x]) for x in xs], color=c, lw=1.8, label=text)
            for r in rs:  # each run, marked by its BN mode
                mode = mode_label(r)
                modes_seen.add(mode)
                ax.plot([r.get("bn_batch")], [r.last(field)], ls="none", color=c, ms=7, alpha=0.9,
                        marker=mode_marker(mode), label="_run")
            xs_all |= set(xs)
    _final_validation_axes(ax_acc, ax_loss, "BN batch (samples per BN statistic, log2 scale)", ticker, xs_all)
    handles = [h for h in ax_acc.get_lines() if not h.get_label().startswith("_")]
    handles += [Line2D([], [], ls="none", color="black", marker=mode_marker(m), ms=7,
                       label=f"BN {m}") for m in sorted(modes_seen, key=mode_sort_key)]
    _legend_below(fig, handles, ncol=len(handles) if len(handles) <= 7 else 4)
    common = common_description(done, skip=set(other) | {"global_batch", "n_ranks"})
    sup = "BN batch at fixed global batch: validation after the last epoch" + (f"\n{common}" if common else "")
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


def _diag_rows(run):
    """The run's /diagnostics/layers rows, one per (step, layer): the last row
    written for each (a resumed run may have written one twice)."""
    import numpy as np
    d = run.diag
    if d is None or not len(d["step"]):
        return None
    last = {}
    for i, (st, ly) in enumerate(zip(d["step"], d["layer"])):
        last[(int(st), int(ly))] = i
    idx = np.array([last[k] for k in sorted(last)], dtype=int)
    return {n: (v[idx] if hasattr(v, "shape") and v.shape == d["step"].shape else v) for n, v in d.items()}


def plot_diagnostics(figs, runs, max_curves):
    plt, ticker = _mpl()
    import numpy as np
    from matplotlib.lines import Line2D
    rows = {id(r): _diag_rows(r) for r in runs}
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
    _legend_below(fig, handles, ncol=len(handles) if len(handles) <= 3 else 3)
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


def shrink_png(path):
    """Re-saves a PNG with a 256-colour palette: many thin lines otherwise make
    a file of several hundred KB; line plots lose nothing visible."""
    try:
        from PIL import Image
    except ImportError:  # matplotlib needs Pillow, so this is unusual; keep the full-colour file
        return
    with Image.open(path) as img:
        small = img.convert("RGB").quantize(colors=256)
    small.save(path, optimize=True)


def plot_throughput(figs, runs):
    plt, ticker = _mpl()
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
    order = line_order(lines, other, timed, first=_sortable)
    fig, (ax_sps, ax_time) = plt.subplots(1, 2, figsize=(12, 4.6))
    for i, key in enumerate(order):
        rs = lines[key]
        text = f"np={key[0]}" + settings_text(other, key[1:], timed)
        marker, ls = VARIANT_STYLES[i % len(VARIANT_STYLES)]
        c = f"C{i % 10}"
        _draw_line(ax_sps, _points(rs, lambda r: r.get("global_batch"), lambda r: r.median("samples_per_s")),
                   np.median, c, marker, "-", text)
        _draw_line(ax_time, _points(rs, lambda r: r.get("global_batch"), lambda r: r.median("time_s")),
                   np.median, c, marker, "-", text)
    ax_sps.set(title="Training throughput (median over epochs)", xlabel="global batch (samples per step, log2 scale)",
               ylabel="samples/s")
    ax_time.set(title="Time per epoch (median, training + validation)",
                xlabel="global batch (samples per step, log2 scale)", ylabel="time per epoch (s)")
    ax_sps.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    for ax in (ax_sps, ax_time):
        _log2_axis(ax, ticker, gbs)
        ax.set_ylim(bottom=0)
    handles = [h for h in ax_sps.get_lines() if not h.get_label().startswith("_")]
    _legend_below(fig, handles)
    common = common_description(timed, skip=set(other) | {"global_batch", "n_ranks"})
    sup = "Throughput by rank count" + (f"\n{common}" if common else "")
    fig.suptitle(sup)
    fig.tight_layout()
    figs.save("throughput.png", fig, sup)


# --- the table ---------------------------------------------------------------------

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
    out.append("Made by `tools/analyze.py` from " + ", ".join(f"`{p}`" for p in inputs) + ". "
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


# --- main ------------------------------------------------------------------------

def parse_args(argv):
    doc = __doc__.split("\n", 2)
    p = argparse.ArgumentParser(prog=PROG, description=doc[0] + "\n" + doc[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                usage=f"{PROG} RUN.h5|DIR [RUN.h5|DIR ...] --out DIR [--max-curves N]")
    p.add_argument("inputs", nargs="+", metavar="RUN.h5|DIR",
                   help="bnmpi metrics files, or folders searched recursively for *.h5")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder for the figures and tables (made if missing; our files in it are replaced)")
    p.add_argument("--max-curves", type=int, default=8, metavar="N",
                   help="curves.png draws one colour per run up to N runs, beyond that one colour per "
                        "BN mode (default: 8)")
    a = p.parse_args(argv)
    if a.max_curves < 1:
        p.error("--max-curves: expected a positive integer")
    return a


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    ensure_packages(PROG, __file__)
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        sys.stderr.write(f"{PROG}: --out {args.out}: exists and is not a directory; expected a folder\n")
        return 2
    runs, skipped, errors = load_all(args.inputs)
    if errors:
        for e in errors:
            sys.stderr.write(f"{PROG}: {e}\n")
        return 2
    if not runs:
        sys.stderr.write(f"{PROG}: no bnmpi metrics files in {', '.join(args.inputs)} (only checkpoints)\n")
        return 2
    runs.sort(key=run_sort_key)
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as e:
        sys.stderr.write(f"{PROG}: --out {args.out}: cannot create the folder ({e.strerror})\n")
        return 2
    n_inc = sum(not r.complete for r in runs)
    say(f"{len(runs)} run{'s' if len(runs) != 1 else ''}" + (f" ({n_inc} incomplete)" if n_inc else "")
          + (f", {len(skipped)} checkpoint(s) skipped" if skipped else ""))
    for r in runs:
        if r.version and r.version > KNOWN_FORMAT_VERSION:
            say(f"{r.path}: format_version {r.version} is newer than this tool's {KNOWN_FORMAT_VERSION}; "
                  "reading the fields it knows")
    try:
        figs = Figures(args.out)
        plot_curves(figs, runs, args.max_curves)
        plot_batch_size(figs, runs)
        plot_bn_batch(figs, runs)
        plot_throughput(figs, runs)
        plot_diagnostics(figs, runs, args.max_curves)
        rows = table_rows(runs)
        write_csv(os.path.join(args.out, "summary.csv"), rows)
        write_md(os.path.join(args.out, "summary.md"), rows, runs, figs, args.inputs, skipped)
        with open(os.path.join(args.out, "figures.json"), "w") as fh:
            json.dump({"runs": [r.name for r in runs], "incomplete": [r.name for r in runs if not r.complete],
                       "figures": figs.made, "skipped": figs.skipped}, fh, indent=1)
            fh.write("\n")
    except OSError as e:
        sys.stderr.write(f"{PROG}: cannot write to --out {args.out}: {e}\n")
        return 1
    say(f"summary.md, summary.csv, figures.json: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
