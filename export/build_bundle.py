"""``diagecg export``: an instruction-tuned checkpoint -> a runtime bundle, every export checked.

Steps (``main``):

1. load the instruct checkpoint (LLM + LoRA adapter, text tokenizer, metadata) and the stage-1 ECG
   tokenizer it was trained with;
2. preprocess and measure real held-out PTB-XL records (``diagecg.preprocess.model_inputs``),
   export the ECG tokenizer to ONNX and compare its codes with torch on those records (frame
   codes and, with a diagnostic summary head, summary codes);
3. build real prompts from the records (``diagecg.prompts.encode_prompt``), merge the LoRA adapter
   and compare merged and adapter logits on them;
4. convert the merged model to an f16 GGUF, quantise it, and compare each GGUF with the merged HF
   model: logits at every prompt position and greedy answers;
5. write everything through ``BundleWriter`` and re-open the bundle with ``load_bundle``.

``--verify`` (``verify_only``) re-runs the parity checks of an existing bundle against the
checkpoint, reading nothing but the bundle's own files on the export side.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from diagecg.bundle import Bundle, BundleWriter, load_bundle
from diagecg.calibration import read_calibration_results
from diagecg.config import (
    ConfigMixin,
    EncoderConfig,
    FSQConfig,
    GenerationConfig,
    PreprocessConfig,
    SummaryConfig,
    VocabConfig,
    check_field,
)
from diagecg.constants import (
    BUNDLE_ONNX_NAME,
    CALIBRATION_RESULTS,
    CHECKPOINT_CONFIG,
    LLM_TEXT_TOKENIZER,
    MANIFEST_NAME,
    QUANT_TYPES,
    RUN_SUMMARY,
)
from diagecg.datasets import resolve_data_roots
from diagecg.datasets.ecgqa import load_answer_vocab, load_ecgqa_samples
from diagecg.datasets.ptbxl import PtbxlDataset
from diagecg.decoding import DecodingPolicy
from diagecg.errors import ExportError, RecordError
from diagecg.export.gguf_convert import convert_hf_to_gguf, gguf_info
from diagecg.export.merge_lora import merge_lora
from diagecg.export.onnx_tokenizer import check_onnx_parity, export_onnx_tokenizer, run_onnx_indices
from diagecg.export.parity import check_thresholds, greedy_parity, logits_parity
from diagecg.export.quantize import quantize_gguf
from diagecg.io import read_record
from diagecg.nn.generation import decoding_policy
from diagecg.preprocess import model_inputs
from diagecg.questions import build_catalogue
from diagecg.types import F32Array, PatientInfo
from diagecg.vocab import ecg_ids

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ExportConfig(ConfigMixin):
    """What to export and how hard to check it."""

    checkpoint_dir: str = "runs/instruct"  # output folder of ``diagecg train instruct``
    out_dir: str = "bundle"  # the bundle folder to write (or verify)
    quants: tuple[str, ...] = ("q8_0", "q4_k_m")  # GGUF types in the bundle (CLI: q8_0,q4_k_m)
    default_quant: str | None = None  # the runtime's default; None = the first of `quants`
    verify_only: bool = False  # only re-run the parity checks of the bundle in out_dir
    data_dir: str = "data"  # shared data root (holding ptbxl/ and ecgqa/) or the ptbxl folder itself
    n_parity_records: int = 16  # held-out records for the ONNX and LLM parity checks
    parity_folds: tuple[int, ...] = (10,)  # PTB-XL folds the parity records come from (held out)
    n_questions: int = 4  # questions per parity record: the report question + ECG-QA wordings
    max_new_tokens: int | None = None  # greedy-answer cap; None = the checkpoint's generation config
    max_onnx_mismatch: float = 0.001  # allowed fraction of ONNX codes differing from torch (bin edges)
    lora_atol: float = 1e-3  # merged vs adapter logits
    # per-quant floors of HF/GGUF top-1 agreement; other quants are reported only (CLI: min_top1.q8_0=0.9)
    min_top1: dict[str, float] = dataclasses.field(default_factory=lambda: {"f16": 0.98, "q8_0": 0.9})
    allow_quant_fallback: bool = False  # let llama.cpp store odd-width tensors in another type
    n_threads: int | None = None  # llama.cpp threads; None = all cores
    progress: bool = True

    def __post_init__(self) -> None:
        n = "ExportConfig"
        object.__setattr__(self, "quants", tuple(q.strip().lower() for q in self.quants))
        check_field(
            bool(self.quants) and len(set(self.quants)) == len(self.quants),
            n,
            "quants",
            self.quants,
            f"a non-empty subset of {QUANT_TYPES}",
        )
        for q in self.quants:
            check_field(q in QUANT_TYPES, n, "quants", self.quants, f"each one of {QUANT_TYPES}")
        if self.default_quant is not None:
            check_field(
                self.default_quant in self.quants,
                n,
                "default_quant",
                self.default_quant,
                f"one of quants {self.quants}",
            )
        check_field(self.n_parity_records >= 1, n, "n_parity_records", self.n_parity_records, "must be >= 1")
        check_field(self.n_questions >= 1, n, "n_questions", self.n_questions, "must be >= 1")
        check_field(
            all(1 <= f <= 10 for f in self.parity_folds) and bool(self.parity_folds),
            n,
            "parity_folds",
            self.parity_folds,
            "a non-empty tuple of PTB-XL folds 1-10",
        )
        check_field(
            0 <= self.max_onnx_mismatch < 1, n, "max_onnx_mismatch", self.max_onnx_mismatch, "in [0, 1)"
        )
        check_field(self.lora_atol > 0, n, "lora_atol", self.lora_atol, "must be > 0")
        for q, floor in self.min_top1.items():
            check_field(q in QUANT_TYPES, n, f"min_top1.{q}", floor, f"a quant of {QUANT_TYPES}")
            check_field(
                isinstance(floor, (int, float)) and 0 <= floor <= 1,
                n,
                f"min_top1.{q}",
                floor,
                "a fraction in [0, 1]",
            )


# --- parity data: real held-out records and questions ----------------------------------------------------


@dataclasses.dataclass
class ParityRecords:
    """Held-out records for the parity checks, row-aligned."""

    ids: list[int]
    signals: F32Array  # float32 (n, 12, samples), z-scored per lead
    features: F32Array  # float32 (n, len(diagecg.features.FEATURE_NAMES)) measurements of the same window
    patients: list[PatientInfo]  # from the label table

    def model_inputs(self, summary: SummaryConfig | None) -> tuple[F32Array, F32Array | None]:
        """What the ECG tokenizer takes: the signals, and the measurements when it has a summary."""
        return self.signals, self.features if summary is not None else None


def load_parity_records(
    data_dir: str | Path, preprocess_cfg: PreprocessConfig, n: int, folds: Sequence[int]
) -> ParityRecords:
    """The first ``n`` readable PTB-XL records of ``folds``, preprocessed and measured for the model.

    Raises:
        FileNotFoundError: no PTB-XL folder; ValueError: fewer than one usable record.
    """
    ptbxl = PtbxlDataset(resolve_data_roots(data_dir).ptbxl)
    fs_src = 500 if preprocess_cfg.fs_hz > 100 else 100
    ids: list[int] = []
    signals: list[F32Array] = []
    features: list[F32Array] = []
    patients: list[PatientInfo] = []
    for ecg_id in ptbxl.ids(tuple(folds), fs_hz=fs_src):
        if len(ids) >= n:
            break
        hea = ptbxl.record_path(ecg_id, fs_src).with_suffix(".hea")
        try:
            signal, measured = model_inputs(read_record(hea), preprocess_cfg)
        except RecordError as e:
            logger.info("parity: skipping %s (%s)", hea.name, e)
            continue
        ids.append(ecg_id)
        signals.append(signal)
        features.append(measured)
        patients.append(ptbxl.entries[ecg_id].patient)
    if not ids:
        raise ValueError(f"no readable {fs_src} Hz records of folds {tuple(folds)} under {ptbxl.root}")
    if len(ids) < n:
        logger.warning("parity: only %d of %d records found in folds %s", len(ids), n, tuple(folds))
    return ParityRecords(ids, np.stack(signals), np.stack(features), patients)


def load_questions(data_dir: str | Path, report_question: str | None, n: int) -> list[str]:
    """Up to ``n`` question wordings: the report question, then distinct single-ECG ECG-QA questions of
    its valid split."""
    questions = [report_question] if report_question else []
    roots = resolve_data_roots(data_dir)
    if roots.ecgqa_or_none is not None:
        ptbxl = PtbxlDataset(roots.ptbxl)
        for sample in load_ecgqa_samples(roots.ecgqa, set(ptbxl.entries), splits=("valid",)):
            if len(questions) >= n:
                break
            if sample.question not in questions:
                questions.append(sample.question)
    if not questions:
        raise ValueError(
            f"no questions: the prompt has no report question and there are no ECG-QA files under {data_dir}"
        )
    return questions[:n]


def load_answer_vocabularies(data_dir: str | Path) -> dict[str, list[str]]:
    """ECG-QA template id -> allowed answers (``answers_for_each_template.csv``); empty when absent."""
    roots = resolve_data_roots(data_dir)
    try:
        vocab = load_answer_vocab(roots.ecgqa)
    except FileNotFoundError:
        logger.warning("no ECG-QA answer table under %s; the bundle gets no answer vocabularies", data_dir)
        return {}
    return {str(k): list(v) for k, v in vocab.per_template.items()}


def build_prompts(
    prompt_cfg: Any,
    vocab: VocabConfig,
    encode_text: Callable[[str], list[int]],
    indices: np.ndarray,
    patients: Sequence[PatientInfo],
    questions: Sequence[str],
) -> list[list[int]]:
    """One prompt per (record, question) pair, cycling through the questions, as token ids."""
    from diagecg.prompts import encode_prompt

    prompts = []
    for i, (codes, patient) in enumerate(zip(indices, patients, strict=True)):
        question = questions[i % len(questions)]
        prompts.append(
            list(
                encode_prompt(
                    prompt_cfg,
                    vocab,
                    encode_text,
                    question=question,
                    patient=patient,
                    ecg_indices=[int(c) for c in codes],
                )
            )
        )
    return prompts


# --- checkpoint ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class ExportSource:
    """Everything the export needs from an instruct checkpoint (built by ``load_source``)."""

    model: Any  # transformers causal LM, possibly a peft model with a LoRA adapter
    hf_tokenizer: Any  # the full tokenizer (text + ECG tokens)
    ecg_tokenizer: torch.nn.Module  # stage-1 EcgTokenizer
    preprocess: PreprocessConfig
    encoder: EncoderConfig
    fsq: FSQConfig
    summary: SummaryConfig | None  # the ECG tokenizer's diagnostic summary (None: frame tokens only)
    vocab: VocabConfig
    prompt: Any  # diagecg.prompts.PromptConfig
    generation: GenerationConfig
    text_tokenizer_file: Path | None  # the base text tokenizer (no ECG tokens): prompts and the runtime
    checkpoint_dir: Path
    preset: str | None = None
    training: dict[str, Any] = dataclasses.field(default_factory=dict)
    _text_tokenizer: Any = dataclasses.field(default=None, repr=False)

    def encode_text(self, text: str) -> list[int]:
        """Text -> ids with the base text tokenizer, as training and the runtime encode prompt text."""
        if self.text_tokenizer_file is None:
            return list(self.hf_tokenizer.encode(text, add_special_tokens=False))
        if self._text_tokenizer is None:
            from tokenizers import Tokenizer

            self._text_tokenizer = Tokenizer.from_file(str(self.text_tokenizer_file))
        return list(self._text_tokenizer.encode(text, add_special_tokens=False).ids)

    def decoding_policy(self) -> DecodingPolicy:
        """The runtime's stop and banned ids for this model (``diagecg.decoding``): the vocabulary's
        eos, the eos ids of the model's generation config, config and tokenizer."""
        extra: list[int | None] = []
        for source in (getattr(self.model, "config", None), self.hf_tokenizer):
            eos = getattr(source, "eos_token_id", None)
            extra += list(eos) if isinstance(eos, (list, tuple)) else [eos]
        text = None
        if self.text_tokenizer_file is not None:
            from tokenizers import Tokenizer

            text = Tokenizer.from_file(str(self.text_tokenizer_file))
        return decoding_policy(self.vocab, self.model, text, extra_stop_ids=extra)


def load_source(checkpoint_dir: str | Path) -> ExportSource:
    """Load the instruct checkpoint (adapter not merged) and its stage-1 ECG tokenizer."""
    from diagecg.nn.checkpoint import load_tokenizer
    from diagecg.nn.llm_checkpoint import load_llm_checkpoint

    d = Path(checkpoint_dir)
    model, hf_tokenizer, meta, paths = load_llm_checkpoint(d, merge=False, dtype=torch.float32)
    ecg_tokenizer, preprocess_cfg, encoder_cfg, fsq_cfg = load_tokenizer(paths.ecg_tokenizer_dir)
    summary = json.loads(paths.run_summary.read_text()) if paths.run_summary.is_file() else {}
    training = {
        "stage": meta.stage,
        "method": meta.method,
        "base_model": meta.base_model.to_dict(),
        "train_folds": list(meta.train_folds),
        "valid_folds": list(meta.valid_folds),
        "diagecg_version": meta.diagecg_version,
        "run_summary": summary,
        "stage_configs": stage_configs(d, summary, paths.ecg_tokenizer_dir),
    }
    return ExportSource(
        model=model.float().eval(),
        hf_tokenizer=hf_tokenizer,
        ecg_tokenizer=ecg_tokenizer.float().eval(),
        preprocess=preprocess_cfg,
        encoder=encoder_cfg,
        fsq=fsq_cfg,
        summary=ecg_tokenizer.summary_cfg,
        vocab=meta.vocab,
        prompt=meta.prompt,
        generation=meta.generation,
        text_tokenizer_file=paths.text_tokenizer if paths.text_tokenizer.is_file() else None,
        checkpoint_dir=d,
        preset=meta.preset,
        training=training,
    )


def stage_configs(checkpoint_dir: Path, summary: dict[str, Any], ecg_tokenizer_dir: Path) -> dict[str, Any]:
    """The config of every training stage behind a checkpoint: how the bundle was trained (R3).

    The instruct and pretrain configs come from their run summaries (the pretrain folder is found
    through the instruct run's ``init_dir``); the tokenizer's from its checkpoint config. A stage
    whose folder is gone is recorded as missing, with a warning, rather than guessed.
    """
    configs: dict[str, Any] = {}
    if "config" in summary:
        configs[summary.get("stage", "instruct")] = summary["config"]
    init_dir = summary.get("init_dir")
    pre_summary = Path(init_dir) / RUN_SUMMARY if init_dir else None
    if init_dir and pre_summary is not None and not pre_summary.is_file():
        pre_summary = checkpoint_dir.parent / Path(init_dir).name / RUN_SUMMARY  # moved: look for a sibling
    if pre_summary is not None and pre_summary.is_file():
        pre = json.loads(pre_summary.read_text())
        if "config" in pre:
            configs[pre.get("stage", "pretrain")] = pre["config"]
    else:
        logger.warning(
            "pretrain run summary not found (init_dir=%r): no pretrain config in the manifest", init_dir
        )
    tok_config = ecg_tokenizer_dir / CHECKPOINT_CONFIG
    if tok_config.is_file():
        tok = json.loads(tok_config.read_text())
        if "training" in tok:
            configs["tokenizer"] = tok["training"]
    return configs


# --- export --------------------------------------------------------------------------------------------


def _tokenizer_for_gguf(hf_tokenizer: Any) -> Any:
    backend = getattr(hf_tokenizer, "backend_tokenizer", None) or getattr(hf_tokenizer, "_tokenizer", None)
    return backend if backend is not None else hf_tokenizer


def _control_ids(vocab: VocabConfig) -> list[int]:
    return sorted(ecg_ids(vocab))


def _merged(model: Any, prompts: list[list[int]], atol: float) -> tuple[Any, dict[str, Any]]:
    """The model with its LoRA adapter merged (checked on the longest prompt); plain models pass through."""
    if not hasattr(model, "merge_and_unload"):
        return model.eval(), {"merged": False}
    sample = torch.tensor([max(prompts, key=len)], dtype=torch.int64)
    merged, report = merge_lora(model, sample, atol=atol)
    return merged, {**report, "merged": True}


def _llm_parity(
    cfg: ExportConfig, model: Any, gguf_paths: dict[str, Path], prompts: list[list[int]], src: ExportSource
) -> dict[str, Any]:
    logits = logits_parity(model, gguf_paths, prompts, n_threads=cfg.n_threads, progress=cfg.progress)
    check_thresholds(logits, cfg.min_top1)  # fail before the slower greedy decoding
    greedy = greedy_parity(
        model,
        gguf_paths,
        prompts,
        max_new_tokens=cfg.max_new_tokens or src.generation.max_new_tokens,
        policy=src.decoding_policy(),
        n_threads=cfg.n_threads,
        decode=lambda ids: src.hf_tokenizer.decode(ids, skip_special_tokens=True),
        progress=cfg.progress,
    )
    return {q: {"logits": logits[q], "greedy": greedy[q]} for q in gguf_paths}


def export_bundle(cfg: ExportConfig, src: ExportSource) -> dict[str, Any]:
    """Write and check the bundle of ``src`` into ``cfg.out_dir``; returns the summary.

    Raises:
        ExportError: a parity check failed (nothing is left claiming to be a valid bundle).
    """
    t0 = time.time()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_NAME).unlink(missing_ok=True)  # a stale manifest must not describe new files
    steps = tqdm(total=6, desc="export", disable=not cfg.progress)

    # 1. ECG tokenizer -> ONNX, checked on real held-out records
    records = load_parity_records(cfg.data_dir, src.preprocess, cfg.n_parity_records, cfg.parity_folds)
    inputs = records.model_inputs(src.summary)  # signals (+ measurements)
    onnx_path = export_onnx_tokenizer(
        src.ecg_tokenizer, src.preprocess.n_samples, out / BUNDLE_ONNX_NAME, n_leads=src.encoder.n_leads
    )
    onnx_parity = check_onnx_parity(src.ecg_tokenizer, onnx_path, *inputs, max_mismatch=cfg.max_onnx_mismatch)
    indices = run_onnx_indices(onnx_path, *inputs)  # what the runtime will feed the LLM
    steps.update()

    # 2. real prompts; merge the adapter and check the merge on them
    questions = load_questions(cfg.data_dir, getattr(src.prompt, "report_question", None), cfg.n_questions)
    prompts = build_prompts(src.prompt, src.vocab, src.encode_text, indices, records.patients, questions)
    model, merge_report = _merged(src.model, prompts, cfg.lora_atol)
    n_rows = int(model.get_input_embeddings().weight.shape[0])
    if src.vocab.vocab_size and src.vocab.vocab_size != n_rows:
        raise ExportError(
            f"vocab.vocab_size={src.vocab.vocab_size} but the model has {n_rows} embedding rows"
        )
    steps.update()

    with tempfile.TemporaryDirectory(prefix="diagecg-export-", dir=out) as work:
        # 3. GGUF f16 and quantisations
        f16 = convert_hf_to_gguf(
            model,
            _tokenizer_for_gguf(src.hf_tokenizer),
            Path(work) / "f16.gguf",
            control_token_ids=_control_ids(src.vocab),
            bos_token_id=src.vocab.bos_id,
            eos_token_id=src.vocab.eos_id,
            pad_token_id=src.vocab.pad_id,
            name=src.checkpoint_dir.name,
        )
        ggufs = {"f16": f16}
        for q in tqdm(cfg.quants, desc="quantise", disable=not cfg.progress):
            if q != "f16":
                ggufs[q] = quantize_gguf(
                    f16,
                    Path(work) / f"{q}.gguf",
                    q,
                    n_threads=cfg.n_threads,
                    allow_fallback=cfg.allow_quant_fallback,
                )
        steps.update()

        # 4. GGUF vs merged HF model on the real prompts
        llm_parity = _llm_parity(cfg, model, ggufs, prompts, src)
        steps.update()

        # 5. the bundle
        writer = BundleWriter(out)
        writer.add_config(
            preprocess=src.preprocess,
            encoder=src.encoder,
            fsq=src.fsq,
            prompt=src.prompt,
            generation=src.generation,
            preset=src.preset,
            summary=src.summary,
        )
        writer.add_onnx(onnx_path, opset=_onnx_opset(onnx_path))
        for q in cfg.quants:
            writer.add_gguf(ggufs[q], q, info=gguf_info(ggufs[q]))
        if src.text_tokenizer_file is not None:
            writer.add_tokenizer(src.text_tokenizer_file)
        else:
            logger.warning(
                "%s has no %s; the runtime will tokenize text with llama.cpp",
                src.checkpoint_dir,
                LLM_TEXT_TOKENIZER,
            )
        writer.add_vocab(src.vocab)
        answer_vocab = load_answer_vocabularies(cfg.data_dir)
        if answer_vocab:
            writer.add_answer_vocabularies(answer_vocab)
            writer.add_questions(build_catalogue(answer_vocab))
        writer.add_training(src.training)
        evaluation = _evaluation_results(src.checkpoint_dir)
        if evaluation:
            writer.add_evaluation(evaluation)
        calibration = _calibration_results(src.checkpoint_dir)
        if calibration:
            writer.add_calibration(calibration)
        parity = {
            "onnx": onnx_parity,
            "lora_merge": merge_report,
            "llm": llm_parity,
            "records": records.ids,
            "questions": questions,
        }
        writer.add_parity(parity)
        writer.write(default_quant=cfg.default_quant or cfg.quants[0])
        steps.update()

    bundle = load_bundle(out)  # 6. re-open: the runtime's own validation
    steps.update()
    steps.close()
    return _summary(bundle, parity, time.time() - t0)


def _onnx_opset(path: Path) -> int | None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _evaluation_results(checkpoint_dir: Path) -> dict[str, Any]:
    """``diagecg eval --out`` results saved next to the checkpoint (``eval_results.json``), if any."""
    path = checkpoint_dir / "eval_results.json"
    if not path.is_file():
        return {}
    results = json.loads(path.read_text())
    keep = ("folds", "train_folds", "n_records", "checkpoint", "qa", "findings", "reports")
    return {k: results[k] for k in keep if k in results}


def _calibration_results(checkpoint_dir: Path) -> dict[str, Any]:
    """The per-finding calibration that ``diagecg eval --set calibrate=true`` fitted on a validation fold
    and saved next to the checkpoint (``CALIBRATION_RESULTS``), if any; refused when it was fitted on a
    fold the bundle's evaluation tests on."""
    path = checkpoint_dir / CALIBRATION_RESULTS
    if not path.is_file():
        return {}
    fitted = read_calibration_results(path, _evaluation_results(checkpoint_dir).get("folds") or [])
    results = json.loads(path.read_text())
    return {
        "fitted_on": {"folds": results.get("folds"), "n_records": results.get("n_records")},
        "findings": fitted,
    }


def _summary(bundle: Bundle, parity: dict[str, Any], wall_s: float) -> dict[str, Any]:
    files = bundle.manifest["files"]
    return {
        "bundle": str(bundle.root),
        "quants": list(bundle.quants),
        "default_quant": bundle.default_quant,
        "bytes": {name: meta["bytes"] for name, meta in files.items()},
        "onnx_code_agreement": parity["onnx"]["code_agreement"],
        "onnx_summary_agreement": parity["onnx"].get("summary_agreement", 1.0),
        "lora_merge_max_abs_diff": parity.get("lora_merge", {}).get("max_abs_diff"),
        "llm": {
            q: {
                "top1_agreement": r["logits"]["top1_agreement"],
                "max_abs_diff": r["logits"]["max_abs_diff"],
                "greedy_exact_match": r["greedy"]["exact_match"],
            }
            for q, r in parity["llm"].items()
        },
        "wall_s": round(wall_s, 1),
    }


def verify_bundle(cfg: ExportConfig, src: ExportSource) -> dict[str, Any]:
    """Re-run the parity checks of the bundle in ``cfg.out_dir`` against the checkpoint (read only)."""
    t0 = time.time()
    bundle = load_bundle(cfg.out_dir)
    ours = (bundle.preprocess, bundle.encoder, bundle.fsq, bundle.summary, bundle.vocab)
    if ours != (src.preprocess, src.encoder, src.fsq, src.summary, src.vocab):
        raise ExportError(f"{bundle.root}: the bundle's configs differ from checkpoint {src.checkpoint_dir}")
    records = load_parity_records(cfg.data_dir, bundle.preprocess, cfg.n_parity_records, cfg.parity_folds)
    inputs = records.model_inputs(bundle.summary)
    onnx_parity = check_onnx_parity(
        src.ecg_tokenizer, bundle.onnx_path, *inputs, max_mismatch=cfg.max_onnx_mismatch
    )
    indices = run_onnx_indices(bundle.onnx_path, *inputs)
    questions = load_questions(cfg.data_dir, getattr(src.prompt, "report_question", None), cfg.n_questions)
    prompts = build_prompts(src.prompt, bundle.vocab, src.encode_text, indices, records.patients, questions)
    model, _ = _merged(src.model, prompts, cfg.lora_atol)
    llm_parity = _llm_parity(cfg, model, dict(bundle.llm_files), prompts, src)
    parity = {"onnx": onnx_parity, "llm": llm_parity, "records": records.ids, "questions": questions}
    return {**_summary(bundle, parity, time.time() - t0), "verified": True}


def main(cfg: ExportConfig) -> dict[str, Any]:
    """Export (or, with ``verify_only``, re-check) a bundle; returns a JSON-able summary.

    Raises:
        FileNotFoundError: checkpoint or data missing.
        ExportError: a parity check failed.
        BundleError: (verify) the bundle is invalid.
    """
    src = load_source(cfg.checkpoint_dir)
    if cfg.verify_only:
        logger.info("verifying bundle %s against %s", cfg.out_dir, cfg.checkpoint_dir)
    else:
        logger.info("exporting %s -> %s (%s)", cfg.checkpoint_dir, cfg.out_dir, ", ".join(cfg.quants))
    with torch.no_grad():
        return verify_bundle(cfg, src) if cfg.verify_only else export_bundle(cfg, src)


__all__ = [
    "ExportConfig",
    "ExportSource",
    "ParityRecords",
    "build_prompts",
    "export_bundle",
    "load_answer_vocabularies",
    "load_parity_records",
    "load_questions",
    "load_source",
    "main",
    "verify_bundle",
]
