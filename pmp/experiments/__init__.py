"""Sweeps over grids of runs (local processes or Ray), and their aggregation into tables and plots."""

from .grid import RunSpec, SweepSpec, SweepSpecError, expand_grid, load_sweep, parse_sweep
from .report import Report, report
from .sweep import RunOutcome, SweepResult, run_sweep

__all__ = [
    "Report", "RunOutcome", "RunSpec", "SweepResult", "SweepSpec", "SweepSpecError",
    "expand_grid", "load_sweep", "parse_sweep", "report", "run_sweep",
]  # fmt: skip
