"""Backbones, built by name through the registry."""

from . import agcn, ddnet, ensemble, stgcn  # noqa: F401  (register "agcn", "ddnet", "ensemble", "stgcn")
from .registry import create_model, list_models, model_dataset_fields, register_model

__all__ = ["create_model", "list_models", "model_dataset_fields", "register_model"]
