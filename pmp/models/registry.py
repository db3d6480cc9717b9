"""One way to name and build every model (after timm's registry)."""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_DATASET_FIELDS: dict[str, tuple[str, ...] | str] = {}
#: `dataset_fields` of a model that builds other registered models (an ensemble): it takes every
#: field any registered model declares, and passes each member the ones it needs.
ALL_FIELDS = "*"


def register_model(name: str, dataset_fields: tuple[str, ...] | str = ()) -> Callable[[Callable[..., nn.Module]],
                                                                                    Callable[..., nn.Module]]:
    """Register a model factory. `dataset_fields`: dataset attributes (e.g. "edges") the trainer
    passes as kwargs of the same name, for models that need more of the data than its sizes
    (ALL_FIELDS: those of every registered model)."""
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        _MODELS[name] = fn
        _DATASET_FIELDS[name] = dataset_fields if dataset_fields == ALL_FIELDS else tuple(dataset_fields)
        return fn

    return deco


def model_dataset_fields(name: str) -> tuple[str, ...]:
    """The dataset attributes model `name` takes as kwargs (see `register_model`)."""
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    fields = _DATASET_FIELDS[name]
    if fields == ALL_FIELDS:
        return tuple(sorted({f for v in _DATASET_FIELDS.values() if v != ALL_FIELDS for f in v}))
    return tuple(fields)


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model. Data-dependent sizes (num_nodes, in_frames, in_channels,
    num_classes) come from the dataset; the rest from the config's `model` section."""
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _MODELS[name](**kwargs)
