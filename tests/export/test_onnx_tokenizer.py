"""ECG tokenizer -> ONNX: identical indices to torch on real PTB-XL records, for a tokenizer
with frame tokens only and for one with diagnostic summary tokens (signal + measurements in)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from builders import SUMMARY, fixture_model_inputs, random_ecg_tokenizer, summary_code_ranges

from diagecg.config import EncoderConfig, FSQConfig, PreprocessConfig
from diagecg.constants import ONNX_INPUT_FEATURES, ONNX_INPUT_SIGNAL, ONNX_OUTPUT_INDICES
from diagecg.errors import BundleError

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from diagecg.bundle import check_onnx_io  # noqa: E402
from diagecg.errors import ExportError  # noqa: E402
from diagecg.export.onnx_tokenizer import (  # noqa: E402
    check_onnx_parity,
    conv1d_as_conv2d,
    export_index_module,
    export_onnx_tokenizer,
    run_onnx_indices,
)
from diagecg.features import FEATURE_NAMES  # noqa: E402
from diagecg.io import read_record  # noqa: E402
from diagecg.nn.ecg_tokenizer import EcgTokenizer  # noqa: E402
from diagecg.preprocess import model_inputs  # noqa: E402

PREPROCESS = PreprocessConfig(fs_hz=100)  # the "100hz" preset
ENCODER = EncoderConfig(
    n_samples=PREPROCESS.n_samples,
    stem_channels=8,
    stage_channels=(8, 16, 16, 32),
    groups=4,
    fused_channels=32,
)
N_SUMMARY = SUMMARY.n_tokens  # 3 summary tokens before the 63 frames


@pytest.fixture(scope="module")
def inputs(ptbxl_root: Path) -> tuple[np.ndarray, np.ndarray]:
    """Signals and measurements of 16 real PTB-XL records + the 5 fixture records (500 Hz, .mat...)."""
    heads = sorted((ptbxl_root / "records100" / "00000").glob("*_lr.hea"))[:16]
    assert len(heads) == 16
    pairs = [model_inputs(read_record(h), PREPROCESS) for h in heads]
    signals, features = fixture_model_inputs(PREPROCESS)
    return (
        np.concatenate([np.stack([p[0] for p in pairs]), signals]),  # (21, 12, 1000)
        np.concatenate([np.stack([p[1] for p in pairs]), features]),
    )  # (21, M)


@pytest.fixture(scope="module")
def records(inputs: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return inputs[0][:16]  # (16, 12, 1000)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[EcgTokenizer, Path]:
    torch.manual_seed(0)
    tok = EcgTokenizer(ENCODER, FSQConfig()).eval()
    path = export_onnx_tokenizer(tok, PREPROCESS.n_samples, tmp_path_factory.mktemp("onnx") / "enc.onnx")
    return tok, path


@pytest.fixture(scope="module")
def exported_summary(tmp_path_factory: pytest.TempPathFactory) -> tuple[EcgTokenizer, Path]:
    torch.manual_seed(0)
    tok = random_ecg_tokenizer(ENCODER, FSQConfig(), SUMMARY, PREPROCESS)
    path = export_onnx_tokenizer(tok, PREPROCESS.n_samples, tmp_path_factory.mktemp("onnx_s") / "enc.onnx")
    return tok, path


def test_onnx_indices_equal_torch_on_real_records(exported, records: np.ndarray) -> None:
    tok, path = exported
    r = check_onnx_parity(tok, path, records, max_mismatch=0.0)
    assert r["n_records"] == 16 and r["n_codes"] == 16 * ENCODER.n_frames
    assert r["code_agreement"] == 1.0 and r["records_identical"] == 1.0 and r["max_abs_index_diff"] == 0
    assert r["n_summary_codes"] == 0 and r["summary_agreement"] == 1.0
    codes = run_onnx_indices(path, records)
    assert codes.dtype == np.int64 and codes.shape == (16, 63)
    assert len(np.unique(codes)) > 20  # real signals use many of the 1296 codes, not a constant


def test_onnx_with_summary_equals_torch_encode_on_real_records(
    exported_summary, inputs: tuple[np.ndarray, np.ndarray]
) -> None:
    tok, path = exported_summary
    signals, features = inputs
    got = run_onnx_indices(path, signals, features)
    with torch.no_grad():
        want = tok.encode(torch.from_numpy(signals), torch.from_numpy(features)).numpy()
    assert got.dtype == np.int64 and got.shape == (21, N_SUMMARY + 63) == want.shape
    np.testing.assert_array_equal(got, want)
    # summary first: finding f at level l is code 1296 + 4 f + l, then the measurement bins; then frames
    first, size = map(np.array, summary_code_ranges(SUMMARY))
    assert ((got[:, :N_SUMMARY] >= first) & (got[:, :N_SUMMARY] < first + size)).all()
    assert (got[:, N_SUMMARY:] < 1296).all()
    assert len({tuple(row) for row in got[:, :N_SUMMARY]}) > 1  # the levels follow the record
    r = check_onnx_parity(tok, path, signals, features, max_mismatch=0.0)
    assert r["n_codes"] == 21 * 63 and r["n_summary_codes"] == 21 * N_SUMMARY
    assert r["code_agreement"] == r["summary_agreement"] == r["records_identical"] == 1.0
    assert r["max_summary_level_diff"] == 0
    # the measurements really are an input: other measurements, other summary codes, same frames
    moved = run_onnx_indices(path, signals, features[::-1].copy())
    assert np.array_equal(moved[:, N_SUMMARY:], got[:, N_SUMMARY:])
    assert not np.array_equal(moved[:, :N_SUMMARY], got[:, :N_SUMMARY])


def test_onnx_file_is_single_fp32_graph_with_dynamic_batch(exported, records: np.ndarray) -> None:
    tok, path = exported
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no external data file
    model = onnx.load(str(path))
    assert model.opset_import[0].version >= 17
    assert not any(i.data_location == onnx.TensorProto.EXTERNAL for i in model.graph.initializer)
    # the whole graph stays float32 (no int8 weights: they would move FSQ latents across bin edges)
    assert {i.data_type for i in model.graph.initializer} <= {onnx.TensorProto.FLOAT, onnx.TensorProto.INT64}
    check_onnx_io(path, ENCODER)
    assert [i.name for i in model.graph.input] == [ONNX_INPUT_SIGNAL]
    assert [o.name for o in model.graph.output] == [ONNX_OUTPUT_INDICES]
    one, three = run_onnx_indices(path, records[:1]), run_onnx_indices(path, records[:3])
    assert one.shape == (1, 63) and three.shape == (3, 63) and np.array_equal(one[0], three[0])
    with torch.no_grad():
        want = tok.encode(torch.from_numpy(records[:3])).numpy()
    assert np.array_equal(three, want)
    with pytest.raises(BundleError, match=r"inputs are \['signal'\], expected \['signal', 'features'\]"):
        check_onnx_io(path, ENCODER, SUMMARY)


def test_summary_graph_takes_signal_and_features_with_dynamic_batch(
    exported_summary, inputs: tuple[np.ndarray, np.ndarray]
) -> None:
    tok, path = exported_summary
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == [ONNX_INPUT_SIGNAL, ONNX_INPUT_FEATURES]
    dims = [d.dim_value or d.dim_param for d in model.graph.input[1].type.tensor_type.shape.dim]
    assert isinstance(dims[0], str) and dims[1] == len(FEATURE_NAMES)
    assert {i.data_type for i in model.graph.initializer} <= {onnx.TensorProto.FLOAT, onnx.TensorProto.INT64}
    # the decoder is reconstruction only: none of its weights are in the file
    floats = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT]
    n_index_weights = sum(p.numel() for n, p in tok.named_parameters() if not n.startswith("decoder."))
    assert sum(int(np.prod(i.dims)) for i in floats) < n_index_weights + 1000
    check_onnx_io(path, ENCODER, SUMMARY)
    with pytest.raises(BundleError, match=r"expected \['signal'\] \(a tokenizer without summary"):
        check_onnx_io(path, ENCODER)
    signals, features = inputs
    one, three = (run_onnx_indices(path, signals[:n], features[:n]) for n in (1, 3))
    n = N_SUMMARY + 63
    assert one.shape == (1, n) and three.shape == (3, n) and np.array_equal(one[0], three[0])


def test_conv2d_copy_computes_the_same_latents_and_the_graph_has_only_2d_convolutions(
    exported, exported_summary, records: np.ndarray, inputs: tuple[np.ndarray, np.ndarray]
) -> None:
    tok, path = exported
    module = tok.index_module()
    image = export_index_module(tok)
    x = torch.from_numpy(records[:4])
    with torch.no_grad():
        torch.testing.assert_close(image.tokenizer.encoder(x), tok.encoder(x), atol=1e-5, rtol=1e-5)
        assert torch.equal(image(x), module(x))
    kinds = {type(m) for m in image.modules()}
    assert torch.nn.Conv1d not in kinds and torch.nn.MaxPool1d not in kinds and torch.nn.Conv2d in kinds
    assert torch.nn.ConvTranspose1d not in kinds  # the decoder is left out
    assert {type(m) for m in tok.modules()} >= {torch.nn.Conv1d, torch.nn.MaxPool1d}  # the original is kept
    assert tok.encoder.unit_dims == () and image.tokenizer.encoder.unit_dims == (1,)
    with pytest.raises(ValueError, match="2-D"):
        conv1d_as_conv2d(tok.decoder)  # ConvTranspose1d has no such rewrite here

    model = onnx.load(str(path))
    weights = {i.name: list(i.dims) for i in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert convs and all(len(weights[n.input[1]]) == 4 for n in convs)

    tok_s, _ = exported_summary  # the summary head pools the (B, C, 1, T) fused features alike
    f = torch.from_numpy(inputs[1][:4])
    with torch.no_grad():
        assert torch.equal(export_index_module(tok_s)(x, f), tok_s.index_module()(x, f))


def test_parity_check_raises_on_a_different_model(exported, records: np.ndarray) -> None:
    _, path = exported
    torch.manual_seed(1)
    other = EcgTokenizer(ENCODER, FSQConfig()).eval()
    r = check_onnx_parity(other, path, list(records[:4]))
    assert r["code_agreement"] < 0.5
    with pytest.raises(ExportError, match="ONNX codes differ from torch"):
        check_onnx_parity(other, path, records[:4], max_mismatch=0.01)


def test_parity_reports_summary_codes_separately(
    exported_summary, inputs: tuple[np.ndarray, np.ndarray]
) -> None:
    tok, path = exported_summary
    signals, features = inputs
    other = copy.deepcopy(tok)  # same encoder, another summary head
    with torch.no_grad():
        other.summary.mlp[-1].weight.neg_()
    r = check_onnx_parity(other, path, signals, features)
    assert r["code_agreement"] == 1.0 and r["summary_agreement"] < 1.0 and r["records_identical"] < 1.0
    assert 1 <= r["max_summary_level_diff"] <= 3
    with pytest.raises(ExportError, match="ONNX summary codes differ from torch"):
        check_onnx_parity(other, path, signals, features, max_mismatch=0.001)
    with pytest.raises(ValueError, match="measurements"):
        check_onnx_parity(tok, path, signals)
