"""The ONNX ECG tokenizer session: input checks before running, real provider reporting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from diagecg.bundle import load_bundle
from diagecg.errors import BundleError, InferenceError, InputError
from diagecg.runtime import ecg_session
from diagecg.runtime.ecg_session import EcgTokenizerSession


@pytest.fixture(scope="module")
def session(tiny_bundle: Path) -> EcgTokenizerSession:
    b = load_bundle(tiny_bundle, check_models=False)
    return EcgTokenizerSession(b.onnx_path, device="cpu", threads=1, n_samples=b.preprocess.n_samples,
                               n_codes=b.vocab.n_codes)


def _signal(batch: int = 2, samples: int = 1000) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((batch, 12, samples)).astype(np.float32)


def test_encode_gives_int64_codes_in_range_and_2d_equals_batch(session: EcgTokenizerSession) -> None:
    x = _signal()
    idx = session.encode(x)
    assert idx.dtype == np.int64 and idx.shape == (2, 63)  # 1000 samples / 16 -> 63 frames
    assert 0 <= idx.min() and idx.max() < 1296
    np.testing.assert_array_equal(session.encode(x[1]), idx[1:2])
    assert session.device == "cpu" and session.providers == ["CPUExecutionProvider"]


def test_nan_signal_is_refused_before_running(session: EcgTokenizerSession) -> None:
    x = _signal()
    x[0, 3, 100] = np.nan
    x[1, 0, 0] = np.inf
    with pytest.raises(InputError, match="2 NaN/inf"):
        session.encode(x)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((2, 12, 1000), dtype=np.float64), "dtype is float64"),
    (np.zeros((2, 11, 1000), dtype=np.float32), "11 leads"),
    (np.zeros((1, 12, 999), dtype=np.float32), "999 samples"),
    (np.zeros((0, 12, 1000), dtype=np.float32), "batch >= 1"),
    (np.zeros((12,), dtype=np.float32), "shape"),
    ([[0.0] * 1000] * 12, "numpy array"),
])
def test_bad_input_is_refused(session: EcgTokenizerSession, bad: object, match: str) -> None:
    with pytest.raises(InputError, match=match):
        session.encode(bad)  # type: ignore[arg-type]


def test_truncated_onnx_is_an_inference_error_directly_and_a_bundle_error_through_the_bundle(
        bundle_copy: Path) -> None:
    onnx = bundle_copy / "ecg_tokenizer.onnx"
    onnx.write_bytes(onnx.read_bytes()[: onnx.stat().st_size // 2])
    with pytest.raises(InferenceError, match="cannot load the ECG tokenizer"):
        EcgTokenizerSession(onnx, device="cpu", threads=1)
    with pytest.raises(BundleError, match="truncated"):
        load_bundle(bundle_copy)


def test_cuda_that_does_not_become_active_is_never_silent(tiny_bundle: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # Pretend onnxruntime offers CUDA: on a CPU-only build the session comes up on CPU anyway,
    # exactly the silent fallback the session must catch.
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA really is available here")
    monkeypatch.setattr(ecg_session, "ort_cuda_available", lambda: True)
    onnx = tiny_bundle / "ecg_tokenizer.onnx"
    with pytest.raises(InferenceError, match="CUDA was requested"):
        EcgTokenizerSession(onnx, device="cuda", threads=1)
    s = EcgTokenizerSession(onnx, device="auto", threads=1)
    assert s.device == "cpu" and any("CUDA was requested" in w for w in s.warnings)
