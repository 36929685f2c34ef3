#!/usr/bin/python3
"""fuzz_study.py: a mutational fuzzer of the study-file reader of jobs/run-study.sh
(through --dry-run), with jobs/study.sbatch's pick of line k checked against it.

    tests/fuzz/fuzz_study.py --seconds 600 [--corpus DIR]... [--findings DIR]
    tests/fuzz/fuzz_study.py --replay FILE_OR_DIR...     (each input once; exit 1 on a finding)

Inputs are study files (bytes). A file FOO may have a sidecar FOO.args with
extra run-study.sh arguments, one per line (e.g. --epochs-scale, 0.1). In the
inputs, the text /tmp/PWNED-bnmpi-fuzz is replaced by a marker path inside the
scratch folder before each run: a payload such as $(touch${IFS}/tmp/PWNED-bnmpi-fuzz)
that gets executed creates it.

Each input runs as  bash -x jobs/run-study.sh --dry-run --bnmpi /opt/fuzz/bin/bnmpi
[extra] FILE  in an empty folder, with the trace on fd 9 (PS4 gives the line
numbers: the lines of run-study.sh executed are the coverage, and (line, hit
count bucket) pairs the features that decide which mutants join the corpus).

A finding is:
  crash/hang      a signal, or longer than --timeout seconds
  exit-N          an exit status other than 0 and 2 (run-study.sh: 2 = bad study file)
  bad-error       exit 2 without exactly one stderr line "run-study.sh: FILE:LINE: ..."
                  (or "run-study.sh: FILE: no runs in it"), or naming another line than
                  the first one the format (reference below) rejects
  refused-valid   exit 2 on a file the format accepts
  accepted-invalid exit 0 on a file the format rejects
  stderr          exit 0 with anything on stderr
  executed        the marker file exists, or the run left any file in its folder
  output          the dry run's commands differ from the file's runs (count, names,
                  np, the --metrics/--checkpoint paths, unparseable lines)
  options-changed the bnmpi options a run gets are not the line's (as bnmpi's
                  getopt_long would read both; --epochs aside), or a line bnmpi would
                  refuse (unknown option, stray argument, missing value) reaches it
                  in a form it accepts
  epochs          the epochs bnmpi would run are not the line's --epochs (default 10)
                  x --epochs-scale, rounded, at least 1; or an invalid --epochs value
                  (bnmpi would refuse it) replaced by a valid one
  forbidden-passed bnmpi would see --metrics, --checkpoint, --resume or --force
                  (e.g. abbreviated: getopt_long takes --res for --resume)
  path-collision  two runs' metrics/checkpoint/log paths coincide
  sbatch-differs  study.sbatch (SLURM_ARRAY_TASK_ID=k, a stub train.sbatch) picks
                  another name/np/options for run k than run-study.sh, or does not
                  refuse k = runs + 1

The reference reading of a study file (jobs/study-default.tsv, run-study.sh):
lines split at \\n, one trailing \\r dropped (CRLF files), NUL bytes dropped (as
bash's read does); a line of [[:space:]] only or whose first non-space is '#' is
skipped; otherwise NAME NP OPTIONS split at spaces/tabs; NAME matches
[A-Za-z0-9][A-Za-z0-9._-]*, not ending in .ckpt (NAME.ckpt.h5 is run NAME's
checkpoint), NP [1-9][0-9]* up to 1000000, names unique; a token --metrics,
--checkpoint, --resume, --force (alone or with =VALUE) is refused, so are a token
--, a token --P or --P=VALUE where P is a proper prefix of metrics, checkpoint,
checkpoint-every, resume, force, epochs, seed or seeds (other than one of those
names), and an --epochs (next token) or --epochs=VALUE whose value is not digits
from 1 to 100000 (bnmpi's range); at least one run.
"""
import argparse
import hashlib
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MARK = b"/tmp/PWNED-bnmpi-fuzz"
BNMPI = "/opt/fuzz/bin/bnmpi"
TRACE_FD = 9

# bnmpi's long options (src/options.c's table, plus the three of options_parse): has an argument?
# Read from the table at start (table_options); this copy is the fallback.
BNMPI_OPTIONS = {
    "data": 1, "dataset": 1, "val-fraction": 1, "split-seed": 1, "train-limit": 1, "hidden": 1, "bn": 1,
    "bn-place": 1, "bn-momentum": 1, "bn-group": 1, "ghost-batch": 1, "bn-eval": 1, "bn-eps": 1, "epochs": 1,
    "batch": 1, "global-batch": 1, "optimizer": 1, "lr": 1, "lr-scale": 1, "lr-ref-batch": 1,
    "warmup-epochs": 1, "beta1": 1, "beta2": 1, "adam-eps": 1, "momentum": 1, "nesterov": 0,
    "weight-decay": 1, "init-scale": 1, "seed": 1, "eval-batch": 1, "diagnostics": 1, "metrics": 1,
    "force": 0, "threads": 1, "reduce": 1, "overlap": 1, "quiet": 0, "checkpoint": 1,
    "checkpoint-every": 1, "resume": 1, "help": 0, "version": 0, "help-markdown": 0,
}


def read_table(path=os.path.join(ROOT, "src", "options.c")):
    """src/options.c's table: {name: (kind, choices, lo, hi, lo_open, auto_zero)}, or None."""
    try:
        with open(path) as f:
            t = f.read()
        t = t[t.index("static const opt_def table[]"):]
        t = t[:t.index("};")]
    except (OSError, ValueError):
        return None
    num = r"([-0-9.eE<> ]+)"
    ents = re.findall(r'\{(?:NULL|"[^"]*"),\s*"([a-z0-9-]+)",\s*(K_\w+),\s*F\(\w+\),\s*(?:S\(\w+\)|0),\s*"[^"]*",\s*'
                      r'(?:"[^"]*"|NULL),\s*(NULL|"[^"]*"),\s*' + num + r',\s*' + num + r',\s*([01]),\s*([01]),', t)
    if not ents:
        return None
    table = {}
    for name, kind, choices, lo, hi, lo_open, auto_zero in ents:
        try:
            lo_v, hi_v = (eval(x, {"__builtins__": {}}) for x in (lo, hi))  # "1 << 20", "1e9": digits only
        except Exception:
            return None
        table[name] = (kind, choices.strip('"').split("|") if choices != "NULL" else None, lo_v, hi_v,
                       lo_open == "1", auto_zero == "1")
    return table


TABLE = read_table()
if TABLE:  # the table as it is now; the list above if unreadable
    BNMPI_OPTIONS = {n: int(v[0] != "K_FLAG") for n, v in TABLE.items()}
    BNMPI_OPTIONS.update({"help": 0, "version": 0, "help-markdown": 0})

C_SPACE = " \t\n\v\f\r"


def c_strtod(v):
    """glibc strtod over the whole string, errno included: the value, or None."""
    m = re.fullmatch("[" + C_SPACE + r"]*([+-]?)(?:((?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|0[xX]((?:[0-9a-fA-F]+\.?[0-9a-fA-F]*"
                     r"|\.[0-9a-fA-F]+)(?:[pP][+-]?\d+)?)|(inf|infinity|nan(?:\([0-9A-Za-z_]*\))?))", v, re.I)
    if not m:
        return None
    sign, dec, hexa, special = m.groups()
    if special:
        return math.inf
    x = float(dec) if dec else float.fromhex("0x" + hexa)
    digits = re.sub(r"[eEpP].*", "", dec or hexa)
    if math.isinf(x) or (x == 0 and re.search(r"[1-9a-fA-F]", digits)) or (0 < abs(x) < 2.2250738585072014e-308):
        return None  # ERANGE
    return -x if sign == "-" else x


def value_ok(name, val):
    """Would bnmpi's set_value take val for --name? (Values checked later, --hidden and --arch, pass.)"""
    if not TABLE or name not in TABLE:
        return True
    kind, choices, lo, hi, lo_open, auto_zero = TABLE[name]
    if auto_zero and val == "auto":
        return True
    if kind == "K_CHOICE":
        return val in choices
    if kind == "K_INT":
        m = re.fullmatch("[" + C_SPACE + r"]*([+-]?\d+)", val)
        return bool(m) and lo <= int(m.group(1)) <= hi and abs(int(m.group(1))) < 2 ** 63
    if kind == "K_DOUBLE":
        x = c_strtod(val)
        return x is not None and math.isfinite(x) and x <= hi and (x > lo if lo_open else x >= lo)
    if kind == "K_STRING":
        return len(val.encode("utf-8", "surrogateescape")) < 128 if name == "hidden" else True
    return True
FORBIDDEN = {"metrics", "checkpoint", "resume", "force"}
# [[:space:]] of bash's regex in C.UTF-8 (glibc's iswspace), measured: '\n' never occurs in a line
SPACE = "\t\x0b\x0c\r \u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2008\u2009\u200a\u2028\u2029\u205f\u3000"
SKIP_RE = re.compile("^[" + re.escape(SPACE) + "]*(#|$)")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
NP_RE = re.compile(r"[1-9][0-9]*\Z")


# --- the reference -------------------------------------------------------------------------------------------

def ref_lines(data):
    """Lines of the file as run-study.sh's read loop sees them (str, surrogateescape)."""
    data = data.replace(b"\0", b"")
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    out = []
    for raw in lines:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        out.append(raw.decode("utf-8", "surrogateescape"))
    return out


def read_fields(line):
    """bash's `read -r name np opts` with the default IFS."""
    s = line.lstrip(" \t")
    m = re.match(r"([^ \t]*)[ \t]*([^ \t]*)[ \t]*(.*)\Z", s, re.S)
    name, np, opts = m.group(1), m.group(2), m.group(3).rstrip(" \t")
    return name, np, opts


def tokens(opts):
    return [t for t in re.split(r"[ \t\n]+", opts) if t]


def token_forbidden(t):
    return t in ("--metrics", "--checkpoint", "--resume", "--force") or \
        any(t.startswith(f"--{o}=") for o in ("metrics", "checkpoint", "resume"))


MANAGED = ("metrics", "checkpoint", "checkpoint-every", "resume", "force", "epochs", "seed", "seeds")
EPOCHS_MAX = 100000


def epochs_value_ok(v):
    return v is not None and re.fullmatch(r"[0-9]+", v) is not None and 1 <= int(v) <= EPOCHS_MAX


def tokens_refused(toks):
    """The launcher's own refusals besides token_forbidden: '--', abbreviations of the
    options it manages (getopt_long would take them), an invalid --epochs value."""
    for i, t in enumerate(toks):
        if t == "--":
            return True
        if t == "--epochs":
            if not epochs_value_ok(toks[i + 1] if i + 1 < len(toks) else None):
                return True
        elif t.startswith("--epochs="):
            if not epochs_value_ok(t[len("--epochs="):]):
                return True
        elif t.startswith("--"):
            p = t[2:].partition("=")[0]
            if p and p not in MANAGED and any(o.startswith(p) for o in MANAGED):
                return True
    return False


def getopt_view(toks):
    """What bnmpi's getopt_long (glibc, optstring "h") makes of toks: a list of
    ("opt", name, value|None), ("?", token), ("missing", name), ("pos", token)."""
    out, i = [], 0
    while i < len(toks):
        t = toks[i]
        if t == "--":
            out += [("pos", x, None) for x in toks[i + 1:]]
            break
        if t.startswith("--"):
            body = t[2:]
            name, eq, val = body.partition("=")
            if name in BNMPI_OPTIONS:
                cands = [name]
            else:
                cands = [o for o in BNMPI_OPTIONS if o.startswith(name)]
            if len(cands) != 1:
                out.append(("?", t, None))
            else:
                o = cands[0]
                if BNMPI_OPTIONS[o]:
                    if eq:
                        out.append(("opt", o, val))
                    elif i + 1 < len(toks):
                        out.append(("opt", o, toks[i + 1]))
                        i += 1
                    else:
                        out.append(("missing", o, None))
                elif eq:
                    out.append(("?", t, None))
                else:
                    out.append(("opt", o, None))
        elif t.startswith("-") and len(t) > 1:
            for c in t[1:]:
                out.append(("opt", "help", None) if c == "h" else ("?", "-" + c, None))
        else:
            out.append(("pos", t, None))
        i += 1
    return out


def refused_by_bnmpi(view):
    """An unknown or ambiguous option, a positional argument, a missing or invalid value: bnmpi exits 2."""
    return any(kind in ("?", "pos", "missing") or (kind == "opt" and val is not None and not value_ok(name, val))
               for kind, name, val in view)


def epochs_of(view):
    """The --epochs value bnmpi ends with: a string, None (default 10) or False (a missing value)."""
    v = None
    for kind, name, val in view:
        if name == "epochs" and kind == "opt":
            v = val
        elif name == "epochs" and kind == "missing":
            v = False
    return v


def bnmpi_int(v, lo=1, hi=100000):
    """bnmpi's K_INT: strtol base 10 over the whole string, then the range; None if refused."""
    if not isinstance(v, str):
        return None
    m = re.fullmatch(r"[ \t\n\v\f\r]*([+-]?[0-9]+)", v)
    if not m:
        return None
    x = int(m.group(1))
    return x if lo <= x <= hi else None


def reference(data):
    """(runs, bad): runs = [(lineno, name, np, tokens)], bad = None or
    (first line that must be refused or 0 for "no runs", [earlier lines that should be])."""
    runs, seen, should = [], {}, []
    for k, line in enumerate(ref_lines(data), 1):
        if SKIP_RE.match(line):
            continue
        name, np, opts = read_fields(line)
        toks = tokens(opts)
        if re.search(r"[\x01-\x08\x0a-\x1f\x7f]", line):  # a control character other than a tab: refused
            return runs, (k, should)
        if not NAME_RE.match(name) or name.endswith(".ckpt") or not NP_RE.match(np) or int(np) > 1000000 \
                or name in seen or any(map(token_forbidden, toks)) or tokens_refused(toks):
            return runs, (k, should)
        if any(kind == "opt" and n in FORBIDDEN for kind, n, _ in getopt_view(toks)):
            should.append(k)
        seen[name] = k
        runs.append((k, name, np, toks))
    if not runs:
        return runs, (0, should)
    return runs, (None, should) if should else None


# --- bash's printf %q, read back ------------------------------------------------------------------------------

ESC = {"a": "\a", "b": "\b", "e": "\x1b", "E": "\x1b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
       "\\": "\\", "'": "'", '"': '"', "?": "?"}


def unquote_words(s):
    """Splits one line of `printf '%q '`-quoted words (bash 5.2) into the words."""
    words, cur, i, have = [], [], 0, False
    b = s.encode("utf-8", "surrogateescape")
    out = bytearray()

    def flush():
        nonlocal out, have
        if have:
            words.append(out.decode("utf-8", "surrogateescape"))
        out, have = bytearray(), False
    while i < len(b):
        c = b[i:i + 1]
        if c == b" ":
            flush()
            i += 1
        elif c == b"\\":
            if i + 1 >= len(b):
                raise ValueError("trailing backslash")
            out += b[i + 1:i + 2]
            have = True
            i += 2
        elif c == b"'":
            j = b.index(b"'", i + 1)
            out += b[i + 1:j]
            have = True
            i = j + 1
        elif b[i:i + 2] == b"$'":
            i += 2
            have = True
            while True:
                if i >= len(b):
                    raise ValueError("unterminated $'")
                c = b[i:i + 1]
                if c == b"'":
                    i += 1
                    break
                if c != b"\\":
                    out += c
                    i += 1
                    continue
                e = chr(b[i + 1])
                if e in ESC:
                    out += ESC[e].encode()
                    i += 2
                elif e in "01234567":
                    m = re.match(rb"[0-7]{1,3}", b[i + 1:i + 4])
                    out.append(int(m.group(0), 8) & 0xFF)
                    i += 1 + len(m.group(0))
                elif e == "x":
                    m = re.match(rb"[0-9A-Fa-f]{1,2}", b[i + 2:i + 4])
                    out.append(int(m.group(0), 16))
                    i += 2 + len(m.group(0))
                elif e in "uU":
                    n = 4 if e == "u" else 8
                    m = re.match(rb"[0-9A-Fa-f]{1,%d}" % n, b[i + 2:i + 2 + n])
                    out += chr(int(m.group(0), 16)).encode("utf-8", "surrogatepass")
                    i += 2 + len(m.group(0))
                elif e == "c":
                    out.append(b[i + 2] & 0x1F)
                    i += 3
                else:
                    out += b[i:i + 2]
                    i += 2
        else:
            out += c
            have = True
            i += 1
    flush()
    return words


# --- running the scripts --------------------------------------------------------------------------------------

def cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class Runner:
    def __init__(self, work, script, sbatch, timeout):
        self.work, self.script, self.sbatch, self.timeout = work, script, sbatch, timeout
        self.cwd = os.path.join(work, "cwd")
        self.marker = os.path.join(work, "PWNED")
        self.file = os.path.join(work, "in", "study-fuzz.tsv")
        self.stub = os.path.join(work, "stub")
        self.stub_out = os.path.join(work, "stub.out")
        for d in (self.cwd, os.path.dirname(self.file), self.stub):
            os.makedirs(d, exist_ok=True)
        self.ps4 = os.path.join(work, "ps4.sh")
        with open(self.ps4, "w") as f:
            f.write("PS4='+${BASH_SOURCE##*/}:${LINENO}: '\n")
        with open(os.path.join(self.stub, "train.sbatch"), "w") as f:
            f.write('#!/bin/bash\nprintf \'%s\\0\' "$RUN_NAME" "$NP" "$BNMPI_OPTS" >"$FUZZ_STUB_OUT"\n')
        self.trace = os.path.join(work, "trace")
        fd = os.open(self.trace, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(fd, TRACE_FD)
        os.close(fd)
        self.env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": work,
                    "BASH_ENV": self.ps4, "BASH_XTRACEFD": str(TRACE_FD)}
        self.tmp_before = self.tmp_markers()

    @staticmethod
    def tmp_markers():
        try:
            return {n for n in os.listdir("/tmp") if n.startswith("PWNED")}
        except OSError:
            return set()

    def run(self, argv, env_extra=None):
        """(rc, stdout, stderr, seconds); rc None on a timeout (the process group is killed)."""
        os.ftruncate(TRACE_FD, 0)
        os.lseek(TRACE_FD, 0, os.SEEK_SET)
        env = dict(self.env, **(env_extra or {}))
        t0 = time.monotonic()
        p = subprocess.Popen(argv, cwd=self.cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, pass_fds=(TRACE_FD,), start_new_session=True)
        try:
            out, err = p.communicate(timeout=self.timeout)
            rc = p.returncode
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
            rc = None
        return rc, out, err, time.monotonic() - t0

    def trace_lines(self):
        os.lseek(TRACE_FD, 0, os.SEEK_SET)
        chunks = []
        while True:
            b = os.read(TRACE_FD, 1 << 20)
            if not b:
                break
            chunks.append(b)
        counts = {}
        for m in re.finditer(rb"^\++([\w.-]+):(\d+): ", b"".join(chunks), re.M):
            key = (m.group(1).decode(), int(m.group(2)))
            counts[key] = counts.get(key, 0) + 1
        return counts

    def side_effects(self):
        found = []
        if os.path.lexists(self.marker):
            found.append(f"marker {self.marker} created")
        left = os.listdir(self.cwd)
        if left:
            found.append(f"files left in the run's folder: {left[:5]}")
        new = self.tmp_markers() - self.tmp_before
        if new:
            found.append(f"/tmp/{sorted(new)[0]} created")
        return found

    def clean(self):
        for n in os.listdir(self.cwd):
            p = os.path.join(self.cwd, n)
            shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)
        for p in (self.marker, self.stub_out):
            if os.path.lexists(p):
                os.unlink(p)
        self.tmp_before = self.tmp_markers()


def bucket(n):
    for i, b in enumerate((1, 2, 3, 4, 8, 16, 32, 128)):
        if n < b:
            return i
    return 8


def parse_extra(extra):
    f, np_max, report, results = 1.0, 0, True, "results"
    i = 0
    while i < len(extra):
        a = extra[i]
        if a == "--epochs-scale":
            f = float(extra[i + 1]); i += 1
        elif a == "--np-max":
            np_max = int(extra[i + 1]); i += 1
        elif a == "--results":
            results = extra[i + 1]; i += 1
        elif a == "--no-report":
            report = False
        i += 1
    return f, np_max, report, results


def line_of(run):
    _, name, np, toks = run
    return " ".join([name, np] + toks)


def check(runner, data, extra, sbatch=True):
    """Runs one input; returns (findings [(kind, detail)], features set)."""
    runner.clean()
    data_run = data.replace(MARK, runner.marker.encode())
    with open(runner.file, "wb") as f:
        f.write(data_run)
    path = runner.file
    argv = ["bash", "-x", runner.script, "--dry-run", "--bnmpi", BNMPI, *extra, path]
    rc, out, err, secs = runner.run(argv)
    feats = set()
    for key, n in runner.trace_lines().items():
        feats.add((key, bucket(n)))
    findings = []

    def finding(kind, detail, key=""):
        """key: what makes two findings of one kind the same defect (findings are saved once per kind/key)."""
        findings.append((kind, detail, key))

    for s in runner.side_effects():
        finding("executed", s)
    if rc is None:
        finding("hang", f"no exit after {runner.timeout} s")
        return findings, feats
    if rc < 0:
        finding("crash", f"killed by signal {-rc}")
        return findings, feats
    errs = err.decode("utf-8", "surrogateescape")
    outs = out.decode("utf-8", "surrogateescape")
    runs, bad = reference(data_run)
    must_line, should_lines = (bad if bad else (None, []))
    feats.add((("rc", rc), 0))

    if rc not in (0, 2):
        finding(f"exit-{rc}", errs.strip()[-300:])
        return findings, feats
    if rc == 2:
        if outs:
            finding("bad-error", f"stdout before the error: {outs[:200]!r}", "stdout")
        m = re.fullmatch(r"run-study\.sh: (.*?):(\d+): ([^\n]+)\n", errs, re.S) if errs.count("\n") == 1 else None
        m0 = re.fullmatch(r"run-study\.sh: (.*): no runs in it\n", errs, re.S)
        if m0 and m0.group(1) == path:
            line = 0
        elif m and m.group(1) == path:
            line = int(m.group(2))
        else:
            finding("bad-error", f"stderr is not one 'run-study.sh: FILE:LINE: ...' line: {errs[:300]!r}", "format")
            return findings, feats
        if bad is None:
            finding("refused-valid", f"refused line {line} of a file the format accepts: {errs.strip()!r}",
                    re.sub(r"'[^']*'|\S*:\d+:|\d+", "_", errs)[:60])
        elif line != must_line and line not in should_lines:
            want = f"line {must_line}" if must_line else "'no runs in it'"
            finding("bad-error", f"names line {line}, the first bad line is {want}: {errs.strip()!r}", "line")
        return findings, feats

    # rc == 0
    if errs:
        finding("stderr", f"exit 0 with stderr: {errs[:300]!r}", re.sub(r"\d+", "N", errs)[:80])
    if must_line is not None:
        where = f"line {must_line}" if must_line else "no runs"
        finding("accepted-invalid", f"exit 0, but the format refuses {where}")
        return findings, feats
    for k in should_lines:
        toks_k = [t for r in runs if r[0] == k for t in r[3]]
        which = sorted({n for kind, n, _ in getopt_view(toks_k) if kind == "opt" and n in FORBIDDEN})
        finding("forbidden-passed", f"line {k}: bnmpi would read --{'/--'.join(which)} from {' '.join(toks_k)[:200]!r}",
                ",".join(which))
    f, np_max, report, results = parse_extra(extra)
    study = os.path.basename(path)
    study = re.sub(r"\.tsv\Z", "", study)
    study = re.sub(r"\.txt\Z", "", study)
    outdir = f"{results}/{study}"
    lines = outs.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    head = f"study {study}: {len(runs)} runs from {path} into {outdir}"
    if not lines or not lines[0].startswith(head):
        finding("output", f"first line {lines[0] if lines else ''!r}, expected {head!r}...", "first")
        return findings, feats
    tail = lines[1 + len(runs):]
    if len(lines) < 1 + len(runs) or len(tail) > 1:
        finding("output", f"{len(lines) - 1} lines after the first for {len(runs)} runs", "count")
        return findings, feats
    n_cores = cores()
    paths = {}
    for (k, name, np, toks), line in zip(runs, lines[1:]):
        npi = int(np)
        if np_max > 0 and npi > np_max:
            if not re.fullmatch(r"\[ *\d+/\d+\] " + re.escape(name) + r" +np=" + re.escape(np) + " +skipped: needs "
                                + re.escape(np) + " ranks, --np-max " + str(np_max), line):
                finding("output", f"line {k}: expected a skipped line, got {line[:200]!r}", "skipped")
            continue
        try:
            words = unquote_words(line)
        except (ValueError, IndexError) as ex:
            finding("output", f"line {k}: cannot read the command back ({ex}): {line[:200]!r}", "unreadable")
            continue
        pre = ["mpirun", "-np", np] + (["--allow-run-as-root"] if os.geteuid() == 0 else []) + \
              (["--oversubscribe"] if npi > n_cores else []) + [BNMPI]
        metrics, ckpt = f"{outdir}/{name}.h5", f"{outdir}/{name}.ckpt.h5"
        post = ["--metrics", metrics, "--checkpoint", ckpt]
        if words[:len(pre)] != pre or words[-4:] != post or len(words) < len(pre) + 4:
            finding("output", f"line {k}: command {words[:len(pre)]}...{words[-4:]}, expected {pre}...{post}", "frame")
            continue
        mid = words[len(pre):-4]
        lv, ov = getopt_view(toks), getopt_view(mid)
        if refused_by_bnmpi(lv):  # bnmpi refuses the line: only a launcher that makes it acceptable matters
            if not refused_by_bnmpi(ov):
                finding("options-changed", f"line {k}: options that bnmpi refuses, {toks[:12]}, reach it as {mid[:12]}, "
                                           f"which it accepts", "made-acceptable")
            continue
        tail_view = getopt_view(mid + post)[len(ov):]
        if tail_view != [("opt", "metrics", metrics), ("opt", "checkpoint", ckpt)]:
            finding("options-changed", f"line {k}: the launcher's --metrics/--checkpoint reach bnmpi as {tail_view[:4]} "
                                       f"after {mid[-6:]}", "launcher-options-lost")
        le = [x for x in lv if x[1] != "epochs"]
        oe = [x for x in ov if x[1] != "epochs"]
        if le != oe:
            finding("options-changed", f"line {k}: the line's options {toks[:12]} reach bnmpi as {mid[:12]}", "changed")
        e_line, e_out = epochs_of(lv), epochs_of(ov)
        v_line = 10 if e_line is None else bnmpi_int(e_line)
        v_out = 10 if e_out is None else bnmpi_int(e_out, 1, 1 << 62)
        if v_line is None:
            if e_out != e_line:
                finding("epochs", f"line {k}: --epochs {'(no value)' if e_line is False else repr(e_line)}, which "
                                  f"bnmpi refuses, becomes --epochs {e_out!r}", "invalid-replaced")
        else:
            want = v_line if f == 1 else max(1, math.floor(v_line * f + 0.5))
            if v_out != want:
                finding("epochs", f"line {k}: --epochs {v_line} x {f:g} should give {want}; bnmpi gets "
                                  f"{e_out if e_out is not None else '(default) 10'}", "wrong-count")
        for p in (metrics, ckpt, f"{outdir}/{name}.log"):
            if p in paths:
                finding("path-collision", f"{p}: line {k} ({name}) and line {paths[p]}")
            paths[p] = k
    if tail and not (report and tail[0].startswith("/usr/bin/python3 ") or tail[0].startswith("python3 ")):
        finding("output", f"unexpected last line {tail[0][:200]!r}")

    if sbatch and runs and runner.sbatch:
        n = len(runs)
        ks = sorted({1, n, 1 + int(hashlib.sha1(data).hexdigest(), 16) % n})
        for k in ks + [n + 1]:
            if os.path.lexists(runner.stub_out):
                os.unlink(runner.stub_out)
            env = {"SLURM_JOB_ID": "1", "SLURM_ARRAY_TASK_ID": str(k), "BNMPI_JOBS_DIR": runner.stub,
                   "FUZZ_STUB_OUT": runner.stub_out, "RESULTS_DIR": "results"}
            src, _, serr, _ = runner.run(["bash", "-x", runner.sbatch, path], env)
            for key, c in runner.trace_lines().items():
                feats.add((key, bucket(c)))
            for s in runner.side_effects():
                finding("executed", f"study.sbatch k={k}: {s}")
            got = None
            if os.path.exists(runner.stub_out):
                with open(runner.stub_out, "rb") as fh:
                    got = fh.read().split(b"\0")[:3]
                os.unlink(runner.stub_out)
            if k == n + 1:
                if got is not None or src != 2:
                    finding("sbatch-differs", f"k={k} of {n} runs: exit {src}, not refused", "k-past-end")
                continue
            _, name, np, toks = runs[k - 1]
            if got is None:
                finding("sbatch-differs", f"k={k}: study.sbatch exit {src} ({serr.decode(errors='replace').strip()[:200]!r}); "
                                          f"run-study.sh runs {name}", "no-line:" + ("binary" if b"binary file" in serr else "other"))
                continue
            g = [x.decode("utf-8", "surrogateescape") for x in got]
            if g[0] != name or g[1] != np or tokens(g[2]) != toks:
                field = "name" if g[0] != name else "np" if g[1] != np else "options"
                cr = "cr" if "\r" in line_of(runs[k - 1]) else "other"
                finding("sbatch-differs", f"k={k}: study.sbatch runs {g[0]!r} np {g[1]!r} {tokens(g[2])[:8]}, "
                                          f"run-study.sh {name!r} np {np!r} {toks[:8]}", f"fields:{field}:{cr}")
    return findings, feats


# --- mutation ---------------------------------------------------------------------------------------------------

PAY = ["$(touch${IFS}/tmp/PWNED-bnmpi-fuzz)", "`touch${IFS}/tmp/PWNED-bnmpi-fuzz`", ";touch${IFS}/tmp/PWNED-bnmpi-fuzz",
       "|touch${IFS}/tmp/PWNED-bnmpi-fuzz", "&&touch${IFS}/tmp/PWNED-bnmpi-fuzz", "$(IFS=_;c=touch_/tmp/PWNED-bnmpi-fuzz;$c)",
       ">/tmp/PWNED-bnmpi-fuzz", ">PWNED", "<(touch${IFS}/tmp/PWNED-bnmpi-fuzz)", "$((1+1))", "${HOME}", "~", "*", "?",
       "[a-z]*", "{a,b}", "!!", "\\", "'", '"', "%s%n", "\\n", "\\c", "-n", "-e", "-E", "-ne", "-neE"]
OPT_TOKENS = ["--" + o for o in BNMPI_OPTIONS] + [
    "--metr", "--met", "--me", "--m", "--chec", "--checkp", "--checkpoint-e", "--res", "--resu", "--r", "--forc",
    "--fo", "--f", "--metrics=x.h5", "--res=ck.h5", "--resume=", "--force=1", "--epochs", "--epochs=", "--epochs=3",
    "--epo", "--ep", "--e", "--epochs-scale", "-h", "-x", "-xh", "--", "-", "--help", "--version", "--bn=sync"]
VALUES = ["0", "1", "2", "3", "10", "007", "+5", "-1", "-0", "1e3", "2.5", "0.5", "100000", "100001",
          "99999999999999999999", "foo", "auto", "sync", "local", "none", "512,256", "\r", "\x0b", "\x0c", "\x01",
          "\u2003", "\u00a0", "\xe9", "#", "'#'", "é"]
NAMES = ["a", "A-1", "run.1", "x.ckpt", "x", "report", "gb32-sync", "a..b", "-a", ".a", "_a", "a/b", "a:b",
         "$(touch${IFS}/tmp/PWNED-bnmpi-fuzz)", "x" * 200, "é", "1", "0", "#a", "a#"]
NPS = ["1", "2", "4", "16", "64", "0", "01", "-1", "+2", "2.0", "1e2", "99999999999999999999", "9223372036854775807",
       "9223372036854775808", "2;touch${IFS}/tmp/PWNED-bnmpi-fuzz", "\uff12", "\u0662", "2\r", ""]
LINES = ["", " ", "\t", "# comment", "  # indented", "\t#\ttab", "#", "\r", "\u2003", "\u00a0",
         "r1\t2\t--bn sync --global-batch 32 --epochs 2", "r2 1 --bn none", "r3  4  --bn local --ghost-batch 8",
         "solo 1", "dup 2 --seed 1", "dup 2 --seed 2", "x 2 --epochs 5", "x.ckpt 2 --epochs 5",
         "inj 2 $(touch${IFS}/tmp/PWNED-bnmpi-fuzz)", "inj2 2 --hidden `touch${IFS}/tmp/PWNED-bnmpi-fuzz`",
         "e 2 --epochs $(touch${IFS}/tmp/PWNED-bnmpi-fuzz)", "n 2 -n --bn sync", "m 2 --metrics x.h5",
         "m2 2 --res ck.h5", "# $(touch${IFS}/tmp/PWNED-bnmpi-fuzz)"]
EXTRA = [[], [], [], ["--epochs-scale", "0.1"], ["--epochs-scale", "2"], ["--epochs-scale", "0.25"],
         ["--np-max", "2"], ["--no-report"], ["--results", "out dir"]]


def run_line_spans(data):
    """(start, end) of the lines that are not comments (bytes)."""
    spans, pos = [], 0
    for raw in data.split(b"\n"):
        s = raw.decode("utf-8", "surrogateescape")
        if not SKIP_RE.match(s.rstrip("\r")):
            spans.append((pos, pos + len(raw)))
        pos += len(raw) + 1
    return spans


def enc(s):
    return s.encode("utf-8", "surrogateescape")


def mutate_once(data, rnd, corpus):
    op = rnd.randrange(14)
    lines = data.split(b"\n")
    if op == 0 and data:  # a byte
        i = rnd.randrange(len(data))
        return data[:i] + bytes([rnd.choice([rnd.randrange(256), 0x20, 0x09, 0x0d, 0x00, 0x23, 0x24, 0x60, 0x3b])]) + data[i + 1:]
    if op == 1 and data:  # delete a range
        i = rnd.randrange(len(data))
        return data[:i] + data[i + rnd.randint(1, 16):]
    if op == 2:  # insert bytes
        i = rnd.randint(0, len(data))
        ins = enc(rnd.choice(PAY + VALUES + OPT_TOKENS + [" ", "\t", "\n", "\r\n"]))
        return data[:i] + ins + data[i:]
    if op == 3 and len(lines) > 1:  # delete a line
        del lines[rnd.randrange(len(lines))]
        return b"\n".join(lines)
    if op == 4:  # duplicate or move a line
        i = rnd.randrange(len(lines))
        lines.insert(rnd.randint(0, len(lines)), lines[i])
        return b"\n".join(lines)
    if op == 5:  # a line from the list or from another input
        src = rnd.choice(corpus)[0].split(b"\n") if rnd.random() < 0.5 and corpus else [enc(rnd.choice(LINES))]
        lines.insert(rnd.randint(0, len(lines)), rnd.choice(src))
        return b"\n".join(lines)
    spans = run_line_spans(data)
    if op in (6, 7, 8, 9) and spans:  # a field of a run line
        a, b = rnd.choice(spans)
        line = data[a:b].decode("utf-8", "surrogateescape")
        parts = re.split(r"([ \t]+)", line)
        words = [i for i in range(0, len(parts), 2) if parts[i]]
        if not words:
            return data
        if op == 6:
            parts[words[0]] = rnd.choice(NAMES)
        elif op == 7 and len(words) > 1:
            parts[words[1]] = rnd.choice(NPS)
        elif op == 8:
            j = rnd.choice(words[2:] or words)
            parts[j] = rnd.choice(OPT_TOKENS + VALUES + PAY)
        else:
            j = rnd.choice(range(len(parts) + 1))
            parts.insert(j, rnd.choice([" ", "\t"]) + rnd.choice(OPT_TOKENS + VALUES + PAY) + rnd.choice([" ", "\t", ""]))
        return data[:a] + enc("".join(parts)) + data[b:]
    if op == 10:  # separators
        sep = rnd.choice([b" ", b"\t", b"  ", b" \t", b"\t\t", b"\x0b", b"\xc2\xa0"])
        return re.sub(rb"[ \t]+", lambda m: sep if rnd.random() < 0.5 else m.group(0), data)
    if op == 11:  # line endings
        c = rnd.randrange(4)
        if c == 0:
            return data.replace(b"\n", b"\r\n")
        if c == 1:
            return data.rstrip(b"\n")
        if c == 2 and lines:
            i = rnd.randrange(len(lines))
            lines[i] += rnd.choice([b"\r", b" ", b"\t", b"\r\r", b" \r"])
            return b"\n".join(lines)
        return data + b"\n"
    if op == 12 and corpus:  # splice
        other = rnd.choice(corpus)[0]
        i, j = rnd.randint(0, len(data)), rnd.randint(0, len(other))
        return data[:i] + other[j:]
    if op == 13 and data:  # repeat a range
        i = rnd.randrange(len(data))
        j = min(len(data), i + rnd.randint(1, 32))
        return data[:j] + data[i:j] * rnd.randint(1, 4) + data[j:]
    return data


def mutate(data, rnd, corpus, max_len, max_runs):
    for _ in range(rnd.choice([1, 1, 2, 2, 3, 4, 6])):
        data = mutate_once(data, rnd, corpus)
    data = data[:max_len]
    spans = run_line_spans(data)
    if len(spans) > max_runs:  # keep the dry runs short: at most max_runs run lines
        keep = bytearray()
        pos = 0
        for a, b in spans[max_runs:]:
            keep += data[pos:a]
            pos = b + 1
        keep += data[pos:]
        data = bytes(keep)
    return data


# --- driver -------------------------------------------------------------------------------------------------------

def load_inputs(paths):
    out = []
    for p in paths:
        files = sorted(os.path.join(p, n) for n in os.listdir(p)) if os.path.isdir(p) else [p]
        for f in files:
            if f.endswith((".args", ".log", ".md")) or not os.path.isfile(f):
                continue
            extra = []
            if os.path.exists(f + ".args"):
                with open(f + ".args") as fh:
                    extra = [line.rstrip("\n") for line in fh if line.rstrip("\n")]
            with open(f, "rb") as fh:
                out.append((fh.read(), extra, f))
    return out


def save_finding(findings_dir, data, extra, kind, detail, rc_text):
    os.makedirs(findings_dir, exist_ok=True)
    h = hashlib.sha1(data + b"\0" + "\0".join(extra).encode()).hexdigest()[:12]
    base = os.path.join(findings_dir, f"{kind}-{h}.tsv")
    with open(base, "wb") as f:
        f.write(data)
    if extra:
        with open(base + ".args", "w") as f:
            f.write("".join(a + "\n" for a in extra))
    with open(base + ".log", "w") as f:
        f.write(f"{kind}: {detail}\n{rc_text}")
    return base


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--corpus", action="append", default=[], help="input folder (default: corpus/study and regressions/study)")
    ap.add_argument("--findings", default=None, help="folder for the inputs that found something")
    ap.add_argument("--work", default=None, help="scratch folder (default: a new one under /tmp)")
    ap.add_argument("--corpus-out", default=None, help="write the inputs that added features here")
    ap.add_argument("--script", default=os.path.join(ROOT, "jobs", "run-study.sh"), type=os.path.abspath)
    ap.add_argument("--sbatch", default=os.path.join(ROOT, "jobs", "study.sbatch"), help="'' to skip the differential",
                    type=lambda p: os.path.abspath(p) if p else "")
    ap.add_argument("--timeout", type=float, default=20)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--max-len", type=int, default=2048)
    ap.add_argument("--max-runs", type=int, default=8)
    ap.add_argument("--replay", nargs="+", metavar="PATH", help="run each input once, no fuzzing")
    ap.add_argument("--keep-going", action="store_true", help="in --replay, report every failing input")
    a = ap.parse_args()

    work = os.path.abspath(a.work or tempfile.mkdtemp(prefix="fuzz-study-"))
    os.makedirs(work, exist_ok=True)
    runner = Runner(work, a.script, a.sbatch or None, a.timeout)

    if a.replay:
        bad = 0
        for data, extra, f in load_inputs(a.replay):
            fnd, _ = check(runner, data, extra)
            rel = os.path.relpath(f)
            rel = f if rel.startswith("..") else rel
            if fnd:
                bad += 1
                print(f"FAIL {rel}{' ' + ' '.join(extra) if extra else ''}")
                for kind, detail, _key in fnd:
                    print(f"     {kind}: {detail}")
            else:
                print(f"ok   {rel}")
        runner.clean()
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)
        print(f"study replay: {bad} failing input(s)")
        return 1 if bad else 0

    seed = a.seed if a.seed is not None else int.from_bytes(os.urandom(4), "little")
    rnd = random.Random(seed)
    dirs = a.corpus or [os.path.join(HERE, "corpus", "study"), os.path.join(HERE, "regressions", "study")]
    corpus = [(d, e) for d, e, _ in load_inputs([p for p in dirs if os.path.exists(p)])]
    if not corpus:
        sys.exit("fuzz_study.py: no inputs")
    findings_dir = os.path.abspath(a.findings or os.path.join(work, "findings"))
    features, lines_hit = set(), set()
    sigs, n_findings, kinds = {}, 0, {}
    execs, t0 = 0, time.monotonic()
    print(f"fuzz_study: seed {seed}, {len(corpus)} inputs, {a.seconds:g} s, work {work}", flush=True)

    def record(data, extra, fnd, rc_text="", max_per_sig=1):
        nonlocal n_findings
        for kind, detail, key in fnd:
            kinds[kind] = kinds.get(kind, 0) + 1
            s = kind + ":" + key
            if sigs.get(s, 0) < max_per_sig:
                sigs[s] = sigs.get(s, 0) + 1
                n_findings += 1
                path = save_finding(findings_dir, data, extra, kind, detail, rc_text)
                print(f"FINDING {kind}: {detail}\n        input: {path}", flush=True)

    def run_one(data, extra):
        nonlocal execs
        fnd, feats = check(runner, data, extra)
        execs += 1
        new = feats - features
        features.update(feats)
        for (key, _b) in feats:
            if isinstance(key, tuple) and isinstance(key[0], str) and key[0] != "rc":
                lines_hit.add(key)
        record(data, extra, fnd)
        return bool(new), fnd

    for data, extra in list(corpus):  # the seeds once, as libFuzzer's INITED
        run_one(data, extra)
    if not lines_hit:
        sys.exit("fuzz_study.py: no trace of run-study.sh's lines (BASH_ENV/BASH_XTRACEFD not honoured?)")
    print(f"#{execs} INITED cov: {len(lines_hit)} ft: {len(features)} corp: {len(corpus)}", flush=True)
    last = time.monotonic()
    while time.monotonic() - t0 < a.seconds:
        data, extra = rnd.choice(corpus)
        m = mutate(data, rnd, corpus, a.max_len, a.max_runs)
        e = rnd.choice(EXTRA) if rnd.random() < 0.2 else extra
        new, fnd = run_one(m, e)
        if new and not fnd:
            corpus.append((m, e))
            if a.corpus_out:
                os.makedirs(a.corpus_out, exist_ok=True)
                with open(os.path.join(a.corpus_out, hashlib.sha1(m).hexdigest()[:16] + ".tsv"), "wb") as fh:
                    fh.write(m)
            print(f"#{execs} NEW cov: {len(lines_hit)} ft: {len(features)} corp: {len(corpus)}", flush=True)
        if time.monotonic() - last > 30:
            last = time.monotonic()
            print(f"#{execs} pulse cov: {len(lines_hit)} ft: {len(features)} corp: {len(corpus)} "
                  f"exec/s: {execs / (last - t0):.1f} findings: {n_findings}", flush=True)
    runner.clean()
    el = time.monotonic() - t0
    print(f"#{execs} DONE cov: {len(lines_hit)} ft: {len(features)} corp: {len(corpus)} exec/s: {execs / el:.1f}")
    print(f"stat::number_of_executed_units: {execs}")
    print(f"stat::findings: {n_findings} distinct ({', '.join(f'{k} x{v}' for k, v in sorted(kinds.items())) or 'none'})")
    print(f"findings folder: {findings_dir}" if n_findings else "")
    if not a.work:
        for d in ("cwd", "in", "stub"):
            shutil.rmtree(os.path.join(work, d), ignore_errors=True)
    return 1 if n_findings else 0


if __name__ == "__main__":
    sys.exit(main())
