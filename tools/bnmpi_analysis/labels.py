"""What tells runs apart: the labels, orders and short descriptions that the
figures and tables of report.py and claims.py use."""

from .runs import as_int, mode_label


BN_ORDER = {"none": 0, "local": 1, "sync": 2, "group": 3, "ghost": 4}


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
              "bnmpi_version", "mpi_library", "checkpoint", "checkpoint_every", "resume", "diagnostics", "run_id"}


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


def sortable(v):
    return (0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v))


def line_order(keys, other, runs, first=lambda v: v):
    """Sorts line keys (first value, then the settings in other): the usual
    settings before the unusual ones."""
    def sort_key(key):
        rest = key[1:1 + len(other)]
        return (first(key[0]), [v != usual(k, runs) for k, v in zip(other, rest)],
                [sortable(v) for v in rest], [sortable(v[1]) for v in key[1 + len(other):]])
    return sorted(keys, key=sort_key)


def mode_head(mode):
    return mode.split()[0]


def mode_sort_key(mode):
    return (BN_ORDER.get(mode_head(mode), len(BN_ORDER)), mode)


def run_sort_key(r):
    def num(k):
        v = r.get(k)
        return (0, v) if isinstance(v, (int, float)) else (1, str(v))
    widths = tuple(as_int(w) or 0 for w in str(r.get("hidden", "")).split(","))
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
