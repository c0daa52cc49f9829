"""The ONNX ECG tokenizer session: input checks before running (signal and, for a tokenizer with summary
tokens, its measurements), real provider reporting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from builders import SUMMARY, random_ecg_tokenizer, summary_code_ranges

from diagecg.bundle import load_bundle
from diagecg.errors import BundleError, InferenceError, InputError
from diagecg.features import FEATURE_NAMES
from diagecg.runtime import ecg_session
from diagecg.runtime.ecg_session import EcgTokenizerSession


@pytest.fixture(scope="module")
def session(tiny_bundle: Path) -> EcgTokenizerSession:
    b = load_bundle(tiny_bundle, check_models=False)
    return EcgTokenizerSession(
        b.onnx_path, device="cpu", threads=1, n_samples=b.preprocess.n_samples, n_codes=b.vocab.n_codes
    )


N_SUMMARY = SUMMARY.n_tokens


@pytest.fixture(scope="module")
def plain_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ECG tokenizer graph without summary tokens (the format of bundles before them)."""
    import torch

    from diagecg.config import EncoderConfig, FSQConfig
    from diagecg.export.onnx_tokenizer import export_onnx_tokenizer

    torch.manual_seed(0)
    encoder = EncoderConfig(
        n_samples=1000, stem_channels=8, stage_channels=(8, 8, 8, 8), groups=4, fused_channels=16
    )
    tok = random_ecg_tokenizer(encoder, FSQConfig())
    return export_onnx_tokenizer(tok, encoder.n_samples, tmp_path_factory.mktemp("plain") / "ecg.onnx")


def _signal(batch: int = 2, samples: int = 1000) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((batch, 12, samples)).astype(np.float32)


def _features(batch: int = 2) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((batch, len(FEATURE_NAMES))).astype(np.float32)


def test_encode_gives_summary_then_frame_codes_and_2d_equals_batch(session: EcgTokenizerSession) -> None:
    x, f = _signal(), _features()
    assert session.takes_features and session.n_features == len(FEATURE_NAMES)
    idx = session.encode(x, f)
    assert idx.dtype == np.int64 and idx.shape == (2, N_SUMMARY + 63)  # 1000 samples / 16 -> 63 frames
    assert 0 <= idx[:, N_SUMMARY:].min() and idx[:, N_SUMMARY:].max() < 1296
    first, size = map(np.array, summary_code_ranges(SUMMARY))  # finding f, level l -> 1296 + 4 f + l, ...
    assert ((idx[:, :N_SUMMARY] >= first) & (idx[:, :N_SUMMARY] < first + size)).all()
    np.testing.assert_array_equal(session.encode(x[1], f[1]), idx[1:2])
    assert session.device == "cpu" and session.providers == ["CPUExecutionProvider"]


def test_nan_signal_is_refused_before_running(session: EcgTokenizerSession) -> None:
    x = _signal()
    x[0, 3, 100] = np.nan
    x[1, 0, 0] = np.inf
    with pytest.raises(InputError, match="signal contains 2 NaN/inf"):
        session.encode(x, _features())


M = len(FEATURE_NAMES)


def test_nan_features_are_refused_before_running(session: EcgTokenizerSession) -> None:
    f = _features()
    f[0, 5] = np.nan
    f[1, 0] = -np.inf
    with pytest.raises(InputError, match="features contain 2 NaN/inf values"):
        session.encode(_signal(), f)


@pytest.mark.parametrize(
    "bad, match",
    [
        (None, "has summary tokens: pass the record's measurements"),
        (np.zeros((2, 10), dtype=np.float32), rf"features shape \(2, 10\) is invalid: expected \(2, {M}\)"),
        (np.zeros((3, M), dtype=np.float32), "one row per signal"),
        (np.zeros(M, dtype=np.float32), rf"features shape \(1, {M}\) is invalid: expected \(2, {M}\)"),
        (np.zeros((2, 1, M), dtype=np.float32), "features shape"),
        (np.zeros((2, M), dtype=np.float64), "features dtype is float64"),
        ([[0.0] * M] * 2, "features must be a numpy array"),
    ],
)
def test_bad_features_are_refused(session: EcgTokenizerSession, bad: object, match: str) -> None:
    with pytest.raises(InputError, match=match):
        session.encode(_signal(), bad)  # type: ignore[arg-type]


def test_a_graph_without_summary_tokens_takes_no_features(plain_onnx: Path) -> None:
    plain = EcgTokenizerSession(plain_onnx, device="cpu", threads=1)
    assert not plain.takes_features and plain.n_features is None
    assert plain.encode(_signal(1)).shape == (1, 63)
    with pytest.raises(InputError, match="no summary tokens: it takes no measurements"):
        plain.encode(_signal(1), _features(1))


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((2, 12, 1000), dtype=np.float64), "dtype is float64"),
        (np.zeros((2, 11, 1000), dtype=np.float32), "11 leads"),
        (np.zeros((1, 12, 999), dtype=np.float32), "999 samples"),
        (np.zeros((0, 12, 1000), dtype=np.float32), "batch >= 1"),
        (np.zeros((12,), dtype=np.float32), "shape"),
        ([[0.0] * 1000] * 12, "numpy array"),
    ],
)
def test_bad_input_is_refused(session: EcgTokenizerSession, bad: object, match: str) -> None:
    with pytest.raises(InputError, match=match):
        session.encode(bad)  # type: ignore[arg-type]


def test_truncated_onnx_is_an_inference_error_directly_and_a_bundle_error_through_the_bundle(
    bundle_copy: Path,
) -> None:
    onnx = bundle_copy / "ecg_tokenizer.onnx"
    onnx.write_bytes(onnx.read_bytes()[: onnx.stat().st_size // 2])
    with pytest.raises(InferenceError, match="cannot load the ECG tokenizer"):
        EcgTokenizerSession(onnx, device="cpu", threads=1)
    with pytest.raises(BundleError, match="truncated"):
        load_bundle(bundle_copy)


def test_cuda_that_does_not_become_active_is_never_silent(
    tiny_bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
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


def test_onnxruntime_threads_do_not_spin_against_llama_cpp(session: EcgTokenizerSession) -> None:
    assert session._session is not None
    options = session._session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
