"""Loading bnmpi runs: metrics files into Run objects and a pandas DataFrame.

A Run holds one metrics file's /config, /epochs, /summary and, when the run was
made with --diagnostics, /diagnostics/layers (README.md, "The metrics file").
load_runs() reads files and folders (searched recursively for *.h5, bnmpi
checkpoints skipped); frame() makes one row per run: the configuration, the
summary and the final epoch, plus its seed group (seeds.py).

    from bnmpi_analysis import load_frame
    df = load_frame("runs/")          # a folder, a file, or a list of them

Files are opened without HDF5's file lock, so a run still being written can be
read (it is "incomplete").
"""
import math
import os
import sys


FORMAT = "bnmpi-metrics"


CHECKPOINT_FORMAT = "bnmpi-checkpoint"


KNOWN_FORMAT_VERSION = 1


EPOCH_FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "time_s", "samples_per_s")


DIAG_FIELDS = ("step", "layer", "act_mean", "act_var", "act_mean_drift", "act_var_drift")


class InputError(Exception):
    """A bad input file: the message names the file and what was expected."""


def native(v):
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
        self.planned = as_int(cfg.get("epochs"))

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


def as_int(v):
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def open_h5(path):
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
        with open_h5(path) as f:
            return native(f.attrs["format"]) if "format" in f.attrs else None
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
        with open_h5(path) as f:
            version = as_int(native(f.attrs.get("format_version", 0)))
            if "config" not in f:
                raise InputError(f"{path}: bnmpi metrics file without /config (expected the layout of "
                                 f"format_version {KNOWN_FORMAT_VERSION}, see README.md)")
            cfg = {k: native(v) for k, v in f["config"].attrs.items()}
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
            summary = ({k: native(v) for k, v in f["summary"].attrs.items()} if "summary" in f else None)
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
                diag["every"] = as_int(native(f["diagnostics"].attrs.get("every", 0)))
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


def load_for_report(inputs, out, prog):
    """The runs of inputs for a report into the folder out: (runs, skipped, 0),
    or (None, None, 2) after one line on stderr per problem (out not a folder,
    unreadable inputs, no metrics file). Runs are sorted for display."""
    from .labels import run_sort_key  # labels imports this module
    if os.path.exists(out) and not os.path.isdir(out):
        sys.stderr.write(f"{prog}: --out {out}: exists and is not a directory; expected a folder\n")
        return None, None, 2
    runs, skipped, errors = load_all(inputs)
    for e in errors:
        sys.stderr.write(f"{prog}: {e}\n")
    if not errors and not runs:
        sys.stderr.write(f"{prog}: no bnmpi metrics files in {', '.join(inputs)} (only checkpoints)\n")
    if errors or not runs:
        return None, None, 2
    runs.sort(key=run_sort_key)
    return runs, skipped, 0


def mode_label(run):
    """The BN mode: /config bn, plus bn_group when it is not the mode's own (1 for
    local, all ranks for sync) and ghost_batch when ghost BN is on (> 0)."""
    bn = str(run.cfg.get("bn"))
    if bn == "none":
        return bn
    parts = [bn]
    group, ghost = as_int(run.cfg.get("bn_group")), as_int(run.cfg.get("ghost_batch"))
    own = as_int(run.cfg.get("n_ranks")) if bn == "sync" else 1
    if group and group > 0 and group != own:
        parts.append(f"bn_group={group}")
    if ghost and ghost > 0:
        parts.append(f"ghost_batch={ghost}")
    return " ".join(parts)


def diag_rows(run):
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


def load_extra(run):
    """Adds /steps (loss per step) and the run's status: complete (has /summary),
    diverged (no /summary and the last step's loss is not finite: bnmpi stopped
    on a non-finite loss), or incomplete (stopped or still running)."""
    import numpy as np
    steps = {"step": np.zeros(0, dtype=int), "epoch": np.zeros(0, dtype=int), "loss": np.zeros(0)}
    with open_h5(run.path) as f:
        if "steps" in f:
            t = f["steps"][()]
            steps = {n: np.asarray(t[n]) for n in ("step", "epoch", "loss") if n in (t.dtype.names or ())}
    run.steps = steps
    run.diverged_at = None
    if run.complete:
        run.state = "complete"
    elif len(steps.get("loss", ())) and not np.isfinite(steps["loss"][-1]):
        run.state = "diverged"
        run.diverged_at = (int(steps["epoch"][-1]), int(steps["step"][-1]))
    else:
        run.state = "incomplete"


# --- for notebooks and scripts ---------------------------------------------------------

def load_runs(paths, steps=False):
    """The runs in paths (a file or folder, or a list of them; folders searched
    recursively for *.h5, checkpoints skipped), sorted by configuration. Raises
    InputError naming every bad input. steps=True also reads /steps (Run.steps)
    and sets Run.state (complete, diverged, incomplete)."""
    from .labels import run_sort_key
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    runs, _, errors = load_all([os.fspath(p) for p in paths])
    if errors:
        raise InputError("; ".join(errors))
    runs.sort(key=run_sort_key)
    if steps:
        for r in runs:
            load_extra(r)
    return runs


SUMMARY_COLUMNS = ("test_acc", "test_loss", "total_time_s")
FINAL_COLUMNS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "time_s", "comm_s", "samples_per_s")


def frame(runs):
    """A pandas DataFrame, one row per run: file, path, status, seed, config
    (a key of the configuration without the seed: equal for runs that differ only
    in their seed), n_epochs, every /config attribute, the /summary attributes
    (NaN for an incomplete run) and the last epoch's /epochs fields as final_<field>."""
    import pandas as pd
    from .seeds import config_key
    keys = {}
    rows = []
    for r in runs:
        k = config_key(r)
        row = {"file": r.name, "path": r.path, "status": "complete" if r.complete else "incomplete",
               "config": keys.setdefault(k, f"config{len(keys) + 1}"), "n_epochs": r.n_epochs, "mode": mode_label(r)}
        row.update(r.cfg)
        for c in SUMMARY_COLUMNS:
            row[c] = (r.summary or {}).get(c, math.nan) if r.complete else math.nan
        for c in FINAL_COLUMNS:
            row["final_" + c] = r.last(c) if c in r.epochs else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def epochs_frame(runs):
    """A long pandas DataFrame of /epochs, one row per run and epoch, with file, config and seed."""
    import pandas as pd
    from .seeds import config_key
    keys, parts = {}, []
    for r in runs:
        d = pd.DataFrame({k: v for k, v in r.epochs.items()})
        d.insert(0, "seed", r.cfg.get("seed"))
        d.insert(0, "config", keys.setdefault(config_key(r), f"config{len(keys) + 1}"))
        d.insert(0, "file", r.name)
        parts.append(d)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def load_frame(paths):
    """frame(load_runs(paths)): one row per run, ready for groupby("config")."""
    return frame(load_runs(paths))
