"""The .pmp export: round trips against the masked dense model, every rejection path, no pickle."""

from __future__ import annotations

import hashlib
import json
import zlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.numpy import load_file as load_np
from safetensors.numpy import save_file as save_np
from safetensors.torch import save_file

from pmp.export import ExportFormatError, export_run, load_sparse, predict, read_compact, save_compact
from pmp.export import format as fmt
from pmp.export import sparse
from pmp.export.bench import AGCN_DEFAULT, _alternating_times, _layer_inputs, bench_inference, magnitude_prune, run_benchmark
from pmp.export.format import META_KEY, _decode, _encode, index_sizes
from pmp.models import create_model

SMALL = dict(num_nodes=40, in_frames=7, in_channels=2, num_classes=5, heads=3, attn_dim=5, gc_dim=3, hidden=37)


def _model(kwargs: dict, seed: int = 0) -> torch.nn.Module:
    """A model with non-trivial BatchNorm statistics, so that folding them is actually tested."""
    torch.manual_seed(seed)
    model = create_model("agcn", **kwargs).eval()
    with torch.no_grad():
        for bn in (model.data_bn, model.gc_bn):
            bn.running_mean.normal_(0, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.normal_(1.0, 0.2)
            bn.bias.normal_(0.0, 0.2)
    return model


def _run_dir(tmp: Path, kwargs: dict, rate: float) -> tuple[Path, torch.nn.Module]:
    """A finished training run folder as the trainer writes it (masks saved as uint8)."""
    model = _model(kwargs)
    masks = magnitude_prune(model, rate)
    run = tmp / f"run_{rate:g}"
    run.mkdir()
    spec = {"model": "agcn", "kwargs": kwargs, "class_names": [f"c{i}" for i in range(kwargs["num_classes"])],
            "preprocess": {"frames": kwargs["in_frames"]}, "dataset": "synthetic", "method": "mp", "rate": rate}
    (run / "model.json").write_text(json.dumps(spec))
    save_file(model.state_dict(), str(run / "model.safetensors"))
    save_file({k: v.to(torch.uint8) for k, v in masks.items()}, str(run / "masks.safetensors"))
    (run / "metrics.json").write_text("{}")
    return run, model


def _close(model: torch.nn.Module, module: torch.nn.Module, batch: int, seed: int = 1) -> float:
    x = torch.randn(batch, *module.input_shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return float((model(x) - module(x)).abs().max())


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[float, tuple[Path, torch.nn.Module]]:
    tmp = tmp_path_factory.mktemp("runs")
    out = {}
    for rate in (0.0, 0.5, 0.9, 0.99):
        run, model = _run_dir(tmp, AGCN_DEFAULT, rate)
        out[rate] = export_run(run, tmp / f"agcn_{rate:g}.pmp"), model
    return out


@pytest.mark.parametrize("rate", [0.0, 0.5, 0.9, 0.99])
@pytest.mark.parametrize("batch", [1, 64])
def test_round_trip_matches_masked_dense(exported, rate, batch):
    path, model = exported[rate]
    module = load_sparse(path)
    assert not module.training and not list(module.parameters())
    assert _close(model, module, batch) < 1e-5


def test_round_trip_odd_sizes(tmp_path):
    """More nodes than one vector of lanes, sizes that are no multiple of 4, partial last tile."""
    run, model = _run_dir(tmp_path, SMALL, 0.7)
    module = load_sparse(export_run(run, tmp_path / "small.pmp"))
    for batch in (1, 3, 17, 40):
        assert _close(model, module, batch, seed=batch) < 1e-5


@settings(max_examples=15, deadline=None)
@given(nodes=st.integers(1, 50), frames=st.integers(1, 9), chans=st.integers(1, 3), heads=st.integers(1, 4),
       adim=st.integers(1, 9), gdim=st.integers(1, 9), batch=st.sampled_from([1, 2, 17, 33, 70]),
       seed=st.integers(0, 9))
def test_sparse_runtime_matches_dense_for_any_size(tmp_path_factory, nodes, frames, chans, heads, adim, gdim, batch,
                                                   seed):
    """Every tile layout and vector edge (nodes not a multiple of 8, partial chunks and tiles) for
    any architecture size a config can ask for."""
    kwargs = dict(num_nodes=nodes, in_frames=frames, in_channels=chans, num_classes=4, heads=heads, attn_dim=adim,
                  gc_dim=gdim, hidden=11)
    model = _model(kwargs, seed)
    masks = magnitude_prune(model, 0.8)
    path = save_compact(model, {"model": "agcn", "kwargs": kwargs}, masks, tmp_path_factory.mktemp("any") / "m.pmp")
    assert _close(model, load_sparse(path), batch, seed=seed) < 1e-5


def test_pruned_classifier_round_trip(tmp_path):
    """With `exclude_last=False` the classifier is stored sparse too; batches of one tile and of
    several (the multi-threaded fc) match the masked dense model."""
    model = _model(AGCN_DEFAULT)
    masks = magnitude_prune(model, 0.99, exclude_last=False)
    path = save_compact(model, {"model": "agcn", "kwargs": AGCN_DEFAULT}, masks, tmp_path / "all.pmp")
    assert "classifier.weight" in read_compact(path).sparse
    module = load_sparse(path)
    for batch in (1, 17, 64):
        assert _close(model, module, batch, seed=batch) < 1e-5


def test_stored_tensors_are_the_masked_weights(exported):
    path, model = exported[0.9]
    compact = read_compact(path)
    assert set(compact.sparse) == {"query.weight", "key.weight", "gc.weight", "fc.weight"}
    for name, t in compact.sparse.items():
        w = model.get_parameter(name).detach().numpy()
        np.testing.assert_array_equal(t.dense(), w)
        assert t.values.size == np.count_nonzero(w)
    assert compact.spec["class_names"][0] == "c0" and compact.spec["rate"] == 0.9


def test_fully_dense_layer_is_stored_dense(tmp_path):
    model = _model(AGCN_DEFAULT)
    masks = magnitude_prune(model, 0.95)
    masks["fc.weight"] = torch.ones_like(masks["fc.weight"])  # fc left dense, its weights restored
    with torch.no_grad():
        model.fc.weight.copy_(_model(AGCN_DEFAULT).fc.weight)
    path = save_compact(model, {"model": "agcn", "kwargs": AGCN_DEFAULT}, masks, tmp_path / "m.pmp")
    compact = read_compact(path)
    assert "fc.weight" in compact.dense and "fc.weight" not in compact.sparse
    assert "query.weight" in compact.sparse
    module = load_sparse(path)
    for batch in (1, 64):
        assert _close(model, module, batch) < 1e-5


def test_file_is_much_smaller_than_dense(exported, tmp_path):
    dense = tmp_path / "dense.safetensors"
    save_file(exported[0.0][1].state_dict(), str(dense))
    sizes = {rate: path.stat().st_size for rate, (path, _) in exported.items()}
    assert sizes[0.0] < dense.stat().st_size  # no running statistics, BatchNorm folded
    assert sizes[0.9] * 5 < dense.stat().st_size
    assert sizes[0.99] * 20 < dense.stat().st_size


def test_fp16_halves_the_file(exported, tmp_path):
    path, model = exported[0.99]
    masks = {k: torch.from_numpy(v.dense() != 0) for k, v in read_compact(path).sparse.items()}
    half = save_compact(model, {"model": "agcn", "kwargs": AGCN_DEFAULT}, masks, tmp_path / "h.pmp", fp16=True)
    assert half.stat().st_size < 0.6 * path.stat().st_size
    assert _close(model, load_sparse(half), 4) < 1e-2


@pytest.mark.parametrize("encoding", ["bitmask", "delta8", "delta16"])
def test_index_encodings_round_trip(encoding):
    rng = np.random.default_rng(0)
    n = 200_003
    cases = [np.zeros(n, bool), np.ones(n, bool), rng.random(n) < 0.01, rng.random(n) < 0.5]
    gaps = np.zeros(n, bool)
    gaps[[0, 300, 70_000, n - 1]] = True  # gaps past both escape values
    for mask in cases + [gaps]:
        np.testing.assert_array_equal(_decode(_encode(mask, encoding), encoding), np.flatnonzero(mask))


def test_encoding_choice_follows_size():
    rng = np.random.default_rng(0)
    dense_ish, sparse = rng.random(100_000) < 0.5, rng.random(100_000) < 0.02
    assert min(index_sizes(dense_ish), key=index_sizes(dense_ish).get) == "bitmask"
    assert min(index_sizes(sparse), key=index_sizes(sparse).get) == "delta8"


def test_predict_single_and_batch(exported):
    module = load_sparse(exported[0.9][0])
    x = np.random.default_rng(0).standard_normal((3, *module.input_shape)).astype(np.float32)
    logits = predict(module, x)
    assert logits.shape == (3, AGCN_DEFAULT["num_classes"])
    np.testing.assert_allclose(predict(module, x[1]), logits[1], atol=1e-6)
    with pytest.raises(ValueError, match="expected input"):
        module.run(x[:, :5])


def test_bench_inference_reports_sizes_and_speedups(exported):
    path, model = exported[0.99]
    res = bench_inference(model, load_sparse(path), batch_sizes=(1, 4), repeats=2, block=3)
    assert res["size_ratio"] > 20 and res["sparse_bytes"] == path.stat().st_size and res["block"] == 3
    keys = {"layers_speedup", "model_speedup", "dense_unpruned_share", "sparse_unpruned_share", "sparse_layers_us"}
    for b in ("batch1", "batch4"):
        assert keys <= set(res[b]) and keys <= set(res[b]["interleaved"])


def _tile_column(module, batch: int, sample: int, node: int) -> tuple[int, int]:
    """(tile, column) of a sample's node in the runtime's q|k|gc tiles: node lanes (samples side by
    side) below BATCH_LANES samples, else batch lanes ((chunk, node, lane))."""
    nodes = module.input_shape[1]
    lanes, lane_layout = module._tiles(batch)
    s = sample % lanes
    if not lane_layout:
        return sample // lanes, s * nodes + node
    return sample // lanes, (s // sparse.WIDTH) * nodes * sparse.WIDTH + node * sparse.WIDTH + s % sparse.WIDTH


@pytest.mark.parametrize("batch", [1, 20, 40, 64])
def test_benchmarked_sparse_layers_compute_the_dense_layers(exported, batch):
    """What `pmp bench-inference` times as the pruned layers is those layers' real output."""
    path, model = exported[0.9]
    module = load_sparse(path)
    layers = [model.query, model.key, model.gc, model.fc]
    x = torch.randn(batch, *module.input_shape, generator=torch.Generator().manual_seed(3))
    dense_in = _layer_inputs(model, layers, x)
    with torch.no_grad():
        q, k, g, fc = (m(i).numpy() for m, i in zip(layers, dense_in))
    qkv, out = module.pruned_layers(*module.layer_inputs(x.numpy()))
    lanes = module._tiles(batch)[0]  # fc's output, one (features, columns) array per tile
    out = np.concatenate([o[:, :lanes] for o in out], axis=1)
    np.testing.assert_allclose(out[:, :batch].T, fc, rtol=1e-5, atol=1e-5)
    expected = np.concatenate([q / np.sqrt(module.adim), k, g], axis=2)  # the query rows carry 1/sqrt(d)
    for sample in range(batch):
        for node in range(module.input_shape[1]):
            tile, col = _tile_column(module, batch, sample, node)
            np.testing.assert_allclose(qkv[tile][:, col], expected[sample, node], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("block", [1, 3])
def test_alternating_times_skips_the_switch_only_in_blocks(block, monkeypatch):
    """Functions take turns in blocks; a call right after a switch costs 1,000 fake ns, any other
    1. In blocks, the first call of each is not timed (steady state); call by call, all are."""
    clock, last = [0], [None]

    def fn(name):
        def call():
            clock[0] += 1 if last[0] == name else 1000
            last[0] = name
        return call

    monkeypatch.setattr("pmp.export.bench.time.perf_counter_ns", lambda: clock[0])
    times = _alternating_times({"a": fn("a"), "b": fn("b")}, repeats=5, block=block, warmup=0)
    assert {k: len(v) for k, v in times.items()} == {"a": 5, "b": 5}
    expected_us = 0.001 if block > 1 else 1.0
    assert all(np.all(v == expected_us) for v in times.values())


# ---------------------------------------------------------------- rejections


def _rewrite(src: Path, dst: Path, tensors=None, meta=None) -> Path:
    """Copy a .pmp file with some tensors and/or metadata fields replaced."""
    arrays = load_np(str(src))
    with safe_open(str(src), "np") as f:
        doc = json.loads(f.metadata()[META_KEY])
    arrays.update(tensors or {})
    for k, v in (meta or {}).items():
        if v is None:
            doc.pop(k)
        else:
            doc[k] = v
    arrays = {k: v for k, v in arrays.items() if v is not None}
    if "checksums" in doc and "checksums" not in (meta or {}):  # re-sealed: the checks below see the edit itself
        doc["checksums"] = {k: fmt._crc(k, v) for k, v in arrays.items()}
    text = json.dumps(doc)
    save_np(arrays, str(dst), metadata={META_KEY: text, fmt.SEAL_KEY: hashlib.sha256(text.encode()).hexdigest()})
    return dst


def _read_sparse(path: Path) -> dict:
    with safe_open(str(path), "np") as f:
        return json.loads(f.metadata()[META_KEY])["sparse"]


@pytest.fixture
def good(exported, tmp_path) -> Path:
    """An uncompressed file: the validation below sees the stored tensors as they are decoded."""
    path = exported[0.99][0]
    model = exported[0.99][1]
    compact = read_compact(path)
    masks = {n: torch.from_numpy(t.dense() != 0) for n, t in compact.sparse.items()}
    return save_compact(model, compact.spec, masks, tmp_path / "raw.pmp", compress=False)


def _rejects(path: Path, *fragments: str) -> None:
    with pytest.raises(ExportFormatError) as e:
        load_sparse(path)
    assert str(path) in str(e.value)
    for frag in fragments:
        assert frag in str(e.value), str(e.value)


def test_rejects_missing_file(tmp_path):
    _rejects(tmp_path / "nope.pmp", "no such file")


@pytest.mark.parametrize("keep", [0, 5, 100, -1000, -1])
def test_rejects_truncated_file(good, tmp_path, keep):
    data = good.read_bytes()
    cut = tmp_path / "cut.pmp"
    cut.write_bytes(data[:keep])
    _rejects(cut, "truncated")


def test_rejects_corrupt_header_json(good, tmp_path):
    data = bytearray(good.read_bytes())
    data[8] = ord("x")  # the header's opening brace
    bad = tmp_path / "bad.pmp"
    bad.write_bytes(bytes(data))
    _rejects(bad, "header is not valid JSON")


def test_rejects_corrupt_metadata_json(good, tmp_path):
    arrays = load_np(str(good))
    bad = tmp_path / "bad.pmp"
    save_np(arrays, str(bad), metadata={META_KEY: "{not json"})
    _rejects(bad, f"metadata '{META_KEY}' is not valid JSON")


@pytest.mark.parametrize("field", ["sparse", "config", "dtype"])
def test_rejects_missing_required_field(good, tmp_path, field):
    _rejects(_rewrite(good, tmp_path / "bad.pmp", meta={field: None}), f"missing required field '{field}'")


def test_rejects_foreign_safetensors(exported, tmp_path):
    plain = tmp_path / "plain.pmp"
    save_file(exported[0.9][1].state_dict(), str(plain))
    _rejects(plain, "not a .pmp export")


def test_rejects_index_out_of_range(good, tmp_path):
    entry = _read_sparse(good)["fc.weight"]
    arrays = load_np(str(good))
    index = np.concatenate([arrays["fc.weight.index"], np.full(5000, 255, np.uint8), [0]]).astype(np.uint8)
    values = np.append(arrays["fc.weight.values"], np.float32(1.0))
    bad = _rewrite(good, tmp_path / "bad.pmp", {"fc.weight.index": index, "fc.weight.values": values},
                   {"sparse": {**_read_sparse(good), "fc.weight": {**entry, "nnz": entry["nnz"] + 1}}})
    _rejects(bad, "sparse tensor 'fc.weight'", "index out of range")


def test_rejects_nnz_mismatch(good, tmp_path):
    entry = _read_sparse(good)["key.weight"]
    values = load_np(str(good))["key.weight.values"][:-1]
    bad = _rewrite(good, tmp_path / "bad.pmp", {"key.weight.values": values},
                   {"sparse": {**_read_sparse(good), "key.weight": {**entry, "nnz": entry["nnz"] - 1}}})
    _rejects(bad, "sparse tensor 'key.weight'", "nnz mismatch")


def test_rejects_values_count_not_nnz(good, tmp_path):
    values = load_np(str(good))["gc.weight.values"][:-1]
    _rejects(_rewrite(good, tmp_path / "bad.pmp", {"gc.weight.values": values}), "gc.weight.values", "shape")


def test_rejects_wrong_shapes(good, tmp_path):
    entry = _read_sparse(good)["fc.weight"]
    bad = _rewrite(good, tmp_path / "a.pmp", meta={"sparse": {**_read_sparse(good), "fc.weight": {**entry, "shape": [10, 10]}}})
    _rejects(bad, "sparse tensor 'fc.weight'", "does not match the model's [384, 2688]")
    bias = np.zeros(7, np.float32)
    _rejects(_rewrite(good, tmp_path / "b.pmp", {"classifier.bias": bias}), "classifier.bias", "shape [7]")


def test_rejects_wrong_dtype(good, tmp_path):
    values = load_np(str(good))["fc.weight.values"].astype(np.float64)
    _rejects(_rewrite(good, tmp_path / "bad.pmp", {"fc.weight.values": values}), "fc.weight.values", "dtype")


def test_rejects_unknown_and_extra_content(good, tmp_path):
    cfg = read_compact(good).spec
    _rejects(_rewrite(good, tmp_path / "a.pmp", meta={"config": {**cfg, "model": "nope"}}), "unknown model 'nope'")
    extra = {"stray": np.zeros(3, np.float32)}
    _rejects(_rewrite(good, tmp_path / "b.pmp", extra), "unexpected tensors ['stray']")
    _rejects(_rewrite(good, tmp_path / "c.pmp", {"fc.bias": None}), "missing tensor 'fc.bias'")


def test_never_unpickles(good, tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used")

    payload = tmp_path / "pickled.pmp"
    payload.write_bytes(pickle.dumps({"fc.weight": np.ones(3)}))
    zipped = tmp_path / "torch.pmp"
    torch.save({"w": torch.ones(3)}, zipped)
    for mod, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")):
        monkeypatch.setattr(mod, name, forbidden)
    load_sparse(good)
    _rejects(payload)
    _rejects(zipped)


def test_save_refuses_unfinalised_model(tmp_path):
    model = _model(SMALL)
    masks = magnitude_prune(model, 0.5)
    masks["fc.weight"][0, :] = False  # weights there are not zero
    with pytest.raises(ValueError, match="non-zero weights outside the mask"):
        save_compact(model, {"model": "agcn", "kwargs": SMALL}, masks, tmp_path / "m.pmp")


def test_export_run_needs_a_finished_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.json"):
        export_run(tmp_path, tmp_path / "m.pmp")


def test_run_benchmark_writes_the_result_file(tmp_path):
    """`pmp bench-inference` / benchmarks/inference.py: the fields the issue asks for, the parity of
    every exported variant, and the sizes (deterministic for a seed; timings are not asserted)."""
    out = tmp_path / "inference.json"
    res = run_benchmark([0.99], out, repeats=3)
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    r = res["0.99"]
    for b in ("batch1", "batch64"):
        assert r[b]["layers_speedup"] > 0 and r[b]["model_speedup"] > 0
        # both sides are rounded (the speedup to 2 decimals): a small ratio needs the absolute slack
        assert r[b]["ort_model_speedup"] == pytest.approx(r[b]["ort_model_us"] / r[b]["sparse_model_us"], rel=0.01, abs=0.006)
    assert r["ort_max_abs_diff"] < 1e-5 and r["onnx_bytes"] > r["dense_bytes"] / 2
    assert r["max_abs_diff"] < 1e-5 and r["all_layers"]["max_abs_diff"] < 1e-5
    assert r["size_ratio"] == round(r["dense_bytes"] / r["sparse_bytes"], 2)
    # the dense classifier caps the default export; pruned too, the file is 1% of the weights
    assert 20 < r["size_ratio"] < r["all_layers"]["size_ratio"]
    assert r["all_layers"]["size_ratio"] >= 45


def _codecs(path: Path) -> dict:
    with safe_open(str(path), "np") as f:
        return json.loads(f.metadata()[META_KEY])["codecs"]


def test_compression_is_lossless_and_smaller(exported, good):
    packed, raw = exported[0.99][0], good
    assert packed.stat().st_size < 0.95 * raw.stat().st_size
    assert "fc.weight.values" in _codecs(packed) and _codecs(raw) == {}
    a, b = read_compact(packed), read_compact(raw)
    assert a.dense.keys() == b.dense.keys() and a.sparse.keys() == b.sparse.keys()
    for k in a.dense:
        np.testing.assert_array_equal(a.dense[k], b.dense[k])
    for k in a.sparse:
        np.testing.assert_array_equal(a.sparse[k].positions, b.sparse[k].positions)
        np.testing.assert_array_equal(a.sparse[k].values, b.sparse[k].values)


def test_reads_version_1_files(good, tmp_path):
    v1 = _rewrite(good, tmp_path / "v1.pmp", meta={"version": 1, "codecs": None})
    assert read_compact(v1).sparse.keys() == read_compact(good).sparse.keys()


def _tamper(src: Path, dst: Path, name: str, fn) -> Path:
    """Copy a compressed .pmp with the stored (packed) bytes of `name` passed through fn, checksums
    recomputed: what the codec's own checks catch (version 2 files have no checksums)."""
    return _rewrite(src, dst, tensors={name: fn(load_np(str(src))[name])})


@pytest.mark.parametrize("how, message", [
    (lambda a: a[: len(a) // 2], "does not inflate to exactly"),
    (lambda a: np.concatenate([a[:2], a[2:] ^ np.uint8(0x5A)]), "compressed data"),
    (lambda a: np.frombuffer(zlib.compress(b"\0" * 10_000_000), np.uint8), "does not inflate to exactly"),
])
def test_rejects_corrupt_compressed_tensor(exported, tmp_path, how, message):
    """Truncated, bit-flipped, or inflating to more than declared (inflation stops at the declared
    size: a small file cannot make the loader allocate gigabytes)."""
    _rejects(_tamper(exported[0.99][0], tmp_path / "bad.pmp", "fc.weight.values", how), "fc.weight.values", message)


def test_rejects_bad_codec_entries(exported, tmp_path):
    src = exported[0.99][0]
    codecs = _codecs(src)
    entry = codecs["fc.weight.values"]
    _rejects(_rewrite(src, tmp_path / "a.pmp", meta={"codecs": {**codecs, "fc.weight.values": {**entry, "codec": "lz9"}}}),
             "unknown codec 'lz9'")
    _rejects(_rewrite(src, tmp_path / "b.pmp", meta={"codecs": {**codecs, "ghost": entry}}), "'ghost'", "no such tensor")
    _rejects(_rewrite(src, tmp_path / "c.pmp", meta={"codecs": {**codecs, "fc.weight.values": {**entry, "shape": [-1]}}}),
             "bad codec shape")
    _rejects(_rewrite(src, tmp_path / "d.pmp", meta={"codecs": None}), "missing required field 'codecs'")


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["fpha", "sbu"])
def test_sparse_runtime_on_real_sequences(data_root, tmp_path, name):
    """The real datasets' preprocessed sequences (joint counts 21 and 30, every batch layout as
    `pmp predict` feeds them, with the input features of the dataset's default config) give the
    masked dense model's logits."""
    from pmp.data import load_dataset, preprocess
    from pmp.training.config import load_config

    ds = load_dataset(name, data_root)
    x = preprocess(ds, load_config(Path(__file__).parents[1] / "configs" / f"{name}.yaml").preprocess)
    x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:300]]
    kwargs = dict(num_nodes=x.shape[2], in_frames=x.shape[1], in_channels=x.shape[3], num_classes=ds.num_classes, heads=4,
                  attn_dim=8, gc_dim=8, hidden=64)
    model = _model(kwargs)
    masks = magnitude_prune(model, 0.98)
    module = load_sparse(save_compact(model, {"model": "agcn", "kwargs": kwargs}, masks, tmp_path / f"{name}.pmp"))
    for batch in (1, 7, 20, 33, 300):
        with torch.no_grad():
            dense, sparse_out = model(x[:batch]), module(x[:batch])
        scale = max(1.0, float(dense.abs().max()))
        assert float((dense - sparse_out).abs().max()) < 1e-5 * scale
        assert torch.equal(dense.argmax(1), sparse_out.argmax(1))
