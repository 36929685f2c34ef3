#!/usr/bin/python3
"""Runs the ```python examples of README.md (and docs/analysis.md) on real run files.

Usage: run_readme.py readme --readme FILE [--readme FILE ...] --bnmpi PATH --mpiexec PATH --tools DIR

The examples name their inputs under runs/, as bnmpi writes them by default:
a file "runs/<anything>.h5" or the folder "runs/" (or "runs"). The test makes
real runs (two seeds of one configuration, one of another) in a temporary
runs/ folder, substitutes each such string literal with the real file (the
first run) or folder, and runs every block, each in a fresh Debian
/usr/bin/python3 with the tools' folder on PYTHONPATH (as an install puts
bnmpi_analysis on Python's path) and the temporary folder as the working
directory. A block that fails fails the test with its code and output. A file
with no python block fails too (the examples were lost).
"""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
from cases import run_case  # noqa: E402

ARGS = None
TMP = None
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
PYTHON = "/usr/bin/python3"
BLOCK = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)
FILE_LITERAL = re.compile(r"""(["'])runs/[^"'\n]*?\.h5\1""")
DIR_LITERAL = re.compile(r"""(["'])runs/?\1""")


def check(cond, msg):
    if not cond:
        sys.exit("FAIL: " + msg)


def blocks(path):
    with open(path) as f:
        return BLOCK.findall(f.read())


def substitute(code, run_file, run_dir):
    code = FILE_LITERAL.sub(lambda m: repr(run_file), code)
    return DIR_LITERAL.sub(lambda m: repr(run_dir), code)


def train(name, *flags):
    path = os.path.join(TMP, "runs", name + ".h5")
    cmd = [ARGS.mpiexec, "--oversubscribe", "-np", "1", ARGS.bnmpi, "--epochs", "2", "--train-limit", "2048",
           "--quiet", "--metrics", path, *flags]
    p = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
    check(p.returncode == 0, f"{' '.join(cmd)}: exit {p.returncode}\n{p.stderr}")
    return path


def case_readme():
    """Every python block of every --readme file runs on real run files."""
    os.makedirs(os.path.join(TMP, "runs"))
    first = train("sync-seed1", "--bn", "sync", "--seed", "1")
    train("sync-seed2", "--bn", "sync", "--seed", "2")
    train("none-seed1", "--bn", "none", "--seed", "1")
    env = dict(os.environ, PYTHONPATH=os.path.abspath(ARGS.tools), MPLBACKEND="Agg")
    total = 0
    for readme in ARGS.readme:
        found = blocks(readme)
        check(found, f"{readme}: no ```python block")
        for i, code in enumerate(found, 1):
            code = substitute(code, first, os.path.join(TMP, "runs"))
            p = subprocess.run([PYTHON, "-"], input=code, cwd=TMP, env=env, capture_output=True, text=True,
                               timeout=120)
            check(p.returncode == 0, f"{readme}: python block {i} exit {p.returncode}:\n{code}\n"
                                     f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}")
            print(f"ok {os.path.basename(readme)} block {i}: {len(p.stdout.splitlines())} lines of output")
            total += 1
    print(f"{total} blocks ran")


def options(p):
    p.add_argument("--readme", action="append", required=True, help="a Markdown file (repeatable)")
    p.add_argument("--bnmpi", required=True)
    p.add_argument("--mpiexec", required=True)
    p.add_argument("--tools", required=True)


if __name__ == "__main__":
    run_case(globals(), "bnmpi-readme-", options)
