"""Pruning methods behind one interface (base.Pruner), and the PMP method's building blocks."""

from .alignment import ALIGNMENTS, KLAlignment, WassersteinAlignment, make_alignment
from .bandstop import BandStop, band_stop_gate
from .base import METHODS, Pruner, create_pruner, register_method
from . import methods  # noqa: F401  (registers the built-in methods: METHODS is complete on import)
from .mrmp import MRMP, recalibrate_batchnorm
from .pmp import PMP
from .priors import PRIORS, Gaussian, Laplace, Prior, Uniform, make_prior, matched_prior
from .report import LayerStats, SparsityReport, format_report, sparsity_report

__all__ = [
    "ALIGNMENTS", "BandStop", "Gaussian", "KLAlignment", "Laplace", "LayerStats", "METHODS", "MRMP", "PMP", "PRIORS",
    "Prior", "Pruner", "SparsityReport", "Uniform", "WassersteinAlignment", "band_stop_gate", "create_pruner",
    "format_report", "make_alignment", "make_prior", "matched_prior", "recalibrate_batchnorm", "register_method",
    "sparsity_report",
]
