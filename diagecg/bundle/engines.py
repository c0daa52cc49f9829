"""The bundle's model files read by the runtime's own engines: the ONNX graph's inputs and outputs with
onnxruntime, the GGUF vocabulary's ECG tokens with llama.cpp, when the bundle loads.

Both engines are imported only when a check runs, so the rest of the bundle code needs neither.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diagecg import constants as C
from diagecg.config import EncoderConfig, SummaryConfig, VocabConfig
from diagecg.errors import BundleError
from diagecg.native_stderr import native_stderr_captured

_ONNX_FLOAT = "tensor(float)"
_ONNX_INT64 = "tensor(int64)"
_LLAMA_TOKEN_ATTR_CONTROL = 1 << 3  # llama.h LLAMA_TOKEN_ATTR_CONTROL


def _runtime_module(name: str, path: Path) -> Any:
    """``onnxruntime`` or ``llama_cpp``: what checks a bundle's model files (the runtime's own engines,
    which every install that loads a bundle with its model checks has)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise BundleError(
            f"{path}: checking the bundle's model files needs {name}: pip install 'diagecg[runtime]'"
        ) from None


def check_onnx_io(path: Path, encoder: EncoderConfig, summary: SummaryConfig | None = None) -> None:
    """Check the ONNX graph's input/output names, dtypes and static sizes against the encoder and
    summary configs: input ``signal`` (+ ``features`` iff there is a summary), output ``indices``.

    Read with an onnxruntime session, as the runtime will run it.

    Raises:
        BundleError: a name, dtype, rank or size differs, or the file cannot be loaded.
    """
    ort = _runtime_module("onnxruntime", path)
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT Fail / InvalidProtobuf / NoSuchFile (external data): a bad file
        raise BundleError(f"{path}: cannot read the ONNX graph: {e}") from e
    inputs = [(i.name, i.type, list(i.shape)) for i in sess.get_inputs()]
    outputs = [(o.name, o.type, list(o.shape)) for o in sess.get_outputs()]
    want_in = [(C.ONNX_INPUT_SIGNAL, _ONNX_FLOAT, [None, encoder.n_leads, encoder.n_samples])]
    if summary:
        want_in.append((C.ONNX_INPUT_FEATURES, _ONNX_FLOAT, [None, len(summary.features)]))
    n_tokens = (summary.n_tokens if summary else 0) + encoder.n_frames
    want_out = [(C.ONNX_OUTPUT_INDICES, _ONNX_INT64, [None, n_tokens])]
    for kind, got, want in (("input", inputs, want_in), ("output", outputs, want_out)):
        if sorted(g[0] for g in got) != sorted(w[0] for w in want):
            has = "with" if summary else "without"
            raise BundleError(
                f"{path}: graph {kind}s are {[g[0] for g in got]}, expected "
                f"{[w[0] for w in want]} (a tokenizer {has} summary tokens)"
            )
        found = {g[0]: g for g in got}
        for name, want_type, want_dims in want:
            _, dtype, dims = found[name]
            if dtype != want_type:
                raise BundleError(f"{path}: graph {kind} {name!r} has dtype {dtype}, expected {want_type}")
            if len(dims) != len(want_dims):
                raise BundleError(
                    f"{path}: graph {kind} {name!r} has rank {len(dims)}, expected {len(want_dims)}"
                )
            for axis, (d, w) in enumerate(zip(dims, want_dims, strict=True)):
                if w is not None and isinstance(d, int) and d > 0 and d != w:
                    raise BundleError(f"{path}: graph {kind} {name!r} axis {axis} is {d}, expected {w}")


def _gguf_tokens(llama_cpp: Any, path: Path, ids: Sequence[int]) -> tuple[int, dict[int, tuple[str, bool]]]:
    # the vocabulary alone: no tensors, no context (llama.cpp's load log is captured, shown on failure)
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    with native_stderr_captured() as log:
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        tail = " | ".join("".join(log).strip().splitlines()[-3:])
        raise BundleError(f"{path}: llama.cpp cannot load the GGUF vocabulary: {tail}")
    try:
        vocab = llama_cpp.llama_model_get_vocab(model)
        n_vocab = int(llama_cpp.llama_vocab_n_tokens(vocab))
        out = {}
        for i in ids:
            if 0 <= i < n_vocab:
                text = llama_cpp.llama_vocab_get_text(vocab, i).decode("utf-8", errors="replace")
                control = bool(int(llama_cpp.llama_vocab_get_attr(vocab, i)) & _LLAMA_TOKEN_ATTR_CONTROL)
                out[i] = (text, control)
    finally:
        llama_cpp.llama_model_free(model)
    return n_vocab, out


def expected_special_tokens(vocab: VocabConfig) -> dict[int, str]:
    """LLM token id -> token string of every ECG token and of ``<ecg>``/``</ecg>``."""
    expected = {vocab.index_to_id(k): C.ECG_TOKEN_FORMAT.format(k) for k in range(vocab.n_codes)}
    expected[vocab.start_id] = C.ECG_START_TOKEN
    expected[vocab.end_id] = C.ECG_END_TOKEN
    return expected


def check_gguf_vocab(path: Path, vocab: VocabConfig) -> None:
    """Check that the GGUF maps every ECG token string to its recorded id as a CONTROL token.

    CONTROL tokens are matched only when special-token parsing is on, so typed text cannot inject
    them. Read with llama.cpp's vocabulary loader, as the runtime will see it.

    Raises:
        BundleError: a token id holds another string, is not a control token, or the vocabulary
            size differs from ``vocab.vocab_size``.
    """
    expected = expected_special_tokens(vocab)
    llama_cpp = _runtime_module("llama_cpp", path)
    try:
        n_vocab, found = _gguf_tokens(llama_cpp, path, sorted(expected))
    except BundleError:
        raise
    except Exception as e:  # llama.cpp's ValueError("Failed to load model") or a gguf parse error
        raise BundleError(f"{path}: cannot read the GGUF vocabulary: {e}") from e
    if vocab.vocab_size and n_vocab != vocab.vocab_size:
        raise BundleError(f"{path}: GGUF has {n_vocab} tokens, manifest vocab.vocab_size={vocab.vocab_size}")
    for token_id, text in expected.items():
        if token_id not in found:
            raise BundleError(
                f"{path}: token id {token_id} ({text}) is outside the GGUF vocabulary of {n_vocab}"
            )
        got, control = found[token_id]
        if got != text:
            raise BundleError(
                f"{path}: token id {token_id} is {got!r} in the GGUF, manifest expects {text!r}"
            )
        if not control:
            raise BundleError(
                f"{path}: token {text!r} (id {token_id}) is not a CONTROL token; typed text could inject it"
            )
