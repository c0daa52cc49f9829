"""Record -> preprocess -> ECG code indices -> prompt token ids -> answer (DiagECG, arXiv 2508.15338).

:class:`DiagEcgPipeline` loads a bundle once (validated by ``diagecg.bundle.load_bundle``) and
answers many questions. Usage::

    from diagecg.runtime import DiagEcgPipeline

    pipe = DiagEcgPipeline.from_bundle("bundle/", quant="q4_k_m")
    ans = pipe.answer("ptbxl/records100/00000/00001_lr.hea", "Does this ECG show atrial fibrillation?")
    print(ans.answer, ans.timings_ms)
    for result in pipe.answer_batch(paths, "..."):  # Answer, or an error dict for a bad record
        ...
    for result in pipe.answer_batch(paths, ["q1?", "q2?"]):  # each record read once, asked both
        ...

Repeated questions about one ECG are cheap: the ECG codes of the last ``ecg_cache_size`` signals are
kept (``runtime.ecg_codes``); so are the per-record checks of the last ``ecg_cache_size`` in-memory
``EcgRecord``s (``runtime.record_input.RecordChecks``); and llama.cpp keeps the KV cells of the previous
prompt, so a prompt with the same patient and ECG evaluates only its question (``runtime.llm``). All are
on by default; ``ecg_cache_size=0`` and ``reuse_prefix=False`` turn them off.

Thread safety: one pipeline may be shared by threads. onnxruntime sessions are thread-safe, and
the llama.cpp context (not thread-safe) sits behind a lock in ``LlamaModel``, so concurrent calls
are correct but their generation steps run one after another. For parallel generation, load one
pipeline per thread (each holds its own copy of the model in memory).

Questions. A bundle with a question catalogue reads every question against the templates it was
trained on (``diagecg.questions``) and asks the model the template's own wording, window by window
(``runtime.windows``): a closed question (verify, choose) by scoring each option as a whole
continuation, anything else by decoding (``runtime.replies``). The windows' answers are combined
(``runtime.windows``), kept consistent, coded and rated (``runtime.findings``, ``runtime.answering``),
turned to the question as asked, and given their measured evidence (``runtime.evidence``). A refused
question gets no answer, the reason and the supported questions nearest to it.

The answer's JSON (``Answer.to_dict()``) and a batch's error lines (``error_dict``) are written by
``runtime.answer``; what a record may be and how it is checked, by ``runtime.record_input``. Their
public names are re-exported here (``__all__``), so ``from diagecg.runtime.pipeline import Answer``
keeps working.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from diagecg.answers import normalize_answer
from diagecg.bundle import Bundle, default_bundle, load_bundle
from diagecg.config import QualityConfig
from diagecg.errors import DiagEcgError, InputError, SignalQualityError
from diagecg.notes import Note, W
from diagecg.plausibility import note_code
from diagecg.preprocess import record_windows
from diagecg.prompts import encode_prompt, sanitize_question
from diagecg.questions import MatchedQuestion, Refusal
from diagecg.reliability import ReliabilityTable
from diagecg.runtime.answer import (
    SCHEMA_VERSION,
    TASK_QA,
    TASK_REPORT,
    TIMING_STAGES,
    Answer,
    answer_schema,
    bundle_field,
    error_dict,
)
from diagecg.runtime.answering import as_asked, refusal_note
from diagecg.runtime.device import DeviceChoice, choose_device, trim_heap
from diagecg.runtime.ecg_codes import EcgCodeReader
from diagecg.runtime.ecg_session import EcgTokenizerSession
from diagecg.runtime.evidence import evidence
from diagecg.runtime.evidence import measurements as window_measurements
from diagecg.runtime.findings import (
    IMPLAUSIBLE_RECORD,
    answer_reliability,
    answer_statements,
    read_consistently,
    statement_reader,
)
from diagecg.runtime.llm import LlamaModel, load_text_tokenizer
from diagecg.runtime.outputs import AuditLog
from diagecg.runtime.record_input import RecordChecks, RecordLike, as_record, check_patient, signal_key
from diagecg.runtime.replies import check_options, choose, decode, score_options
from diagecg.runtime.windows import WindowAnswer, aggregate, unanalysed_note, window_list
from diagecg.types import EcgRecord, I64Array, PatientInfo

__all__ = [
    "ECG_CACHE_SIZE",
    "IMPLAUSIBLE_RECORD",
    "SCHEMA_VERSION",
    "TASK_QA",
    "TASK_REPORT",
    "TIMING_STAGES",
    "Answer",
    "DiagEcgPipeline",
    "WindowAnswer",
    "answer_schema",
    "as_record",
    "error_dict",
    "signal_key",
]

logger = logging.getLogger(__name__)

ECG_CACHE_SIZE = 64  # signals whose ECG codes a pipeline keeps (~0.5 KB each at 100 Hz)


def _log_failure(record: RecordLike, error: Exception) -> None:
    """Log a failed batch item: one line for an expected error, the traceback for anything else."""
    if isinstance(error, DiagEcgError):
        logger.debug("record %s failed: %s", record, error)
    else:
        logger.error("unexpected error on record %s", record, exc_info=error)


class DiagEcgPipeline:
    """A loaded bundle that answers questions about ECG records.

    Build it with :meth:`from_bundle`; the constructor takes already-loaded parts.

    Args:
        bundle: the validated bundle.
        ecg_session: its ONNX ECG tokenizer session.
        llm: its GGUF model.
        quant: the quantisation ``llm`` was loaded from.
        device: the device choice both were loaded with.
        ecg_cache_size: signals whose ECG codes are kept, and in-memory records whose checks are kept
            (0 = no cache).
        allow_degraded: read records with some flat leads, with a warning, instead of refusing them
            (``diagecg.quality``); answers that need the flat leads get a warning of their own.
    """

    def __init__(
        self,
        bundle: Bundle,
        ecg_session: EcgTokenizerSession,
        llm: LlamaModel,
        *,
        quant: str,
        device: DeviceChoice,
        ecg_cache_size: int = ECG_CACHE_SIZE,
        allow_degraded: bool = False,
        measure: bool = True,
    ) -> None:
        if ecg_cache_size < 0:
            raise ValueError(f"ecg_cache_size={ecg_cache_size} is invalid: must be >= 0")
        self.bundle = bundle
        self.ecg_session = ecg_session
        self.llm = llm
        self.quant = quant
        self.prompt_config = bundle.prompt
        self.device = dataclasses.replace(device, ecg_tokenizer=ecg_session.device)
        self.load_warnings = list(ecg_session.warnings)
        self.ecg_cache_size = ecg_cache_size
        self.quality = QualityConfig(allow_flat_leads=allow_degraded)
        self.measure = measure
        self.reliability = ReliabilityTable.from_manifest(bundle.manifest)
        # finding name -> Platt map and threshold the verify answers follow (the manifest's; `diagecg
        # calibrate` sets it to {} to read the model's own probabilities)
        self.calibration: dict[str, dict[str, Any]] = bundle.calibration
        # one JSON line per answer and failure (runtime.outputs.AuditLog); set by from_bundle(audit_log=)
        self.audit: AuditLog | None = None
        self._ecg = EcgCodeReader(ecg_session, bundle.preprocess, bundle.summary, ecg_cache_size)
        self._checks = RecordChecks(ecg_cache_size)  # per-record checks of in-memory records
        self._bundle_info = bundle_field(bundle, quant)

    @property
    def bundle_info(self) -> dict[str, Any]:
        """What every answer's ``bundle`` field holds: path, format and package versions, manifest and GGUF
        sha256, quant (a copy)."""
        return dict(self._bundle_info)

    @classmethod
    def from_bundle(
        cls,
        path: str | Path | None = None,
        quant: str | None = None,
        device: str = "auto",
        threads: int | None = None,
        *,
        verify_hashes: bool = True,
        ecg_cache_size: int = ECG_CACHE_SIZE,
        reuse_prefix: bool = True,
        allow_degraded: bool = False,
        measure: bool = True,
        audit_log: str | Path | AuditLog | None = None,
    ) -> DiagEcgPipeline:
        """Load and validate a bundle, then open its ONNX session and GGUF model.

        Args:
            path: the bundle folder; None = the demonstration bundle shipped in the package.
            quant: which GGUF (``"q8_0"``, ``"q4_k_m"``...); None = the bundle's default.
            device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (see ``runtime.device``).
            threads: CPU threads for both engines; None = ``device.default_threads()``.
            verify_hashes: check every file's sha256 (sizes are always checked).
            ecg_cache_size: signals whose ECG codes are kept, and in-memory records whose checks are
                kept (0 = none).
            reuse_prefix: let llama.cpp keep the KV cells a new prompt shares with the previous one.
            allow_degraded: answer records with some flat leads, with warnings (see ``__init__``).
            measure: add the measurements of ``diagecg.features`` (the numbers the model reads) to reports.
            audit_log: append one audit line per answer and failure to this file (``runtime.outputs``:
                time, request id, client, record hash, question, answer, probabilities, warning codes,
                bundle hash; never signal data).

        Raises:
            BundleError: missing/tampered/truncated files, unknown quant, inconsistent manifest.
            InferenceError: an engine cannot load its file, or CUDA was demanded and is unavailable.
            ValueError: bad ``device`` or ``threads``.
        """
        t0 = time.perf_counter()
        # a bad audit path fails before the models load
        audit = AuditLog(audit_log) if isinstance(audit_log, (str, Path)) else audit_log
        choice = choose_device(device, threads)
        bundle = load_bundle(default_bundle() if path is None else path, verify_hashes=verify_hashes)
        q = quant or bundle.default_quant
        gguf_path = bundle.gguf_path(q)
        # "auto" stays "auto" for the session: a CUDA provider that fails to start then warns, not raises
        session_device = "auto" if choice.requested == "auto" else choice.ecg_tokenizer
        session = EcgTokenizerSession(
            bundle.onnx_path,
            device=session_device,
            threads=choice.threads,
            n_samples=bundle.preprocess.n_samples,
            n_codes=bundle.vocab.n_codes,
        )
        tokenizer = load_text_tokenizer(bundle.tokenizer_path) if bundle.tokenizer_path else None
        llm = LlamaModel(
            gguf_path,
            vocab=bundle.vocab,
            n_ctx=bundle.generation.n_ctx,
            tokenizer=tokenizer,
            threads=choice.threads,
            n_gpu_layers=choice.n_gpu_layers,
            reuse_prefix=reuse_prefix,
        )
        pipe = cls(
            bundle,
            session,
            llm,
            quant=q,
            device=choice,
            ecg_cache_size=ecg_cache_size,
            allow_degraded=allow_degraded,
            measure=measure,
        )
        pipe.audit = audit
        logger.debug(
            "loaded bundle %s (%s) in %.0f ms: ECG tokenizer on %s, LLM on %s, %d threads",
            bundle.root,
            q,
            (time.perf_counter() - t0) * 1e3,
            pipe.device.ecg_tokenizer,
            pipe.device.llm,
            choice.threads,
        )
        return pipe

    # --- one record ----------------------------------------------------------------------------

    def check_question(self, question: str) -> str:
        """The question as it will be sent, or InputError (not UTF-8, control characters, empty, too
        long, ECG-token strings or any special token of the text model such as ``<|end_of_text|>``)."""
        question = sanitize_question(question, self.bundle.generation.max_question_chars)
        special = self.llm.find_special_text(question)
        if special is not None:
            raise InputError(
                f"the question contains the model's special token {special!r}; it cannot be "
                f"typed, please rephrase"
            )
        return question

    def _run(
        self,
        record: RecordLike,
        question: str,
        task: str,
        patient: PatientInfo | None = None,
        read_ms: float = 0.0,
    ) -> Answer:
        """Answer one question; ``read_ms``: time already spent reading ``record`` (an EcgRecord). The
        answer goes to the audit log when there is one."""
        ans = self._answer_one(record, question, task, patient, read_ms)
        if self.audit is not None:
            self.audit.log(ans.to_dict(), record if isinstance(record, (str, Path, EcgRecord)) else None)
        return ans

    def _error(
        self, record: RecordLike, error: Exception, question: str, task: str, elapsed_ms: float
    ) -> dict[str, Any]:
        """A failure's error line (``error_dict``), written to the audit log when there is one."""
        line = error_dict(
            record,
            error,
            question,
            task=task,
            bundle=self._bundle_info,
            device=self.device.to_dict(),
            elapsed_ms=elapsed_ms,
        )
        if self.audit is not None:
            self.audit.log(line, record if isinstance(record, (str, Path, EcgRecord)) else None)
        return line

    def _guarded(self, record: RecordLike, question: str, task: str, patient: PatientInfo | None) -> Answer:
        """``_run``, with a failure written to the audit log before it is raised."""
        t = time.perf_counter()
        try:
            return self._run(record, question, task, patient)
        except Exception as e:
            self._error(record, e, question, task, (time.perf_counter() - t) * 1e3)
            raise

    def _answer_one(
        self,
        record: RecordLike,
        question: str,
        task: str,
        patient: PatientInfo | None = None,
        read_ms: float = 0.0,
    ) -> Answer:
        times: dict[str, float] = {}
        t_start = t = time.perf_counter() - read_ms / 1e3

        def lap(stage: str) -> None:
            nonlocal t
            now = time.perf_counter()
            times[stage] = round((now - t) * 1e3, 3)
            t = now

        rec, dead = self._checks.check(record, self.quality)
        lap("read")
        catalogue = self.bundle.questions
        read = catalogue.read(question) if task == TASK_QA and catalogue is not None else None
        match = read if isinstance(read, MatchedQuestion) else None
        used = rec.patient.with_overrides(patient)
        common: dict[str, Any] = dict(
            record=rec.source,
            record_id=rec.record_id,
            task=task,
            question=question,
            bundle=dict(self._bundle_info),
            device=self.device.to_dict(),
            timings_ms=times,
            patient=dataclasses.asdict(used),
        )
        if isinstance(read, Refusal):
            times["total"] = round((time.perf_counter() - t_start) * 1e3, 3)
            return Answer(
                **common,
                answer="",
                answers=[],
                stop_reason="unsupported",
                n_prompt_tokens=0,
                n_answer_tokens=0,
                n_ecg_tokens=0,
                ecg_cached=False,
                n_reused_tokens=0,
                warnings=[*self._notes(rec), refusal_note(read)],
                question_supported=False,
                refusal=read.to_dict(),
            )
        if dead.any() and not (match is not None and catalogue is not None and catalogue.is_rhythm(match)):
            # its own warning would say "do not trust this answer": it is not given (issue 23)
            names = ", ".join(n for n, f in zip(rec.lead_names, dead, strict=True) if f)
            raise SignalQualityError(
                f"{rec.source or rec.record_id or 'record'}: the answer would need "
                f"leads that are flat in this record ({names}); a degraded record "
                f"answers only rhythm questions (read from the intact limb leads)"
            )
        parts: list[WindowAnswer] = []
        for k, (start_s, end_s, window) in enumerate(record_windows(rec, self.bundle.preprocess)):
            indices, features, cached, stage_ms = self._ecg.read(window)
            for stage, ms in stage_ms.items():
                times[stage] = round(times.get(stage, 0.0) + ms, 3)
            t = time.perf_counter()
            prompt_ids = encode_prompt(
                self.prompt_config,
                self.bundle.vocab,
                self.llm.encode_text,
                question=match.canonical if match else question,
                patient=used,
                ecg_indices=indices.tolist(),
            )
            lap(f"prompt{k}")
            reply = (
                self._choose(prompt_ids, match)
                if match is not None and match.closed
                else decode(self.llm, self.bundle.generation, prompt_ids, match)
            )
            lap(f"generate{k}")
            parts.append(WindowAnswer(start_s, end_s, indices, cached, len(prompt_ids), reply, features))
        for stage in ("prompt", "generate"):
            times[stage] = round(sum(times.pop(f"{stage}{k}") for k in range(len(parts))), 3)
        chosen, text, confidence, notes = aggregate(parts, match, task, rec)
        tail = unanalysed_note(rec, parts)
        notes.extend([tail] if tail is not None else [])
        reply = chosen.reply
        windows = window_list(parts, match is not None and match.closed)
        t_read = time.perf_counter()
        # one rule keeps any two answers about the record consistent (runtime.answering.StatementReader)
        reader = (
            None
            if catalogue is None
            else statement_reader(
                catalogue,
                lambda k, q: self._ask(parts[k].codes, used, q),
                len(parts),
                self.reliability,
                self._ecg.shared_readings([p.codes for p in parts], used, self.calibration),
                self.calibration,
            )
        )
        text, probs, confidence, statement_probs, rule_notes = read_consistently(
            reader,
            match,
            task,
            [p.reply["text"] for p in parts],
            text,
            reply.get("option_probabilities"),
            confidence,
        )
        notes.extend(rule_notes)
        times["generate"] = round(times["generate"] + (time.perf_counter() - t_read) * 1e3, 3)
        model_answers = normalize_answer(text)  # the canonical question's answer (statements are about it)
        text, probs, confidence, windows = as_asked(match, text, probs, confidence, windows)
        answers = sorted(normalize_answer(text)) if task == TASK_QA else []
        measurements = window_measurements(parts[0]) if task == TASK_REPORT and self.measure else None
        statements = answer_statements(task, match, text, model_answers, statement_probs)
        record_notes = self._notes(rec)
        reliability, trust_notes = answer_reliability(
            self.reliability, catalogue, match, statements, task, record_notes
        )
        notes.extend(trust_notes)
        times["total"] = round((time.perf_counter() - t_start) * 1e3, 3)
        return Answer(
            **common,
            answer=text,
            answers=answers,
            statements=statements,
            measurements=measurements,
            stop_reason=reply["stop_reason"],
            n_prompt_tokens=chosen.n_prompt_tokens,
            n_answer_tokens=reply["n_answer_tokens"],
            n_ecg_tokens=int(chosen.codes.shape[0]),
            ecg_cached=all(p.cached for p in parts),
            n_reused_tokens=reply["n_reused_tokens"],
            warnings=[*record_notes, *(w for p in parts for w in p.reply["warnings"]), *notes],
            question_supported=None if match is None else True,
            matched_question=None if match is None else match.to_dict(),
            confidence=confidence,
            option_probabilities=probs,
            windows=windows,
            reliability=reliability,
            evidence=evidence(chosen, match, self.calibration),
            calibrated=bool(reply.get("calibrated")),
        )

    def _notes(self, rec: EcgRecord) -> list[Note]:
        """The warnings every answer about ``rec`` starts with: the engines' and the record's."""
        return [
            *(Note(W.ENGINE, w) for w in self.load_warnings),
            *(Note(note_code(w) or W.RECORD, w) for w in rec.warnings),
        ]

    def _ask(self, codes: I64Array, patient: PatientInfo, question: MatchedQuestion) -> dict[str, Any]:
        """One window's reply to a catalogue yes/no question (confirming a query's or report's statement)."""
        prompt_ids = encode_prompt(
            self.prompt_config,
            self.bundle.vocab,
            self.llm.encode_text,
            question=question.canonical,
            patient=patient,
            ecg_indices=codes.tolist(),
        )
        return self._choose(prompt_ids, question)

    def _choose(self, prompt_ids: list[int], match: MatchedQuestion) -> dict[str, Any]:
        """Score a closed question's options (``runtime.replies.choose``) under the calibration in use."""
        return choose(
            self.llm, self.prompt_config, self.bundle.vocab.eos_id, self.calibration, prompt_ids, match
        )

    def ecg_codes(self, record: RecordLike) -> I64Array:
        """The ECG token indices the bundle's tokenizer gives a record (summary codes, then frames)."""
        rec = self._checks.check(record, self.quality)[0]
        return self._ecg.read(rec)[0]

    def option_probabilities(
        self,
        record: RecordLike,
        question: str,
        options: Sequence[str],
        *,
        patient: PatientInfo | None = None,
        ecg_codes: I64Array | None = None,
    ) -> dict[str, float]:
        """The model's probability of each answer option (whole continuations, normalised over the
        options; ``LlamaModel.option_probabilities``).

        Args:
            record: a record path or an ``EcgRecord`` (its patient features are used).
            question: free text, checked as in :meth:`answer`.
            options: the answers to score, e.g. ``("yes", "no")``.
            patient: overrides of the record's patient features.
            ecg_codes: ECG codes to use instead of the record's own (e.g. another record's, for an
                ECG ablation); None = the record's.

        Raises:
            InputError: bad question, no options, or an option that is not a str or fails the question
                checks (empty, special tokens). RecordError / InferenceError: as :meth:`answer`.
        """
        options = check_options(options, self.check_question)
        rec = self._checks.check(record, self.quality)[0]
        codes = self._ecg.read(rec)[0] if ecg_codes is None else ecg_codes
        prompt_ids = encode_prompt(
            self.prompt_config,
            self.bundle.vocab,
            self.llm.encode_text,
            question=self.check_question(question),
            patient=rec.patient.with_overrides(check_patient(patient)),
            ecg_indices=codes.tolist(),
        )
        return score_options(self.llm, self.prompt_config, self.bundle.vocab.eos_id, prompt_ids, options)

    def clear_caches(self) -> None:
        """Drop the cached ECG codes, the consistency rule's readings, the records' checks and the KV cells
        llama.cpp holds (the next answer starts cold)."""
        self._ecg.clear()
        self._checks.clear()
        self.llm.reset()

    def answer(self, record: RecordLike, question: str, *, patient: PatientInfo | None = None) -> Answer:
        """Answer a question about one record.

        Args:
            record: a record path (``.hea``, or a ``.mat`` with its header) or an ``EcgRecord``.
            question: free text; ECG-token strings and over-long text are refused.
            patient: features that override the record header's (fields left None keep the header's).

        Raises:
            InputError: bad question.
            RecordError: the record cannot be read or is unusable.
            InferenceError: the prompt does not fit the context, or an engine failed.
        """
        return self._guarded(record, self.check_question(question), TASK_QA, check_patient(patient))

    def report(self, record: RecordLike, *, patient: PatientInfo | None = None) -> Answer:
        """Generate the report of one record (the bundle's fixed report question); raises as `answer`."""
        return self._guarded(record, self.prompt_config.report_question, TASK_REPORT, check_patient(patient))

    # --- many records --------------------------------------------------------------------------

    def _batch(
        self,
        records: Iterable[RecordLike],
        questions: Sequence[str],
        task: str,
        patient: PatientInfo | None = None,
    ) -> Iterator[Answer | dict[str, Any]]:
        for record in records:
            t = time.perf_counter()
            try:
                rec = as_record(record, self.quality)  # checked again, from the cache, by each question
            except Exception as e:  # DiagEcgError, or a bug: one error line per question, the batch goes on
                _log_failure(record, e)
                ms = (time.perf_counter() - t) * 1e3
                yield from (self._error(record, e, question, task, ms) for question in questions)
                continue
            read_ms = (time.perf_counter() - t) * 1e3  # charged to the first question only
            for question in questions:
                t = time.perf_counter()
                try:
                    yield self._run(rec, question, task, patient, read_ms=read_ms)
                except Exception as e:  # a record or engine error, or a bug: report it, keep going
                    _log_failure(record, e)
                    yield self._error(rec, e, question, task, (time.perf_counter() - t) * 1e3 + read_ms)
                read_ms = 0.0

    def answer_batch(
        self,
        records: Iterable[RecordLike],
        question: str | Sequence[str],
        *,
        patient: PatientInfo | None = None,
    ) -> Iterator[Answer | dict[str, Any]]:
        """Answer one question, or several, for many records, lazily: each record is read once and
        asked every question in turn (the later ones reuse its ECG codes and prompt prefix). Yields
        ``len(records) * len(questions)`` results, record by record; a failure yields ``error_dict``.

        Raises:
            InputError: a bad question, or none (checked before any record is read).
        """
        questions = [question] if isinstance(question, str) else list(question)
        if not questions:
            raise InputError("no question given")
        checked = [self.check_question(q) for q in questions]
        return self._batch(records, checked, TASK_QA, check_patient(patient))

    def report_batch(
        self, records: Iterable[RecordLike], *, patient: PatientInfo | None = None
    ) -> Iterator[Answer | dict[str, Any]]:
        """Reports for many records, lazily; a failing record yields ``error_dict``."""
        return self._batch(records, [self.prompt_config.report_question], TASK_REPORT, check_patient(patient))

    def close(self) -> None:
        """Free the llama.cpp model and the onnxruntime session now. Idempotent; every later call that
        needs them raises ``InferenceError`` (never a crash of the host process)."""
        self.llm.close()
        self.ecg_session.close()
        if self.audit is not None:
            self.audit.close()
        trim_heap()  # the models' freed memory goes back to the OS: load-answer-close stays flat

    def __enter__(self) -> DiagEcgPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
