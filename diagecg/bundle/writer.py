"""``BundleWriter``: assembles a bundle folder and writes its ``manifest.json``
(conventions: one writer per format, self-describing artifacts).

The writer only formats: it never trains or converts anything. Model files are checked when the bundle
is loaded (``diagecg.bundle.loader``), not here.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from diagecg import constants as C
from diagecg.bundle.rules import check_n_codes, sha256_file
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
from diagecg.questions import QuestionCatalogue

logger = logging.getLogger(__name__)

# Distributions whose versions are stamped into the manifest (those not installed are left out).
PACKAGE_DISTRIBUTIONS: tuple[str, ...] = (
    "diagecg",
    "numpy",
    "torch",
    "transformers",
    "peft",
    "tokenizers",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "gguf",
    "llama_cpp_python",
)

# Preferred default quantisation, best first, when the writer is not told.
DEFAULT_QUANT_PREFERENCE: tuple[str, ...] = ("q4_k_m", "q8_0", "q5_k_m", "q6_k", "q4_0", "f16")


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

    def add_config(
        self,
        *,
        preprocess: PreprocessConfig,
        encoder: EncoderConfig,
        fsq: FSQConfig,
        prompt: Mapping[str, Any] | ConfigMixin,
        generation: GenerationConfig,
        preset: str | None = None,
        summary: SummaryConfig | None = None,
    ) -> None:
        """Record every config the runtime needs to rebuild the pipeline (conventions: self-describing
        artifacts); ``summary`` is the
        ECG tokenizer's diagnostic summary (None or no findings: frame tokens only, written as null).

        Raises:
            ValueError: out of order, or ``encoder.n_samples != preprocess.n_samples``.
        """
        if encoder.n_samples != preprocess.n_samples:
            raise ValueError(
                f"add_config: encoder.n_samples={encoder.n_samples} != "
                f"preprocess.n_samples={preprocess.n_samples}"
            )
        summary = summary if summary is not None and summary.enabled else None
        prompt_dict = prompt.to_dict() if isinstance(prompt, ConfigMixin) else dict(prompt)
        self._set(K.ENCODER, encoder.to_dict(), "add_config")
        self._fsq, self._summary = fsq, summary
        self._manifest.update(
            {
                K.PREPROCESS: preprocess.to_dict(),
                K.FSQ: fsq.to_dict(),
                K.SUMMARY: summary.to_dict() if summary else None,
                K.PROMPT: _plain(prompt_dict, "add_config(prompt)"),
                K.GENERATION: generation.to_dict(),
                K.PRESET: preset,
            }
        )

    def add_onnx(self, src: str | Path, *, opset: int | None = None) -> None:
        """Add the ECG tokenizer graph (inputs ``signal`` [+ ``features``], output ``indices``), after
        ``add_config`` (its sizes come from the encoder config)."""
        src = self._require_file(src)
        if K.ENCODER not in self._manifest:
            raise ValueError("BundleWriter.add_onnx: add_config must be called first")
        enc = EncoderConfig.from_dict(self._manifest[K.ENCODER])
        n_summary = self._summary.n_tokens if self._summary else 0
        self._set(
            K.ONNX,
            {
                "file": C.BUNDLE_ONNX_NAME,
                "input": C.ONNX_INPUT_SIGNAL,
                "output": C.ONNX_OUTPUT_INDICES,
                "features": C.ONNX_INPUT_FEATURES if self._summary else None,
                "n_leads": enc.n_leads,
                "n_samples": enc.n_samples,
                "n_frames": enc.n_frames,
                "n_tokens": n_summary + enc.n_frames,
                "opset": opset,
            },
            "add_onnx",
        )
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
            check_n_codes(vocab, self._fsq, self._summary, ValueError, "add_vocab")
        self._set(K.VOCAB, vocab.to_dict(), "add_vocab")

    def add_answer_vocabularies(self, vocabularies: Mapping[str, Sequence[str]]) -> None:
        """Record the closed answer sets (question type -> allowed answers)."""
        self._set(
            K.ANSWER_VOCAB,
            {str(k): [str(a) for a in v] for k, v in vocabularies.items()},
            "add_answer_vocabularies",
        )

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
                raise ValueError(
                    f"BundleWriter.add_calibration: {name!r} needs a, b and a threshold in [0, 1], got {row}"
                )
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
        required = {
            K.ENCODER: "add_config",
            K.ONNX: "add_onnx",
            K.LLM_FILES: "add_gguf",
            K.VOCAB: "add_vocab",
        }
        missing = [method for key, method in required.items() if key not in self._manifest]
        if missing:
            raise ValueError(f"BundleWriter.write: missing {', '.join(missing)}")
        assert self._fsq is not None
        check_n_codes(
            VocabConfig.from_dict(self._manifest[K.VOCAB]), self._fsq, self._summary, ValueError, "write"
        )
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
