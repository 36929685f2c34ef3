"""The notebook's claims about batch norm, tested on bnmpi runs (bnmpi-claims,
tools/claims.py): per claim a figure, a table and a verdict.

Accuracy comparisons are differences between two configurations over their
seeds (seeds.py): a difference counts when its 95% interval excludes zero
(paired t when both sides have the same seeds, else Welch); with one seed on
a side there is no interval and differences below the tolerance count as equal.
"""
import json
import math
import os
import sys

from . import seeds
from .figures import Figures, ci_errorbars, legend_below, log2_axis, log10_axis, light, mpl, percent_axis, say
from .labels import NOT_CONFIG, fmt_value
from .runs import diag_rows, load_extra, load_for_report, mode_label


TARGET = 0.97        # the validation accuracy "convergence" is measured to


TRAINS = 0.90        # a run "trains" when it ends at least this accurate (and finite)


TOLERANCE = 0.003    # one seed: accuracy differences below 0.3 points are noise (docs/analysis.md)


DRIFT_MARGIN = 0.8   # BN "reduces" drift when its median is below 0.8x no BN's


BLOCK_STEPS = 250    # covariate shift: statistics averaged over blocks of this many steps


# The notebook's batch-size table (10 epochs, Keras, batch on one device), for the figure.
NOTEBOOK_BATCH = {16: (0.9456, 0.2341), 32: (0.9512, 0.2145), 64: (0.9562, 0.1942), 128: (0.9625, 0.1749)}


NONE_COLOR, BN_COLOR, BN2_COLOR = "#4d4d4d", "#1f77b4", "#17becf"


DATASET_NAMES = {"mnist": "MNIST", "fashion": "Fashion-MNIST"}


CLAIMS = {
    "convergence": {
        "title": "BN gives faster convergence",
        "quote": "Faster Convergence: Batch normalization helps the model converge faster by reducing "
                 "the effect of internal covariate shift.",
        "rule": "supported if, at every global batch tested, BN (default evaluation with running "
                "statistics) first reaches {target}% validation accuracy in fewer epochs than no BN; not "
                "supported if it does at none; otherwise depends on the global batch. A run that never "
                "reaches {target}% counts as slower than one that does.",
        "seen": "depends",
        "reading": ("BN's advantage grows with the global batch: at a fixed learning rate a large batch "
                   "gives few steps per epoch, and BN makes each step count for more (at 512, BN reaches 97% "
                   "in 6 epochs, no BN not in 8). At 16-32 both get there within 2-3 epochs and BN is no "
                   "faster, one epoch slower at 16, where its statistics come from 16 samples. Part of BN's "
                   "apparent slowness is evaluation, not training: the running averages (momentum 0.99) lag "
                   "the weights, and with statistics recomputed before each evaluation (--bn-eval recompute) "
                   "BN reaches 97% one or two epochs sooner at 32, 128 and 512. Seconds follow epochs only "
                   "roughly: they come from one run each on a shared machine (load average 4-20 during the "
                   "study), so read them as an illustration."),
    },
    "covariate_shift": {
        "title": "BN reduces internal covariate shift",
        "quote": "Batch normalization helps the model converge faster by reducing the effect of internal "
                 "covariate shift.",
        "rule": "measured at the BN input (where BN would be, without BN) of the hidden layers whose input "
                "comes through an earlier hidden layer (layer 2 of 784-256-256-10; layer 1 when only "
                "one-hidden-layer runs exist): the activation mean and variance averaged over blocks of "
                "{block} steps, and the median over the run of their drift from one block to the next "
                "(|change of mean| / std, |change of variance| / variance), each BN placement against a "
                "no-BN run measured at the same place (after or before the ReLU). Supported if BN's "
                "medians are below "
                "{margin}x no BN's for both statistics and every BN placement; not supported if "
                "for none; otherwise depends (on the placement or statistic).",
        "seen": "depends",
        "reading": ("Measured where Ioffe & Szegedy put BN, before the ReLU, BN does damp the shift at the "
                   "second hidden layer: its input's mean wanders about 0.2x and its variance 0.5x as much "
                   "as without BN, and over the 2,250 steps that variance grows 1.6x instead of 2.5x. At the "
                   "notebook's placement, after the ReLU, the second layer's input variance grows 1.7x with "
                   "or without BN; only the jitter of its mean is damped. The shift never goes away: every "
                   "layer's input keeps moving throughout training in every run. That BN reduces the shift "
                   "(before the ReLU) does not show that this is why it helps: Santurkar et al. (2018) "
                   "found BN works as well when noise re-injects the shift after it. The diagnostics measure "
                   "the BN input; BN's own output has batch mean beta and variance gamma^2 by construction."),
    },
    "learning_rate": {
        "title": "BN tolerates higher learning rates",
        "quote": "Allows for Higher Learning Rates: Batch normalization can allow for higher learning "
                 "rates, which can improve the speed of convergence.",
        "rule": "a run trains if it finishes (no non-finite loss) with at least {trains}% "
                "validation accuracy at the comparison epoch. Supported if BN's largest learning rate "
                "that trains is larger than no BN's for every optimizer tested; not supported if for "
                "none; otherwise depends on the optimizer.",
        "seen": "depends",
        "reading": ("With Adam, BN trains at every learning rate up to 1 (93.6% after 3 epochs) while "
                   "no BN stops learning at 0.1 (83%) and 1 (chance): the hidden layer is invariant to the "
                   "scale of its weights, so Adam's fixed-size steps grow the weights instead of wrecking "
                   "the activations. With SGD and momentum 0.9 both train up to 0.3 and both fail at 1 (BN "
                   "ends at 66% with a loss of 1e24, no BN at chance): the output layer is not normalised and "
                   "blows up either way. None of the sweep's runs hit a non-finite loss; the failures are "
                   "networks that stop learning. The grid has one point per decade (plus 0.3 for SGD), so "
                   "'higher' means at least the next grid point."),
    },
    "initialisation": {
        "title": "BN depends less on the initialisation",
        "quote": "Simplifies Hyperparameter Tuning: Batch normalization can simplify the process of "
                 "hyperparameter tuning by reducing the impact of internal covariate shift.",
        "rule": "accuracy lost by a mis-scaled initialisation: validation accuracy at the comparison epoch "
                "at --init-scale 1 minus the worst at the scales below 1 (small weights) and, separately, "
                "above 1 (large weights). BN depends less in a direction if it loses less than half what no "
                "BN loses there and no BN's loss minus BN's is above zero by the rule of the seeds "
                "({diff_rule}). Supported if so in every direction "
                "tested; not supported if in none; otherwise depends on the direction.",
        "seen": "depends",
        "reading": ("BN removes the cost of too-small initial weights (x0.01 to x0.1: no BN loses up "
                   "to 0.7 points after 3 epochs and 2 points after 1, BN none) because the normalised hidden "
                   "layer does not care about the scale of its weights. Too-large weights (x10) cost both "
                   "about 4 points: --init-scale also scales the output layer, which BN does not normalise, "
                   "and its huge logits saturate the softmax."),
    },
    "regularisation": {
        "title": "BN regularises, and small BN batches add noise that does so",
        "quote": "Reduced Overfitting: Batch normalization helps to reduce overfitting by regularizing "
                 "the model ... Can Introduce Noise: Batch normalization can introduce noise into the "
                 "model.",
        "rule": "regularisation shows as a lower validation loss (the final value: the median of the last 3 "
                "epochs where there are 5 or more). BN regularises if its validation loss is lower than no "
                "BN's at most global batches; the noise of small BN batches regularises if, at a fixed "
                "global batch, some smaller BN batch has a lower validation loss than the largest by more "
                "than the dataset's noise (half the median range of its BN runs' last 3 validation losses). "
                "With two or more seeds a side, \"lower\" means the 95% interval of the difference lies "
                "below zero (paired t by seed, else Welch). "
                "Supported if both hold (on every dataset); not supported if neither; otherwise depends on "
                "which. The validation minus training loss is shown, not used: the training loss is taken "
                "in training mode, which BN's batch noise inflates.",
        "seen": "not supported",
        "reading": ("No regularising effect shows in these runs. BN's validation loss is higher than "
                   "no BN's from global batch 16 to 128 and lower only at 256 and 512, where no BN has not "
                   "finished fitting in 8 epochs at a fixed learning rate (an optimisation effect, not "
                   "regularisation). The noise of small BN batches is real and large: the training-mode loss "
                   "rises far above the validation loss below a BN batch of 16 (the right panel). But it "
                   "raises the validation loss too, on both datasets: noise that hurts, not regularises. "
                   "Caveat: 5-8 epochs is short; regularisation matters most in long runs that overfit."),
    },
    "batch_plateau": {
        "title": "Accuracy improves with the batch size up to a plateau at 64",
        "quote": "Increasing batch size improves validation accuracy ... the improvements ... start to "
                 "plateau around a batch size of 64.",
        "rule": "validation accuracy at the comparison epoch against the global batch, per BN mode. "
                "Supported if, for every mode, accuracy at 64 is higher than at the smallest batch and "
                "no larger batch differs from 64 (each difference decided by the rule of the seeds: "
                "{diff_rule}); "
                "not supported if for none; otherwise depends on BN.",
        "seen": "not supported",
        "reading": ("There is no rise to a plateau at 64. From 16 to 128 the accuracy is flat within "
                   "the noise (97.5-97.9%) for both; beyond 128 no BN falls (96.85% at 512) and BN stays flat. "
                   "At a fixed number of epochs and a fixed learning rate, a larger batch means fewer steps "
                   "of the same size, which is what costs no BN accuracy. The notebook's table (94.6% at 16 "
                   "rising to 96.3% at 128, with the training loss falling) is 1-3 points below every run "
                   "here and its training loss 4-11x higher. The training loss here rises with the batch "
                   "for no BN and falls for BN, whose training-mode loss carries the noise of small BN "
                   "batches (see the regularisation figure). To compare batch sizes fairly, scale the learning rate (--lr-scale) or "
                   "compare at equal steps."),
    },
    "large_batch": {
        "title": "BN requires large batch sizes",
        "quote": "Requires Large Batch Sizes: Batch normalization requires large batch sizes to be "
                 "effective.",
        "rule": "per dataset, validation accuracy (median of the last 3 epochs) against the BN batch (samples "
                "per BN statistic) at a fixed global batch, compared with BN at the largest BN batch of the "
                "sweep (sync BN over the whole global batch). Worse means lower by the rule of the seeds "
                "({diff_rule}); with one seed a side, by more than the dataset's noise: half the median "
                "range of its BN runs' last 3 epochs, at least {tol} points. "
                "Supported if BN is worse at every smaller BN batch; not supported if it is worse at none and, over the "
                "global-batch sweep, BN is never worse than no BN; otherwise depends on the BN batch (the "
                "smallest BN batch from which BN is as good as at the largest) or the dataset.",
        "seen": "depends",
        "reading": ("What BN needs is enough samples per statistic, not a large batch. With sync BN "
                   "(statistics over the whole global batch) BN is within the noise of no BN at every global "
                   "batch from 16 to 512. At a fixed global batch of 64, shrinking the BN batch costs "
                   "accuracy below 16 samples on MNIST (-2.4 points at 2) and below 32 on Fashion-MNIST "
                   "(-4 points at 2; its BN runs swing 1-2 points from epoch to epoch, so its threshold is "
                   "rough). Ghost batches and real ranks with the same BN batch agree. This matches Wu & He "
                   "(2018), who saw BN's error rise below 8 samples per device on ImageNet. The data-parallel "
                   "catch: --bn local normalises over each rank's share, so many ranks make small BN "
                   "batches out of a large global batch; --bn sync or --bn-group keeps them large. The "
                   "measured BN noise follows 1/sqrt(BN batch) (the middle panel)."),
    },
}


def reading(key, verdict):
    """The study author's reading, shown only with the verdict it was written for."""
    c = CLAIMS[key]
    if verdict == c["seen"]:
        return f"Reading (the study author's, for the runs of jobs/study-claims.tsv): {c['reading']}"
    return (f"Reading: none for these runs. The study author's reading was written for a \"{c['seen']}\" "
            f"verdict on the runs of jobs/study-claims.tsv; these runs give \"{verdict}\".")


def rule_text(key):
    """The claim's rule with the thresholds in force (--target, --trains, --tolerance)."""
    return CLAIMS[key]["rule"].format(target=f"{100 * TARGET:g}", trains=f"{100 * TRAINS:g}",
                                      tol=f"{100 * TOLERANCE:.1f}", margin=f"{DRIFT_MARGIN:g}", block=BLOCK_STEPS,
                                      diff_rule=seeds.rule_text(TOLERANCE))


ORDER = ["convergence", "covariate_shift", "learning_rate", "initialisation", "regularisation",
         "batch_plateau", "large_batch"]


class Untested(Exception):
    """A claim whose runs are not among the inputs; the message says what is missing."""


# Settings that only matter with BN, or with one optimizer: ignored where they
# cannot change anything, so that a no-BN run matches whatever its file records.
BN_ONLY = {"bn_place", "bn_eval", "bn_momentum", "bn_eps", "ghost_batch", "bn_group", "bn_batch"}


SGD_ONLY = {"momentum", "nesterov", "weight_decay"}


ADAM_ONLY = {"beta1", "beta2", "adam_eps"}


# Never a reason to keep runs apart: where and how a run was made, repeats, derived values.
IGNORE = {"epochs", "seed", "threads", "eval_batch", "lr_peak", "n_ranks", "local_batch", "bn_batch",
          "bn_group", "batch", "n_params", "architecture", "run_id"}


def value(run, key):
    if key == "_mode":
        return mode_label(run)
    if run.get("bn") == "none" and key in BN_ONLY:
        return None
    if run.get("optimizer") == "adam" and key in SGD_ONLY:
        return None
    if run.get("optimizer") == "sgd" and key in ADAM_ONLY:
        return None
    return run.get(key)


def config_keys(runs):
    keys = set()
    for r in runs:
        keys |= {k for k in r.cfg if not k.endswith("_sha256")}
    return sorted(keys - NOT_CONFIG - IGNORE)


def bn_mode(runs):
    """The BN mode most of these runs use (sync in the study), or None."""
    counts = {}
    for r in runs:
        m = mode_label(r)
        if m != "none":
            counts[m] = counts.get(m, 0) + 1
    return max(counts, key=lambda m: (counts[m], m)) if counts else None


def trim(rs, vary):
    """Drops repeats too short for the comparison: each point (the values of
    vary) keeps its runs that reach the epoch every point reaches with its
    longest run. A 3-epoch repeat then does not cut an 8-epoch sweep to 3."""
    done = [r for r in rs if r.state == "complete"]
    if not done:
        return rs
    point = lambda r: tuple(repr(value(r, k)) for k in sorted(vary))  # noqa: E731
    longest = {}
    for r in done:
        longest[point(r)] = max(longest.get(point(r), 0), r.n_epochs)
    e = min(longest.values())
    return [r for r in rs if r.state != "complete" or r.n_epochs >= e]


def select(runs, vary, where=lambda r: True, states=("complete",), need=None, trimmed=True):
    """The largest set of runs (in states, passing where) that agree on every
    setting except those in vary. Returns (runs, fixed settings). need(rs) says
    whether a set is usable; the largest usable one is taken. With trimmed,
    repeats shorter than the comparison needs are dropped (trim())."""
    cand = [r for r in runs if r.state in states and where(r)]
    keys = [k for k in config_keys(cand) if k not in vary]
    base = [k for k in keys if k not in BN_ONLY]
    bn_keys = [k for k in keys if k in BN_ONLY]
    groups = {}
    for r in cand:
        groups.setdefault(tuple(repr(value(r, k)) for k in base), []).append(r)
    # runs without BN join every BN setting (bn_place, bn_eval, ...) of their group
    sets = []
    for rs in groups.values():
        plain = [r for r in rs if r.get("bn") == "none"]
        by_bn = {}
        for r in rs:
            if r.get("bn") != "none":
                by_bn.setdefault(tuple(repr(value(r, k)) for k in bn_keys), []).append(r)
        sets += [plain + these for these in by_bn.values()] or [plain]
    if trimmed:
        sets = [trim(rs, vary) for rs in sets]
    ranked = sorted(sets, key=lambda rs: (-len(rs), sorted(x.name for x in rs)))
    for rs in ranked:
        if need is None or need(rs):
            fixed = {}
            for k in keys:
                vals = {repr(value(r, k)) for r in rs if value(r, k) is not None}
                if len(vals) == 1:
                    fixed[k] = next(value(r, k) for r in rs if value(r, k) is not None)
            return rs, fixed
    return [], {}


def common_epoch(runs):
    eps = [r.n_epochs for r in runs if r.state == "complete" and r.n_epochs]
    return min(eps) if eps else 0


def at(run, field, epoch):
    """/epochs field at epoch number epoch (None where the run has no such epoch)."""
    import numpy as np
    if run.state != "complete":
        return None
    i = np.nonzero(run.epochs["epoch"] == epoch)[0]
    return float(run.epochs[field][i[-1]]) if len(i) else None


SETTLE = 3  # BN-batch sweep: the median over the last 3 epochs (Fashion-MNIST swings 1-2 points per epoch)


def settled(run, field, epoch, k=SETTLE):
    """The median of field over epochs epoch-k+1 .. epoch, and its min and max."""
    vals = [at(run, field, e) for e in range(max(1, epoch - k + 1), epoch + 1)]
    vals = sorted(v for v in vals if v is not None)
    if not vals:
        return None, None, None
    mid = len(vals) // 2
    med = vals[mid] if len(vals) % 2 else 0.5 * (vals[mid - 1] + vals[mid])
    return med, vals[0], vals[-1]


def final(run, field, epoch):
    """A run's "final" value in a comparison read at epoch: the median of the
    last SETTLE epochs when the comparison has 5 or more, else that epoch's."""
    return settled(run, field, epoch)[0] if epoch >= 5 else at(run, field, epoch)


def span(epoch):
    """What final() reads, in words."""
    return f"median of epochs {epoch - SETTLE + 1}-{epoch}" if epoch >= 5 else f"epoch {epoch}"


def mean(vals):
    vals = [v for v in vals if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def describe(fixed, skip=()):
    """Short text of the settings a claim's runs share."""
    parts = []
    g = lambda k: fixed.get(k) if k not in skip else None  # noqa: E731
    if g("dataset"):
        parts.append(DATASET_NAMES.get(g("dataset"), g("dataset")))
    if g("hidden"):
        parts.append("MLP 784-" + str(g("hidden")).replace(",", "-") + "-10")
    if g("optimizer"):
        opt = str(g("optimizer"))
        if opt == "sgd" and g("momentum"):
            opt += f" momentum {fmt_value(g('momentum'))}"
        parts.append(opt + (f" lr {fmt_value(g('lr'))}" if g("lr") is not None else ""))
    if g("global_batch"):
        parts.append(f"global batch {g('global_batch')}")
    if g("init_scale") not in (None, 1, 1.0):
        parts.append(f"init scale {fmt_value(g('init_scale'))}")
    if g("bn_place"):
        parts.append(f"BN {g('bn_place')} the ReLU")
    if g("train_limit"):
        parts.append(f"{g('train_limit')} training samples")
    return ", ".join(parts)


def pct(v, digits=2):
    return "–" if v is None or not math.isfinite(v) else f"{100 * v:.{digits}f}%"


def pts(v):
    return "–" if v is None or not math.isfinite(v) else f"{100 * v:+.2f}"


def fmt(v, spec=".4f"):
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def mode_text(mode):
    return "no BN" if mode == "none" else f"BN {mode}"


def style(mode, bn_eval=None):
    if mode == "none":
        return NONE_COLOR, "X", "--"
    if bn_eval == "recompute":
        return BN2_COLOR, "s", ":"
    return BN_COLOR, "o", "-"


def claim_convergence(runs, figs):
    import numpy as np
    bn = bn_mode([r for r in runs if r.state == "complete"])
    if bn is None:
        raise Untested("no complete run with BN")
    rs, fixed = select(runs, {"global_batch", "bn", "ghost_batch", "bn_eval", "_mode"},
                       where=lambda r: mode_label(r) in ("none", bn),
                       need=lambda rs: {mode_label(r) for r in rs} == {"none", bn})
    if not rs:
        raise Untested(f"needs complete runs with and without BN ({bn}) in otherwise equal settings")
    lines = {}
    for r in rs:
        lines.setdefault((mode_label(r), value(r, "bn_eval")), {}).setdefault(r.get("global_batch"), []).append(r)

    def reach(r):
        ok = np.nonzero(r.epochs["val_acc"] >= TARGET)[0]
        if not len(ok):
            return None, None, None
        e = int(r.epochs["epoch"][ok[0]])
        secs = float(np.sum(r.epochs["time_s"][:ok[0] + 1]))
        steps = int(np.sum(r.steps["epoch"] <= e)) if len(r.steps["epoch"]) else None
        return e, steps, secs

    rows, num = [], {}
    gbs = sorted({r.get("global_batch") for r in rs})
    order = sorted(lines, key=lambda k: (k[0] != "none", str(k[1]) == "recompute"))
    for key in order:
        for gb in gbs:
            for r in lines[key].get(gb, []):
                e, steps, secs = reach(r)
                num.setdefault(key, {}).setdefault(gb, []).append((e, steps, secs, r.n_epochs))
                rows.append([mode_text(key[0]) + (" (BN eval recompute)" if key[1] == "recompute" else ""),
                             str(gb), str(r.get("n_ranks")), pct(float(r.epochs["val_acc"][0])),
                             str(e) if e else f"not in {r.n_epochs}", fmt(steps, ",") if steps else "–",
                             fmt(secs, ".1f") if secs else "–", r.name])

    def epochs_to(key, gb):
        vals = [x[0] if x[0] else math.inf for x in num.get(key, {}).get(gb, [])]
        return min(vals) if vals else None

    none_key, bn_key, rc_key = ("none", None), (bn, "running"), (bn, "recompute")
    if bn_key not in num:  # files without bn_eval
        bn_key = next((k for k in num if k[0] == bn and k[1] != "recompute"), bn_key)
    both = [gb for gb in gbs if epochs_to(none_key, gb) is not None and epochs_to(bn_key, gb) is not None]
    if not both:
        raise Untested("needs BN and no-BN runs at the same global batch")
    cmp = {gb: (epochs_to(bn_key, gb), epochs_to(none_key, gb)) for gb in both}
    rc = {gb: epochs_to(rc_key, gb) for gb in both if epochs_to(rc_key, gb) is not None}

    # the figure: validation accuracy per epoch (up to 3 global batches), epochs and seconds to 97%
    plt, ticker = mpl()
    from matplotlib.lines import Line2D
    fig, (ax_c, ax_e, ax_s) = plt.subplots(1, 3, figsize=(15, 4.4), gridspec_kw={"width_ratios": [1.3, 1, 1]})
    show = gbs if len(gbs) <= 3 else sorted({gbs[0], gbs[len(gbs) // 2], gbs[-1]}
                                            | ({32, 128, 512} & set(gbs) if len({32, 128, 512} & set(gbs)) == 3 else set()))
    if len(show) > 3:
        show = sorted({32, 128, 512} & set(gbs))
    cmap = plt.get_cmap("viridis")
    gb_color = {gb: cmap(0.85 * i / max(1, len(show) - 1)) for i, gb in enumerate(show)}
    for key in order:
        c, m, ls = style(*key)
        for gb in show:
            for r in lines[key].get(gb, []):
                ax_c.plot(r.epochs["epoch"], r.epochs["val_acc"], ls=ls, color=gb_color[gb], lw=1.6, marker=m, ms=4,
                          label=f"{mode_text(key[0])}{' recompute' if key[1] == 'recompute' else ''} gb={gb}")
    ax_c.axhline(TARGET, color="#d62728", lw=1, ls=":")
    lo = min(float(np.min(r.epochs["val_acc"])) for r in rs)
    ax_c.set_ylim(max(lo - 0.005, 0.9), None)
    ax_c.set(title="Validation accuracy per epoch", xlabel="epoch", ylabel="validation accuracy (%)")
    percent_axis(ax_c, ticker)
    ax_c.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    top = max(r.n_epochs for r in rs) + 1
    for key in order:
        c, m, ls = style(*key)
        lab = mode_text(key[0]) + (" (BN eval recompute)" if key[1] == "recompute" else "")
        xs = sorted(num[key])
        ep = [min((x[0] or math.inf) for x in num[key][gb]) for gb in xs]
        sec = [min((x[2] or math.inf) for x in num[key][gb]) for gb in xs]
        ax_e.plot(xs, [e if math.isfinite(e) else np.nan for e in ep], color=c, marker=m, ls=ls, lw=1.8, ms=7,
                  label=lab)
        ax_s.plot(xs, [s if math.isfinite(s) else np.nan for s in sec], color=c, marker=m, ls=ls, lw=1.8, ms=7,
                  label=lab)
        miss = [gb for gb, e in zip(xs, ep) if not math.isfinite(e)]
        ax_e.plot(miss, [top] * len(miss), ls="none", marker=m, mfc="white", color=c, ms=8, label="_missed")
    ax_e.axhline(top - 0.5, color="#999999", lw=0.8)
    ax_e.text(0.02, (top - 0.25), "not reached", transform=ax_e.get_yaxis_transform(), fontsize=8, va="center",
              color="#555555")
    ax_e.set_ylim(0, top + 0.6)
    ax_e.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax_e.set(title=f"Epochs to {100 * TARGET:g}% validation accuracy",
             xlabel="global batch (log2 scale)", ylabel="epochs")
    ax_s.set(title=f"Seconds to {100 * TARGET:g}% (shared machine: noisy)",
             xlabel="global batch (log2 scale)", ylabel="seconds (training + validation)")
    ax_s.set_ylim(bottom=0)
    for ax in (ax_e, ax_s):
        log2_axis(ax, ticker, gbs)
    handles = [Line2D([], [], color=style(*k)[0], ls=style(*k)[2], marker=style(*k)[1], lw=1.8,
                      label=mode_text(k[0]) + (" (BN eval recompute)" if k[1] == "recompute" else ""))
               for k in order]
    handles += [Line2D([], [], color=gb_color[gb], lw=3, label=f"global batch {gb} (left)") for gb in show]
    legend_below(fig, handles, ncol=min(len(handles), 6))
    sup = f"Convergence: how soon validation accuracy reaches {100 * TARGET:g}%\n{describe(fixed)}"
    fig.suptitle(sup)
    fig.tight_layout()
    figs.save("convergence.png", fig, sup)

    faster = [gb for gb, (b, n) in cmp.items() if b < n]
    slower = [gb for gb, (b, n) in cmp.items() if b > n]
    same = [gb for gb, (b, n) in cmp.items() if b == n and math.isfinite(b)]  # neither reaching it is no evidence
    e_txt = lambda e: "never" if e is None or not math.isfinite(e) else f"{e}"  # noqa: E731
    detail = "; ".join(f"gb {gb}: BN {e_txt(b)}, no BN {e_txt(n)}" + (f", BN recompute {e_txt(rc[gb])}" if gb in rc else "")
                       for gb, (b, n) in sorted(cmp.items()))
    return {"runs": rs, "fixed": fixed, "numbers": {"epochs_to_target": {str(gb): list(v) for gb, v in cmp.items()},
                                                     "recompute": {str(k): v for k, v in rc.items()},
                                                     "faster": faster, "same": same, "slower": slower},
            "table": (["run", "global batch", "ranks", "val acc after epoch 1", f"epochs to {100 * TARGET:g}%",
                       "steps", "seconds (noisy)", "file"], rows),
            "detail": f"epochs to {100 * TARGET:g}% validation accuracy: {detail}",
            "decide": (faster, same, slower, rc, cmp)}


def decide_convergence(d):
    faster, same, slower, rc, cmp = d["decide"]
    if not (faster or same or slower):
        return "untested", (f"no run reached {100 * TARGET:g}% validation accuracy within its epochs "
                            "(run longer, or lower --target)")
    if faster and not same and not slower:
        return "supported", f"BN reaches {100 * TARGET:g}% in fewer epochs at every global batch ({', '.join(map(str, faster))})"
    if not faster:
        return "not supported", ("BN is never faster in epochs" + (f" (same at {', '.join(map(str, same))}" if same else "")
                                 + (f"; slower at {', '.join(map(str, slower))}" if slower else "") + (")" if same else ""))
    return ("depends", f"on the global batch: BN is faster at {', '.join(map(str, faster))}"
            + (f", the same at {', '.join(map(str, same))}" if same else "")
            + (f", slower at {', '.join(map(str, slower))}" if slower else ""))


def _drift_stats(run, upto, block_steps):
    """Per hidden layer, from /diagnostics/layers up to step upto: the input
    statistics averaged over consecutive blocks of ~BLOCK_STEPS steps (one
    logged batch of 64 samples has sampling noise of its own; a block average
    keeps the slow movement of the distribution), the median drift between
    neighbouring blocks (|change of mean| / std and |change of variance| /
    variance), and the series relative to the last block, for plotting."""
    import numpy as np
    d = diag_rows(run)
    every = d["every"] or max(1, int(np.median(np.diff(d["step"]))) if len(d["step"]) > 1 else 1)
    w = max(1, int(round(block_steps / every)))
    out = {}
    for layer in sorted({int(x) for x in d["layer"]}):
        m = (d["layer"] == layer) & (d["step"] <= upto) & np.isfinite(d["act_mean"]) & np.isfinite(d["act_var"]) \
            & (d["act_var"] > 0)
        n = int(m.sum()) // w
        if n < 3:
            continue
        st, mu, var = (d[k][m][:n * w].reshape(n, w) for k in ("step", "act_mean", "act_var"))
        st_b, mu_b, var_b = st.mean(axis=1), mu.mean(axis=1), var.mean(axis=1)
        rel_mean = np.abs(np.diff(mu_b)) / np.sqrt(var_b[1:])
        rel_var = np.abs(np.diff(var_b)) / var_b[1:]
        out[layer] = {"steps": d["step"][m], "block_steps": st_b, "block": w * every,
                      "mean_vs_end": (d["act_mean"][m] - mu_b[-1]) / np.sqrt(var_b[-1]),
                      "var_vs_end": d["act_var"][m] / var_b[-1],
                      "block_mean_vs_end": (mu_b - mu_b[-1]) / np.sqrt(var_b[-1]), "block_var_vs_end": var_b / var_b[-1],
                      "median_rel_mean": float(np.median(rel_mean)), "median_rel_var": float(np.median(rel_var)),
                      "total_mean": float(abs(mu_b[-1] - mu_b[0]) / np.sqrt(var_b[-1])),
                      "total_var": float(var_b[0] / var_b[-1])}
    return out


def claim_covariate_shift(runs, figs):
    withdiag = [r for r in runs if r.state == "complete" and diag_rows(r) is not None]
    bn = bn_mode(withdiag)
    if bn is None or not withdiag:
        raise Untested("needs complete runs with --diagnostics N, with and without BN")
    rs, fixed = select(withdiag, {"bn", "bn_place", "hidden", "ghost_batch", "_mode"},
                       where=lambda r: mode_label(r) in ("none", bn),
                       need=lambda rs: {mode_label(r) for r in rs} == {"none", bn}, trimmed=False)
    if not rs:
        raise Untested("needs runs with --diagnostics N with and without BN in otherwise equal settings")
    upto = min(int(diag_rows(r)["step"].max()) for r in rs)
    # blocks of BLOCK_STEPS steps, or shorter ones in short runs (at least 4 blocks)
    block_steps = min(BLOCK_STEPS, upto // 4)
    stats = {id(r): _drift_stats(r, upto, block_steps) for r in rs}
    hiddens = sorted({str(r.get("hidden")) for r in rs}, key=lambda h: (h.count(","), h))
    # panels: every (hidden, layer) that has both BN and no-BN runs
    panels = []
    for h in hiddens:
        these = [r for r in rs if str(r.get("hidden")) == h]
        if {mode_label(r) for r in these} != {"none", bn}:
            continue
        for layer in sorted({l for r in these for l in stats[id(r)]}):
            panels.append((h, layer, these))
    if not panels:
        raise Untested("no architecture has diagnostics runs (with and without BN) with three or more "
                       "logs of a hidden layer")
    deep = [(h, l) for h, l, _ in panels if l >= 1]
    rows, ratios, mismatched = [], [], set()
    for h, layer, these in panels:
        none_all = [r for r in these if mode_label(r) == "none" and layer in stats[id(r)]]

        def reference(place):
            """The no-BN runs measured at the same place (after or before the ReLU); others if none is."""
            same = [r for r in none_all if str(r.cfg.get("bn_place")) == place]
            return same or none_all, bool(same)

        for r in sorted(these, key=lambda r: (mode_label(r) != "none", str(r.cfg.get("bn_place")))):
            if layer not in stats[id(r)]:
                continue
            s = stats[id(r)][layer]
            place = str(r.cfg.get("bn_place"))
            ref, matched = reference(place)
            n_mean = mean([stats[id(q)][layer]["median_rel_mean"] for q in ref])
            n_var = mean([stats[id(q)][layer]["median_rel_var"] for q in ref])
            rm = s["median_rel_mean"] / n_mean if n_mean else math.nan
            rv = s["median_rel_var"] / n_var if n_var else math.nan
            rows.append(["784-" + h.replace(",", "-") + "-10", str(layer + 1), mode_text(mode_label(r)),
                         f"{place} the ReLU", fmt(s["median_rel_mean"], ".4f"), fmt(s["median_rel_var"], ".4f"),
                         fmt(s["total_mean"], ".2f"), fmt(s["total_var"], ".3g"),
                         "–" if r.get("bn") == "none" else f"{rm:.2f}x / {rv:.2f}x" + ("" if matched else " *"),
                         r.name])
            if r.get("bn") != "none" and (not deep or (h, layer) in deep) and ref:
                ratios.append((h, layer, place, rm, rv))
                if not matched:
                    mismatched.add(place)

    plt, ticker = mpl()
    from matplotlib.lines import Line2D
    ncol = len(panels)
    fig, axes = plt.subplots(2, ncol, figsize=(4.3 * ncol + 0.8, 6.4), squeeze=False, sharex="col")

    def line_key(r):
        return ("none" if r.get("bn") == "none" else "bn", str(r.cfg.get("bn_place")))

    line_style = {("none", "after"): (NONE_COLOR, "-"), ("none", "before"): (NONE_COLOR, "--"),
                  ("bn", "after"): (BN_COLOR, "-"), ("bn", "before"): ("#ff7f0e", "--")}
    line_name = {("none", "after"): "no BN, measured after the ReLU", ("none", "before"): "no BN, before the ReLU",
                 ("bn", "after"): f"BN ({bn}) after the ReLU", ("bn", "before"): f"BN ({bn}) before the ReLU"}
    for j, (h, layer, these) in enumerate(panels):
        for i, (raw, blk, what) in enumerate((("mean_vs_end", "block_mean_vs_end", "(mean − final mean) / final std"),
                                              ("var_vs_end", "block_var_vs_end", "variance / final variance"))):
            ax = axes[i][j]
            for r in these:
                if layer not in stats[id(r)]:
                    continue
                s = stats[id(r)][layer]
                key = line_key(r)
                c, ls = line_style[key]
                ax.plot(s["steps"], s[raw], color=light(c), lw=0.6, label="_raw")
                ax.plot(s["block_steps"], s[blk], color=c, ls=ls, lw=2, marker="o", ms=3.5, label=line_name[key])
            if i == 1:
                ax.set_yscale("log")
                ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
                ax.yaxis.set_minor_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
                ax.tick_params(axis="y", which="minor", labelsize=7.5)
                ax.axhline(1, color="black", lw=0.6)
            else:
                ax.axhline(0, color="black", lw=0.6)
            net = "784-" + h.replace(",", "-") + "-10"
            ax.set(title=f"{net}, input of hidden layer {layer + 1}'s BN" if i == 0 else "",
                   ylabel=what if j == 0 else "", xlabel="step" if i == 1 else "")
            ax.title.set_size(10)
    keys = sorted({line_key(r) for r in rs if line_key(r) in line_style}, key=lambda k: (k[0] != "none", k[1]))
    handles = [Line2D([], [], color=line_style[k][0], ls=line_style[k][1], lw=2, marker="o", ms=4,
                      label=line_name[k]) for k in keys]
    handles.append(Line2D([], [], color=light("#4d4d4d"), lw=0.8, label="every log (one batch)"))
    blocks = {s["block"] for st in stats.values() for s in st.values()}
    legend_below(fig, handles, ncol=len(handles))
    sup = ("Internal covariate shift: how far each hidden layer's input statistics move during training\n"
           f"at the BN input (where BN would be, without BN); thick: averages over "
           f"{'/'.join(map(str, sorted(blocks)))}-step blocks; thin: every log; "
           f"{describe(fixed)}")
    fig.suptitle(sup)
    fig.tight_layout()
    figs.save("covariate_shift.png", fig, sup)
    return {"runs": rs, "fixed": fixed, "numbers": {"ratios": [list(x) for x in ratios], "upto_step": upto,
                                                     "block_steps": sorted(blocks),
                                                     "layers_decided_on": "downstream" if deep else "first"},
            "mismatched": sorted(mismatched),
            "table": (["network", "hidden layer", "BN", "measured (BN place)", "median block drift of mean (std)",
                       "median block drift of variance (relative)", "first→last block: mean shift (std)",
                       "first/last block variance", "BN / no BN drift (mean / variance)", "file"], rows),
            "detail": f"median drift between {'/'.join(map(str, sorted(blocks)))}-step blocks, BN over no BN: " + "; ".join(
                f"784-{h.replace(',', '-')}-10 layer {l + 1} BN {p}: mean {rm:.2f}x, variance {rv:.2f}x"
                for h, l, p, rm, rv in ratios) + f" (steps up to {upto})"
            + (f"; * no no-BN run measured {', '.join(sorted(mismatched))} the ReLU, so the ratio uses one "
               "measured at the other place" if mismatched else ""),
            "decide": (ratios, bool(deep))}


def decide_covariate_shift(d):
    ratios, deep = d["decide"]
    where = "the layers downstream of a BN layer" if deep else "the first hidden layer (no deeper runs)"
    if not ratios:
        return "untested", "no BN run has a no-BN run to compare with at the same layer"
    txt = "; ".join(f"BN {p} the ReLU: mean {rm:.2f}x, variance {rv:.2f}x" for h, l, p, rm, rv in ratios)
    both = [x for x in ratios if x[3] < DRIFT_MARGIN and x[4] < DRIFT_MARGIN]
    some = [x for x in ratios if x[3] < DRIFT_MARGIN or x[4] < DRIFT_MARGIN]
    if len(both) == len(ratios):
        return "supported", f"BN's input statistics drift less than no BN's at {where} ({txt} of no BN's drift)"
    if not some:
        return "not supported", f"BN's input statistics drift as much as no BN's or more at {where} ({txt})"

    def what(x):
        lower = [stat for stat, v in (("mean", x[3]), ("variance", x[4])) if v < DRIFT_MARGIN]
        return f"BN {x[2]} the ReLU damps " + (" and ".join(f"the {w}" for w in lower) if lower else "neither") \
            + f" (mean {x[3]:.2f}x, " \
            f"variance {x[4]:.2f}x)"
    places = {x[2] for x in ratios}
    patterns = {(x[3] < DRIFT_MARGIN, x[4] < DRIFT_MARGIN) for x in ratios}
    on = "placement" if len(places) > 1 and len(patterns) > 1 else "statistic"
    return "depends", f"on the BN {on} at {where}: " + "; ".join(what(x) for x in ratios)


def claim_learning_rate(runs, figs):
    import numpy as np
    usable = [r for r in runs if r.state in ("complete", "diverged")]
    bn = bn_mode(usable)
    if bn is None:
        raise Untested("no run with BN")
    vary = {"optimizer", "lr", "bn", "ghost_batch", "_mode"} | SGD_ONLY | ADAM_ONLY
    rs, fixed = select(usable, vary, states=("complete", "diverged"),
                       where=lambda r: mode_label(r) in ("none", bn),
                       need=lambda rs: len({(mode_label(r), r.get("lr")) for r in rs}) >= 3
                       and {mode_label(r) for r in rs} == {"none", bn})
    if not rs:
        raise Untested("needs runs at two or more learning rates, with and without BN, in otherwise equal settings")
    ep = common_epoch(rs)

    def opt_key(r):
        o = str(r.get("optimizer"))
        if o == "sgd":
            mom = r.get("momentum") or 0
            o += f" momentum {fmt_value(mom)}" if mom else " (no momentum)"
            if r.get("nesterov"):
                o += " nesterov"
        return o

    def outcome(r):
        if r.state == "diverged":
            return "diverged", None
        v = at(r, "val_acc", ep)
        return ("trains" if v is not None and v >= TRAINS else f"below {100 * TRAINS:g}%"), v

    opts = sorted({opt_key(r) for r in rs})
    rows, best = [], {}
    for o in opts:
        for mode in ("none", bn):
            these = sorted([r for r in rs if opt_key(r) == o and mode_label(r) == mode], key=lambda r: r.get("lr"))
            ok = [r.get("lr") for r in these if outcome(r)[0] == "trains"]
            best[(o, mode)] = (max(ok) if ok else None, [r.get("lr") for r in these])
            for r in these:
                what, v = outcome(r)
                at_txt = f"epoch {r.diverged_at[0]}, step {r.diverged_at[1]}" if r.diverged_at else ""
                rows.append([o, mode_text(mode), fmt_value(r.get("lr")), what + (f" ({at_txt})" if at_txt else ""),
                             pct(v), r.name])
    plt, ticker = mpl()
    from matplotlib.lines import Line2D
    fig, axes = plt.subplots(1, len(opts), figsize=(6.2 * len(opts), 4.4), squeeze=False)
    for ax, o in zip(axes[0], opts):
        lrs_all = []
        for mode in ("none", bn):
            c, m, ls = style(mode)
            these = sorted([r for r in rs if opt_key(r) == o and mode_label(r) == mode], key=lambda r: r.get("lr"))
            pts_ = {}
            for r in these:
                lrs_all.append(r.get("lr"))
                what, v = outcome(r)
                if what != "diverged" and v is not None:
                    pts_.setdefault(r.get("lr"), []).append(v)
            xs = sorted(pts_)
            ax.plot(xs, [np.mean(pts_[x]) for x in xs], color=c, marker=m, ls=ls, lw=1.8, ms=7, label=mode_text(mode))
            div = sorted({r.get("lr") for r in these if r.state == "diverged"})
            ax.plot(div, [0.03 if mode == "none" else 0.07] * len(div), ls="none", marker="x", mew=2.5, ms=10,
                    color=c, label="_diverged")
            mx = best[(o, mode)][0]
            if mx is not None:
                ax.axvline(mx, color=c, lw=1, ls=":", alpha=0.8)
        ax.axhline(TRAINS, color="#d62728", lw=1, ls=":")
        ax.text(0.01, TRAINS - 0.01, f"trains (≥{100 * TRAINS:g}%)", transform=ax.get_yaxis_transform(),
                fontsize=8, va="top", color="#d62728")
        ax.set_ylim(0, 1.0)
        log10_axis(ax, ticker, lrs_all)
        ax.set(title=o, xlabel="learning rate (log scale)", ylabel=f"validation accuracy after epoch {ep} (%)")
        percent_axis(ax, ticker)
    handles = [Line2D([], [], color=style(m)[0], marker=style(m)[1], ls=style(m)[2], lw=1.8, label=mode_text(m))
               for m in ("none", bn)]
    if any(r.state == "diverged" for r in rs):
        handles.append(Line2D([], [], color="black", marker="x", mew=2.5, ls="none", ms=9,
                              label="diverged (non-finite loss)"))
    handles.append(Line2D([], [], color="black", ls=":", lw=1, label="largest lr that trains"))
    legend_below(fig, handles, ncol=4)
    sup = f"Learning-rate tolerance: validation accuracy after epoch {ep}\n{describe(fixed)}"
    fig.suptitle(sup)
    fig.tight_layout()
    figs.save("learning_rate.png", fig, sup)
    per_opt = {o: (best[(o, bn)][0], best[(o, "none")][0], max(best[(o, bn)][1] + best[(o, "none")][1]))
               for o in opts}
    lr_txt = lambda v: "none" if v is None else fmt_value(v)  # noqa: E731
    return {"runs": rs, "fixed": fixed, "epoch": ep,
            "numbers": {o: {"bn_max_lr": b, "none_max_lr": n, "largest_tried": t} for o, (b, n, t) in per_opt.items()},
            "table": (["optimizer", "BN", "lr", "outcome", f"val acc (epoch {ep})", "file"], rows),
            "detail": "largest learning rate that trains: " + "; ".join(
                f"{o}: BN {lr_txt(b)}, no BN {lr_txt(n)}" for o, (b, n, _) in per_opt.items()),
            "decide": per_opt}


def decide_learning_rate(d):
    per_opt = d["decide"]

    def higher(b, n):
        return b is not None and (n is None or b > n)

    yes = [o for o, (b, n, _) in per_opt.items() if higher(b, n)]
    lr_txt = lambda v: "no learning rate" if v is None else f"lr {fmt_value(v)}"  # noqa: E731
    nums = "; ".join(f"{o}: BN trains up to {lr_txt(b)}, no BN up to {lr_txt(n)}" for o, (b, n, _) in per_opt.items())
    capped = [o for o, (b, n, t) in per_opt.items() if b is not None and n is not None and b == n == t]
    if yes and len(yes) == len(per_opt):
        return "supported", f"BN trains at a higher learning rate than no BN with {' and '.join(yes)} ({nums})"
    if not yes:
        return "not supported", ("BN's largest trainable learning rate is not higher than no BN's"
                                 + (f", both train at the largest tried with {', '.join(capped)}" if capped else "")
                                 + f" ({nums})")
    return "depends", (f"on the optimizer: BN trains at a higher learning rate with {', '.join(yes)}, not with "
                       + ", ".join(o for o in per_opt if o not in yes) + f" ({nums})")


def claim_initialisation(runs, figs):
    import numpy as np
    usable = [r for r in runs if r.state in ("complete", "diverged")]
    bn = bn_mode(usable)
    if bn is None:
        raise Untested("no run with BN")
    rs, fixed = select(usable, {"init_scale", "bn", "ghost_batch", "_mode"}, states=("complete", "diverged"),
                       where=lambda r: mode_label(r) in ("none", bn),
                       need=lambda rs: all(len({r.get("init_scale") for r in rs if mode_label(r) == m}) >= 2
                                           for m in ("none", bn)))
    if not rs:
        raise Untested("needs runs at two or more --init-scale values, with and without BN")
    ep = common_epoch(rs)
    rows, acc, first, per_seed = [], {}, {}, {}
    for mode in ("none", bn):
        for r in sorted([r for r in rs if mode_label(r) == mode], key=lambda r: r.get("init_scale")):
            v = at(r, "val_acc", ep)
            v1 = at(r, "val_acc", 1)
            acc.setdefault(mode, {}).setdefault(r.get("init_scale"), []).append(v if v is not None else 0.0)
            per_seed.setdefault(mode, {}).setdefault(r.get("init_scale"), []).append(
                (seeds.seed_of(r), v if v is not None else 0.0))
            first.setdefault(mode, {}).setdefault(r.get("init_scale"), []).append(v1 if v1 is not None else 0.0)
            d = diag_rows(r)
            v0 = None
            if d is not None:
                m = (d["layer"] == 0) & np.isfinite(d["act_var"])
                v0 = float(d["act_var"][m][0]) if m.any() else None
            rows.append([mode_text(mode), fmt_value(r.get("init_scale")),
                         "diverged" if r.state == "diverged" else pct(v1), "diverged" if r.state == "diverged" else pct(v),
                         fmt(v0, ".3g"), r.name])
    spread = {m: max(mean(v) for v in acc[m].values()) - min(mean(v) for v in acc[m].values()) for m in acc}
    # accuracy lost against scale 1 (or the best scale, without a run at 1), below and above it
    lost = {}
    for m in acc:
        a = {sc: mean(v) for sc, v in acc[m].items()}
        ref = a.get(1.0, max(a.values()))
        lost[m] = {d: (ref - min(a[sc] for sc in a if cmp_(sc))) for d, cmp_ in
                   (("small", lambda sc: sc < 1), ("large", lambda sc: sc > 1)) if any(cmp_(sc) for sc in a)}
    # the same per seed (seeds run at every scale of the mode), for the difference test
    lost_seed = {}
    for m in per_seed:
        by = {sc: seeds.by_seed(v) for sc, v in per_seed[m].items()}
        common = set.intersection(*(set(v) for v in by.values()))
        if not common:  # no seed at every scale: the means, as one value (n = 1)
            by = {sc: {0: mean(list(v.values()))} for sc, v in by.items()}
            common = {0}
        ref_sc = 1.0 if 1.0 in by else max(by, key=lambda sc: mean(list(by[sc].values())))
        for d, cmp_ in (("small", lambda sc: sc < 1), ("large", lambda sc: sc > 1)):
            if any(cmp_(sc) for sc in by):
                lost_seed.setdefault(m, {})[d] = {k: by[ref_sc][k] - min(by[sc][k] for sc in by if cmp_(sc))
                                                  for k in common}
    tests = {d: seeds.difference(lost_seed["none"][d], lost_seed[bn][d])  # no BN's loss minus BN's
             for d in ("small", "large") if d in lost_seed.get("none", {}) and d in lost_seed.get(bn, {})}
    plt, ticker = mpl()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    scales = sorted({r.get("init_scale") for r in rs})
    for ax, data, title in ((axes[0], first, "after epoch 1"), (axes[1], acc, f"after epoch {ep}")):
        for mode in ("none", bn):
            c, m, ls = style(mode)
            xs = sorted(data[mode])
            ax.plot(xs, [mean(data[mode][x]) for x in xs], color=c, marker=m, ls=ls, lw=1.8, ms=7,
                    label=mode_text(mode) + (f" (spread {100 * spread[mode]:.2f} points)" if data is acc else ""))
        log10_axis(ax, ticker, scales)
        ax.set(title=f"Validation accuracy {title}", xlabel="--init-scale (x Glorot-uniform, log scale)",
               ylabel="validation accuracy (%)")
        percent_axis(ax, ticker)
    handles = [l for l in axes[1].get_lines() if not l.get_label().startswith("_")]
    legend_below(fig, handles, ncol=2)
    sup = f"Initialisation: the initial weights scaled by --init-scale\n{describe(fixed)}"
    fig.suptitle(sup)
    fig.tight_layout()
    figs.save("initialisation.png", fig, sup)
    lost_txt = "; ".join(f"{'below' if d == 'small' else 'above'} scale 1: BN loses {pts(lost[bn][d])[1:]} points, "
                         f"no BN {pts(lost['none'][d])[1:]}" for d in ("small", "large")
                         if d in lost[bn] and d in lost["none"])
    return {"runs": rs, "fixed": fixed, "epoch": ep,
            "numbers": {"lost": {mode_text(m): v for m, v in lost.items()},
                        "none_minus_bn_lost_tests": {d: t.as_dict() for d, t in tests.items()},
                        "spread": {mode_text(m): v for m, v in spread.items()},
                        "worst": {mode_text(m): min(mean(v) for v in acc[m].values()) for m in acc}},
            "table": (["BN", "init scale", "val acc (epoch 1)", f"val acc (epoch {ep})",
                       "layer-1 activation variance at the first log", "file"], rows),
            "detail": (f"accuracy lost at epoch {ep} against init scale 1: {lost_txt}. Spread over the scales "
                       f"{', '.join(fmt_value(s) for s in scales)}: "
                       f"BN {100 * spread[bn]:.2f} points (worst {pct(min(mean(v) for v in acc[bn].values()))}), "
                       f"no BN {100 * spread['none']:.2f} points (worst {pct(min(mean(v) for v in acc['none'].values()))})"),
            "decide": (lost[bn], lost["none"], tests)}


def decide_initialisation(d):
    b, n, tests = d["decide"]
    dirs = [x for x in ("small", "large") if x in b and x in n]
    name = {"small": "small initial weights (scale < 1)", "large": "large initial weights (scale > 1)"}
    less = [x for x in dirs if b[x] < 0.5 * n[x] and x in tests and tests[x].sign(TOLERANCE) > 0]
    txt = "; ".join(f"{name[x]}: BN loses {100 * b[x]:.2f} points, no BN {100 * n[x]:.2f}"
                    + (f" (no BN minus BN: {tests[x].text()})" if x in tests else "") for x in dirs)
    if not dirs:
        return "untested", "no init scale on either side of 1 for both BN and no BN"
    if len(less) == len(dirs):
        return "supported", txt
    if not less:
        return "not supported", txt
    return "depends", f"on the direction: BN depends less on {' and '.join(name[x] for x in less)} only ({txt})"


def _bn_batch_sweep(runs):
    """The runs at one global batch that differ in the BN batch (ghost batches,
    --bn local over more ranks, sync) and dataset, with their no-BN references."""
    rs, fixed = select(runs, {"bn", "ghost_batch", "_mode", "dataset", "bn_eval"},
                       where=lambda r: value(r, "bn_eval") in (None, "running"),
                       need=lambda rs: any(len({r.get("bn_batch") for r in rs
                                                if r.get("bn") != "none" and r.get("dataset") == ds}) >= 3
                                           for ds in {r.get("dataset") for r in rs}))
    if not rs:
        raise Untested("needs runs at three or more BN batch sizes at one global batch "
                       "(--ghost-batch K, --bn local on more ranks, --bn sync)")
    return rs, fixed


def claim_regularisation(runs, figs, batch_runs):
    done = [r for r in runs if r.state == "complete"]
    bn = bn_mode(done)
    if bn is None:
        raise Untested("no complete run with BN")
    # (a) BN against no BN over the global batch
    rs_a = batch_runs
    if not rs_a:
        raise Untested("needs runs with and without BN at two or more global batches")
    ep_a = common_epoch(rs_a)
    rows, by_gb = [], {}
    for mode in ("none", bn):
        for r in sorted([r for r in rs_a if mode_label(r) == mode], key=lambda r: r.get("global_batch")):
            tl, vl, va, ta = (final(r, f, ep_a) for f in ("train_loss", "val_loss", "val_acc", "train_acc"))
            by_gb.setdefault(mode, {}).setdefault(r.get("global_batch"), []).append((vl - tl, vl, va, seeds.seed_of(r)))
            rows.append(["global batch", mode_text(mode), str(r.get("global_batch")),
                         "–" if mode == "none" else str(r.get("bn_batch")), span(ep_a), fmt(tl), fmt(vl), fmt(vl - tl),
                         pct(ta), pct(va), r.name])
    gbs = sorted(set(by_gb.get("none", {})) & set(by_gb.get(bn, {})))
    g = lambda m, gb, i: mean([x[i] for x in by_gb[m][gb]])  # noqa: E731
    vl_seed = lambda m, gb: seeds.by_seed([(x[3], x[1]) for x in by_gb[m][gb]])  # noqa: E731
    vl_tests = {gb: seeds.difference(vl_seed(bn, gb), vl_seed("none", gb)) for gb in gbs}  # BN minus no BN
    lower_vl = [gb for gb in gbs if vl_tests[gb].sign(0.0) < 0]
    # (b) against the BN batch, at one global batch
    try:
        rs_b, fixed_b = _bn_batch_sweep(done)
    except Untested:
        rs_b, fixed_b = [], {}
    ep_b = common_epoch(rs_b) if rs_b else 0
    sweep, swings = {}, {}
    for r in sorted(rs_b, key=lambda r: (str(r.get("dataset")), r.get("bn") != "none", r.get("bn_batch") or 0)):
        tl, vl, va = (final(r, f, ep_b) for f in ("train_loss", "val_loss", "val_acc"))
        key = "none" if r.get("bn") == "none" else r.get("bn_batch")
        sweep.setdefault(r.get("dataset"), {}).setdefault(key, []).append((vl - tl, vl, va, seeds.seed_of(r)))
        if key != "none" and ep_b >= SETTLE:
            _, lo, hi = settled(r, "val_loss", ep_b)
            swings.setdefault(r.get("dataset"), []).append((hi - lo) / 2)
        rows.append(["BN batch (" + DATASET_NAMES.get(r.get("dataset"), r.get("dataset")) + ")",
                     mode_text(mode_label(r)) + (f" ({r.get('n_ranks')} ranks)" if r.get("bn") == "local" else ""),
                     str(r.get("global_batch")), "–" if r.get("bn") == "none" else str(r.get("bn_batch")), span(ep_b),
                     fmt(tl), fmt(vl), fmt(vl - tl), pct(final(r, "train_acc", ep_b)), pct(va), r.name])
    noise = {}
    for ds, pts_ in sweep.items():
        bbs = sorted(k for k in pts_ if k != "none")
        if len(bbs) < 2:
            continue
        sw = sorted(swings.get(ds, []))
        tol = sw[len(sw) // 2] if sw else 0.0  # the dataset's epoch-to-epoch swing of the validation loss
        vl_of = {b: mean([x[1] for x in pts_[b]]) for b in bbs}
        vs = {b: seeds.by_seed([(x[3], x[1]) for x in pts_[b]]) for b in bbs}
        better = [b for b in bbs[:-1] if seeds.difference(vs[b], vs[bbs[-1]]).sign(tol) < 0]
        noise[ds] = {"val_loss": vl_of, "largest": bbs[-1], "better_than_largest": better, "tol": tol,
                     "best": min(vl_of, key=vl_of.get),
                     "none": mean([x[1] for x in pts_["none"]]) if "none" in pts_ else None}

    plt, ticker = mpl()
    from matplotlib.lines import Line2D
    fig, (ax_a, ax_b, ax_c) = plt.subplots(1, 3, figsize=(15.5, 4.5))
    for mode in ("none", bn):
        c, m, ls = style(mode)
        xs = sorted(by_gb.get(mode, {}))
        ax_a.plot(xs, [g(mode, x, 1) for x in xs], color=c, marker=m, ls=ls, lw=1.8, ms=7, label=mode_text(mode))
    log2_axis(ax_a, ticker, [r.get("global_batch") for r in rs_a])
    ax_a.set(title=f"Validation loss by global batch ({span(ep_a)})", xlabel="global batch (log2 scale)",
             ylabel="validation loss (nats)")
    ds_style = {"mnist": "-", "fashion": "--"}
    allbb = []
    for ds, pts_ in sorted(sweep.items()):
        bbs = sorted(k for k in pts_ if k != "none")
        allbb += bbs
        for ax, i in ((ax_b, 1), (ax_c, 0)):
            ax.plot(bbs, [mean([x[i] for x in pts_[b]]) for b in bbs], color=BN_COLOR, ls=ds_style.get(ds, ":"),
                    marker="o", lw=1.8, ms=6, label="_bn")
            if "none" in pts_:
                ax.axhline(mean([x[i] for x in pts_["none"]]), color=NONE_COLOR, ls=ds_style.get(ds, ":"), lw=1.2,
                           label="_none")
    if allbb:
        for ax in (ax_b, ax_c):
            log2_axis(ax, ticker, allbb)
    ax_b.set_yscale("log")
    ax_b.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax_b.yaxis.set_minor_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax_b.set(title=f"Validation loss by BN batch (global batch {fixed_b.get('global_batch', '?')}, {span(ep_b)})",
             xlabel="BN batch (samples per statistic, log2 scale)", ylabel="validation loss (nats, log scale)")
    ax_c.axhline(0, color="black", lw=0.6)
    ax_c.set(title="Validation − training loss by BN batch",
             xlabel="BN batch (samples per statistic, log2 scale)", ylabel="validation loss − training loss (nats)")
    for ax in (ax_a, ax_b, ax_c):
        ax.title.set_size(10)
    handles = [Line2D([], [], color=style(m)[0], marker=style(m)[1], ls=style(m)[2], lw=1.8,
                      label="no BN" if m == "none" else "BN") for m in ("none", bn)]
    handles += [Line2D([], [], color="black", ls=ds_style.get(ds, ":"), lw=1.5,
                       label=f"{DATASET_NAMES.get(ds, ds)} (middle, right; no BN: horizontal)") for ds in sorted(sweep)]
    legend_below(fig, handles, ncol=len(handles))
    sup = ("Regularisation: does BN, or the noise of small BN batches, lower the validation loss?\n"
           f"{describe(batch_fixed_for_text(rs_a), skip={'global_batch'})}; training loss: the epoch's mean, "
           "in training mode (with BN's batch statistics)")
    fig.suptitle(sup)
    fig.tight_layout()
    figs.save("regularisation.png", fig, sup)
    detail = ("validation loss, BN against no BN by global batch: " +
              ", ".join(f"{gb} {g(bn, gb, 1):.4f} vs {g('none', gb, 1):.4f}" for gb in gbs) +
              f" (BN lower at {len(lower_vl)} of {len(gbs)})")
    for ds, n in noise.items():
        detail += (f"; {DATASET_NAMES.get(ds, ds)} by BN batch: " +
                   ", ".join(f"{b} {v:.4f}" for b, v in n["val_loss"].items()) +
                   (f", no BN {n['none']:.4f}" if n["none"] is not None else "") + f" (noise {n['tol']:.4f})")
    return {"runs": list(rs_a) + [r for r in rs_b if r not in rs_a], "fixed": fixed_b or {},
            "epoch": ep_a,
            "numbers": {"lower_val_loss_at": lower_vl, "global_batches": gbs,
                        "bn_minus_none_val_loss_tests": {str(gb): t.as_dict() for gb, t in vl_tests.items()},
                        "bn_batch": {ds: {"val_loss": {str(b): v for b, v in n["val_loss"].items()},
                                          "better_than_largest": n["better_than_largest"], "noise": n["tol"],
                                          "no_bn": n["none"]} for ds, n in noise.items()}},
            "table": (["sweep", "BN", "global batch", "BN batch", "read at", "train loss", "val loss", "val − train",
                       "train acc", "val acc", "file"], rows),
            "detail": detail, "decide": (lower_vl, gbs, noise, vl_tests)}


def batch_fixed_for_text(rs):
    if not rs:
        return {}
    keys = config_keys(rs)
    return {k: value(rs[0], k) for k in keys if len({repr(value(r, k)) for r in rs}) == 1 and value(rs[0], k) is not None}


def decide_regularisation(d):
    lower_vl, gbs, noise, vl_tests = d["decide"]
    name = lambda ds: DATASET_NAMES.get(ds, ds)  # noqa: E731
    reg = bool(gbs) and len(lower_vl) > len(gbs) / 2
    helps = [ds for ds, n in noise.items() if n["better_than_largest"]]
    a = (f"BN's validation loss is lower than no BN's at {len(lower_vl)} of {len(gbs)} global batches"
         + (f" ({', '.join(map(str, lower_vl))})" if lower_vl else "")
         + (" (BN minus no BN: " + "; ".join(f"{gb}: {t.text(1.0, 4, '')}" for gb, t in sorted(vl_tests.items())) + ")"
            if any(t.has_interval for t in vl_tests.values()) else ""))
    b = "; ".join(f"{name(ds)}: " + (f"BN batch {', '.join(map(str, n['better_than_largest']))} validates better than "
                                     f"{n['largest']}" if n["better_than_largest"] else
                                     f"no smaller BN batch validates better than {n['largest']} (best: {n['best']})")
                  for ds, n in noise.items())
    if reg and noise and len(helps) == len(noise):
        return "supported", f"{a}; {b}"
    if not reg and not helps:
        return "not supported", f"{a}; {b}" if b else a
    return "depends", f"on the part of the claim: {a}; {b}" if b else f"on the global batch: {a}"


def claim_batch_plateau(runs, figs, batch_runs, bn):
    rs = batch_runs
    if not rs:
        raise Untested("needs complete runs at two or more global batches, with and without BN")
    ep = common_epoch(rs)
    rows, acc, loss, per_seed = [], {}, {}, {}
    for mode in ("none", bn):
        for r in sorted([r for r in rs if mode_label(r) == mode], key=lambda r: r.get("global_batch")):
            gb = r.get("global_batch")
            va, tl = final(r, "val_acc", ep), final(r, "train_loss", ep)
            acc.setdefault(mode, {}).setdefault(gb, []).append(va)
            loss.setdefault(mode, {}).setdefault(gb, []).append(tl)
            per_seed.setdefault(mode, {}).setdefault(gb, []).append((seeds.seed_of(r), va))
            rows.append([mode_text(mode), str(gb), str(r.get("n_ranks")), pct(final(r, "train_acc", ep)), pct(va),
                         fmt(tl), fmt(final(r, "val_loss", ep)), r.name])
    shape = {}
    for mode, pts_ in acc.items():
        gbs = sorted(pts_)
        a = {gb: mean(pts_[gb]) for gb in gbs}
        if 64 not in a or gbs[0] >= 64:
            shape[mode] = None
            continue
        v = {gb: seeds.by_seed(per_seed[mode][gb]) for gb in gbs}
        rise_d = seeds.difference(v[64], v[gbs[0]])
        above_d = [seeds.difference(v[gb], v[64]) for gb in gbs if gb > 64]
        shape[mode] = {"acc": a, "rise_to_64": rise_d.mean, "after_64": [d.mean for d in above_d],
                       "best": max(a, key=a.get), "rises": rise_d.sign(TOLERANCE) > 0,
                       "plateau": bool(above_d) and all(d.sign(TOLERANCE) == 0 for d in above_d),
                       "tests": {"64 minus smallest": rise_d.as_dict(),
                                 **{f"{gb} minus 64": d.as_dict() for gb, d in zip([g for g in gbs if g > 64], above_d)}},
                       "texts": [f"64 minus {gbs[0]}: {rise_d.text()}"]
                       + [f"{gb} minus 64: {d.text()}" for gb, d in zip([g for g in gbs if g > 64], above_d)]}
    if not any(shape.values()):
        raise Untested("needs global batches below, at and above 64")
    plt, ticker = mpl()
    from matplotlib.lines import Line2D
    fig, (ax_a, ax_l) = plt.subplots(1, 2, figsize=(12.5, 4.4))
    for mode in ("none", bn):
        c, m, ls = style(mode)
        xs = sorted(acc.get(mode, {}))
        ax_a.plot(xs, [mean(acc[mode][x]) for x in xs], color=c, marker=m, ls=ls, lw=1.8, ms=7, label=mode_text(mode))
        ci_errorbars(ax_a, xs, [seeds.interval(seeds.by_seed(per_seed[mode][x]).values()) for x in xs], c,
                     mode_text(mode))
        ax_l.plot(xs, [mean(loss[mode][x]) for x in xs], color=c, marker=m, ls=ls, lw=1.8, ms=7, label=mode_text(mode))
    nb = sorted(NOTEBOOK_BATCH)
    ax_a.plot(nb, [NOTEBOOK_BATCH[b][0] for b in nb], color="#d62728", marker="*", ls="-.", lw=1.4, ms=9,
              label="notebook's table (claimed)")
    ax_l.plot(nb, [NOTEBOOK_BATCH[b][1] for b in nb], color="#d62728", marker="*", ls="-.", lw=1.4, ms=9,
              label="notebook's table (claimed)")
    ax_a.axvline(64, color="#999999", lw=0.8, ls=":")
    ax_l.axvline(64, color="#999999", lw=0.8, ls=":")
    allx = sorted({r.get("global_batch") for r in rs} | set(nb))
    for ax in (ax_a, ax_l):
        log2_axis(ax, ticker, allx)
    ax_a.set(title=f"Validation accuracy ({span(ep)})", xlabel="global batch (log2 scale)",
             ylabel="validation accuracy (%)")
    ax_l.set(title=f"Training loss ({span(ep)}; each epoch's mean)", xlabel="global batch (log2 scale)",
             ylabel="training loss (nats)")
    percent_axis(ax_a, ticker)
    handles = [Line2D([], [], color=style(m)[0], marker=style(m)[1], ls=style(m)[2], lw=1.8, label=mode_text(m))
               for m in ("none", bn)]
    handles.append(Line2D([], [], color="#d62728", marker="*", ls="-.", ms=9, label="notebook's table (10 epochs, claimed)"))
    legend_below(fig, handles, ncol=3)
    sup = (f"Batch size at a fixed number of epochs ({ep}) and learning rate; dotted: 64, the claimed plateau\n"
           f"{describe(batch_fixed_for_text(rs), skip={'global_batch'})}")
    fig.suptitle(sup)
    fig.tight_layout()
    figs.save("batch_plateau.png", fig, sup)
    detail = "; ".join(f"{mode_text(m)}: " + ", ".join(f"{gb} {pct(v)}" for gb, v in sorted(s['acc'].items()))
                       for m, s in shape.items() if s)
    return {"runs": rs, "fixed": batch_fixed_for_text(rs), "epoch": ep,
            "numbers": {mode_text(m): ({k: v for k, v in s.items() if k not in ("acc", "texts")} | {"acc": {str(g): v for g, v in s["acc"].items()}})
                        if s else None for m, s in shape.items()},
            "table": (["BN", "global batch", "ranks", f"train acc ({span(ep)})", "val acc", "train loss", "val loss",
                       "file"], rows),
            "detail": f"validation accuracy ({span(ep)}) by global batch: {detail}", "decide": shape}


def decide_batch_plateau(d):
    shape = {m: s for m, s in d["decide"].items() if s}
    ok = [m for m, s in shape.items() if s["rises"] and s["plateau"]]
    desc = "; ".join(f"{mode_text(m)}: " + "; ".join(s["texts"]) + f"; best at {s['best']}" for m, s in shape.items())
    if ok and len(ok) == len(shape):
        return "supported", desc
    if not ok:
        return "not supported", desc
    return "depends", f"on BN: the pattern holds for {', '.join(mode_text(m) for m in ok)} only ({desc})"


def claim_large_batch(runs, figs, batch_runs, bn):
    import numpy as np
    done = [r for r in runs if r.state == "complete"]
    rs, fixed = _bn_batch_sweep(done)
    ep = common_epoch(rs)
    sweep, rows = {}, []
    for r in sorted(rs, key=lambda r: (str(r.get("dataset")), r.get("bn") != "none", r.get("bn_batch") or 0)):
        va, lo, hi = settled(r, "val_acc", ep, SETTLE if ep >= 5 else 1)
        kind = ("none" if r.get("bn") == "none" else "ghost" if (r.get("ghost_batch") or 0) > 0
                else "sync" if r.get("bn") == "sync" else "local")
        d = diag_rows(r)
        noise = None
        if d is not None and "bn_noise" in d:
            m = (d["layer"] == 0) & np.isfinite(d["bn_noise"])
            noise = float(np.median(d["bn_noise"][m])) if m.any() else None
        sweep.setdefault(r.get("dataset"), []).append((kind, r.get("bn_batch"), va, noise, r, lo, hi))
        rows.append([DATASET_NAMES.get(r.get("dataset"), r.get("dataset")), mode_text(mode_label(r)),
                     str(r.get("n_ranks")), "–" if kind == "none" else str(r.get("bn_batch")), pct(va),
                     f"{pct(lo)} – {pct(hi)}", pct(at(r, "val_acc", ep)), fmt(noise, ".3f"), r.name])
    verdicts = {}
    for ds, items in sweep.items():
        none = mean([x[2] for x in items if x[0] == "none"])
        bns, bseed = {}, {}
        for kind, bb, va, _, r, _, _ in items:
            if kind != "none":
                bns.setdefault(bb, []).append(va)
                bseed.setdefault(bb, []).append((seeds.seed_of(r), va))
        bbs = sorted(bns)
        if not bbs:
            continue
        acc = {b: mean(bns[b]) for b in bbs}
        ref = acc[bbs[-1]]  # BN at the largest BN batch of the sweep
        # the noise of this dataset's runs: half the range of their last epochs' accuracies, at least --tolerance
        swing = sorted((hi - lo) / 2 for kind, _, _, _, _, lo, hi in items if kind != "none" and lo is not None)
        tol = max(TOLERANCE, swing[len(swing) // 2] if swing else 0)
        vs = {b: seeds.by_seed(bseed[b]) for b in bbs}
        vs_d = {b: seeds.difference(vs[b], vs[bbs[-1]]) for b in bbs}  # BN batch b minus the largest
        worse = [b for b in bbs[:-1] if vs_d[b].sign(tol) < 0]
        ok_from = next((b for i, b in enumerate(bbs) if all(vs_d[c].sign(tol) >= 0 for c in bbs[i:])), None)
        verdicts[ds] = {"none": none, "acc": acc, "worse": worse, "ok_from": ok_from, "largest": bbs[-1], "tol": tol,
                        "smallest": bbs[0], "drop_smallest": ref - acc[bbs[0]],
                        "as_good_as_none": [b for b in bbs if none is not None and acc[b] >= none - TOLERANCE],
                        "tests": {f"{b} minus {bbs[-1]}": vs_d[b].as_dict() for b in bbs[:-1]},
                        "test_smallest": vs_d[bbs[0]].text()}
    # BN minus no BN over the global batch (batch sweep)
    diff, diff_tests = {}, {}
    if batch_runs:
        epb = common_epoch(batch_runs)
        for r in batch_runs:
            diff.setdefault(r.get("global_batch"), {}).setdefault(mode_label(r), []).append(
                (seeds.seed_of(r), final(r, "val_acc", epb)))
        diff_tests = {gb: seeds.difference(seeds.by_seed(v[bn]), seeds.by_seed(v["none"]))
                      for gb, v in diff.items() if bn in v and "none" in v}
        diff = {gb: d.mean for gb, d in diff_tests.items()}

    plt, ticker = mpl()
    from matplotlib.lines import Line2D
    fig, (ax_a, ax_n, ax_d) = plt.subplots(1, 3, figsize=(15.5, 4.4), gridspec_kw={"width_ratios": [1.25, 1, 1]})
    kind_style = {"ghost": ("D", "ghost batches (--ghost-batch K, 2 ranks)"), "local": ("s", "--bn local, one rank per BN batch"),
                  "sync": ("o", "--bn sync (whole global batch)")}
    ds_colors = {"mnist": BN_COLOR, "fashion": "#9467bd"}
    allbb, ylim_pts = [], []
    for ds, items in sorted(sweep.items()):
        c = ds_colors.get(ds, "C3")
        ref = verdicts[ds]["acc"][verdicts[ds]["largest"]] if ds in verdicts else 0.0
        ylim_pts += [100 * (x[2] - ref) for x in items if x[2] is not None]
        for kind in ("ghost", "local"):
            # each way of making small BN batches, joined to the shared larger ones
            pts_ = {}
            for k, bb, va, *_ in items:
                if k in (kind, "sync") or (kind == "ghost" and k == "local" and bb == max(
                        (b for kk, b, *_ in items if kk == "local"), default=None)):
                    pts_.setdefault(bb, []).append(va)
            xs = sorted(pts_)
            if len([k for k, *_ in items if k == kind]) == 0:
                continue
            ax_a.plot(xs, [100 * (mean(pts_[x]) - ref) for x in xs], color=c, ls="-" if kind == "ghost" else "--",
                      lw=1.5, label="_line")
        for kind, bb, va, noise, _, lo, hi in items:
            if kind == "none":
                continue
            allbb.append(bb)
            ax_a.errorbar([bb], [100 * (va - ref)], yerr=[[100 * (va - lo)], [100 * (hi - va)]], ls="none",
                          marker=kind_style[kind][0], color=c, ms=7, capsize=3, elinewidth=1, label="_pt")
            if noise is not None:
                ax_n.plot([bb], [noise], ls="none", marker=kind_style[kind][0], color=c, ms=7, label="_pt")
        if ds in verdicts and verdicts[ds]["none"] is not None:
            y = 100 * (verdicts[ds]["none"] - ref)
            ax_a.axhline(y, color=c, ls=":", lw=1.3)
            ylim_pts.append(y)
        if ds in verdicts:
            ax_a.axhspan(-100 * verdicts[ds]["tol"], 0, color=c, alpha=0.08, lw=0)
    if allbb:
        log2_axis(ax_a, ticker, allbb)
        log2_axis(ax_n, ticker, allbb)
        xs = np.array(sorted(set(allbb)), dtype=float)
        ax_n.plot(xs, 1 / np.sqrt(xs), color="black", lw=1, ls=":", label="1/sqrt(BN batch)")
    ax_n.set_yscale("log")
    ax_n.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax_n.yaxis.set_minor_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax_n.tick_params(axis="y", which="minor", labelsize=7.5)
    ax_a.axhline(0, color="black", lw=0.6)
    if ylim_pts:  # the medians and references decide the scale; a wild epoch's bar may run off it
        ax_a.set_ylim(min(ylim_pts) - 1.2, max(ylim_pts) + 0.8)
    ax_a.set(title=f"Validation accuracy against the BN batch, minus BN's at the largest\n({span(ep)}; bars: their "
                   "range; shaded: each dataset's noise)",
             xlabel="BN batch (samples per BN statistic, log2 scale)", ylabel="accuracy difference (points)")
    ax_a.title.set_size(10)
    ax_n.set(title="Measured BN noise (first BN layer)", xlabel="BN batch (log2 scale)",
             ylabel="std of BN batch means / std over global batch")
    if diff:
        xs = sorted(diff)
        ax_d.bar(range(len(xs)), [100 * diff[x] for x in xs], color=[BN_COLOR if diff[x] >= 0 else "#d62728" for x in xs])
        ax_d.set_xticks(range(len(xs)), [str(x) for x in xs])
        ax_d.axhspan(-100 * TOLERANCE, 100 * TOLERANCE, color="#cccccc", alpha=0.5, lw=0)
    ax_d.axhline(0, color="black", lw=0.6)
    ax_d.set(title="BN minus no BN, by global batch",
             xlabel="global batch (sync BN)", ylabel="validation accuracy difference (points)")
    ax_d.title.set_size(9.5)
    handles = [Line2D([], [], ls="none", marker=kind_style[k][0], color="black", ms=7, label=kind_style[k][1])
               for k in ("ghost", "local", "sync") if any(x[0] == k for it in sweep.values() for x in it)]
    handles += [Line2D([], [], color=ds_colors.get(ds, "C3"), lw=2.5, label=DATASET_NAMES.get(ds, ds)) for ds in sorted(sweep)]
    handles += [Line2D([], [], color="black", ls=":", lw=1.2,
                       label="no BN (left, dataset's colour), 1/sqrt(BN batch) (middle)")]
    if diff:
        handles.append(Line2D([], [], color="#cccccc", lw=6, label=f"±{100 * TOLERANCE:.1f} points: noise (right)"))
    legend_below(fig, handles, ncol=4)
    sup = (f"Does BN need large batches? Small BN batches at a fixed global batch of {fixed.get('global_batch', '?')}, "
           f"and BN's gain over no BN at each global batch\n{describe(fixed, skip={'dataset', 'global_batch'})}")
    fig.suptitle(sup)
    fig.tight_layout()
    figs.save("large_batch.png", fig, sup)
    detail = f"validation accuracy ({span(ep)}): " + "; ".join(
        f"{DATASET_NAMES.get(ds, ds)}: " + ", ".join(f"BN batch {b} {pct(a)}" for b, a in v["acc"].items())
        + (f", no BN {pct(v['none'])}" if v["none"] is not None else "") for ds, v in verdicts.items())
    if diff:
        detail += "; BN minus no BN by global batch: " + ", ".join(f"{gb} {pts(v)}" for gb, v in sorted(diff.items()))
    return {"runs": rs, "fixed": fixed, "epoch": ep,
            "numbers": {ds: {"no_bn": v["none"], "acc_by_bn_batch": {str(b): a for b, a in v["acc"].items()},
                             "worse_than_largest": v["worse"], "as_good_from": v["ok_from"],
                             "as_good_as_no_bn": v["as_good_as_none"]} for ds, v in verdicts.items()}
            | {"bn_minus_none_by_global_batch": {str(k): v for k, v in diff.items()},
               "bn_minus_none_tests": {str(k): t.as_dict() for k, t in diff_tests.items()}},
            "table": (["dataset", "BN", "ranks", "BN batch", f"val acc ({span(ep)})", "range", f"val acc (epoch {ep})",
                       "BN noise (median)", "file"], rows),
            "detail": detail, "decide": (verdicts, diff_tests)}


def decide_large_batch(d):
    verdicts, diff = d["decide"]
    small_gb_worse = sorted(gb for gb, v in diff.items() if v.sign(TOLERANCE) < 0)
    name = lambda ds: DATASET_NAMES.get(ds, ds)  # noqa: E731
    all_worse = [ds for ds, v in verdicts.items() if len(v["worse"]) == len(v["acc"]) - 1 > 0]
    if verdicts and len(all_worse) == len(verdicts):
        return "supported", ("BN loses accuracy at every BN batch below the largest ("
                             + "; ".join(f"{name(ds)}: {100 * v['drop_smallest']:.2f} points at {v['smallest']}, "
                                         f"{v['test_smallest']}"
                                         for ds, v in verdicts.items()) + ")")
    if not any(v["worse"] for v in verdicts.values()) and not small_gb_worse:
        return "not supported", "BN is as accurate at every BN batch and global batch tested as at the largest"
    parts = [f"{name(ds)} (noise {100 * v['tol']:.2f} points): " + (f"as good as at BN batch {v['largest']} from {v['ok_from']} samples up, "
                                f"{100 * v['drop_smallest']:.2f} points worse at {v['smallest']}"
                                if v["worse"] and v["ok_from"] != v["largest"] else
                                f"worse at every BN batch below {v['largest']} ({100 * v['drop_smallest']:.2f} points at "
                                f"{v['smallest']})" if v["worse"] else "no loss at any BN batch")
             for ds, v in verdicts.items()]
    if diff:
        parts.append("BN minus no BN over the global batch (BN batch = global batch): " +
                     ("never lower" if not small_gb_worse else f"lower at {', '.join(map(str, small_gb_worse))}")
                     + " (" + "; ".join(f"{gb}: {t.text()}" for gb, t in sorted(diff.items())) + ")")
    return "depends", "on the BN batch (samples per BN statistic) and the dataset: " + "; ".join(parts)


DECIDE = {"convergence": decide_convergence, "covariate_shift": decide_covariate_shift,
          "learning_rate": decide_learning_rate, "initialisation": decide_initialisation,
          "regularisation": decide_regularisation, "batch_plateau": decide_batch_plateau,
          "large_batch": decide_large_batch}


def batch_sweep(runs):
    """The global-batch sweep with and without BN (default BN evaluation), shared
    by the regularisation, plateau and large-batch claims."""
    done = [r for r in runs if r.state == "complete"]
    bn = bn_mode(done)
    if bn is None:
        return [], None
    rs, _ = select(done, {"global_batch", "bn", "ghost_batch", "_mode"},
                   where=lambda r: mode_label(r) in ("none", bn) and value(r, "bn_eval") in (None, "running"),
                   need=lambda rs: all(len({r.get("global_batch") for r in rs if mode_label(r) == m}) >= 2
                                       for m in ("none", bn)))
    return rs, bn


def seeds_line(runs):
    """How many seeds the complete runs have per configuration, in words."""
    ns = sorted({g.n for g in seeds.group([r for r in runs if r.state == "complete"])})
    if not ns:
        return "no complete runs."
    if ns == [1]:
        return "one seed per configuration (n = 1), so no interval can be computed."
    return f"{ns[0]}" + (f"-{ns[-1]}" if len(ns) > 1 else "") + " seeds per configuration."


def md_table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return out


def _total_minutes(runs):
    total = sum(float((r.summary or {}).get("total_time_s", 0) or 0) for r in runs)
    return f"{total / 60:.1f} minutes over {sum(r.complete for r in runs)} finished runs"


def write_report(out_dir, img_rel, results, runs, inputs, figs):
    n = len(runs)
    states = {s: sum(r.state == s for r in runs) for s in ("complete", "diverged", "incomplete")}
    lines = ["# The notebook's batch-norm claims, tested on bnmpi runs", "",
             f"Generated by `bnmpi-claims {' '.join(inputs)} --out {out_dir}` (tools/claims.py) from {n} runs "
             f"({states['complete']} complete, {states['diverged']} stopped by a non-finite loss, "
             f"{states['incomplete']} incomplete and left out). Do not edit by hand: change the runs or "
             "`tools/claims.py` and run it again.", "",
             "The claims are the seed notebook's (`shared/seed/batchnorm-study-notebook.txt`). Each section "
             "shows the figure, the measured numbers and the verdict, which follows from the numbers by the "
             "rule given with it. The **reading** paragraphs are the study author's interpretation of "
             "the mechanisms behind the numbers.", "",
             "How to read the numbers:", "",
             f"- Seeds: {seeds_line(runs)} Differences between two configurations (validation accuracy in the plateau "
             f"and large-batch claims, accuracy lost in the initialisation claim, validation loss in the "
             f"regularisation claim) are decided by one rule: {seeds.rule_text(TOLERANCE)}. "
             "Each such verdict's text gives the difference, its interval, the test and n.",
             "- Runs of a comparison are read at the last epoch all of them reached (the study's runs are "
             "3-8 epochs; each table says where it reads). Learning rates are constant, so epoch 3 of a "
             "longer run is a 3-epoch run. Where that epoch is the 5th or later, a run's final value is the "
             "median of its last 3 epochs: with BN's running statistics, Fashion-MNIST's validation "
             "accuracy swings 1-2 points from one epoch to the next.",
             "- Seconds come from a shared 2-core machine where other jobs ran at the same time: treat them "
             "as rough.",
             f"- A run that stops with a non-finite loss did not train; one that ends below {100 * TRAINS:g}% "
             "validation accuracy did not learn.", "",
             "To reproduce (the study file lists every run with its options):", "",
             "```sh",
             "cmake -S . -B build-dev && cmake --build build-dev -j2",
             "jobs/run-study.sh --bnmpi build-dev/bnmpi jobs/study-claims.tsv   # into results/study-claims",
             "tools/claims.py results/study-claims --out docs",
             "tools/analyze.py results/study-claims --out results/study-claims/report   # incl. diagnostics.png",
             "```", "",
             f"The runs' own training and evaluation time adds up to {_total_minutes(runs)} (from `/summary/total_time_s`;"
             " add start-up, and note that other jobs shared the machine).", "",
             "## Summary", ""]
    summ = []
    for key in ORDER:
        c, res = CLAIMS[key], results[key]
        summ.append([f"[{c['title']}](#{key.replace('_', '-')})", f"**{res['verdict']}**", res["because"]])
    lines += md_table(["claim", "verdict", "because"], summ)
    lines.append("")
    for i, key in enumerate(ORDER, 1):
        c, res = CLAIMS[key], results[key]
        lines += [f"<a id=\"{key.replace('_', '-')}\"></a>", f"## {i}. {c['title']}", "", f"> {c['quote']}", ""]
        if res["verdict"] == "untested":
            lines += [f"**Verdict: untested.** {res['because']}.", "", f"Rule, once the runs exist: {rule_text(key)}", ""]
            continue
        fig = key + ".png"
        if fig in figs.made:
            lines += [f"![{c['title']}]({img_rel}/{fig})", ""]
        d = res["data"]
        lines.append(f"Runs: {len(d['runs'])} ({describe(d.get('fixed') or {}) or 'see the table'}).")
        lines.append("")
        lines += md_table(*d["table"])
        lines += ["", f"Measured: {d['detail']}.", "",
                  f"**Verdict: {res['verdict']}**: {res['because']}.", "", f"Rule: {rule_text(key)}", "",
                  reading(key, res["verdict"]), ""]
    diverged = [r for r in runs if r.state == "diverged"]
    if diverged:
        lines += ["## Runs stopped by a non-finite loss", ""]
        lines += md_table(["file", "optimizer", "lr", "BN", "stopped at"],
                          [[r.name, str(r.get("optimizer")), fmt_value(r.get("lr")), mode_text(mode_label(r)),
                            f"epoch {r.diverged_at[0]}, step {r.diverged_at[1]}"] for r in diverged])
        lines.append("")
    inc = [r for r in runs if r.state == "incomplete"]
    if inc:
        lines += ["## Incomplete runs (left out)", "", ", ".join(f"`{r.name}` ({r.n_epochs} epochs)" for r in inc), ""]
    path = os.path.join(out_dir, "claims.md")
    with open(path, "w") as fh:
        fh.write("\n".join(lines))
    return path


def _finite(v):
    """JSON has no infinities or NaN: those become null ("never", "no value")."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def _json_default(v):
    if hasattr(v, "item"):
        return v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return str(v)


def run(inputs, out, target=TARGET, trains=TRAINS, tolerance=TOLERANCE, prog="bnmpi-claims"):
    """Every claim for the runs in inputs: OUT/claims.md, OUT/img/claims/*.png and
    claims.json. Returns the exit status (0 done, 1 cannot write, 2 bad input)."""
    global TOLERANCE, TARGET, TRAINS
    TOLERANCE, TARGET, TRAINS = tolerance, target, trains
    runs, skipped, status = load_for_report(inputs, out, prog)
    if status:
        return status
    for r in runs:
        load_extra(r)
    img = os.path.join(out, "img", "claims")
    try:
        os.makedirs(img, exist_ok=True)
    except OSError as e:
        sys.stderr.write(f"{prog}: --out {out}: cannot create {img} ({e.strerror})\n")
        return 1
    states = {s: sum(r.state == s for r in runs) for s in ("complete", "diverged", "incomplete")}
    say(f"{len(runs)} runs: {states['complete']} complete, {states['diverged']} diverged (non-finite loss), "
        f"{states['incomplete']} incomplete" + (f"; {len(skipped)} checkpoint(s) skipped" if skipped else "")
        + f"; {seeds_line(runs)}")
    figs = Figures(img, palette=True)
    bs_runs, bs_bn = batch_sweep(runs)
    makers = {
        "convergence": lambda: claim_convergence(runs, figs),
        "covariate_shift": lambda: claim_covariate_shift(runs, figs),
        "learning_rate": lambda: claim_learning_rate(runs, figs),
        "initialisation": lambda: claim_initialisation(runs, figs),
        "regularisation": lambda: claim_regularisation(runs, figs, bs_runs),
        "batch_plateau": lambda: claim_batch_plateau(runs, figs, bs_runs, bs_bn),
        "large_batch": lambda: claim_large_batch(runs, figs, bs_runs, bs_bn),
    }
    results = {}
    try:
        for key in ORDER:
            try:
                data = makers[key]()
                verdict, because = DECIDE[key](data)
            except Untested as e:
                figs.skip(key + ".png", f"untested: {e}")
                results[key] = {"verdict": "untested", "because": f"no runs for it: {e}", "data": None}
                say(f"{key}: untested ({e})")
                continue
            results[key] = {"verdict": verdict, "because": because, "data": data}
            say(f"{key}: {verdict}: {because}")
        path = write_report(out, "img/claims", results, runs, inputs, figs)
        summary = {"inputs": inputs, "tolerance_points": 100 * TOLERANCE, "target_val_acc": TARGET,
                   "trains_val_acc": TRAINS, "difference_rule": seeds.rule_text(TOLERANCE),
                   "runs": {r.name: r.state for r in runs},
                   "claims": {k: {"title": CLAIMS[k]["title"], "verdict": results[k]["verdict"],
                                  "because": results[k]["because"], "rule": rule_text(k),
                                  "figure": (k + ".png") if (k + ".png") in figs.made else None,
                                  "epoch": (results[k]["data"] or {}).get("epoch"),
                                  "runs": [r.name for r in (results[k]["data"] or {}).get("runs", [])],
                                  "numbers": (results[k]["data"] or {}).get("numbers")} for k in ORDER},
                   "figures": figs.made, "skipped": figs.skipped}
        with open(os.path.join(img, "claims.json"), "w") as fh:
            json.dump(_finite(summary), fh, indent=1, default=_json_default)
            fh.write("\n")
    except OSError as e:
        sys.stderr.write(f"{prog}: cannot write to --out {out}: {e}\n")
        return 1
    say(f"claims.md: {path}")
    return 0
