"""Makes a tool run under a Python that has numpy, h5py and matplotlib.

On Debian they come as python3-numpy, python3-h5py and python3-matplotlib, seen
by /usr/bin/python3 only; a pyenv or venv python3 earlier on PATH lacks them.
ensure_packages() returns when they import, else re-runs the calling script
under /usr/bin/python3 (once), else exits with a one-line message. It imports
nothing heavy itself, so a tool calls it before its own numpy imports.
"""
import importlib.util
import os
import sys

DEBIAN = "/usr/bin/python3"
MODULES = ("numpy", "h5py", "matplotlib")


def ensure_packages(prog, script):
    """prog: the name for the message; script: the path of the tool to re-run."""
    missing = [m for m in MODULES if importlib.util.find_spec(m) is None]
    if not missing:
        return
    if (os.environ.get("BNMPI_PY_REEXEC") != "1" and os.access(DEBIAN, os.X_OK)
            and os.path.realpath(sys.executable) != os.path.realpath(DEBIAN)):
        os.environ["BNMPI_PY_REEXEC"] = "1"
        os.execv(DEBIAN, [DEBIAN, os.path.abspath(script)] + sys.argv[1:])
    sys.stderr.write(f"{prog}: this Python ({sys.executable}) lacks {', '.join(missing)}; run it with "
                     f"Debian's /usr/bin/python3 (apt-get install python3-h5py python3-matplotlib)\n")
    sys.exit(1)
