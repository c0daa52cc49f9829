"""The diagecg bundle: one folder that the torch-free runtime can run (STYLE R3, R8, R13).

Layout (names in ``diagecg.constants``)::

    manifest.json          format/package versions, sha256 + size of every file, all inference configs
    ecg_tokenizer.onnx     float32 signal (B, leads, samples) [+ float32 features (B, M), with a summary]
                           -> int64 token indices (B, summary tokens + frames)
    llm-<quant>.gguf       the merged LLM, one file per quantisation
    tokenizer.json         the HF ``tokenizers`` file of the text vocabulary (optional)

``BundleWriter`` only formats (it never trains or converts); ``load_bundle``
validates everything when the bundle is opened, not on first use. This module
is torch-free: onnx / onnxruntime / gguf / llama_cpp are imported lazily, only
to validate the model files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import importlib.metadata
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from diagecg import constants as C
from diagecg.config import (
    ConfigMixin,
    EncoderConfig,
    FSQConfig,
    GenerationConfig,
    PreprocessConfig,
    SummaryConfig,
    VocabConfig,
)
from diagecg.constants import ManifestKey as K
from diagecg.errors import BundleError
from diagecg.measure import FEATURE_NAMES
from diagecg.prompts import PromptConfig
from diagecg.questions import QuestionCatalogue

logger = logging.getLogger(__name__)

# Distributions whose versions are stamped into the manifest (those not installed are left out).
PACKAGE_DISTRIBUTIONS: tuple[str, ...] = (
    "diagecg", "numpy", "torch", "transformers", "peft", "tokenizers", "onnx", "onnxruntime", "onnxscript",
    "gguf", "llama_cpp_python",
)

# Preferred default quantisation, best first, when the writer is not told.
DEFAULT_QUANT_PREFERENCE: tuple[str, ...] = ("q4_k_m", "q8_0", "q5_k_m", "q6_k", "q4_0", "f16")

_ONNX_FLOAT = "tensor(float)"
_ONNX_INT64 = "tensor(int64)"
_LLAMA_TOKEN_ATTR_CONTROL = 1 << 3  # llama.h LLAMA_TOKEN_ATTR_CONTROL


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape a bundle (from metadata; nothing is imported)."""
    out: dict[str, str] = {}
    for dist in PACKAGE_DISTRIBUTIONS:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _json_default(obj: Any) -> Any:
    """Make numpy scalars/arrays, paths and configs JSON-serialisable."""
    if isinstance(obj, ConfigMixin):
        return obj.to_dict()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy scalar or array
        return obj.tolist()
    raise TypeError(f"manifest value of type {type(obj).__name__} is not JSON-serialisable: {obj!r}")


def _plain(value: Any, what: str) -> Any:
    """A JSON round trip of ``value`` (fails early, in the add_* call that brought it)."""
    try:
        return json.loads(json.dumps(value, default=_json_default, sort_keys=True))
    except (TypeError, ValueError) as e:
        raise TypeError(f"{what}: {e}") from None


# --- writer ------------------------------------------------------------------------------------------

class BundleWriter:
    """Assemble a bundle folder and its manifest.

    Each ``add_*`` records one part (``add_gguf`` once per quantisation); adding a part twice raises
    ``ValueError``. ``add_config``, ``add_onnx``, ``add_gguf`` and ``add_vocab`` are required, the rest
    optional; ``write`` checks that the required parts are there and agree (the vocabulary's ECG codes
    against the FSQ codebook and summary), hashes every file and writes ``manifest.json``
    (``indent=2, sort_keys=True``). Model files are copied into the folder under their bundle names
    (unless they are already there).

    Args:
        path: the bundle folder; created when missing.
    """

    def __init__(self, path: str | Path) -> None:
        self.root = Path(path)
        self.root.mkdir(parents=True, exist_ok=True)
        self._manifest: dict[str, Any] = {}
        self._files: list[str] = []
        self._written = False
        self._fsq: FSQConfig | None = None
        self._summary: SummaryConfig | None = None

    def _set(self, key: str, value: Any, method: str) -> None:
        """Record one manifest part, once."""
        if self._written:
            raise ValueError(f"BundleWriter.{method}: the bundle was already written")
        if key in self._manifest:
            raise ValueError(f"BundleWriter.{method}: already called")
        self._manifest[key] = value

    @staticmethod
    def _require_file(src: str | Path) -> Path:
        src = Path(src)
        if not src.is_file():
            raise FileNotFoundError(f"BundleWriter: {src} not found")
        return src

    def _copy_in(self, src: Path, name: str) -> None:
        dst = self.root / name
        if not (dst.exists() and os.path.samefile(src, dst)):
            shutil.copyfile(src, dst)
        if name in self._files:
            raise ValueError(f"BundleWriter: file {name!r} added twice")
        self._files.append(name)

    def add_config(self, *, preprocess: PreprocessConfig, encoder: EncoderConfig, fsq: FSQConfig,
                   prompt: Mapping[str, Any] | ConfigMixin, generation: GenerationConfig,
                   preset: str | None = None, summary: SummaryConfig | None = None) -> None:
        """Record every config the runtime needs to rebuild the pipeline (STYLE R3); ``summary`` is the
        ECG tokenizer's diagnostic summary (None or no findings: frame tokens only, written as null).

        Raises:
            ValueError: out of order, or ``encoder.n_samples != preprocess.n_samples``.
        """
        if encoder.n_samples != preprocess.n_samples:
            raise ValueError(f"add_config: encoder.n_samples={encoder.n_samples} != "
                             f"preprocess.n_samples={preprocess.n_samples}")
        summary = summary if summary is not None and summary.enabled else None
        prompt_dict = prompt.to_dict() if isinstance(prompt, ConfigMixin) else dict(prompt)
        self._set(K.ENCODER, encoder.to_dict(), "add_config")
        self._fsq, self._summary = fsq, summary
        self._manifest.update({
            K.PREPROCESS: preprocess.to_dict(), K.FSQ: fsq.to_dict(),
            K.SUMMARY: summary.to_dict() if summary else None,
            K.PROMPT: _plain(prompt_dict, "add_config(prompt)"), K.GENERATION: generation.to_dict(),
            K.PRESET: preset,
        })

    def add_onnx(self, src: str | Path, *, opset: int | None = None) -> None:
        """Add the ECG tokenizer graph (inputs ``signal`` [+ ``features``], output ``indices``), after
        ``add_config`` (its sizes come from the encoder config)."""
        src = self._require_file(src)
        if K.ENCODER not in self._manifest:
            raise ValueError("BundleWriter.add_onnx: add_config must be called first")
        enc = EncoderConfig.from_dict(self._manifest[K.ENCODER])
        n_summary = self._summary.n_tokens if self._summary else 0
        self._set(K.ONNX, {
            "file": C.BUNDLE_ONNX_NAME, "input": C.ONNX_INPUT_SIGNAL, "output": C.ONNX_OUTPUT_INDICES,
            "features": C.ONNX_INPUT_FEATURES if self._summary else None, "n_leads": enc.n_leads,
            "n_samples": enc.n_samples, "n_frames": enc.n_frames, "n_tokens": n_summary + enc.n_frames,
            "opset": opset,
        }, "add_onnx")
        self._copy_in(src, C.BUNDLE_ONNX_NAME)

    def add_gguf(self, src: str | Path, quant: str, *, info: Mapping[str, Any] | None = None) -> None:
        """Add one GGUF of the merged LLM; call once per quantisation.

        Args:
            src: the GGUF file; copied to ``llm-<quant>.gguf``.
            quant: one of ``constants.QUANT_TYPES``.
            info: facts about the file worth recording (architecture, n_vocab, ...).
        """
        if quant not in C.QUANT_TYPES:
            raise ValueError(f"add_gguf: quant={quant!r} is not one of {C.QUANT_TYPES}")
        llm_files = self._manifest.get(K.LLM_FILES, {})
        if quant in llm_files:
            raise ValueError(f"add_gguf: quant {quant!r} was already added")
        src = self._require_file(src)
        if self._written:
            raise ValueError("BundleWriter.add_gguf: the bundle was already written")
        name = C.BUNDLE_GGUF_FORMAT.format(quant=quant)
        self._copy_in(src, name)
        self._manifest.setdefault(K.LLM_FILES, {})[quant] = name
        self._manifest.setdefault(K.LLM, {})[quant] = _plain(dict(info or {}), "add_gguf(info)")

    def add_tokenizer(self, src: str | Path) -> None:
        """Add the HF ``tokenizers`` JSON of the text vocabulary (copied to ``tokenizer.json``)."""
        src = self._require_file(src)
        self._set(K.TEXT_TOKENIZER, C.BUNDLE_TOKENIZER_NAME, "add_tokenizer")
        self._copy_in(src, C.BUNDLE_TOKENIZER_NAME)

    def add_vocab(self, vocab: VocabConfig) -> None:
        """Record where the ECG tokens sit in the LLM vocabulary.

        Raises:
            ValueError: ``vocab.n_codes`` differs from the FSQ codebook size (+ the summary codes).
        """
        if self._fsq is not None:
            _check_n_codes(vocab, self._fsq, self._summary, ValueError, "add_vocab")
        self._set(K.VOCAB, vocab.to_dict(), "add_vocab")

    def add_answer_vocabularies(self, vocabularies: Mapping[str, Sequence[str]]) -> None:
        """Record the closed answer sets (question type -> allowed answers)."""
        self._set(K.ANSWER_VOCAB, {str(k): [str(a) for a in v] for k, v in vocabularies.items()},
                  "add_answer_vocabularies")

    def add_questions(self, catalogue: QuestionCatalogue) -> None:
        """Record the question catalogue: what the model was trained to answer (``diagecg.questions``)."""
        self._set(K.QUESTIONS, _plain(catalogue.to_dict(), "add_questions"), "add_questions")

    def add_training(self, summary: Mapping[str, Any]) -> None:
        """Record the training data/run summary (record counts, folds, steps...)."""
        self._set(K.TRAINING, _plain(dict(summary), "add_training"), "add_training")

    def add_evaluation(self, results: Mapping[str, Any]) -> None:
        """Record held-out evaluation results."""
        self._set(K.EVALUATION, _plain(dict(results), "add_evaluation"), "add_evaluation")

    def add_calibration(self, calibration: Mapping[str, Any]) -> None:
        """Record the per-finding calibration of p(present) and the decision thresholds
        (``{"fitted_on": {...}, "findings": {name: {"code", "a", "b", "threshold", "n", "n_pos"}}}``)."""
        for name, row in dict(calibration.get("findings") or {}).items():
            missing = {"a", "b", "threshold"} - set(row)
            if missing or not 0.0 <= float(row["threshold"]) <= 1.0:
                raise ValueError(f"BundleWriter.add_calibration: {name!r} needs a, b and a threshold "
                                 f"in [0, 1], got {row}")
        self._set(K.CALIBRATION, _plain(dict(calibration), "add_calibration"), "add_calibration")

    def add_parity(self, results: Mapping[str, Any]) -> None:
        """Record the export parity checks (ONNX vs torch, GGUF vs HF)."""
        self._set(K.PARITY, _plain(dict(results), "add_parity"), "add_parity")

    def write(self, *, default_quant: str | None = None) -> Path:
        """Hash every file and write ``manifest.json``; returns its path.

        Args:
            default_quant: the GGUF the runtime uses when not told; default: the first of
                ``DEFAULT_QUANT_PREFERENCE`` present.
        """
        if self._written:
            raise ValueError("BundleWriter.write: the bundle was already written")
        required = {K.ENCODER: "add_config", K.ONNX: "add_onnx", K.LLM_FILES: "add_gguf",
                    K.VOCAB: "add_vocab"}
        missing = [method for key, method in required.items() if key not in self._manifest]
        if missing:
            raise ValueError(f"BundleWriter.write: missing {', '.join(missing)}")
        assert self._fsq is not None
        _check_n_codes(VocabConfig.from_dict(self._manifest[K.VOCAB]), self._fsq, self._summary, ValueError,
                       "write")
        quants = list(self._manifest[K.LLM_FILES])
        if default_quant is None:
            default_quant = next(q for q in (*DEFAULT_QUANT_PREFERENCE, *quants) if q in quants)
        elif default_quant not in quants:
            raise ValueError(f"write: default_quant={default_quant!r} is not among the added quants {quants}")
        self._written = True
        files = {}
        for name in self._files:
            p = self.root / name
            files[name] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        versions = package_versions()
        manifest = {
            K.FORMAT_VERSION: C.FORMAT_VERSION,
            K.DIAGECG_VERSION: versions.get("diagecg", _diagecg_version()),
            K.PACKAGE_VERSIONS: versions,
            K.FILES: files,
            K.DEFAULT_QUANT: default_quant,
            K.TEXT_TOKENIZER: None,
            K.ANSWER_VOCAB: {},
            K.TRAINING: {},
            K.EVALUATION: {},
            K.PARITY: {},
            **self._manifest,
        }
        out = self.root / C.MANIFEST_NAME
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        tmp.replace(out)
        logger.info("wrote %s (%d files)", out, len(files))
        return out


def _diagecg_version() -> str:
    from diagecg import __version__

    return __version__


# --- loader ------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Bundle:
    """A validated bundle: typed configs and absolute paths of its files.

    Attributes:
        root: the bundle folder.
        manifest: the parsed manifest.json.
        preprocess / encoder / fsq / vocab / generation: the stored configs.
        prompt: the prompt config (template checked at load).
        onnx_path: the ECG tokenizer graph.
        tokenizer_path: the text tokenizer JSON, or None when the bundle has none.
        llm_files: quant -> GGUF path.
        default_quant: the quant ``gguf_path()`` returns when not told.
        preset: the preset name the model was trained with, or None.
        summary: the ECG tokenizer's diagnostic summary, or None (frame tokens only).
        questions: the question catalogue, or None (a bundle exported before catalogues: every
            question goes to the model as typed).
    """

    root: Path
    manifest: dict[str, Any]
    preprocess: PreprocessConfig
    encoder: EncoderConfig
    fsq: FSQConfig
    vocab: VocabConfig
    prompt: PromptConfig
    generation: GenerationConfig
    onnx_path: Path
    tokenizer_path: Path | None
    llm_files: dict[str, Path]
    default_quant: str
    preset: str | None = None
    summary: SummaryConfig | None = None
    questions: QuestionCatalogue | None = None

    @property
    def quants(self) -> tuple[str, ...]:
        return tuple(self.llm_files)

    @property
    def parity(self) -> dict[str, Any]:
        return self.manifest.get(K.PARITY) or {}

    @property
    def evaluation(self) -> dict[str, Any]:
        return self.manifest.get(K.EVALUATION) or {}

    @property
    def calibration(self) -> dict[str, dict[str, Any]]:
        """Finding name -> ``{"code", "a", "b", "threshold", ...}``; empty when the bundle has none."""
        return dict((self.manifest.get(K.CALIBRATION) or {}).get("findings") or {})

    @property
    def training(self) -> dict[str, Any]:
        return self.manifest.get(K.TRAINING) or {}

    def gguf_path(self, quant: str | None = None) -> Path:
        """Path of the GGUF for ``quant`` (default: ``default_quant``).

        Raises:
            BundleError: the bundle has no GGUF of that quant.
        """
        q = quant or self.default_quant
        if q not in self.llm_files:
            raise BundleError(f"{self.root}: no GGUF for quant {q!r}; available: {list(self.llm_files)}")
        return self.llm_files[q]

def _check_n_codes(vocab: VocabConfig, fsq: FSQConfig, summary: SummaryConfig | None,
                   error: type[Exception], src: str) -> None:
    """``vocab.n_codes`` must be the frame codebook plus the summary's ``findings * levels`` codes."""
    extra = f" + summary codes={summary.n_codes} (findings*levels + measurement bins)" if summary else ""
    if vocab.n_codes != fsq.codebook_size + (summary.n_codes if summary else 0):
        raise error(f"{src}: vocab.n_codes={vocab.n_codes} != prod(fsq.levels)={fsq.codebook_size}{extra}")


def _summary_config(manifest: Mapping[str, Any], src: str) -> SummaryConfig | None:
    """The manifest's summary config (absent or null: none), checked against this diagecg's measurements."""
    if manifest.get(K.SUMMARY) is None:
        return None
    summary = _config(SummaryConfig, manifest, K.SUMMARY, src)
    if not summary.enabled:
        return None
    # the graph takes the measurements it was trained on, by name (``feature_columns``): a diagecg that
    # measures more still serves it; one that lacks a name cannot
    unknown = [f for f in summary.features if f not in FEATURE_NAMES]
    if unknown:
        raise BundleError(f"{src}: summary.features name measurements this diagecg does not compute "
                          f"(diagecg.measure.FEATURE_NAMES, {len(FEATURE_NAMES)} names): {unknown[:5]}; "
                          f"use the diagecg version the bundle was exported with")
    return summary


def feature_columns(summary: SummaryConfig) -> list[int]:
    """Where each of the summary head's measurements sits in ``diagecg.measure.FEATURE_NAMES``."""
    return [FEATURE_NAMES.index(f) for f in summary.features]


def _need(manifest: Mapping[str, Any], key: str, kind: type, src: str) -> Any:
    if key not in manifest:
        raise BundleError(f"{src}: required field {key!r} is missing")
    value = manifest[key]
    if not isinstance(value, kind):
        raise BundleError(f"{src}: field {key!r} should be a {kind.__name__}, got {type(value).__name__}")
    return value


def _config(cls: type[Any], manifest: Mapping[str, Any], key: str, src: str) -> Any:
    data = _need(manifest, key, dict, src)
    try:
        return cls.from_dict(data)
    except (ValueError, TypeError) as e:
        raise BundleError(f"{src}: field {key!r}: {e}") from None


def _check_files(root: Path, files: Mapping[str, Any], src: str, verify_hashes: bool) -> None:
    for name, meta in files.items():
        p = root / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise BundleError(f"{src}: file name {name!r} must be relative to the bundle folder")
        if not isinstance(meta, dict) or "sha256" not in meta or "bytes" not in meta:
            raise BundleError(f"{src}: files[{name!r}] needs 'sha256' and 'bytes'")
        if not p.is_file():
            raise BundleError(f"{p}: file listed in the manifest is missing")
        size = p.stat().st_size
        if size != meta["bytes"]:
            raise BundleError(f"{p}: size {size} bytes != {meta['bytes']} in the manifest "
                              "(truncated or replaced)")
        if verify_hashes:
            digest = sha256_file(p)
            if digest != meta["sha256"]:
                raise BundleError(f"{p}: sha256 {digest[:12]}... != {str(meta['sha256'])[:12]}... in the "
                                  "manifest (file was modified)")


def _runtime_module(name: str, path: Path) -> Any:
    """``onnxruntime`` or ``llama_cpp``: what checks a bundle's model files (the runtime's own engines,
    which every install that loads a bundle with its model checks has)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise BundleError(f"{path}: checking the bundle's model files needs {name}: pip install "
                          f"'diagecg[runtime]'") from None


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
            raise BundleError(f"{path}: graph {kind}s are {[g[0] for g in got]}, expected "
                              f"{[w[0] for w in want]} (a tokenizer {has} summary tokens)")
        found = {g[0]: g for g in got}
        for name, want_type, want_dims in want:
            _, dtype, dims = found[name]
            if dtype != want_type:
                raise BundleError(f"{path}: graph {kind} {name!r} has dtype {dtype}, expected {want_type}")
            if len(dims) != len(want_dims):
                raise BundleError(f"{path}: graph {kind} {name!r} has rank {len(dims)}, expected "
                                  f"{len(want_dims)}")
            for axis, (d, w) in enumerate(zip(dims, want_dims, strict=True)):
                if w is not None and isinstance(d, int) and d > 0 and d != w:
                    raise BundleError(f"{path}: graph {kind} {name!r} axis {axis} is {d}, expected {w}")


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[list[str]]:
    """Route fd 2 (where llama.cpp logs) to a temp file; the yielded list receives the text.

    Python's ``sys.stderr`` redirection does not reach native code, so the file descriptor itself is
    swapped. Used here to quiet llama.cpp's vocabulary load and by ``export.quantize`` around the
    quantiser.
    """
    out: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.append(tmp.read().decode("utf-8", errors="replace"))


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
            raise BundleError(f"{path}: token id {token_id} ({text}) is outside the GGUF vocabulary "
                              f"of {n_vocab}")
        got, control = found[token_id]
        if got != text:
            raise BundleError(f"{path}: token id {token_id} is {got!r} in the GGUF, manifest expects "
                              f"{text!r}")
        if not control:
            raise BundleError(f"{path}: token {text!r} (id {token_id}) is not a CONTROL token; typed text "
                              "could inject it")


def shipped_bundle_dir() -> Path:
    """The demonstration bundle shipped inside the package: ``<diagecg package>/bundles/default``
    (it may be absent from a slimmed install; ``load_bundle`` then says so)."""
    return Path(__file__).resolve().parent / C.DEFAULT_BUNDLE_DIR


MAX_MANIFEST_BYTES = 16 << 20  # the shipped manifest, question catalogue included, is ~100 kB
MAX_MANIFEST_DEPTH = 32  # the shipped one nests 9 levels


def _json_depth(value: Any) -> int:
    """How many objects/arrays of parsed JSON nest inside each other (a scalar: 0), without recursion."""
    depth, level = 0, [value]
    while containers := [x for x in level if isinstance(x, (dict, list))]:
        depth += 1
        level = [v for x in containers for v in (x.values() if isinstance(x, dict) else x)]
    return depth


def default_bundle() -> Path:
    """The folder of the shipped demonstration bundle, for ``DiagEcgPipeline.from_bundle``.

    Raises:
        BundleError: this install ships no bundle.
    """
    path = shipped_bundle_dir()
    if not (path / C.MANIFEST_NAME).is_file():
        raise BundleError(f"no bundle given and no default bundle shipped at {path}; pass a bundle folder "
                          f"(one written by `diagecg export`)")
    return path


def load_bundle(path: str | Path, *, verify_hashes: bool = True, check_models: bool = True) -> Bundle:
    """Open a bundle folder and validate it completely (STYLE R13).

    Checks ``format_version``; every listed file's size and sha256; the configs; that
    ``vocab.n_codes`` is ``prod(fsq.levels)`` plus the summary codes, that the summary was trained on
    this diagecg's measurements (``diagecg.measure.FEATURE_NAMES``) and that the encoder length matches
    preprocessing; the ONNX input/output names, dtypes and sizes; and, in every GGUF, that each ECG
    token string sits at its recorded id as a CONTROL token.

    Args:
        path: the bundle folder (or its manifest.json).
        verify_hashes: hash every file (a few seconds per GB); sizes are always checked.
        check_models: open the ONNX and GGUF files to check their I/O and vocabulary.

    Returns:
        The validated ``Bundle``.

    Raises:
        BundleError: naming the file and the field that failed.
    """
    root = Path(path)
    if root.is_file() and root.name == C.MANIFEST_NAME:
        root = root.parent
    mpath = root / C.MANIFEST_NAME
    if not root.is_dir():
        raise BundleError(f"{root}: bundle folder not found")
    if not mpath.is_file():
        raise BundleError(f"{mpath}: manifest missing; is {root} a diagecg bundle?")
    src = str(mpath)
    size = mpath.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{src}: {size} bytes is too large for a manifest (at most {MAX_MANIFEST_BYTES})")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{src}: not valid JSON: {e}") from None
    except RecursionError:
        raise BundleError(f"{src}: nested too deeply to be a manifest") from None
    depth = _json_depth(manifest)
    if depth > MAX_MANIFEST_DEPTH:
        raise BundleError(f"{src}: nested {depth} levels deep; a manifest is at most {MAX_MANIFEST_DEPTH}")
    if not isinstance(manifest, dict):
        raise BundleError(f"{src}: top level must be an object")
    version = manifest.get(K.FORMAT_VERSION)
    if version != C.FORMAT_VERSION:
        raise BundleError(f"{src}: format_version={version!r} is not supported (this diagecg reads "
                          f"{C.FORMAT_VERSION}); re-export the bundle with a matching diagecg")
    files = _need(manifest, K.FILES, dict, src)
    _check_files(root, files, src, verify_hashes)

    preprocess = _config(PreprocessConfig, manifest, K.PREPROCESS, src)
    encoder = _config(EncoderConfig, manifest, K.ENCODER, src)
    fsq = _config(FSQConfig, manifest, K.FSQ, src)
    vocab = _config(VocabConfig, manifest, K.VOCAB, src)
    generation = _config(GenerationConfig, manifest, K.GENERATION, src)
    prompt = _config(PromptConfig, manifest, K.PROMPT, src)  # a bad template fails here, not at a question
    summary = _summary_config(manifest, src)
    questions = _question_catalogue(manifest, src)
    _check_n_codes(vocab, fsq, summary, BundleError, src)
    if encoder.n_samples != preprocess.n_samples:
        raise BundleError(f"{src}: encoder.n_samples={encoder.n_samples} != preprocess fs_hz*window_s="
                          f"{preprocess.n_samples}")

    def listed(name: str, field: str) -> Path:
        if name not in files:
            raise BundleError(f"{src}: {field} names {name!r}, which is not listed in 'files'")
        return root / name

    onnx_meta = _need(manifest, K.ONNX, dict, src)
    onnx_path = listed(str(onnx_meta.get("file")), "onnx.file")
    llm_meta = _need(manifest, K.LLM_FILES, dict, src)
    if not llm_meta:
        raise BundleError(f"{src}: field 'llm_files' is empty")
    llm_files = {}
    for quant, name in llm_meta.items():
        if quant not in C.QUANT_TYPES:
            raise BundleError(f"{src}: llm_files has unknown quant {quant!r}; known: {C.QUANT_TYPES}")
        llm_files[quant] = listed(str(name), f"llm_files[{quant!r}]")
    default_quant = _need(manifest, K.DEFAULT_QUANT, str, src)
    if default_quant not in llm_files:
        raise BundleError(f"{src}: default_quant={default_quant!r} is not among llm_files {list(llm_files)}")
    tok_name = manifest.get(K.TEXT_TOKENIZER)
    tokenizer_path = listed(str(tok_name), "text_tokenizer") if tok_name else None

    if check_models:
        check_onnx_io(onnx_path, encoder, summary)
        for gguf_path in llm_files.values():
            check_gguf_vocab(gguf_path, vocab)

    return Bundle(root=root, manifest=manifest, preprocess=preprocess, encoder=encoder, fsq=fsq, vocab=vocab,
                  prompt=prompt, generation=generation, onnx_path=onnx_path, tokenizer_path=tokenizer_path,
                  llm_files=llm_files, default_quant=default_quant, preset=manifest.get(K.PRESET),
                  summary=summary, questions=questions)


def _question_catalogue(manifest: dict[str, Any], src: str) -> QuestionCatalogue | None:
    data = manifest.get(K.QUESTIONS)
    if data is None:
        return None
    try:
        return QuestionCatalogue.from_dict(data)
    except (KeyError, TypeError, ValueError) as e:
        raise BundleError(f"{src}: field 'questions' is not a valid question catalogue: {e!r}") from None
