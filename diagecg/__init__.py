"""diagecg: let a language model read a 12-lead ECG (DiagECG / HeartLLM, arXiv 2508.15338).

``import diagecg`` never imports torch: torch-backed names resolve lazily (conventions: layers).
"""

from __future__ import annotations

import importlib
from typing import Any

from diagecg.config import (
    EncoderConfig,
    FSQConfig,
    GenerationConfig,
    PreprocessConfig,
    VocabConfig,
)
from diagecg.errors import BundleError, DiagEcgError, InferenceError, RecordError
from diagecg.types import EcgRecord, PatientInfo

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "read_record": "diagecg.io",
    "record_from_array": "diagecg.io",
    "detect_format": "diagecg.formats",
    "preprocess": "diagecg.preprocess",
    "load_bundle": "diagecg.bundle",
    "LeadwiseEncoder": "diagecg.nn.encoder",
    "FSQ": "diagecg.nn.fsq",
    "EcgTokenizer": "diagecg.nn.ecg_tokenizer",
}

__all__ = [
    "BundleError",
    "DiagEcgError",
    "EcgRecord",
    "EncoderConfig",
    "FSQConfig",
    "GenerationConfig",
    "InferenceError",
    "PatientInfo",
    "PreprocessConfig",
    "RecordError",
    "VocabConfig",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'diagecg' has no attribute {name!r}")
