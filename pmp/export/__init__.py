"""Deployment: the compact `.pmp` file of a pruned model, and sparse CPU inference from it."""

from .format import ExportFormatError, export_run, read_compact, save_compact
from .sparse import load_sparse, predict

__all__ = ["ExportFormatError", "export_run", "load_sparse", "predict", "read_compact", "save_compact"]
