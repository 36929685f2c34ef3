"""bnmpi_analysis: bnmpi metrics files as Python objects, tables and figures.

    from bnmpi_analysis import load_frame, load_runs, seeds

- runs.py     loading runs (Run objects; frame(): a pandas DataFrame, one row per run)
- labels.py   what tells runs apart: labels, orders, descriptions
- seeds.py    runs that differ only in their seed; the Student-t 95% interval, the
              paired/Welch difference test and the verdict rule
- figures.py  figure helpers: saving with a record, axes, legends, error bars and bands
- report.py   the analysis report (bnmpi-analyze, tools/analyze.py)
- claims.py   the notebook's claims (bnmpi-claims, tools/claims.py)

numpy, h5py and matplotlib (and pandas for the DataFrames) are imported when
used: Debian's /usr/bin/python3 with python3-h5py, python3-matplotlib and
python3-pandas.
"""
from . import seeds
from .runs import InputError, Run, epochs_frame, frame, load_frame, load_runs
from .seeds import difference, group, interval

__all__ = ["InputError", "Run", "difference", "epochs_frame", "frame", "group", "interval", "load_frame",
           "load_runs", "seeds"]
