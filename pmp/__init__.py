"""pmp: budget-aware lightweight graph networks by Probabilistic Magnitude Pruning.

The pruning methods (`PMP` and the baselines) work on any `nn.Module`; the rest of the package is
the skeleton-action setting of the paper (data, attention GCN, training, sweeps, deployment).
"""

from pmp.machine import apply_reproducible_env

apply_reproducible_env()  # before torch is imported: torch reads ATEN_CPU_CAPABILITY once (machine.py)

from pmp.data import load_dataset  # noqa: E402
from pmp.models import create_model, list_models  # noqa: E402
from pmp.pruning import METHODS, MRMP, PMP, Pruner, create_pruner, format_report, sparsity_report  # noqa: E402

__version__ = "0.1.0"


def load_sparse(path):  # noqa: ANN001, ANN201  (lazy: keeps `import pmp` light)
    """Load an exported `.pmp` file as an inference-only module with sparse kernels."""
    from pmp.export import load_sparse as _load_sparse

    return _load_sparse(path)


__all__ = [
    "METHODS", "MRMP", "PMP", "Pruner", "create_model", "create_pruner", "format_report", "list_models", "load_dataset",
    "load_sparse", "sparsity_report",
]
