"""Backbones, built by name through the registry."""

from . import agcn  # noqa: F401  (registers "agcn")
from .registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
