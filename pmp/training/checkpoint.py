"""Files a run writes, written atomically and checksummed; nothing is ever unpickled.

Why each rule:
* Atomic writes go through a temporary file with a name unique to the writer (pid + random), so
  two processes writing the same file never share (or delete) each other's temporary file.
* Tensor files (`save_tensors`) carry a CRC-32 per tensor in their safetensors metadata, over the
  tensor's dtype, shape and bytes, and `load_tensors` verifies it: a flipped byte in raw weights is
  an error naming the file and the tensor, not a silently different model.
* JSON documents that are read back (`write_sealed_json`) carry a SHA-256 of their own content
  under `"checksum"`, verified by `read_sealed_json`: a flipped digit in a checkpoint's epoch
  counter or a model description's size is an error, not a different run.
* A checkpoint is a versioned tensor file `ckpt-<epoch>-<token>.safetensors` plus the pointer
  `last.json`, written last: replacing the pointer is the one commit point. It names the tensor
  file and its SHA-256, so a kill at any moment leaves either the old or the new checkpoint, whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import zlib
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

CRC_KEY = "pmp.crc32"  # safetensors metadata entry: JSON {tensor name: crc32 hex}
SEAL_KEY = "checksum"  # JSON documents: "sha256:<hex>" of the rest of the document
POINTER = "last.json"
CHECKPOINT_FORMAT = 2  # 1: last.safetensors + last.json, renamed one after the other (not atomic)


class IntegrityError(ValueError):
    """A file the project wrote is missing, truncated or corrupt; the message names it."""


class CheckpointError(IntegrityError):
    pass


def tmp_name(path: Path) -> Path:
    """A temporary sibling of `path` that no other writer uses."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2))


# ---------------------------------------------------------------- sealed JSON


def _digest(doc: Any) -> str:
    canonical = json.dumps(json.loads(json.dumps(doc)), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def seal(doc: dict[str, Any]) -> dict[str, Any]:
    """`doc` with its checksum added (any old one replaced)."""
    body = {k: v for k, v in doc.items() if k != SEAL_KEY}
    return {**body, SEAL_KEY: _digest(body)}


def write_sealed_json(path: Path, doc: dict[str, Any]) -> None:
    atomic_write_json(path, seal(doc))


def parse_sealed_json(path: Path, text: str) -> dict[str, Any]:
    """The document without its checksum; files written before checksums existed pass unchecked."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise IntegrityError(f"{path}: corrupt or truncated JSON ({e})") from e
    if not isinstance(doc, dict):
        raise IntegrityError(f"{path}: not a JSON object")
    if SEAL_KEY in doc:
        body = {k: v for k, v in doc.items() if k != SEAL_KEY}
        if doc[SEAL_KEY] != _digest(body):
            raise IntegrityError(f"{path}: checksum mismatch (the file was modified or corrupted)")
        return body
    return doc


def read_sealed_json(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes().decode()
    except FileNotFoundError as e:
        raise IntegrityError(f"{path}: missing") from e
    except UnicodeDecodeError as e:
        raise IntegrityError(f"{path}: not UTF-8 text ({e})") from e
    return parse_sealed_json(path, text)


# ---------------------------------------------------------------- tensor files


def tensor_crc(name: str, dtype: str, shape: list[int] | tuple[int, ...], data: bytes) -> str:
    """CRC-32 of a stored tensor: its name, dtype and shape as well as its bytes, so that a
    corrupted header entry (a swapped shape) is caught like corrupted data."""
    return f"{zlib.crc32(data, zlib.crc32(f'{name}|{dtype}|{list(shape)}'.encode())):08x}"


def _crc(name: str, t: torch.Tensor) -> str:
    return tensor_crc(name, str(t.dtype), t.shape, t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())


def tensor_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """A safetensors file's bytes, with a CRC-32 per tensor in its metadata."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {**(metadata or {}), CRC_KEY: json.dumps({k: _crc(k, v) for k, v in tensors.items()}, sort_keys=True)}
    return st_save(tensors, metadata=meta)


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    atomic_write_bytes(path, tensor_bytes(tensors, metadata))


def _header_metadata(path: Path, raw: bytes) -> dict[str, str]:
    if len(raw) < 8:
        raise IntegrityError(f"{path}: truncated ({len(raw)} bytes): not a safetensors file")
    n = int.from_bytes(raw[:8], "little")
    if n > len(raw) - 8:
        raise IntegrityError(f"{path}: header length {n} exceeds the file's size (truncated?)")
    try:
        header = json.loads(raw[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IntegrityError(f"{path}: corrupt safetensors header ({e})") from e
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else {}


def parse_tensors(path: Path, raw: bytes) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file's bytes, every checksum verified (files without any pass)."""
    meta = _header_metadata(path, raw)
    try:
        tensors = st_load(raw)
    except Exception as e:  # safetensors raises its own error types
        raise IntegrityError(f"{path}: unreadable safetensors file ({e}; truncated or corrupt?)") from e
    if CRC_KEY not in meta:
        return tensors
    try:
        crcs = json.loads(meta[CRC_KEY])
    except json.JSONDecodeError as e:
        raise IntegrityError(f"{path}: corrupt checksum table ({e})") from e
    if not isinstance(crcs, dict) or set(crcs) != set(tensors):
        raise IntegrityError(f"{path}: checksum table does not list exactly the file's tensors")
    for name, t in tensors.items():
        if crcs[name] != _crc(name, t):
            raise IntegrityError(f"{path}: tensor {name!r}: checksum mismatch (corrupt file)")
    return tensors


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise IntegrityError(f"{path}: missing")
    return parse_tensors(path, path.read_bytes())


# ---------------------------------------------------------------- nested states


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


# ---------------------------------------------------------------- checkpoints


def save_checkpoint(state: dict[str, Any], folder: Path, info: dict[str, Any] | None = None) -> None:
    """Save a nested state (model/optimizer/pruner state dicts, RNG states, counters) in `folder`.

    `info` (e.g. the config fingerprint) is stored in the pointer and returned by `read_pointer`.
    Older checkpoint files are removed once the new pointer is in place."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors, skeleton = flatten(state, "s")
    data = tensor_bytes(tensors)
    name = f"ckpt-{state.get('epoch', 0):06d}-{secrets.token_hex(4)}.safetensors"
    atomic_write_bytes(folder / name, data)
    write_sealed_json(folder / POINTER, {
        "format": CHECKPOINT_FORMAT, "tensors": name, "tensor_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(), "info": info or {}, "state": skeleton,
    })
    for old in folder.glob("ckpt-*.safetensors"):  # superseded, or orphaned by a kill before its pointer
        if old.name != name:
            old.unlink(missing_ok=True)
    (folder / "last.safetensors").unlink(missing_ok=True)  # format 1's tensor file


def has_checkpoint(folder: Path) -> bool:
    return (folder / POINTER).is_file()


def read_pointer(folder: Path) -> dict[str, Any]:
    """The pointer document (tensor file, checksum, info, skeleton), verified."""
    path = folder / POINTER
    try:
        doc = read_sealed_json(path)
    except IntegrityError as e:
        raise CheckpointError(str(e)) from e
    if doc.get("format") == CHECKPOINT_FORMAT:
        for key in ("tensors", "tensor_bytes", "sha256", "state"):
            if key not in doc:
                raise CheckpointError(f"{path}: missing field {key!r}")
        if not isinstance(doc["tensors"], str) or Path(doc["tensors"]).name != doc["tensors"]:
            raise CheckpointError(f"{path}: field 'tensors' is not a file name")
        return doc
    if "state" in doc and "tensor_bytes" in doc:  # format 1: the pair last.safetensors + last.json
        return {"format": 1, "tensors": "last.safetensors", "tensor_bytes": doc["tensor_bytes"], "sha256": None,
                "info": {}, "state": doc["state"]}
    raise CheckpointError(f"{path}: not a checkpoint pointer")


def load_checkpoint(folder: Path) -> dict[str, Any]:
    """The nested state saved by `save_checkpoint` in `folder`, every byte verified."""
    doc = read_pointer(folder)
    tensor_path = folder / doc["tensors"]
    if not tensor_path.is_file():
        raise CheckpointError(f"{tensor_path}: missing (named by {folder / POINTER})")
    raw = tensor_path.read_bytes()
    if len(raw) != doc["tensor_bytes"]:
        raise CheckpointError(f"{tensor_path}: size does not match {POINTER} (interrupted write?)")
    if doc["sha256"] is not None and hashlib.sha256(raw).hexdigest() != doc["sha256"]:
        raise CheckpointError(f"{tensor_path}: SHA-256 does not match {POINTER} (corrupt file)")
    try:
        tensors = parse_tensors(tensor_path, raw)
    except IntegrityError as e:
        raise CheckpointError(str(e)) from e
    try:
        return unflatten(doc["state"], tensors)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{folder / POINTER}: state does not match {tensor_path.name} ({e!r})") from e
