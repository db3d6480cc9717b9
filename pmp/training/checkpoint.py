"""Checkpoints as safetensors + JSON, written atomically; nothing is ever unpickled.

A checkpoint is a pair `<stem>.safetensors` (every tensor) and `<stem>.json` (every scalar,
list and string). The JSON is written last and names the tensor file's size, so a pair cut
short by a kill is detected instead of half-loaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


class CheckpointError(ValueError):
    pass


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2))


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def flatten(tree: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested structure into (tensors by dotted path, JSON skeleton with tensor refs)."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, torch.Tensor):
            tensors[path] = node
            return {"__tensor__": path}
        if isinstance(node, dict):
            return {"__dict__": [[k if isinstance(k, str) else {"__int__": k}, walk(v, f"{path}.{k}")] for k, v in node.items()]}
        if isinstance(node, (list, tuple)):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(node)]
        return node

    return tensors, walk(tree, prefix)


def unflatten(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__dict__" in skeleton:
            return {
                (k["__int__"] if isinstance(k, dict) else k): unflatten(v, tensors) for k, v in skeleton["__dict__"]
            }
        return {k: unflatten(v, tensors) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [unflatten(v, tensors) for v in skeleton]
    return skeleton


def save_checkpoint(state: dict[str, Any], stem: Path) -> None:
    """Save a nested state (model/optimizer/pruner state dicts, RNG states, counters)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    tensors, skeleton = flatten(state, "s")
    tensor_path = stem.with_suffix(".safetensors")
    save_tensors(tensors, tensor_path)
    atomic_write_json(stem.with_suffix(".json"), {"state": skeleton, "tensor_bytes": tensor_path.stat().st_size})


def load_checkpoint(stem: Path) -> dict[str, Any]:
    meta_path, tensor_path = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
    if not meta_path.is_file() or not tensor_path.is_file():
        raise CheckpointError(f"checkpoint {stem}: missing {meta_path.name} or {tensor_path.name}")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{meta_path}: corrupt JSON ({e})") from e
    if meta.get("tensor_bytes") != tensor_path.stat().st_size:
        raise CheckpointError(f"{tensor_path}: size does not match {meta_path.name} (interrupted write?)")
    try:
        tensors = load_file(str(tensor_path))
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{tensor_path}: unreadable safetensors file ({e})") from e
    return unflatten(meta["state"], tensors)
