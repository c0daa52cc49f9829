"""The diagecg bundle: one folder that the torch-free runtime can run (conventions: self-describing artifacts,
one writer per format, validate at the boundary, completely).

Layout (names in ``diagecg.constants``)::

    manifest.json          format/package versions, sha256 + size of every file, all inference configs
    ecg_tokenizer.onnx     float32 signal (B, leads, samples) [+ float32 features (B, M), with a summary]
                           -> int64 token indices (B, summary tokens + frames)
    llm-<quant>.gguf       the merged LLM, one file per quantisation
    tokenizer.json         the HF ``tokenizers`` file of the text vocabulary (optional)

One module per reason to change: ``writer`` (``BundleWriter`` only formats; it never trains or
converts), ``loader`` (``load_bundle`` validates everything when the bundle is opened, not on first
use), ``engines`` (the ONNX graph and the GGUF vocabulary read by onnxruntime and llama.cpp) and
``rules`` (what writer and loader both enforce). All of it is torch-free: onnxruntime and llama_cpp
are imported only when the model files are checked.
"""

from __future__ import annotations

from diagecg.bundle.engines import check_gguf_vocab, check_onnx_io, expected_special_tokens
from diagecg.bundle.loader import (
    MAX_MANIFEST_BYTES,
    MAX_MANIFEST_DEPTH,
    Bundle,
    default_bundle,
    feature_columns,
    load_bundle,
    shipped_bundle_dir,
)
from diagecg.bundle.rules import sha256_file
from diagecg.bundle.writer import (
    DEFAULT_QUANT_PREFERENCE,
    PACKAGE_DISTRIBUTIONS,
    BundleWriter,
    package_versions,
)

__all__ = [
    "DEFAULT_QUANT_PREFERENCE",
    "MAX_MANIFEST_BYTES",
    "MAX_MANIFEST_DEPTH",
    "PACKAGE_DISTRIBUTIONS",
    "Bundle",
    "BundleWriter",
    "check_gguf_vocab",
    "check_onnx_io",
    "default_bundle",
    "expected_special_tokens",
    "feature_columns",
    "load_bundle",
    "package_versions",
    "sha256_file",
    "shipped_bundle_dir",
]
