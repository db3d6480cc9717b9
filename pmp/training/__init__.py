"""Training and evaluation of one run (OpenLTH-style: the loop knows methods only via `Pruner`)."""

from .config import ExperimentConfig, apply_overrides, load_config
from .trainer import evaluate_run, load_trained_model, run_experiment

__all__ = ["ExperimentConfig", "apply_overrides", "evaluate_run", "load_config", "load_trained_model", "run_experiment"]
