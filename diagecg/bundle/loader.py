"""``load_bundle``: open a bundle folder and validate all of it when it is opened, not on first use
(conventions: validate at the boundary, completely): the manifest's format version and configs, every
file's size and sha256, and (through ``diagecg.bundle.engines``) the model files themselves."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from diagecg import constants as C
from diagecg.bundle.engines import check_gguf_vocab, check_onnx_io
from diagecg.bundle.rules import check_n_codes, sha256_file
from diagecg.config import (
    EncoderConfig,
    FSQConfig,
    GenerationConfig,
    PreprocessConfig,
    SummaryConfig,
    VocabConfig,
)
from diagecg.constants import ManifestKey as K
from diagecg.errors import BundleError
from diagecg.features import FEATURE_NAMES
from diagecg.prompts import PromptConfig
from diagecg.questions import QuestionCatalogue


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
        raise BundleError(
            f"{src}: summary.features name measurements this diagecg does not compute "
            f"(diagecg.features.FEATURE_NAMES, {len(FEATURE_NAMES)} names): {unknown[:5]}; "
            f"use the diagecg version the bundle was exported with"
        )
    return summary


def feature_columns(summary: SummaryConfig) -> list[int]:
    """Where each of the summary head's measurements sits in ``diagecg.features.FEATURE_NAMES``."""
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
            raise BundleError(
                f"{p}: size {size} bytes != {meta['bytes']} in the manifest (truncated or replaced)"
            )
        if verify_hashes:
            digest = sha256_file(p)
            if digest != meta["sha256"]:
                raise BundleError(
                    f"{p}: sha256 {digest[:12]}... != {str(meta['sha256'])[:12]}... in the "
                    "manifest (file was modified)"
                )


def shipped_bundle_dir() -> Path:
    """The demonstration bundle shipped inside the package: ``<diagecg package>/bundles/default``
    (it may be absent from a slimmed install; ``load_bundle`` then says so)."""
    return Path(__file__).resolve().parents[1] / C.DEFAULT_BUNDLE_DIR


# bounds on what is parsed: far above any manifest diagecg writes (the question catalogue included), far
# below what would exhaust memory or the parser's recursion
MAX_MANIFEST_BYTES = 16 << 20
MAX_MANIFEST_DEPTH = 32


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
        raise BundleError(
            f"no bundle given and no default bundle shipped at {path}; pass a bundle folder "
            f"(one written by `diagecg export`)"
        )
    return path


def load_bundle(path: str | Path, *, verify_hashes: bool = True, check_models: bool = True) -> Bundle:
    """Open a bundle folder and validate it completely, when it is opened.

    Checks ``format_version``; every listed file's size and sha256; the configs; that
    ``vocab.n_codes`` is ``prod(fsq.levels)`` plus the summary codes, that the summary was trained on
    this diagecg's measurements (``diagecg.features.FEATURE_NAMES``) and that the encoder length matches
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
        raise BundleError(
            f"{src}: format_version={version!r} is not supported (this diagecg reads "
            f"{C.FORMAT_VERSION}); re-export the bundle with a matching diagecg"
        )
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
    check_n_codes(vocab, fsq, summary, BundleError, src)
    if encoder.n_samples != preprocess.n_samples:
        raise BundleError(
            f"{src}: encoder.n_samples={encoder.n_samples} != preprocess fs_hz*window_s="
            f"{preprocess.n_samples}"
        )

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

    return Bundle(
        root=root,
        manifest=manifest,
        preprocess=preprocess,
        encoder=encoder,
        fsq=fsq,
        vocab=vocab,
        prompt=prompt,
        generation=generation,
        onnx_path=onnx_path,
        tokenizer_path=tokenizer_path,
        llm_files=llm_files,
        default_quant=default_quant,
        preset=manifest.get(K.PRESET),
        summary=summary,
        questions=questions,
    )


def _question_catalogue(manifest: dict[str, Any], src: str) -> QuestionCatalogue | None:
    data = manifest.get(K.QUESTIONS)
    if data is None:
        return None
    try:
        return QuestionCatalogue.from_dict(data)
    except (KeyError, TypeError, ValueError) as e:
        raise BundleError(f"{src}: field 'questions' is not a valid question catalogue: {e!r}") from None
