"""Device and thread choice: CUDA only where present, never a silent fallback."""

from __future__ import annotations

import pytest

from diagecg.errors import InferenceError
from diagecg.runtime import device as dev


def test_default_threads_is_half_the_cpus_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    for cpus, want in ((1, 1), (2, 1), (8, 4), (16, 8), (64, 8)):
        monkeypatch.setattr(dev, "logical_cpus", lambda c=cpus: c)
        assert dev.default_threads() == want


@pytest.mark.parametrize("bad", [0, -2, 1.5, "4", True])
def test_resolve_threads_rejects_non_positive_ints(bad: object) -> None:
    with pytest.raises(ValueError, match="threads="):
        dev.resolve_threads(bad)  # type: ignore[arg-type]


def test_threads_beyond_the_cpus_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dev, "logical_cpus", lambda: 2)
    assert dev.resolve_threads(256) == 2 and dev.resolve_threads(2) == 2 and dev.resolve_threads(1) == 1
    assert dev.choose_device("cpu", threads=256).threads == 2


def test_unknown_device_names_the_allowed_values() -> None:
    with pytest.raises(ValueError, match=r"one of \['auto', 'cpu', 'cuda'\]"):
        dev.choose_device("gpu")


def test_cpu_never_touches_the_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dev, "logical_cpus", lambda: 4)  # 3 threads are not capped
    monkeypatch.setattr(dev, "ort_cuda_available", lambda: True)
    monkeypatch.setattr(dev, "llama_gpu_available", lambda: True)
    choice = dev.choose_device("cpu", threads=3)
    assert (choice.ecg_tokenizer, choice.llm, choice.threads) == ("cpu", "cpu", 3)
    assert choice.ecg_tokenizer == "cpu" and choice.n_gpu_layers == 0


def test_auto_picks_cuda_per_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dev, "ort_cuda_available", lambda: True)
    monkeypatch.setattr(dev, "llama_gpu_available", lambda: False)
    choice = dev.choose_device("auto")
    assert (choice.ecg_tokenizer, choice.llm) == ("cuda", "cpu")
    assert choice.ecg_tokenizer == "cuda" and choice.n_gpu_layers == 0


def test_cuda_demanded_without_gpu_builds_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dev, "ort_cuda_available", lambda: False)
    monkeypatch.setattr(dev, "llama_gpu_available", lambda: True)
    with pytest.raises(InferenceError, match="onnxruntime-gpu"):
        dev.choose_device("cuda")


def test_real_engines_on_this_host_match_auto() -> None:
    choice = dev.choose_device("auto", threads=1)
    assert choice.ecg_tokenizer == ("cuda" if dev.ort_cuda_available() else "cpu")
    assert choice.llm == ("cuda" if dev.llama_gpu_available() else "cpu")
