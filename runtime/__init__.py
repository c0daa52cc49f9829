"""Torch-free offline runtime: onnxruntime + llama-cpp-python (never torch, transformers or peft).

Names resolve lazily, so ``import diagecg.runtime`` (done by the CLI at start-up) loads neither
onnxruntime nor llama.cpp::

    from diagecg.runtime import DiagEcgPipeline

    pipe = DiagEcgPipeline.from_bundle("bundle/")  # or from_bundle(): the shipped demonstration bundle
    print(pipe.answer("record.hea", "Is there atrial fibrillation?").answer)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the real types for type checkers; at run time the names load lazily
    from diagecg.bundle import default_bundle, load_bundle
    from diagecg.runtime.answer import SCHEMA_VERSION, Answer
    from diagecg.runtime.device import DeviceChoice, choose_device, default_threads
    from diagecg.runtime.ecg_session import EcgTokenizerSession
    from diagecg.runtime.llm import Generation, LlamaModel
    from diagecg.runtime.pipeline import DiagEcgPipeline

_LAZY: dict[str, str] = {
    "DiagEcgPipeline": "diagecg.runtime.pipeline",
    "Answer": "diagecg.runtime.answer",
    "SCHEMA_VERSION": "diagecg.runtime.answer",
    "EcgTokenizerSession": "diagecg.runtime.ecg_session",
    "LlamaModel": "diagecg.runtime.llm",
    "Generation": "diagecg.runtime.llm",
    "DeviceChoice": "diagecg.runtime.device",
    "choose_device": "diagecg.runtime.device",
    "default_threads": "diagecg.runtime.device",
    "load_bundle": "diagecg.bundle",
    "default_bundle": "diagecg.bundle",
}

__all__ = [
    "SCHEMA_VERSION",
    "Answer",
    "DeviceChoice",
    "DiagEcgPipeline",
    "EcgTokenizerSession",
    "Generation",
    "LlamaModel",
    "choose_device",
    "default_threads",
    "load_bundle",
    "default_bundle",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'diagecg.runtime' has no attribute {name!r}")
