"""Shared figure helpers: matplotlib set-up, saving with a record of what each
figure shows (for figures.json and claims.json), axes, legends, the BN-mode
colours, and the mean with its 95% interval over seeds as error bars (points)
or a band (curves).

What a figure records per axes: its title, labels and scales, its lines, its
error bars (the label and each bar's x, lower and upper end) and its bands (the
label, x and the lower and upper edge), all read back from the axes' artists.
"""
import math
import os
import sys

from .labels import mode_head, mode_sort_key
from .runs import mode_label


MODE_COLORS = {"none": "#4d4d4d", "local": "#ff7f0e", "sync": "#1f77b4", "group": "#2ca02c", "ghost": "#9467bd"}


MODE_FAMILIES = {"none": "Greys", "local": "Oranges", "sync": "Blues", "group": "Greens", "ghost": "Purples"}


MODE_MARKERS = {"none": "X", "local": "s", "sync": "o", "group": "^", "ghost": "D"}


VARIANT_STYLES = [("o", "-"), ("s", "--"), ("^", ":"), ("D", "-."), ("v", "-"), ("P", "--")]


def say(line):
    """A progress line on stdout; a closed stdout (| head) does not stop the work."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        sys.stdout = open(os.devnull, "w")


def mode_marker(mode):
    if "ghost_batch=" in mode:
        return "D"
    if "bn_group=" in mode:
        return "^"
    return MODE_MARKERS.get(mode_head(mode), "v")


def mode_colors(modes):
    """One colour per BN mode label: none grey, local orange, sync blue; variants
    of a mode (ghost_batch=8, bn_group=2, ...) in lighter shades of its colour;
    unknown modes from the rest of the palette."""
    plt, _ = mpl()
    extra = iter(["#d62728", "#8c564b", "#e377c2", "#bcbd22", "#17becf"] * 4)
    heads = {}
    for m in sorted(set(modes), key=mode_sort_key):
        heads.setdefault(mode_head(m), []).append(m)
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
        n = seen.get(mode_head(key[0]), 0)
        seen[mode_head(key[0])] = n + 1
        marker, ls = VARIANT_STYLES[n % len(VARIANT_STYLES)]
        styles[key] = (colors[key[0]], marker, ls)
    return styles


def mpl():
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

    def __init__(self, out, palette=False):
        """palette: save PNGs with a 256-colour palette (shrink_png)."""
        self.out = out
        self.palette = palette
        self.made, self.skipped = {}, {}

    def skip(self, name, reason):
        self.skipped[name] = reason
        stale = os.path.join(self.out, name)
        if os.path.isfile(stale):
            os.remove(stale)
        say(f"{name}: skipped: {reason}")

    def save(self, name, fig, suptitle):
        plt, _ = mpl()
        desc = {"suptitle": suptitle, "axes": [], "legend": []}
        for ax in fig.axes:
            lg = ax.get_legend()
            desc["axes"].append({
                "title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(),
                "xscale": ax.get_xscale(), "yscale": ax.get_yscale(),
                "lines": [ln.get_label() for ln in ax.get_lines() if not ln.get_label().startswith("_")],
                "legend": [t.get_text() for t in lg.get_texts()] if lg else [],
                "errorbars": drawn_errorbars(ax), "bands": drawn_bands(ax)})
        for lg in fig.legends:
            desc["legend"] += [t.get_text() for t in lg.get_texts() if t.get_text().strip()]
        path = os.path.join(self.out, name)
        fig.savefig(path, bbox_inches="tight", pad_inches=0.15)
        plt.close(fig)
        if self.palette:
            shrink_png(path)
        self.made[name] = desc
        say(f"{name}: {path}")


# --- means with their 95% interval over seeds ---------------------------------------
#
# Error bars and bands carry the label of the line they belong to after a
# "_ci " or "_band " prefix (kept out of legends); drawn_errorbars() and
# drawn_bands() read them back from the axes for figures.json.

def n_text(ns):
    """How many seeds the points or curves of a figure have: 'n = 3', 'n = 1-3',
    'n = 1, no interval'."""
    ns = sorted({n for n in ns if n})
    if not ns:
        return ""
    if ns == [1]:
        return "n = 1 seed, no interval"
    return f"n = {ns[0]}" + (f"-{ns[-1]}" if len(ns) > 1 else "") + " seeds"


def ci_errorbars(ax, xs, intervals, color, label):
    """Vertical 95% interval bars at the points whose interval exists (n >= 2)."""
    keep = [(x, iv) for x, iv in zip(xs, intervals) if iv.n >= 2 and math.isfinite(iv.half)]
    if not keep:
        return None
    return ax.errorbar([x for x, _ in keep], [iv.mean for _, iv in keep], yerr=[iv.half for _, iv in keep],
                       fmt="none", ecolor=color, elinewidth=1.3, capsize=3.5, label="_ci " + label)


def ci_band(ax, x, lo, hi, color, label, alpha=0.2):
    """A 95% band between lo and hi along x (NaN where there is no interval)."""
    import numpy as np
    lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    ok = np.isfinite(lo) & np.isfinite(hi)
    if not ok.any():
        return None
    return ax.fill_between(np.asarray(x)[ok], lo[ok], hi[ok], color=color, alpha=alpha, lw=0,
                           label="_band " + label)


def drawn_errorbars(ax):
    """[{label, x, lo, hi}] for each set of 95% bars on the axes, from their line segments."""
    out = []
    for c in ax.containers:
        lab = c.get_label() or ""
        if not lab.startswith("_ci ") or not getattr(c, "lines", None) or not c.lines[2]:
            continue
        segs = c.lines[2][0].get_segments()
        out.append({"label": lab[4:], "x": [float(s[0][0]) for s in segs],
                    "lo": [float(min(s[0][1], s[1][1])) for s in segs],
                    "hi": [float(max(s[0][1], s[1][1])) for s in segs]})
    return out


def drawn_bands(ax):
    """[{label, x, lo, hi}] for each 95% band on the axes, from the polygon's vertices."""
    out = []
    for coll in ax.collections:
        lab = coll.get_label() or ""
        if not lab.startswith("_band ") or not coll.get_paths():
            continue
        by_x = {}
        for px, py in coll.get_paths()[0].vertices:
            by_x.setdefault(float(px), []).append(float(py))
        xs = sorted(by_x)
        out.append({"label": lab[6:], "x": xs, "lo": [min(by_x[x]) for x in xs], "hi": [max(by_x[x]) for x in xs]})
    return out


def percent_axis(ax, ticker):
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


def log2_axis(ax, ticker, xs):
    ax.set_xscale("log", base=2)
    xs = sorted(set(xs))
    ax.xaxis.set_major_locator(ticker.FixedLocator(xs))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    if len(xs) > 1:
        lo, hi = math.log2(xs[0]), math.log2(xs[-1])
        pad = 0.08 * (hi - lo)
        ax.set_xlim(2 ** (lo - pad), 2 ** (hi + pad))


def legend_below(fig, handles, ncol=None, key=()):
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


def run_colors(runs, max_curves):
    """Colours for runs drawn one line each: with more than max_curves runs one
    colour per BN mode; else shades of the mode's colour (up to 4 runs a mode),
    else the default cycle. Returns (modes, by_mode, mode -> colour, id(run) -> colour)."""
    plt, _ = mpl()
    modes = sorted({mode_label(r) for r in runs}, key=mode_sort_key)
    by_mode, colors = len(runs) > max_curves, {}
    if by_mode:
        colors = mode_colors(modes)
        color_of = {id(r): colors[mode_label(r)] for r in runs}
    elif all(mode_head(m) in MODE_FAMILIES for m in modes) and all(
            sum(mode_head(mode_label(r)) == h for r in runs) <= 4 for h in {mode_head(m) for m in modes}):
        # shades of one colour per BN mode: BN against no BN at a glance
        color_of = {}
        for h in {mode_head(m) for m in modes}:
            these = [r for r in runs if mode_head(mode_label(r)) == h]
            cmap = plt.get_cmap(MODE_FAMILIES[h])
            for i, r in enumerate(these):
                color_of[id(r)] = (MODE_COLORS[h] if len(these) == 1 else
                                   cmap(0.9 - 0.45 * i / (len(these) - 1)))
    else:
        color_of = {id(r): f"C{i % 10}" for i, r in enumerate(runs)}
    return modes, by_mode, colors, color_of


def log10_axis(ax, ticker, xs):
    ax.set_xscale("log")
    xs = sorted(set(xs))
    ax.xaxis.set_major_locator(ticker.FixedLocator(xs))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(ticker.NullLocator())


def light(color, keep=0.3):
    """The colour mixed with white (an opaque stand-in for alpha: smaller PNGs)."""
    from matplotlib.colors import to_rgb
    return tuple(keep * c + (1 - keep) for c in to_rgb(color))
