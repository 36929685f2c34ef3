"""Inputs that the analysis tools (analyze.py, claims.py) must refuse, shared by
their tests (tests/analysis)."""
import os

import h5py
import numpy as np


def make_bad_inputs(d):
    """Creates folder d and in it: text (not HDF5), plain (HDF5 without the
    format attribute), other (another program's format), ckpt (a bnmpi
    checkpoint, not metrics), empty (a folder with no *.h5); plus missing, a
    path that does not exist. Returns their paths by those names."""
    os.makedirs(d)
    p = {name: os.path.join(d, file) for name, file in (("text", "notes.h5"), ("plain", "plain.h5"),
                                                        ("other", "other.h5"), ("ckpt", "ckpt.h5"),
                                                        ("empty", "empty-folder"), ("missing", "missing.h5"))}
    with open(p["text"], "w") as f:
        f.write("not hdf5\n")
    with h5py.File(p["plain"], "w") as f:
        f["x"] = np.arange(3)
    with h5py.File(p["other"], "w") as f:
        f.attrs["format"] = "someone-else"
    with h5py.File(p["ckpt"], "w") as f:
        f.attrs["format"] = "bnmpi-checkpoint"
    os.makedirs(p["empty"])
    return p
