"""The command line shared by the Python test scripts (tests/e2e, tests/analysis).

Each script defines case_NAME() functions, one per ctest test, and module
globals ARGS and TMP; run_case() parses `SCRIPT NAME --option ...`, fills
ARGS and a fresh temporary folder TMP, runs case_NAME and removes TMP.
"""
import argparse
import shutil
import tempfile


def run_case(module_globals, tmp_prefix, add_options):
    """add_options(parser) adds the script's own options after the case name."""
    cases = {k[5:]: v for k, v in module_globals.items() if k.startswith("case_")}
    p = argparse.ArgumentParser()
    p.add_argument("case", choices=sorted(cases))
    add_options(p)
    args = p.parse_args()
    module_globals["ARGS"] = args
    module_globals["TMP"] = tmp = tempfile.mkdtemp(prefix=tmp_prefix)
    try:
        cases[args.case]()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{args.case}: passed")
