"""Seeds: runs that differ only in their seed, their 95% interval, and the test of
a difference between two configurations. The one place interval logic exists.

- group(runs) puts runs whose configuration is the same except for --seed (and
  where or when they ran) into one Group; a group's seeds are its runs' seeds.
- interval(values) is the mean with its Student-t 95% confidence interval,
  mean ± t(0.975, n-1) * s / sqrt(n), where s is the sample standard deviation
  over the n values (one per seed). n = 1 has no interval (lo = hi = NaN).
- difference(a, b) is A minus B for two configurations given as {seed: value}:
  paired by seed (a one-sample t interval on the per-seed differences, n - 1
  degrees of freedom) when both sides have the same seeds, n >= 2; else Welch's
  interval (unequal variances, Welch-Satterthwaite degrees of freedom) when both
  sides have n >= 2; else no interval.
- verdict(diff) is the rule every accuracy comparison uses: A is higher (+1)
  when the interval lies above zero, lower (-1) when it lies below, and not
  different (0) when it contains zero. Without an interval (n = 1 on a side)
  the difference is compared with a tolerance instead, and the text says n = 1.
"""
import math

from .labels import NOT_CONFIG

LEVEL = 0.95
# Never part of a configuration: the seed itself and what names one run.
NOT_GROUPED = NOT_CONFIG | {"seed", "run_id", "threads"}

RULE = ("a difference counts when its 95% confidence interval excludes zero: paired t over the seeds when "
        "both sides have the same seeds, Welch's t otherwise; with one seed on a side there is no "
        "interval, and differences smaller than the tolerance ({tol} points) count as none")


# --- Student's t ---------------------------------------------------------------

def _betacf(a, b, x):
    """Continued fraction of the regularised incomplete beta (Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        de = d * c
        h *= de
        if abs(de - 1.0) < 1e-15:
            break
    return h


def _betainc(a, b, x):
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    lbt = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(1 - x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(lbt) * _betacf(a, b, x) / a
    return 1.0 - math.exp(lbt) * _betacf(b, a, 1 - x) / b


def t_cdf(t, df):
    """P(T <= t) for Student's t with df (> 0, need not be whole) degrees of freedom."""
    x = df / (df + t * t)
    tail = 0.5 * _betainc(df / 2, 0.5, x)
    return 1 - tail if t > 0 else tail


def t_quantile(p, df):
    """The p quantile (0.5 < p < 1) of Student's t with df degrees of freedom, by bisection."""
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


# --- one configuration -----------------------------------------------------------

class Interval:
    """mean, lo, hi (NaN for n = 1), half (the half-width), sd, n."""

    def __init__(self, values):
        vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
        self.n = len(vals)
        self.mean = sum(vals) / self.n if vals else math.nan
        if self.n >= 2:
            self.sd = math.sqrt(sum((v - self.mean) ** 2 for v in vals) / (self.n - 1))
            self.half = t_quantile(0.5 + LEVEL / 2, self.n - 1) * self.sd / math.sqrt(self.n)
        else:
            self.sd = self.half = math.nan
        self.lo, self.hi = self.mean - self.half, self.mean + self.half

    def text(self, scale=1.0, digits=2, unit=""):
        """'97.51% ± 0.12 (n = 3)', or '97.51% (n = 1)'."""
        if not self.n:
            return "–"
        m = f"{scale * self.mean:.{digits}f}{unit}"
        if self.n < 2:
            return f"{m} (n = 1)"
        return f"{m} ± {scale * self.half:.{digits}f} (n = {self.n})"


def interval(values):
    return Interval(values)


def config_key(run):
    """What a run computes apart from its seed: its /config without the seed, the
    run id, where and when it ran, the thread count and the planned epochs."""
    return tuple(sorted((k, repr(v)) for k, v in run.cfg.items() if k not in NOT_GROUPED))


def seed_of(run):
    s = run.cfg.get("seed")
    try:
        return int(s)
    except (TypeError, ValueError):
        return None


class Group:
    """Runs of one configuration that differ only in their seed."""

    def __init__(self, runs):
        self.runs = list(runs)
        self.key = config_key(self.runs[0])
        self.seeds = [seed_of(r) for r in self.runs]

    @property
    def n(self):
        return len(self.runs)

    def values(self, value_of):
        """{seed: value} for the runs where value_of(run) is a finite number."""
        out = {}
        for r in self.runs:
            v = value_of(r)
            if v is not None and math.isfinite(v):
                out[seed_of(r) if seed_of(r) is not None else id(r)] = float(v)
        return out

    def interval(self, value_of):
        return Interval(self.values(value_of).values())


def group(runs):
    """The runs as Groups, in the order of each group's first run. Two runs with
    the same seed and configuration (a copy, a rerun) go to separate groups:
    the repeats are seeds, not files."""
    groups = []
    for r in runs:
        k, s = config_key(r), seed_of(r)
        g = next((g for g in groups if g.key == k and s not in g.seeds), None)
        if g is None:
            groups.append(Group([r]))
        else:
            g.runs.append(r)
            g.seeds.append(s)
    return groups


# --- two configurations ---------------------------------------------------------------

class Difference:
    """A minus B: mean, lo, hi (NaN without an interval), n_a, n_b, paired,
    test ('paired t', 'Welch t' or 'none (n = 1)'), df."""

    def __init__(self, a, b):
        a = {k: float(v) for k, v in a.items() if v is not None and math.isfinite(v)}
        b = {k: float(v) for k, v in b.items() if v is not None and math.isfinite(v)}
        self.n_a, self.n_b = len(a), len(b)
        self.paired = self.n_a >= 2 and set(a) == set(b)
        self.lo = self.hi = self.df = math.nan
        if not a or not b:
            self.mean, self.test = math.nan, "none (no runs)"
            return
        ma, mb = sum(a.values()) / len(a), sum(b.values()) / len(b)
        self.mean = ma - mb
        if self.paired:
            d = Interval([a[k] - b[k] for k in sorted(a)])
            self.lo, self.hi, self.df, self.test = d.lo, d.hi, len(a) - 1, "paired t"
        elif self.n_a >= 2 and self.n_b >= 2:
            va, vb = Interval(a.values()).sd ** 2 / self.n_a, Interval(b.values()).sd ** 2 / self.n_b
            se = math.sqrt(va + vb)
            if se == 0:
                self.lo = self.hi = self.mean
                self.df = self.n_a + self.n_b - 2
            else:
                self.df = (va + vb) ** 2 / (va ** 2 / (self.n_a - 1) + vb ** 2 / (self.n_b - 1))
                half = t_quantile(0.5 + LEVEL / 2, self.df) * se
                self.lo, self.hi = self.mean - half, self.mean + half
            self.test = "Welch t"
        else:
            self.test = "none (n = 1)"

    @property
    def has_interval(self):
        return math.isfinite(self.lo) and math.isfinite(self.hi)

    def sign(self, tolerance):
        """+1 above zero, -1 below, 0 not different (the module's rule)."""
        if not math.isfinite(self.mean):
            return 0
        if self.has_interval:
            return 1 if self.lo > 0 else -1 if self.hi < 0 else 0
        return 1 if self.mean > tolerance else -1 if self.mean < -tolerance else 0

    def text(self, scale=100.0, digits=2, unit=" points"):
        """'+0.52 points, 95% CI [+0.20, +0.84], paired t, n = 3' (scale 100: fractions as points)."""
        m = f"{scale * self.mean:+.{digits}f}{unit}"
        n = f"n = {self.n_a}" if self.paired else f"n = {self.n_a} and {self.n_b}"
        if self.has_interval:
            return (f"{m}, 95% CI [{scale * self.lo:+.{digits}f}, {scale * self.hi:+.{digits}f}], "
                    f"{self.test}, {n}")
        return f"{m}, no interval ({n})"

    def as_dict(self):
        return {"mean": self.mean, "lo": self.lo if self.has_interval else None,
                "hi": self.hi if self.has_interval else None, "n_a": self.n_a, "n_b": self.n_b,
                "paired": self.paired, "test": self.test, "df": self.df if math.isfinite(self.df) else None}


def difference(a, b):
    return Difference(a, b)


def verdict(diff, tolerance):
    """'higher', 'lower' or 'not different' for A minus B."""
    return {1: "higher", -1: "lower", 0: "not different"}[diff.sign(tolerance)]


def rule_text(tolerance):
    return RULE.format(tol=f"{100 * tolerance:.1f}")


def by_seed(pairs):
    """{seed: value} from (seed, value) pairs; several values of one seed (other
    rank counts, repeats) are averaged, non-finite ones dropped."""
    acc = {}
    for s, v in pairs:
        if v is not None and math.isfinite(v):
            acc.setdefault(s, []).append(float(v))
    return {s: sum(v) / len(v) for s, v in acc.items()}
