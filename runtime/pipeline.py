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

Repeated questions about one ECG are cheap: the ECG codes of the last ``ecg_cache_size`` signals
are kept, keyed by a hash of the signal's bytes, sampling rate and lead names (the codes are a
deterministic function of those); so are the per-record checks (quality checks, dead leads) of the last
``ecg_cache_size`` in-memory ``EcgRecord``s (``runtime.record_input.RecordChecks``); and llama.cpp keeps
the KV cells of the previous prompt, so a prompt with the same patient and ECG evaluates only its
question (``runtime.llm``). All are on by default; ``ecg_cache_size=0`` and ``reuse_prefix=False``
turn them off.

Thread safety: one pipeline may be shared by threads. onnxruntime sessions are thread-safe, and
the llama.cpp context (not thread-safe) sits behind a lock in ``LlamaModel``, so concurrent calls
are correct but their generation steps run one after another. For parallel generation, load one
pipeline per thread (each holds its own copy of the model in memory).

Questions. A bundle with a question catalogue reads every question against the templates it was
trained on (``diagecg.questions``) and asks the model the template's own wording. A closed question
(verify, choose) is answered by scoring each option as a whole continuation
(``LlamaModel.option_probabilities``); a query is decoded and its members kept when the model's own
yes/no answer about each confirms it; a negated question is answered as asked
(``runtime.answering``). A refused question gets no answer, the reason and the supported questions
nearest to it.

The whole record. A record longer than the model window by more than 5% is cut into evenly spaced
windows (``diagecg.preprocess.record_windows``), each asked the question (:class:`WindowAnswer`).
A closed answer comes from the window with the strongest evidence of a finding (the lowest
probability of the template's ``negative_option``, ``diagecg.question_templates``); a query's or a
report's statements are each kept by the same rule applied to the yes/no question about them.

The answer's JSON (``Answer.to_dict()``) and a batch's error lines (``error_dict``) are written by
``runtime.answer``; what a record may be and how it is checked, by ``runtime.record_input``. Their
public names are re-exported here (``__all__``), so ``from diagecg.runtime.pipeline import Answer``
keeps working.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from diagecg.answers import format_answer, normalize_answer
from diagecg.bundle import Bundle, default_bundle, feature_columns, load_bundle, sha256_file
from diagecg.calibration import calibrate_options, calibration_identity
from diagecg.config import QualityConfig
from diagecg.constants import MANIFEST_NAME
from diagecg.constants import ManifestKey as K
from diagecg.criteria import criterion_for
from diagecg.decoding import option_continuations
from diagecg.errors import DiagEcgError, InferenceError, InputError, SignalQualityError
from diagecg.features import FEATURE_NAMES, report_measurements
from diagecg.notes import Note, W
from diagecg.plausibility import CHECKS, note_code
from diagecg.preprocess import model_inputs, record_windows
from diagecg.prompts import encode_prompt, sanitize_question
from diagecg.questions import NONE_ANSWER, MatchedQuestion, Refusal
from diagecg.reliability import ReliabilityTable
from diagecg.report_text import report_statements, tidy_report
from diagecg.runtime.answer import (
    SCHEMA_VERSION,
    TASK_QA,
    TASK_REPORT,
    TIMING_STAGES,
    Answer,
    answer_schema,
    error_dict,
)
from diagecg.runtime.answering import (
    StatementReader,
    as_asked,
    choose_consistently,
    question_notes,
    refusal_note,
    reliability_notes,
    reliability_of,
    statement_probabilities,
)
from diagecg.runtime.device import DeviceChoice, choose_device, trim_heap
from diagecg.runtime.ecg_session import EcgTokenizerSession
from diagecg.runtime.llm import LlamaModel, load_text_tokenizer
from diagecg.runtime.outputs import AuditLog
from diagecg.runtime.record_input import RecordChecks, RecordLike, as_record, check_patient, signal_key
from diagecg.statements import answer_findings, coded_statements
from diagecg.types import EcgRecord, F32Array, I64Array, PatientInfo

__all__ = ["ECG_CACHE_SIZE", "IMPLAUSIBLE_RECORD", "SCHEMA_VERSION", "TASK_QA", "TASK_REPORT",
           "TIMING_STAGES", "Answer", "DiagEcgPipeline", "WindowAnswer", "answer_schema", "as_record",
           "error_dict", "signal_key"]

logger = logging.getLogger(__name__)

ECG_CACHE_SIZE = 64  # signals whose ECG codes a pipeline keeps (~0.5 KB each at 100 Hz)
PLAUSIBILITY_CODES = frozenset(CHECKS.values())  # record warnings of diagecg.plausibility
IMPLAUSIBLE_RECORD = "implausible_record"  # reliability status of an answer about such a record


@dataclasses.dataclass(frozen=True, eq=False)
class WindowAnswer:
    """One analysed window of a record and the model's reply about it: what the record's answer is
    combined from (:meth:`DiagEcgPipeline._aggregate`) and what its ``windows`` list."""

    start_s: float
    end_s: float
    codes: I64Array  # the window's ECG token indices (summary codes, then frames)
    cached: bool  # the codes came from the pipeline's cache
    n_prompt_tokens: int
    reply: dict[str, Any]  # DiagEcgPipeline._choose (closed question) or _decode: text, confidence...
    features: F32Array  # the window's measurements, in diagecg.features.FEATURE_NAMES order


_AGGREGATION = {
    "closed": "the answer is the window with the strongest evidence of a finding (the lowest "
              "probability of 'no', of 'none', or of 'yes' to 'is this a normal ECG?')",
    "query": "each member a window gave is kept when the model's yes/no answer about it, from the window "
             "with the strongest evidence of it, confirms it",
    "report": "each statement a window wrote is kept when the model's yes/no answer about it, from the "
              "window with the strongest evidence of it, confirms it; then contradictions are resolved",
    "free": "the first window answers (this bundle has no question catalogue to aggregate with)",
}


def _aggregation_kind(match: MatchedQuestion | None, task: str) -> str:
    if task == TASK_REPORT:
        return "report"
    if match is None:
        return "free"
    return "closed" if match.closed else "query"


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

    def __init__(self, bundle: Bundle, ecg_session: EcgTokenizerSession, llm: LlamaModel, *, quant: str,
                 device: DeviceChoice, ecg_cache_size: int = ECG_CACHE_SIZE,
                 allow_degraded: bool = False, measure: bool = True) -> None:
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
        self._ecg_cache: OrderedDict[bytes, tuple[I64Array, F32Array]] = OrderedDict()
        self._ecg_cache_lock = threading.Lock()
        self._readings_cache: OrderedDict[bytes, dict[str, Any]] = OrderedDict()
        self._checks = RecordChecks(ecg_cache_size)  # per-record checks of in-memory records
        self._bundle_info = {
            "path": str(bundle.root),
            "format_version": bundle.manifest.get(K.FORMAT_VERSION),
            "diagecg_version": bundle.manifest.get(K.DIAGECG_VERSION),
            "manifest_sha256": sha256_file(bundle.root / MANIFEST_NAME),
            "quant": quant,
            "gguf_sha256": bundle.manifest[K.FILES][bundle.gguf_path(quant).name]["sha256"],
            "calibration": calibration_identity(bundle.manifest.get(K.CALIBRATION)),
        }

    @property
    def bundle_info(self) -> dict[str, Any]:
        """What every answer's ``bundle`` field holds: path, format and package versions, manifest and GGUF
        sha256, quant (a copy)."""
        return dict(self._bundle_info)

    @classmethod
    def from_bundle(cls, path: str | Path | None = None, quant: str | None = None, device: str = "auto",
                    threads: int | None = None, *, verify_hashes: bool = True,
                    ecg_cache_size: int = ECG_CACHE_SIZE, reuse_prefix: bool = True,
                    allow_degraded: bool = False, measure: bool = True,
                    audit_log: str | Path | AuditLog | None = None) -> DiagEcgPipeline:
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
        session = EcgTokenizerSession(bundle.onnx_path, device=session_device, threads=choice.threads,
                                      n_samples=bundle.preprocess.n_samples, n_codes=bundle.vocab.n_codes)
        tokenizer = load_text_tokenizer(bundle.tokenizer_path) if bundle.tokenizer_path else None
        llm = LlamaModel(gguf_path, vocab=bundle.vocab, n_ctx=bundle.generation.n_ctx, tokenizer=tokenizer,
                         threads=choice.threads, n_gpu_layers=choice.n_gpu_layers, reuse_prefix=reuse_prefix)
        pipe = cls(bundle, session, llm, quant=q, device=choice, ecg_cache_size=ecg_cache_size,
                   allow_degraded=allow_degraded, measure=measure)
        pipe.audit = audit
        logger.debug("loaded bundle %s (%s) in %.0f ms: ECG tokenizer on %s, LLM on %s, %d threads",
                    bundle.root, q, (time.perf_counter() - t0) * 1e3, pipe.device.ecg_tokenizer,
                    pipe.device.llm, choice.threads)
        return pipe

    # --- one record ----------------------------------------------------------------------------

    def check_question(self, question: str) -> str:
        """The question as it will be sent, or InputError (not UTF-8, control characters, empty, too
        long, ECG-token strings or any special token of the text model such as ``<|end_of_text|>``)."""
        question = sanitize_question(question, self.bundle.generation.max_question_chars)
        special = self.llm.find_special_text(question)
        if special is not None:
            raise InputError(f"the question contains the model's special token {special!r}; it cannot be "
                             f"typed, please rephrase")
        return question

    def _run(self, record: RecordLike, question: str, task: str, patient: PatientInfo | None = None,
             read_ms: float = 0.0) -> Answer:
        """Answer one question; ``read_ms``: time already spent reading ``record`` (an EcgRecord). The
        answer goes to the audit log when there is one."""
        ans = self._answer_one(record, question, task, patient, read_ms)
        if self.audit is not None:
            self.audit.log(ans.to_dict(), record if isinstance(record, (str, Path, EcgRecord)) else None)
        return ans

    def _audit_error(self, record: RecordLike, line: dict[str, Any]) -> dict[str, Any]:
        if self.audit is not None:
            self.audit.log(line, record if isinstance(record, (str, Path, EcgRecord)) else None)
        return line

    def _guarded(self, record: RecordLike, question: str, task: str, patient: PatientInfo | None) -> Answer:
        """``_run``, with a failure written to the audit log before it is raised."""
        t = time.perf_counter()
        try:
            return self._run(record, question, task, patient)
        except Exception as e:
            self._audit_error(record, error_dict(record, e, question, task=task, bundle=self._bundle_info,
                                                 device=self.device.to_dict(),
                                                 elapsed_ms=(time.perf_counter() - t) * 1e3))
            raise

    def _answer_one(self, record: RecordLike, question: str, task: str, patient: PatientInfo | None = None,
                    read_ms: float = 0.0) -> Answer:
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
            record=rec.source, record_id=rec.record_id, task=task, question=question,
            bundle=dict(self._bundle_info), device=self.device.to_dict(), timings_ms=times,
            patient=dataclasses.asdict(used))
        if isinstance(read, Refusal):
            times["total"] = round((time.perf_counter() - t_start) * 1e3, 3)
            return Answer(**common, answer="", answers=[], stop_reason="unsupported", n_prompt_tokens=0,
                          n_answer_tokens=0, n_ecg_tokens=0, ecg_cached=False, n_reused_tokens=0,
                          warnings=[*self._notes(rec), refusal_note(read)], question_supported=False,
                          refusal=read.to_dict())
        if dead.any() and not (match is not None and catalogue is not None and catalogue.is_rhythm(match)):
            # its own warning would say "do not trust this answer": it is not given (issue 23)
            names = ", ".join(n for n, f in zip(rec.lead_names, dead, strict=True) if f)
            raise SignalQualityError(f"{rec.source or rec.record_id or 'record'}: the answer would need "
                                     f"leads that are flat in this record ({names}); a degraded record "
                                     f"answers only rhythm questions (read from the intact limb leads)")
        parts: list[WindowAnswer] = []
        for k, (start_s, end_s, window) in enumerate(record_windows(rec, self.bundle.preprocess)):
            indices, features, cached, stage_ms = self._codes(window)
            for stage, ms in stage_ms.items():
                times[stage] = round(times.get(stage, 0.0) + ms, 3)
            t = time.perf_counter()
            prompt_ids = encode_prompt(self.prompt_config, self.bundle.vocab, self.llm.encode_text,
                                       question=match.canonical if match else question,
                                       patient=used, ecg_indices=indices.tolist())
            lap(f"prompt{k}")
            reply = self._choose(prompt_ids, match) if match is not None and match.closed \
                else self._decode(prompt_ids, match)
            lap(f"generate{k}")
            parts.append(WindowAnswer(start_s, end_s, indices, cached, len(prompt_ids), reply, features))
        for stage in ("prompt", "generate"):
            times[stage] = round(sum(times.pop(f"{stage}{k}") for k in range(len(parts))), 3)
        chosen, text, confidence, notes = self._aggregate(parts, match, task, rec)
        rest = rec.duration_s - parts[-1].end_s
        if rest > 0.5:  # a record under 1.5 windows: its first window only
            notes.append(Note(W.RECORD_PART_NOT_ANALYSED,
                              f"the last {rest:.1f} s of the {rec.duration_s:.1f} s record were not "
                              f"analysed: a second window would repeat most of the first"))
        reply = chosen.reply
        closed = match is not None and match.closed
        windows = [{"start_s": p.start_s, "end_s": p.end_s, "answer": p.reply["text"],
                    "confidence": p.reply["confidence"] if closed else None,
                    "option_probabilities": p.reply.get("option_probabilities")} for p in parts]
        probs = reply.get("option_probabilities")
        statement_probs: dict[str, float | None] = {}
        t_read = time.perf_counter()
        # one rule keeps any two answers about the record consistent (runtime.answering.StatementReader)
        reader = None if catalogue is None else StatementReader(
            catalogue, lambda k, q: self._ask(parts[k].codes, used, q), len(parts),
            self.reliability.validated(), self._shared_readings(parts, used),
            {name: float(c["threshold"]) for name, c in self.calibration.items() if "threshold" in c})
        if match is not None and closed and probs is not None:
            if reader is not None and match.template.one_finding:
                text, probs, rule_notes = reader.verify(match, text, probs)
            else:
                text, rule_notes = choose_consistently(match, text, probs)
            notes.extend(rule_notes)
            confidence = probs[text]
            statement_probs = dict(statement_probabilities(match, probs))
        elif not closed:  # one meaning of confidence: a closed question's (queries, reports: per statement)
            confidence = None
            if reader is not None and (match is not None or task == TASK_REPORT):
                texts = [p.reply["text"] for p in parts]
                read_all = reader.report if task == TASK_REPORT else reader.query
                text, statement_probs, read_notes = read_all(texts)
                notes.extend(read_notes)
        times["generate"] = round(times["generate"] + (time.perf_counter() - t_read) * 1e3, 3)
        model_answers = normalize_answer(text)  # the canonical question's answer (statements are about it)
        text, probs, confidence, windows = as_asked(match, text, probs, confidence, windows)
        answers = sorted(normalize_answer(text)) if task == TASK_QA else []
        measurements = None
        if task == TASK_REPORT and self.measure:  # the first window's: the numbers the model read
            first = parts[0]
            measurements = {"window_s": [first.start_s, first.end_s], **report_measurements(first.features)}
        if task == TASK_REPORT:
            findings = [(s, True) for s in report_statements(text)]
        else:
            findings = [] if match is None else answer_findings(
                match.question_type, match.attributes, model_answers, statement=match.template.statement)
        statements = coded_statements(findings, statement_probs)
        reliability = None
        if catalogue is not None:
            reliability, present = reliability_of(self.reliability, catalogue, match, statements,
                                                  task == TASK_REPORT)
            notes.extend([*question_notes(match)] if match is not None else [])
            notes.extend(reliability_notes(reliability, present) if reliability is not None else [])
        record_notes = self._notes(rec)
        if reliability is not None and any(n.code in PLAUSIBILITY_CODES for n in record_notes):
            # the held-out numbers are of records that pass these checks; this one fails one
            reliability = {**reliability, "status": IMPLAUSIBLE_RECORD}
        times["total"] = round((time.perf_counter() - t_start) * 1e3, 3)
        return Answer(
            **common, answer=text, answers=answers, statements=statements, measurements=measurements,
            stop_reason=reply["stop_reason"], n_prompt_tokens=chosen.n_prompt_tokens,
            n_answer_tokens=reply["n_answer_tokens"],
            n_ecg_tokens=int(chosen.codes.shape[0]), ecg_cached=all(p.cached for p in parts),
            n_reused_tokens=reply["n_reused_tokens"],
            warnings=[*record_notes, *(w for p in parts for w in p.reply["warnings"]), *notes],
            question_supported=None if match is None else True,
            matched_question=None if match is None else match.to_dict(),
            confidence=confidence, option_probabilities=probs, windows=windows, reliability=reliability,
            evidence=self._evidence(chosen, match), calibrated=bool(reply.get("calibrated")),
        )

    def _notes(self, rec: EcgRecord) -> list[Note]:
        """The warnings every answer about ``rec`` starts with: the engines' and the record's."""
        return [*(Note(W.ENGINE, w) for w in self.load_warnings),
                *(Note(note_code(w) or W.RECORD, w) for w in rec.warnings)]

    def _ask(self, codes: I64Array, patient: PatientInfo, question: MatchedQuestion) -> dict[str, Any]:
        """One window's reply to a catalogue yes/no question (confirming a query's or report's statement)."""
        prompt_ids = encode_prompt(self.prompt_config, self.bundle.vocab, self.llm.encode_text,
                                   question=question.canonical, patient=patient, ecg_indices=codes.tolist())
        return self._choose(prompt_ids, question)

    def _evidence(self, window: WindowAnswer, match: MatchedQuestion | None) -> list[dict[str, Any]]:
        """The measured values a closed finding question rests on (``diagecg.criteria``), from the
        window the answer comes from; empty for findings without a defining measurement."""
        if match is None or not match.attributes or self.bundle.questions is None:
            return []
        start_s, end_s, features = window.start_s, window.end_s, window.features
        out = []
        for name in match.attributes:
            crit = criterion_for(self._finding_code(name) or "")
            if crit is None:
                continue
            value = float(features[FEATURE_NAMES.index(crit.feature)])
            out.append({"finding": name, "code": crit.code, "measurement": crit.feature,
                        "value": round(value, 3), "unit": crit.unit, "cutoff": crit.cutoff,
                        "direction": "above" if crit.direction > 0 else "below",
                        "suggests_finding": crit.suggests(value), "window_s": [start_s, end_s]})
        return out

    def _finding_code(self, name: str) -> str | None:
        """The SCP code of a finding name the catalogue asks about (calibration entries name it; else
        the statement table)."""
        cal = self.calibration.get(name)
        if cal and cal.get("code"):
            return str(cal["code"])
        coded = coded_statements([(name, True)])
        return coded[0].get("code") if coded else None

    @staticmethod
    def _aggregate(parts: list[WindowAnswer], match: MatchedQuestion | None, task: str,
                   rec: EcgRecord) -> tuple[WindowAnswer, str, float | None, list[Note]]:
        """The whole record's answer from its windows' (the module docstring says how): the window it comes
        from, its text, its confidence, and notes for the warnings."""
        replies = [p.reply for p in parts]
        if task == TASK_REPORT:
            text = tidy_report(" ".join(r["text"] for r in replies))
            confidence = min(r["confidence"] for r in replies)
            chosen = parts[0]
        elif len(parts) == 1:
            return parts[0], replies[0]["text"], replies[0]["confidence"], []
        elif match is not None and match.closed:
            negative = match.template.negative_option
            # the mass off the negative option, summed (not 1 - p: it keeps tiny probabilities apart)
            best = max(range(len(parts)), key=lambda i: sum(
                p for o, p in replies[i]["option_probabilities"].items() if o != negative))
            chosen, text, confidence = parts[best], replies[best]["text"], replies[best]["confidence"]
        elif match is not None:  # a query: the union of the windows' answer sets
            members = set().union(*(normalize_answer(r["text"]) for r in replies)) - {NONE_ANSWER}
            text = format_answer(members) if members else NONE_ANSWER
            confidence, chosen = min(r["confidence"] for r in replies), parts[0]
        else:  # no catalogue: no way to tell a finding from its absence; the first window answers
            chosen, text, confidence = parts[0], replies[0]["text"], replies[0]["confidence"]
        if len(parts) == 1:
            return chosen, text, confidence, []
        note = (f"{rec.duration_s:.1f} s record analysed in {len(parts)} windows of "
                f"{parts[0].end_s - parts[0].start_s:g} s; {_AGGREGATION[_aggregation_kind(match, task)]} "
                f"(per-window answers in 'windows')")
        return chosen, text, confidence, [Note(W.WINDOWS_COMBINED, note)]

    def _choose(self, prompt_ids: list[int], match: MatchedQuestion) -> dict[str, Any]:
        """Score a closed question's options; the most probable one is the answer."""
        eos = self.bundle.vocab.eos_id
        option_ids = option_continuations(self.prompt_config, self.llm.encode_text, match.options, eos)
        probs, n_reused = self.llm.score_options(prompt_ids, option_ids)
        best = int(probs.argmax())
        finding = match.finding  # a verify question's about one finding: calibrated per finding
        cal = self.calibration.get(finding) if finding else None
        if cal is not None and "no" in match.options:
            probs, best = calibrate_options(probs, match.options.index("no"), cal)
        if not np.isfinite(probs).all():  # a damaged calibration entry; never NaN in an answer
            raise InferenceError(f"the options' probabilities are not finite after the bundle's calibration "
                                 f"of {finding!r}: {probs.tolist()}")
        return {"text": match.options[best], "stop_reason": "options", "confidence": float(probs[best]),
                "option_probabilities": {o: float(p) for o, p in zip(match.options, probs, strict=True)},
                "n_answer_tokens": len(option_ids[best]) - 1, "n_reused_tokens": n_reused, "warnings": [],
                "calibrated": cal is not None}

    def _decode(self, prompt_ids: list[int], match: MatchedQuestion | None) -> dict[str, Any]:
        """Greedy (or the bundle's sampling) decoding; a query keeps only its template's options."""
        g = self.bundle.generation
        gen = self.llm.generate(prompt_ids, max_new_tokens=g.max_new_tokens, temperature=g.temperature,
                                top_k=g.top_k, top_p=g.top_p, repeat_penalty=g.repeat_penalty)
        text, warnings = gen.text, [Note(W.GENERATION, w) for w in gen.warnings]
        if match is not None:  # a query: members outside the template's options are dropped
            members = normalize_answer(text)
            kept = sorted(members & set(match.options))
            if kept != sorted(members):
                dropped = sorted(members - set(match.options))
                warnings.append(Note(W.ANSWER_FILTERED, f"dropped answer members that are not options of "
                                                        f"the question: {dropped}"))
                text = format_answer(kept) if kept else NONE_ANSWER
        return {"text": text, "stop_reason": gen.stop_reason, "confidence": float(math.exp(gen.logprob)),
                "n_answer_tokens": len(gen.token_ids), "n_reused_tokens": gen.n_reused_tokens,
                "warnings": warnings}

    def _codes(self, rec: EcgRecord) -> tuple[I64Array, F32Array, bool, dict[str, float]]:
        """The record's ECG codes and measurements (from the cache when its signal was seen), whether
        they were cached, and the preprocess / tokenize times in ms."""
        key = signal_key(rec) if self.ecg_cache_size else b""
        hit = self._cached_codes(key)
        if hit is not None:
            return hit[0], hit[1], True, {"preprocess": 0.0, "tokenize": 0.0}
        t0 = time.perf_counter()
        # float32 (12, samples) and (measurements,): measured for every bundle (evidence, reports), and
        # given to the tokenizer when it has a summary head
        signal, features = model_inputs(rec, self.bundle.preprocess)
        t1 = time.perf_counter()
        summary = self.bundle.summary
        graph_features = features[feature_columns(summary)] if summary is not None else None
        indices = self.ecg_session.encode(signal, graph_features)[0]  # (1, tokens) -> (tokens,)
        t2 = time.perf_counter()
        self._store_codes(key, indices, features)
        ms = {"preprocess": round((t1 - t0) * 1e3, 3), "tokenize": round((t2 - t1) * 1e3, 3)}
        return indices, features, False, ms

    def ecg_codes(self, record: RecordLike) -> I64Array:
        """The ECG token indices the bundle's tokenizer gives a record (summary codes, then frames)."""
        rec = self._checks.check(record, self.quality)[0]
        return self._codes(rec)[0]

    def option_probabilities(self, record: RecordLike, question: str, options: Sequence[str], *,
                             patient: PatientInfo | None = None,
                             ecg_codes: I64Array | None = None) -> dict[str, float]:
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
        if isinstance(options, str) or not options:
            raise InputError("no answer options given: a list of option strings, e.g. ['yes', 'no']")
        if not all(isinstance(o, str) for o in options):
            raise InputError("every answer option must be a str")
        options = [self._check_option(o) for o in options]
        rec = self._checks.check(record, self.quality)[0]
        codes = self._codes(rec)[0] if ecg_codes is None else ecg_codes
        prompt_ids = encode_prompt(self.prompt_config, self.bundle.vocab, self.llm.encode_text,
                                   question=self.check_question(question),
                                   patient=rec.patient.with_overrides(check_patient(patient)),
                                   ecg_indices=codes.tolist())
        eos = self.bundle.vocab.eos_id
        option_ids = option_continuations(self.prompt_config, self.llm.encode_text, options, eos)
        probs = self.llm.option_probabilities(prompt_ids, option_ids)
        return {o: float(p) for o, p in zip(options, probs, strict=True)}

    def _check_option(self, option: str) -> str:
        """An answer option checked as a question is (empty text, control characters, ECG-token or special-
        token text are refused)."""
        try:
            return self.check_question(option)
        except InputError as e:
            why = str(e).replace("the question", "it")
            raise InputError(f"answer option {option[:60]!r}: {why}") from None

    def _cached_codes(self, key: bytes) -> tuple[I64Array, F32Array] | None:
        if not self.ecg_cache_size:
            return None
        with self._ecg_cache_lock:
            hit = self._ecg_cache.get(key)
            if hit is not None:
                self._ecg_cache.move_to_end(key)
            return hit

    def _store_codes(self, key: bytes, indices: I64Array, features: F32Array) -> None:
        if not self.ecg_cache_size:
            return
        indices.flags.writeable = False  # shared by every later hit
        features.flags.writeable = False
        with self._ecg_cache_lock:
            self._ecg_cache[key] = (indices, features)
            while len(self._ecg_cache) > self.ecg_cache_size:
                self._ecg_cache.popitem(last=False)

    def _shared_readings(self, parts: list[WindowAnswer], patient: PatientInfo) -> dict[str, Any]:
        """The consistency rule's readings of one prompt (the windows' ECG codes, the patient, the
        calibration in use), kept for the next question about it (as many prompts as ECG codes)."""
        h = hashlib.sha256(repr((dataclasses.astuple(patient), id(self.calibration),
                                 sorted(self.calibration))).encode())
        for p in parts:
            h.update(np.ascontiguousarray(p.codes).tobytes())
        key = h.digest()
        with self._ecg_cache_lock:
            hit = self._readings_cache.get(key)
            if hit is None:
                hit = self._readings_cache[key] = {}
            self._readings_cache.move_to_end(key)
            while len(self._readings_cache) > max(self.ecg_cache_size, 1):
                self._readings_cache.popitem(last=False)
        return hit

    def clear_caches(self) -> None:
        """Drop the cached ECG codes, the consistency rule's readings, the records' checks and the KV cells
        llama.cpp holds (the next answer starts cold)."""
        with self._ecg_cache_lock:
            self._ecg_cache.clear()
            self._readings_cache.clear()
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

    def _batch(self, records: Iterable[RecordLike], questions: Sequence[str], task: str,
               patient: PatientInfo | None = None) -> Iterator[Answer | dict[str, Any]]:
        for record in records:
            t = time.perf_counter()
            try:
                rec = as_record(record, self.quality)  # checked again, from the cache, by each question
            except Exception as e:  # DiagEcgError, or a bug: one error line per question, the batch goes on
                _log_failure(record, e)
                ms = (time.perf_counter() - t) * 1e3
                yield from (self._audit_error(record, error_dict(
                    record, e, question, task=task, bundle=self._bundle_info, device=self.device.to_dict(),
                    elapsed_ms=ms)) for question in questions)
                continue
            read_ms = (time.perf_counter() - t) * 1e3  # charged to the first question only
            for question in questions:
                t = time.perf_counter()
                try:
                    yield self._run(rec, question, task, patient, read_ms=read_ms)
                except Exception as e:  # a record or engine error, or a bug: report it, keep going
                    _log_failure(record, e)
                    yield self._audit_error(rec, error_dict(
                        rec, e, question, task=task, bundle=self._bundle_info, device=self.device.to_dict(),
                        elapsed_ms=(time.perf_counter() - t) * 1e3 + read_ms))
                read_ms = 0.0

    def answer_batch(self, records: Iterable[RecordLike], question: str | Sequence[str], *,
                     patient: PatientInfo | None = None) -> Iterator[Answer | dict[str, Any]]:
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

    def report_batch(self, records: Iterable[RecordLike], *,
                     patient: PatientInfo | None = None) -> Iterator[Answer | dict[str, Any]]:
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

