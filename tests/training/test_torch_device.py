"""One torch device resolver for the tokenizer, evaluation and LLM stages (diagecg.training.device)."""

from __future__ import annotations

import pytest
import torch

from diagecg.errors import ConfigError
from diagecg.training.device import resolve_device
from diagecg.training.llm_trainer import make_accelerator


@pytest.mark.parametrize("has_cuda", [False, True])
def test_auto_is_cuda_exactly_when_torch_sees_a_gpu(has_cuda: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: has_cuda)
    assert resolve_device("auto") == torch.device("cuda" if has_cuda else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    if has_cuda:
        assert resolve_device("cuda:1") == torch.device("cuda", 1)


@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_cuda_without_a_gpu_is_refused_naming_the_field(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=rf"EvalConfig\.device='{name}': CUDA is not available"):
        resolve_device(name, "EvalConfig.device")
    with pytest.raises(ConfigError, match="device='cuda': CUDA is not available"):
        make_accelerator("cuda", bf16=True, grad_accum=1)
