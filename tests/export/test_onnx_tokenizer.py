"""ECG tokenizer -> ONNX: identical FSQ indices to torch on real PTB-XL records (STYLE R12)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from diagecg.config import EncoderConfig, FSQConfig, PreprocessConfig
from diagecg.constants import ONNX_INPUT_SIGNAL, ONNX_OUTPUT_INDICES

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from diagecg.bundle import check_onnx_io  # noqa: E402
from diagecg.errors import ExportError  # noqa: E402
from diagecg.export.onnx_tokenizer import (  # noqa: E402
    check_onnx_parity,
    conv1d_as_conv2d,
    export_onnx_tokenizer,
    run_onnx_indices,
)
from diagecg.io import read_record  # noqa: E402
from diagecg.nn.ecg_tokenizer import EcgTokenizer  # noqa: E402
from diagecg.preprocess import preprocess  # noqa: E402

PREPROCESS = PreprocessConfig(fs_hz=100)  # the "100hz" preset
ENCODER = EncoderConfig(n_samples=PREPROCESS.n_samples, stem_channels=8, stage_channels=(8, 16, 16, 32),
                        groups=4, fused_channels=32)


@pytest.fixture(scope="module")
def records(ptbxl_root: Path) -> np.ndarray:
    heads = sorted((ptbxl_root / "records100" / "00000").glob("*_lr.hea"))[:16]
    assert len(heads) == 16
    return np.stack([preprocess(read_record(h), PREPROCESS) for h in heads])  # (16, 12, 1000)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[EcgTokenizer, Path]:
    torch.manual_seed(0)
    tok = EcgTokenizer(ENCODER, FSQConfig()).eval()
    path = export_onnx_tokenizer(tok, PREPROCESS.n_samples, tmp_path_factory.mktemp("onnx") / "enc.onnx")
    return tok, path


def test_onnx_indices_equal_torch_on_real_records(exported, records: np.ndarray) -> None:
    tok, path = exported
    r = check_onnx_parity(tok, path, records, max_mismatch=0.0)
    assert r["n_records"] == 16 and r["n_codes"] == 16 * ENCODER.n_frames
    assert r["code_agreement"] == 1.0 and r["records_identical"] == 1.0 and r["max_abs_index_diff"] == 0
    codes = run_onnx_indices(path, records)
    assert codes.dtype == np.int64 and codes.shape == (16, 63)
    assert len(np.unique(codes)) > 20  # real signals use many of the 1296 codes, not a constant


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


def test_conv2d_copy_computes_the_same_latents_and_the_graph_has_only_2d_convolutions(
        exported, records: np.ndarray) -> None:
    tok, path = exported
    module = tok.index_module()
    image = conv1d_as_conv2d(module).eval()
    x = torch.from_numpy(records[:4])
    with torch.no_grad():
        torch.testing.assert_close(image.encoder(x), module.encoder(x), atol=1e-5, rtol=1e-5)
        assert torch.equal(image(x), module(x))
    kinds = {type(m) for m in image.modules()}
    assert torch.nn.Conv1d not in kinds and torch.nn.MaxPool1d not in kinds and torch.nn.Conv2d in kinds
    assert {type(m) for m in tok.modules()} >= {torch.nn.Conv1d, torch.nn.MaxPool1d}  # the original is kept
    assert tok.encoder.unit_dims == () and image.encoder.unit_dims == (1,)
    with pytest.raises(ValueError, match="2-D"):
        conv1d_as_conv2d(tok.decoder)  # ConvTranspose1d has no such rewrite here

    model = onnx.load(str(path))
    weights = {i.name: list(i.dims) for i in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert convs and all(len(weights[n.input[1]]) == 4 for n in convs)


def test_parity_check_raises_on_a_different_model(exported, records: np.ndarray) -> None:
    _, path = exported
    torch.manual_seed(1)
    other = EcgTokenizer(ENCODER, FSQConfig()).eval()
    r = check_onnx_parity(other, path, list(records[:4]))
    assert r["code_agreement"] < 0.5
    with pytest.raises(ExportError, match="ONNX codes differ from torch"):
        check_onnx_parity(other, path, records[:4], max_mismatch=0.01)
