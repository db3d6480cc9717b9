"""The `.pmp` deployment file: a pruned model's kept weights only, in a safetensors container.

Why a format of its own: the dense `model.safetensors` of a 99%-pruned run is 99% zeros. A `.pmp`
file stores each pruned tensor as its kept values plus a compact index (bitmask or byte-delta
tokens, whichever is smaller for that tensor), everything else dense, and BatchNorm already folded
into a per-feature affine (what inference needs, not the training statistics). It is a plain
safetensors file: no pickle anywhere, and the model config travels inside the header, so one file
is enough to deploy. Version 2 adds a lossless codec per tensor (byte planes + DEFLATE): the sign and
exponent bytes of trained float32 weights are far from random, which saves 15-17% of a
99%-pruned file (benchmarks/export_size.py). The layout is specified in docs/deploy.md.
"""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save
from torch import nn

from pmp.machine import AllocationError, check_allocation
from pmp.models import create_model, list_models
from pmp.training.checkpoint import atomic_write_bytes, tensor_crc

FORMAT = "pmp-sparse"
VERSION = 3
READABLE_VERSIONS = (1, 2, 3)  # version 1: no "codecs" entry, every tensor raw; 2: no checksums
CODEC = "byteplanes-deflate"
META_KEY = "pmp"  # key of the JSON document in the safetensors `__metadata__`
SEAL_KEY = "pmp.sha256"  # version 3: SHA-256 of that JSON document, next to it in `__metadata__`
#: Index encodings of a sparse tensor's kept positions (row-major flat order), see `_encode`.
INDEX_DTYPES: dict[str, np.dtype] = {"bitmask": np.dtype(np.uint8), "delta8": np.dtype(np.uint8),
                                     "delta16": np.dtype(np.uint16)}
_ST_DTYPES: dict[str, np.dtype] = {"F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
                                   "U8": np.dtype(np.uint8), "U16": np.dtype(np.uint16)}
_VALUE_DTYPES = ("float32", "float16")


class ExportFormatError(ValueError):
    """A `.pmp` file that is missing, truncated, corrupt or inconsistent with its own header."""


@dataclass(frozen=True)
class SparseTensor:
    """A pruned tensor as stored: kept positions (row-major flat, increasing) and their values."""

    shape: tuple[int, ...]
    positions: np.ndarray  # int64
    values: np.ndarray  # float32

    def dense(self) -> np.ndarray:
        out = np.zeros(math.prod(self.shape), np.float32)
        out[self.positions] = self.values
        return out.reshape(self.shape)

    @classmethod
    def from_dense(cls, w: np.ndarray) -> SparseTensor:
        flat = w.reshape(-1)
        pos = np.flatnonzero(flat)
        return cls(tuple(w.shape), pos, flat[pos])


@dataclass(frozen=True)
class CompactModel:
    """A validated `.pmp` file: config, dense tensors (float32) and sparse tensors, by name."""

    path: Path
    spec: dict[str, Any]
    dense: dict[str, np.ndarray]
    sparse: dict[str, SparseTensor]

    def kept(self, name: str) -> SparseTensor:
        """Tensor `name` as positions and values, whichever way it was stored (dense: its non-zeros)."""
        return self.sparse[name] if name in self.sparse else SparseTensor.from_dense(self.dense[name])


# ---------------------------------------------------------------- what inference needs


def inference_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors inference needs, by name: parameters as they are, and each BatchNorm as the
    eval-mode affine it computes, `<bn>.scale` and `<bn>.shift` (y = x * scale + shift).

    Folding here halves BatchNorm's storage and drops training-only state; it works on a meta-device
    model too, which gives the loader the expected names and shapes without any weights."""
    out: dict[str, torch.Tensor] = {}
    for mname, mod in model.named_modules():
        prefix = f"{mname}." if mname else ""
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            if mod.running_mean is None or mod.running_var is None:
                raise ValueError(f"{mname}: BatchNorm without running statistics cannot be exported")
            scale = torch.rsqrt(mod.running_var.detach().float() + mod.eps)
            if mod.affine:
                scale = scale * mod.weight.detach().float()
            shift = -mod.running_mean.detach().float() * scale
            if mod.affine:
                shift = shift + mod.bias.detach().float()
            out[prefix + "scale"], out[prefix + "shift"] = scale, shift
            continue
        for pname, p in mod.named_parameters(recurse=False):
            out[prefix + pname] = p.detach()
    return out


def meta_model(spec: Mapping[str, Any]) -> nn.Module:
    """The model `spec` (a model.json) describes, on the meta device: its sizes, no weights."""
    with torch.device("meta"):
        return create_model(spec["model"], **spec["kwargs"])


def expected_shapes(spec: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Names and shapes of `inference_state` for the model `spec` describes."""
    return {k: tuple(v.shape) for k, v in inference_state(meta_model(spec)).items()}


# ---------------------------------------------------------------- index encodings


def _encode(mask: np.ndarray, encoding: str) -> np.ndarray:
    """Kept positions of the flat bool `mask` in `encoding`.

    bitmask: one bit per entry (little-endian bit order), best when many weights are kept.
    delta8/delta16: one token per kept entry, the count of pruned entries skipped before it; a token
    equal to the dtype's maximum E means "skip E, no entry here" and continues the gap. At 1-2% kept
    the gaps are ~50-100, so delta8 costs about one byte per kept weight."""
    if encoding == "bitmask":
        return np.packbits(mask, bitorder="little")
    dtype = INDEX_DTYPES[encoding]
    esc = np.iinfo(dtype).max
    pos = np.flatnonzero(mask)
    gaps = np.diff(pos, prepend=-1) - 1
    escapes = gaps // esc
    tokens = np.full(len(pos) + int(escapes.sum()), esc, dtype)
    tokens[np.cumsum(escapes + 1) - 1] = gaps % esc
    return tokens


def _decode(tokens: np.ndarray, encoding: str) -> np.ndarray:
    """Inverse of `_encode`: increasing flat positions (int64), not yet range-checked."""
    if encoding == "bitmask":
        return np.flatnonzero(np.unpackbits(tokens, bitorder="little"))
    esc = np.iinfo(tokens.dtype).max
    steps = np.where(tokens == esc, esc, tokens.astype(np.int64) + 1)
    return (np.cumsum(steps) - 1)[tokens != esc]


def _encodings(mask: np.ndarray) -> dict[str, np.ndarray]:
    flat = np.asarray(mask, bool).reshape(-1)
    return {enc: _encode(flat, enc) for enc in INDEX_DTYPES}


def index_sizes(mask: np.ndarray) -> dict[str, int]:
    """Bytes each index encoding takes for this mask (measured by encoding it)."""
    return {enc: a.nbytes for enc, a in _encodings(mask).items()}


# ---------------------------------------------------------------- writing


def save_compact(
    model: nn.Module,
    model_spec: Mapping[str, Any],
    masks: Mapping[str, torch.Tensor],
    out_path: str | Path,
    *,
    fp16: bool = False,
    compress: bool = True,
) -> Path:
    """Write `model` (a finalised pruned model: zeros outside `masks`) as a `.pmp` file.

    Each masked tensor is stored sparse (values + the smallest index encoding) unless dense is
    smaller (low pruning rates); all other tensors dense. `compress` (lossless) stores each tensor
    through the byte-plane DEFLATE codec where that is smaller. `fp16` stores every float tensor in
    half precision: half the bytes, but outputs then differ from the float32 model by ~1e-3."""
    if "model" not in model_spec or "kwargs" not in model_spec:
        raise ValueError("model_spec needs 'model' and 'kwargs' (the run's model.json)")
    state = inference_state(model)
    vdtype = np.float16 if fp16 else np.float32
    arrays: dict[str, np.ndarray] = {}
    sparse: dict[str, dict[str, Any]] = {}
    for name in masks:
        if name not in state:
            raise ValueError(f"mask {name!r} names no tensor of the model")
    for name, t in state.items():
        w = t.float().cpu().numpy()
        if name not in masks:
            arrays[name] = np.ascontiguousarray(w, vdtype)
            continue
        mask = masks[name].detach().cpu().numpy()
        if mask.shape != w.shape:
            raise ValueError(f"mask {name!r}: shape {list(mask.shape)} != weight shape {list(w.shape)}")
        if not np.isin(mask, (0, 1)).all():
            raise ValueError(f"mask {name!r}: values other than 0/1")
        mask = mask.astype(bool).reshape(-1)
        stray = int(np.count_nonzero(w.reshape(-1)[~mask]))
        if stray:
            raise ValueError(f"{name}: {stray} non-zero weights outside the mask (model not finalised?)")
        encoding, index = min(_encodings(mask).items(), key=lambda e: e[1].nbytes)
        nnz = int(mask.sum())
        if (nnz - w.size) * np.dtype(vdtype).itemsize + index.nbytes >= 0:  # dense is no larger
            arrays[name] = np.ascontiguousarray(w, vdtype)
            continue
        arrays[f"{name}.values"] = w.reshape(-1)[mask].astype(vdtype)
        arrays[f"{name}.index"] = index
        sparse[name] = {"shape": list(w.shape), "nnz": nnz, "encoding": encoding}
    codecs: dict[str, dict[str, Any]] = {}
    if compress:
        for name, a in list(arrays.items()):
            packed = _pack(a)
            if packed.nbytes < a.nbytes:
                arrays[name] = packed
                codecs[name] = {"codec": CODEC, "dtype": a.dtype.name, "shape": list(a.shape)}
    checksums = {name: _crc(name, a) for name, a in arrays.items()}
    meta = {"format": FORMAT, "version": VERSION, "dtype": np.dtype(vdtype).name, "config": dict(model_spec),
            "sparse": sparse, "codecs": codecs, "checksums": checksums}
    text = json.dumps(meta)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, st_save(arrays, metadata={META_KEY: text, SEAL_KEY: hashlib.sha256(text.encode()).hexdigest()}))
    return out


def _crc(name: str, a: np.ndarray) -> str:
    return tensor_crc(name, a.dtype.name, a.shape, np.ascontiguousarray(a).tobytes())


def export_run(run_dir: str | Path, out_path: str | Path, *, fp16: bool = False, compress: bool = True) -> Path:
    """Export a finished training run folder (model.json, model.safetensors, masks.safetensors);
    `fp16` and `compress` as in `save_compact`."""
    from pmp.training.checkpoint import load_tensors
    from pmp.training.trainer import load_trained_model

    run = Path(run_dir)
    for name in ("model.json", "model.safetensors", "masks.safetensors"):
        if not (run / name).is_file():
            raise FileNotFoundError(f"{run / name}: missing (is {run} a finished run folder?)")
    model, spec = load_trained_model(run)
    return save_compact(model, spec, load_tensors(run / "masks.safetensors"), out_path, fp16=fp16, compress=compress)


# ---------------------------------------------------------------- the lossless codec


def _pack(a: np.ndarray) -> np.ndarray:
    """Byte planes (all first bytes, then all second bytes, ...) through DEFLATE, as uint8. The
    planes separate the low-entropy sign/exponent bytes from the mantissa noise."""
    planes = np.ascontiguousarray(a).reshape(-1).view(np.uint8).reshape(-1, a.dtype.itemsize).T
    return np.frombuffer(zlib.compress(planes.tobytes(), 9), np.uint8)


def _unpack(path: Path, name: str, packed: np.ndarray, entry: Any) -> np.ndarray:
    """Inverse of `_pack`, checked: a stream that is corrupt, or inflates to any size other than
    the declared tensor's (never more than that is inflated), is an error naming the tensor."""
    where = f"tensor {name!r}"
    if not isinstance(entry, dict):
        raise _fail(path, f"{where}: codec entry is not an object")
    if _require(path, entry, "codec", str, where) != CODEC:
        raise _fail(path, f"{where}: unknown codec {entry['codec']!r} (known: {CODEC!r})")
    dtype = _require(path, entry, "dtype", str, where)
    shape = _require(path, entry, "shape", list, where)
    if dtype not in {d.name for d in _ST_DTYPES.values()}:
        raise _fail(path, f"{where}: codec dtype {dtype!r} not one of {sorted(d.name for d in _ST_DTYPES.values())}")
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise _fail(path, f"{where}: bad codec shape {shape!r}")
    if packed.dtype != np.uint8 or packed.ndim != 1:
        raise _fail(path, f"{where}: a compressed tensor must be stored as 1-D uint8")
    item = np.dtype(dtype).itemsize
    size = math.prod(shape) * item
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(packed.tobytes(), size)
        complete = inflater.eof and not inflater.unconsumed_tail and not inflater.unused_data
    except zlib.error as e:
        raise _fail(path, f"{where}: corrupt compressed data ({e})") from e
    if len(raw) != size or not complete:
        raise _fail(path, f"{where}: compressed data does not inflate to exactly {size} bytes "
                          f"({dtype} {shape}; truncated or corrupt)")
    planes = np.frombuffer(raw, np.uint8).reshape(item, -1)
    return np.ascontiguousarray(planes.T).view(dtype).reshape(shape)


# ---------------------------------------------------------------- reading and validation


def _fail(path: Path, what: str) -> ExportFormatError:
    return ExportFormatError(f"{path}: {what}")


def _read_container(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Metadata document and arrays of a safetensors file, every offset checked first so that a
    truncated or corrupt file fails with a message naming the broken part."""
    if not path.is_file():
        raise _fail(path, "no such file")
    raw = path.read_bytes()
    if len(raw) < 8:
        raise _fail(path, f"truncated: {len(raw)} bytes, shorter than the 8-byte header length")
    hlen = int.from_bytes(raw[:8], "little")
    if hlen > len(raw) - 8:
        raise _fail(path, f"header length {hlen} exceeds the file's {len(raw) - 8} remaining bytes "
                          "(truncated, or not a .pmp/safetensors file)")
    try:
        header = json.loads(raw[8 : 8 + hlen])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _fail(path, f"header is not valid JSON ({e})") from e
    if not isinstance(header, dict):
        raise _fail(path, "header is not a JSON object")
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or META_KEY not in meta:
        raise _fail(path, f"no '{META_KEY}' entry in the safetensors metadata: not a .pmp export")
    data_len = len(raw) - 8 - hlen
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or info.get("dtype") not in _ST_DTYPES:
            raise _fail(path, f"tensor {name!r}: dtype {info.get('dtype') if isinstance(info, dict) else info!r} "
                              f"not one of {sorted(_ST_DTYPES)}")
        shape, offs = info.get("shape"), info.get("data_offsets")
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise _fail(path, f"tensor {name!r}: bad shape {shape!r}")
        if not (isinstance(offs, list) and len(offs) == 2 and all(isinstance(o, int) for o in offs)
                and 0 <= offs[0] <= offs[1]):
            raise _fail(path, f"tensor {name!r}: bad data_offsets {offs!r}")
        if offs[1] - offs[0] != math.prod(shape) * _ST_DTYPES[info["dtype"]].itemsize:
            raise _fail(path, f"tensor {name!r}: {offs[1] - offs[0]} bytes for shape {shape} {info['dtype']}")
        if offs[1] > data_len:
            raise _fail(path, f"tensor {name!r}: data ends at byte {offs[1]} but only {data_len} data bytes "
                              "are present (truncated file?)")
    if SEAL_KEY in meta and meta[SEAL_KEY] != hashlib.sha256(str(meta[META_KEY]).encode()).hexdigest():
        raise _fail(path, f"metadata '{META_KEY}' does not match its checksum '{SEAL_KEY}' (corrupt header)")
    try:
        doc = json.loads(meta[META_KEY])
    except (json.JSONDecodeError, TypeError) as e:
        raise _fail(path, f"metadata '{META_KEY}' is not valid JSON ({e})") from e
    try:
        arrays = st_load(raw)
    except Exception as e:  # safetensors' own error type: anything the checks above did not catch
        raise _fail(path, f"unreadable safetensors data ({e})") from e
    if not isinstance(doc, dict):
        raise _fail(path, f"metadata '{META_KEY}' is not a JSON object")
    if doc.get("version", 0) >= 3 and SEAL_KEY not in meta:
        raise _fail(path, f"version {doc['version']} file without its header checksum '{SEAL_KEY}'")
    return doc, arrays


def _require(path: Path, doc: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in doc:
        raise _fail(path, f"{where}: missing required field {key!r}")
    if not isinstance(doc[key], kind) or isinstance(doc[key], bool) and kind is int:
        raise _fail(path, f"{where}: field {key!r} has the wrong type ({type(doc[key]).__name__})")
    return doc[key]


def _checked_array(path: Path, arrays: Mapping[str, np.ndarray], key: str, dtypes: tuple[str, ...],
                   shape: tuple[int, ...]) -> np.ndarray:
    if key not in arrays:
        raise _fail(path, f"missing tensor {key!r}")
    a = arrays[key]
    if a.dtype.name not in dtypes:
        raise _fail(path, f"tensor {key!r}: dtype {a.dtype.name}, expected {' or '.join(dtypes)}")
    if a.shape != shape:
        raise _fail(path, f"tensor {key!r}: shape {list(a.shape)}, expected {list(shape)}")
    return a


def _sparse_tensor(path: Path, arrays: Mapping[str, np.ndarray], name: str, entry: Any, shape: tuple[int, ...],
                   vdtype: str) -> SparseTensor:
    where = f"sparse tensor {name!r}"
    if not isinstance(entry, dict):
        raise _fail(path, f"{where}: header entry is not an object")
    if tuple(_require(path, entry, "shape", list, where)) != shape:
        raise _fail(path, f"{where}: shape {entry['shape']} does not match the model's {list(shape)}")
    numel = math.prod(shape)
    nnz = _require(path, entry, "nnz", int, where)
    if not 0 <= nnz <= numel:
        raise _fail(path, f"{where}: nnz {nnz} outside [0, {numel}]")
    encoding = _require(path, entry, "encoding", str, where)
    if encoding not in INDEX_DTYPES:
        raise _fail(path, f"{where}: unknown index encoding {encoding!r} (known: {sorted(INDEX_DTYPES)})")
    values = _checked_array(path, arrays, f"{name}.values", (vdtype,), (nnz,))
    index = arrays.get(f"{name}.index")
    if index is None or index.ndim != 1:
        raise _fail(path, f"{where}: missing or non-1-D index tensor '{name}.index'")
    if index.dtype != INDEX_DTYPES[encoding]:
        raise _fail(path, f"tensor '{name}.index': dtype {index.dtype.name}, {encoding} needs "
                          f"{INDEX_DTYPES[encoding].name}")
    if encoding == "bitmask":
        if index.size != -(-numel // 8):
            raise _fail(path, f"tensor '{name}.index': {index.size} bytes, a bitmask of {numel} entries "
                              f"needs {-(-numel // 8)}")
        if numel % 8 and index[-1] >> (numel % 8):
            raise _fail(path, f"tensor '{name}.index': padding bits set past entry {numel}")
    elif index.size and index[-1] == np.iinfo(index.dtype).max:
        raise _fail(path, f"tensor '{name}.index': ends with a skip token (truncated index?)")
    pos = _decode(index, encoding)
    if pos.size != nnz:
        raise _fail(path, f"{where}: nnz mismatch, header says {nnz} but the index encodes {pos.size}")
    if pos.size and pos[-1] >= numel:
        raise _fail(path, f"{where}: index out of range, position {int(pos[-1])} >= {numel} entries")
    return SparseTensor(shape, pos, values.astype(np.float32))


def _verify_checksums(path: Path, arrays: Mapping[str, np.ndarray], checksums: dict[str, Any]) -> None:
    """Version 3: a CRC-32 per stored tensor (name, dtype, shape, bytes), checked before decoding."""
    if set(checksums) != set(arrays):
        raise _fail(path, f"header: checksums list {sorted(set(checksums) ^ set(arrays))} that the file's "
                          "tensors do not (or the other way round)")
    for name, a in arrays.items():
        if checksums[name] != _crc(name, a):
            raise _fail(path, f"tensor {name!r}: checksum mismatch (corrupt file)")


def read_compact(path: str | Path) -> CompactModel:
    """Read and fully validate a `.pmp` file; raises ExportFormatError naming file and field."""
    path = Path(path)
    doc, arrays = _read_container(path)
    if doc.get("format") != FORMAT:
        raise _fail(path, f"format {doc.get('format')!r}, expected {FORMAT!r}")
    if doc.get("version") not in READABLE_VERSIONS:
        raise _fail(path, f"format version {doc.get('version')!r} not supported (this reader: "
                          f"{', '.join(map(str, READABLE_VERSIONS))})")
    if doc["version"] >= 3:
        _verify_checksums(path, arrays, _require(path, doc, "checksums", dict, "header"))
    codecs = _require(path, doc, "codecs", dict, "header") if doc["version"] >= 2 else {}
    for name, entry in codecs.items():
        if name not in arrays:
            raise _fail(path, f"codec entry for {name!r}, but the file has no such tensor")
        arrays[name] = _unpack(path, name, arrays[name], entry)
    vdtype = _require(path, doc, "dtype", str, "header")
    if vdtype not in _VALUE_DTYPES:
        raise _fail(path, f"header: dtype {vdtype!r} not one of {_VALUE_DTYPES}")
    spec = _require(path, doc, "config", dict, "header")
    model_name = _require(path, spec, "model", str, "config")
    kwargs = _require(path, spec, "kwargs", dict, "config")
    if model_name not in list_models():
        raise _fail(path, f"config: unknown model {model_name!r} (known: {', '.join(list_models())})")
    try:
        shapes = expected_shapes({"model": model_name, "kwargs": kwargs})
    except (TypeError, ValueError, RuntimeError) as e:  # RuntimeError: e.g. a negative size
        raise _fail(path, f"config: kwargs {kwargs} do not build {model_name!r} ({e})") from e
    try:  # before anything of that size is allocated
        check_allocation(f"the model its config describes ({sum(map(math.prod, shapes.values()))} weights)",
                         4 * sum(map(math.prod, shapes.values())))
    except AllocationError as e:
        raise _fail(path, f"config: {e}") from None
    sparse_doc = _require(path, doc, "sparse", dict, "header")
    for name in sparse_doc:
        if name not in shapes:
            raise _fail(path, f"sparse tensor {name!r}: the model has no such tensor")
    sparse = {name: _sparse_tensor(path, arrays, name, sparse_doc[name], shapes[name], vdtype) for name in sparse_doc}
    dense = {name: _checked_array(path, arrays, name, (vdtype,), shape).astype(np.float32)
             for name, shape in shapes.items() if name not in sparse}
    known = set(dense) | {f"{n}.{part}" for n in sparse for part in ("values", "index")}
    extra = sorted(set(arrays) - known)
    if extra:
        raise _fail(path, f"unexpected tensors {extra}")
    return CompactModel(path, spec, dense, sparse)
