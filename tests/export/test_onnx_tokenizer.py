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
from diagecg.export.onnx_tokenizer import check_onnx_parity, export_onnx_tokenizer, run_onnx_indices  # noqa: E402
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


def test_parity_check_raises_on_a_different_model(exported, records: np.ndarray) -> None:
    _, path = exported
    torch.manual_seed(1)
    other = EcgTokenizer(ENCODER, FSQConfig()).eval()
    r = check_onnx_parity(other, path, list(records[:4]))
    assert r["code_agreement"] < 0.5
    with pytest.raises(ExportError, match="ONNX codes differ from torch"):
        check_onnx_parity(other, path, records[:4], max_mismatch=0.01)
