"""DiagEcgPipeline end to end on real records with the tiny bundle."""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import shutil
import threading
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from builders import N_FRAMES, SUMMARY, record_with_flat_leads, summary_code_ranges

from diagecg.answers import normalize_answer
from diagecg.errors import BundleError, InferenceError, InputError, RecordError
from diagecg.features import FEATURE_NAMES
from diagecg.io import read_record, record_from_array
from diagecg.preprocess import model_inputs
from diagecg.runtime.pipeline import SCHEMA_VERSION, TIMING_STAGES, Answer, DiagEcgPipeline, answer_schema
from diagecg.types import EcgRecord, PatientInfo

# the published schema lists every key of an answer line; Answer.to_dict() gives exactly those
ANSWER_KEYS = set(answer_schema()["$defs"]["answer"]["required"])
BUNDLE_KEYS = {
    "path",
    "format_version",
    "diagecg_version",
    "manifest_sha256",
    "quant",
    "gguf_sha256",
    "calibration",
}
DEVICE_KEYS = {"requested", "ecg_tokenizer", "llm", "threads"}
ERROR_KEYS = ANSWER_KEYS | {"error", "error_type"}  # every key of an answer, and the error
QUESTION = "Does this ECG show atrial fibrillation?"
N_TOKENS = SUMMARY.n_tokens + N_FRAMES  # the tiny bundle's ECG tokens: 3 summary tokens, then 63 frames


def test_answer_is_deterministic_with_a_stable_json_schema(
    pipeline: DiagEcgPipeline, record_paths: list[Path]
) -> None:
    a = pipeline.answer(record_paths[0], QUESTION)
    b = pipeline.answer(record_paths[0], QUESTION)
    assert a.answer == b.answer and a.answer  # the tiny model never says eos first: a non-empty answer
    d = json.loads(json.dumps(a.to_dict()))
    assert set(d) == ANSWER_KEYS and d["schema_version"] == SCHEMA_VERSION
    assert set(d["bundle"]) == BUNDLE_KEYS and set(d["device"]) == DEVICE_KEYS
    assert set(d["timings_ms"]) == set(TIMING_STAGES) and all(v >= 0 for v in d["timings_ms"].values())
    assert d["task"] == "qa" and d["question"] == QUESTION and d["record_id"] == "00002_lr"
    assert d["answers"] == sorted(normalize_answer(d["answer"]))
    assert d["n_ecg_tokens"] == N_TOKENS and d["n_prompt_tokens"] > N_TOKENS and d["n_answer_tokens"] >= 1
    assert d["bundle"]["quant"] == "q8_0" and len(d["bundle"]["manifest_sha256"]) == 64
    assert d["device"]["ecg_tokenizer"] == "cpu" and d["device"]["llm"] == "cpu"
    # no question catalogue in the tiny bundle: asked as typed, decoded greedily
    assert d["question_supported"] is None and d["matched_question"] is None
    assert d["option_probabilities"] is None
    assert d["confidence"] is None and b.confidence is None  # one meaning: a closed question's answer
    jsonschema.validate(d, answer_schema())  # the published JSON Schema
    assert d["patient"] == dataclasses.asdict(read_record(record_paths[0]).patient)
    # every answer has its own id and time, for audit trails
    assert len(d["request_id"]) == 32 and d["request_id"] != b.request_id
    assert d["created_utc"].endswith("Z") and d["created_utc"] <= b.created_utc


def test_repeated_ecg_is_served_from_the_caches_with_the_same_answers(
    tiny_bundle: Path, record_paths: list[Path]
) -> None:
    questions = [QUESTION, "Does this ECG show sinus rhythm?", QUESTION]
    plain = DiagEcgPipeline.from_bundle(
        tiny_bundle, device="cpu", threads=1, ecg_cache_size=0, reuse_prefix=False
    )
    cached = DiagEcgPipeline.from_bundle(tiny_bundle, device="cpu", threads=1, ecg_cache_size=2)
    with plain, cached:
        seen: list[tuple[Path, bool, int]] = []
        for path in [record_paths[0], record_paths[0], record_paths[1], record_paths[0]]:
            for q in questions:
                a, b = cached.answer(path, q), plain.answer(path, q)
                assert a.answer == b.answer and a.n_ecg_tokens == b.n_ecg_tokens
                assert not b.ecg_cached and b.n_reused_tokens == 0
                seen.append((path, a.ecg_cached, a.n_reused_tokens))
        first, again = seen[0], seen[1]
        assert first[1] is False and again[1] is True and again[2] > N_TOKENS  # patient + ECG prefix kept
        assert all(hit for _, hit, _ in seen[1:6]) and seen[6][1] is False  # record_paths[1]: a miss
        assert seen[9][1] is True  # still among the 2 cached signals
        # a changed sample is another signal
        rec = read_record(record_paths[0])
        rec.signal = rec.signal.copy()
        rec.signal[3, 100] += 0.01
        assert cached.answer(rec, QUESTION).ecg_cached is False
        assert cached.answer(rec, QUESTION).ecg_cached is True
        cached.clear_caches()
        cold = cached.answer(rec, QUESTION)
        assert cold.ecg_cached is False and cold.n_reused_tokens == 0
    with pytest.raises(ValueError, match="ecg_cache_size"):
        DiagEcgPipeline(
            cached.bundle,
            cached.ecg_session,
            cached.llm,
            quant="q8_0",
            device=cached.device,
            ecg_cache_size=-1,
        )


def test_every_record_format_and_an_in_memory_record_are_answered(
    pipeline: DiagEcgPipeline, record_paths: list[Path]
) -> None:
    for path in record_paths:  # 100 Hz, 500 Hz (resampled), Challenge .mat
        assert pipeline.answer(path, QUESTION).n_ecg_tokens == N_TOKENS
    rec = read_record(record_paths[1])
    assert pipeline.answer(rec, QUESTION).answer == pipeline.answer(record_paths[1], QUESTION).answer
    # an array in microvolts with the leads in another order, wrapped with its rate, units and names
    order = [11 - i for i in range(12)]
    wrapped = record_from_array(
        rec.signal[order] * 1000, rec.fs_hz, [rec.lead_names[i] for i in order], units="uV"
    )
    assert pipeline.answer(wrapped, QUESTION).answer == pipeline.answer(rec, QUESTION).answer
    with pytest.raises(InputError, match="record_from_array"):  # a bare array has no rate or lead names
        pipeline.answer(rec.signal, QUESTION)
    with pytest.raises(InputError, match="not int"):
        pipeline.answer(12, QUESTION)  # type: ignore[arg-type]


def test_the_prompt_holds_the_summary_tokens_then_the_frames(
    pipeline: DiagEcgPipeline, record_paths: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts: list[list[int]] = []
    generate = pipeline.llm.generate

    def spy(prompt_ids: list[int], **kwargs: object):  # type: ignore[no-untyped-def]
        prompts.append(list(prompt_ids))
        return generate(prompt_ids, **kwargs)

    monkeypatch.setattr(pipeline.llm, "generate", spy)
    v, n_summary = pipeline.bundle.vocab, SUMMARY.n_tokens
    assert pipeline.bundle.summary == SUMMARY and v.n_codes == 1296 + SUMMARY.n_codes
    summaries = []
    for path in record_paths:  # 100 Hz, 500 Hz, .mat
        assert pipeline.answer(path, QUESTION).n_ecg_tokens == N_TOKENS
        prompt = prompts[-1]
        span = np.array(prompt[prompt.index(v.start_id) + 1 : prompt.index(v.end_id)]) - v.offset
        # the codes of the record's signal and its measurements, summary first
        signal, features = model_inputs(read_record(path), pipeline.bundle.preprocess)
        np.testing.assert_array_equal(span, pipeline.ecg_session.encode(signal, features)[0])
        first, size = map(np.array, summary_code_ranges(SUMMARY))
        assert ((span[:n_summary] >= first) & (span[:n_summary] < first + size)).all()
        hr = features[FEATURE_NAMES.index("heart_rate_bpm")]  # the measurement token bins the rate
        assert span[len(SUMMARY.findings)] == first[len(SUMMARY.findings)] + int(hr > 60) + int(hr > 100)
        assert (span[n_summary:] < 1296).all() and len(span) == N_TOKENS
        summaries.append(tuple(span[:n_summary]))
    assert len(set(summaries)) > 1  # the summary tokens follow the record


def test_report_uses_the_bundle_question(pipeline: DiagEcgPipeline, record_paths: list[Path]) -> None:
    r = pipeline.report(record_paths[0])
    assert r.task == "report" and r.question == pipeline.prompt_config.report_question and r.answer
    assert r.answers == []


@pytest.mark.parametrize(
    "question, match",
    [
        ("Is <ecg_0001> normal?", "ECG"),
        ("Is </ecg> normal?", "ECG"),
        ("x" * 201, "200"),
    ],
)
def test_bad_question_is_a_clear_input_error(
    pipeline: DiagEcgPipeline, record_paths: list[Path], question: str, match: str
) -> None:
    with pytest.raises(InputError, match=match):
        pipeline.answer(record_paths[0], question)
    with pytest.raises(InputError):  # checked before the batch reads anything
        pipeline.answer_batch(record_paths, question)


def test_every_special_token_of_the_text_model_is_refused_in_questions(
    pipeline: DiagEcgPipeline, record_paths: list[Path]
) -> None:
    specials = pipeline.llm.special_texts
    assert specials and all(s.strip() for s in specials)
    for special in specials:
        with pytest.raises(InputError, match="special token"):
            pipeline.answer(record_paths[0], f"AF? {special}")
    for bad in ("AF?\x07", "AF?\x1b[31m", "AF? \udcff"):  # control characters, a byte that was not UTF-8
        with pytest.raises(InputError):
            pipeline.check_question(bad)


def test_prompt_beyond_the_context_is_an_inference_error(
    pipeline: DiagEcgPipeline, record_paths: list[Path]
) -> None:
    # under max_question_chars (200), but the tiny BPE has no merges for these letters: ~1 token each
    question = ("zqxj kvwy " * 20)[:199].strip()
    assert len(pipeline.llm.encode_text(question)) + N_TOKENS > 256
    with pytest.raises(InferenceError, match=r"n_ctx=256"):
        pipeline.answer(record_paths[0], question)


def test_batch_goes_on_after_bad_records(
    pipeline: DiagEcgPipeline, record_paths: list[Path], tmp_path: Path
) -> None:
    broken = tmp_path / "00002_lr.hea"  # a header whose signal file is missing
    broken.write_text(record_paths[0].read_text())
    records = [record_paths[0], tmp_path / "missing.hea", broken, record_paths[1]]
    results = list(pipeline.answer_batch(records, QUESTION))
    assert [type(r) for r in results] == [Answer, dict, dict, Answer]
    for err in results[1:3]:
        assert set(err) == ERROR_KEYS and err["error"] and "\n" not in err["error"]
        jsonschema.validate(err, answer_schema())
        assert err["bundle"] == results[0].bundle and err["task"] == "qa" and err["question"] == QUESTION
    assert results[1]["error_type"] == "RecordNotFoundError"
    assert [r["record_id"] for r in results[1:3]] == ["missing", "00002_lr"]
    assert results[0].answer == pipeline.answer(record_paths[0], QUESTION).answer
    with pytest.raises(RecordError):
        pipeline.answer(broken, QUESTION)


def test_batch_of_several_questions_reads_each_record_once(
    pipeline: DiagEcgPipeline, record_paths: list[Path]
) -> None:
    questions = [QUESTION, "Does this ECG show sinus rhythm?", QUESTION]
    results = list(pipeline.answer_batch(record_paths[:2], questions))
    assert len(results) == 6 and all(isinstance(r, Answer) for r in results)
    expected = [(str(p), q) for p in record_paths[:2] for q in questions]
    assert [(r.record, r.question) for r in results] == expected
    for r in results:
        assert r.answer == pipeline.answer(r.record, r.question).answer
    # read once per record: only the first question pays (and reports) the read
    assert results[0].timings_ms["read"] > 0 and results[1].timings_ms["read"] < results[0].timings_ms["read"]
    with pytest.raises(InputError, match="no question"):
        pipeline.answer_batch(record_paths, [])
    with pytest.raises(InputError):
        pipeline.answer_batch(record_paths, [QUESTION, "Is <ecg_0001> normal?"])


def test_concurrent_calls_give_the_sequential_answers(
    pipeline: DiagEcgPipeline, record_paths: list[Path]
) -> None:
    paths = record_paths[:3]
    want = [pipeline.answer(p, QUESTION).answer for p in paths]
    got: dict[int, str] = {}

    def work(i: int) -> None:
        got[i] = pipeline.answer(paths[i % 3], QUESTION).answer

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [got[i] for i in range(6)] == want * 2


def test_quants_load_and_unknown_quant_is_a_bundle_error(tiny_bundle: Path, record_paths: list[Path]) -> None:
    with DiagEcgPipeline.from_bundle(tiny_bundle, quant="f16", device="cpu", threads=1) as pipe:
        a = pipe.answer(record_paths[0], QUESTION)
        assert a.bundle["quant"] == "f16" and a.n_answer_tokens >= 1
    with pytest.raises(BundleError, match="q4_k_m"):
        DiagEcgPipeline.from_bundle(tiny_bundle, quant="q4_k_m", device="cpu", threads=1)


def test_missing_bundle_file_is_a_bundle_error(bundle_copy: Path) -> None:
    (bundle_copy / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="missing"):
        DiagEcgPipeline.from_bundle(bundle_copy, device="cpu", threads=1)


def test_tampered_gguf_is_a_bundle_error(bundle_copy: Path) -> None:
    gguf = bundle_copy / "llm-q8_0.gguf"
    data = bytearray(gguf.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte flipped in the weights
    gguf.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        DiagEcgPipeline.from_bundle(bundle_copy, device="cpu", threads=1)


def test_auto_device_reports_the_provider_really_used(
    tiny_bundle: Path, record_paths: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime as ort

    from diagecg.runtime import device, ecg_session

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA really is available here")
    # onnxruntime claims CUDA but a CPU build cannot start it: auto must say so in every answer
    monkeypatch.setattr(device, "ort_cuda_available", lambda: True)
    monkeypatch.setattr(ecg_session, "ort_cuda_available", lambda: True)
    with DiagEcgPipeline.from_bundle(tiny_bundle, device="auto", threads=1) as pipe:
        a = pipe.answer(record_paths[0], QUESTION)
    assert a.device["ecg_tokenizer"] == "cpu" and any("CUDA was requested" in w.message for w in a.warnings)


def test_patient_overrides_reach_the_prompt(pipeline: DiagEcgPipeline, record_paths: list[Path]) -> None:
    """--age/--sex replace the header's features in the prompt (the prompt token count changes with them)."""
    from diagecg.types import PatientInfo

    path = record_paths[0]
    plain = pipeline.answer(path, "Does this ECG show symptoms of sinus rhythm?")
    given = pipeline.answer(
        path,
        "Does this ECG show symptoms of sinus rhythm?",
        patient=PatientInfo(age_years=63.0, sex="female", height_cm=170.0, weight_kg=81.5),
    )
    assert given.n_prompt_tokens != plain.n_prompt_tokens


def test_patient_with_overrides_keeps_unset_fields() -> None:
    from diagecg.types import PatientInfo

    base = PatientInfo(age_years=50.0, sex="male")
    merged = base.with_overrides(PatientInfo(sex="female", weight_kg=70.0))
    assert merged == PatientInfo(age_years=50.0, sex="female", height_cm=None, weight_kg=70.0)
    assert base.with_overrides(None) is base


def test_option_probabilities_follow_the_ecg_codes_given(
    pipeline: DiagEcgPipeline, record_paths: list[Path]
) -> None:
    options = ("yes", "no", "not sure")
    own = pipeline.option_probabilities(record_paths[0], QUESTION, options)
    assert list(own) == list(options) and sum(own.values()) == pytest.approx(1.0)
    codes = pipeline.ecg_codes(record_paths[0])
    assert codes.shape == (N_TOKENS,)
    assert pipeline.option_probabilities(record_paths[0], QUESTION, options, ecg_codes=codes) == own
    other = pipeline.ecg_codes(record_paths[1])
    swapped = pipeline.option_probabilities(record_paths[0], QUESTION, options, ecg_codes=other)
    assert swapped != own  # another record's ECG (an ablation) moves the probabilities
    with pytest.raises(InputError):
        pipeline.option_probabilities(record_paths[0], QUESTION, ())
    with pytest.raises(InputError):
        pipeline.option_probabilities(record_paths[0], "<ecg_0001>?", options)


def test_catalogued_questions_are_answered_over_their_options(
    catalogue_bundle: Path, record_paths: list[Path]
) -> None:
    with DiagEcgPipeline.from_bundle(catalogue_bundle, device="cpu", threads=1) as pipe:
        a = pipe.answer(record_paths[0], "AF?")
        assert a.question_supported is True and a.stop_reason == "options"
        assert a.matched_question is not None and a.matched_question["template_id"] == 1
        canonical = "Does this ECG show symptoms of atrial fibrillation?"
        assert a.matched_question["canonical"] == canonical
        probs = a.option_probabilities
        assert probs is not None and set(probs) == {"yes", "no", "not sure"}
        assert abs(sum(probs.values()) - 1.0) < 1e-9
        assert a.answer == max(probs, key=probs.__getitem__) and a.confidence == probs[a.answer]
        assert a.answers == [a.answer]
        # the same numbers as scoring the canonical question directly, and as its long wording
        direct = pipe.option_probabilities(record_paths[0], canonical, ["no", "not sure", "yes"])
        assert all(abs(direct[o] - probs[o]) < 1e-6 for o in probs)
        assert pipe.answer(record_paths[0], canonical).option_probabilities == probs

        c = pipe.answer(record_paths[0], "Is the rhythm atrial fibrillation or sinus rhythm?")
        assert c.matched_question is not None and c.matched_question["question_type"] == "single-choose"
        assert c.option_probabilities is not None and "none" in c.option_probabilities
        assert "atrial fibrillation; sinus rhythm" in c.option_probabilities

        q = pipe.answer(record_paths[0], "Which rhythm does this ECG show?")  # a query: decoded, filtered
        assert q.matched_question is not None and q.matched_question["template_id"] == 10
        assert q.option_probabilities is None and q.confidence is None  # per statement instead
        assert all(0.0 <= (st["probability"] or 0.0) <= 1.0 for st in q.statements)
        assert set(q.answers) <= set(q.matched_question["options"])

        r = pipe.report(record_paths[0])
        assert r.question_supported is None and r.confidence is None
        assert all(st["probability"] is None or 0.0 <= st["probability"] <= 1.0 for st in r.statements)


@pytest.mark.parametrize(
    "question",
    ["What is the capital of France?", "What is the heart rate?", "What is the QTc interval in ms?"],
)
def test_unsupported_questions_get_no_answer_and_a_warning(
    catalogue_bundle: Path, record_paths: list[Path], question: str
) -> None:
    with DiagEcgPipeline.from_bundle(catalogue_bundle, device="cpu", threads=1) as pipe:
        a = pipe.answer(record_paths[0], question)
        assert a.question_supported is False and a.answer == "" and a.answers == []
        assert a.confidence is None and a.option_probabilities is None and a.stop_reason == "unsupported"
        assert a.n_prompt_tokens == 0 and a.n_ecg_tokens == 0
        assert a.refusal is not None and a.refusal["suggestions"] and a.reliability is None
        assert any("not supported" in w.message and "closest supported" in w.message for w in a.warnings)
        assert json.loads(json.dumps(a.to_dict()))["question_supported"] is False


def _joined(first: Path, *rest: Path) -> EcgRecord:
    """One record of several real 10 s records played one after another."""
    parts = [read_record(p) for p in (first, *rest)]
    return dataclasses.replace(
        parts[0], signal=np.concatenate([p.signal for p in parts], axis=1), record_id="joined", warnings=[]
    )


def test_a_long_record_is_analysed_window_by_window(catalogue_bundle: Path, record_paths: list[Path]) -> None:
    a, b = record_paths[0], record_paths[1]
    # every prompt evaluated from scratch: the windows' probabilities then equal the records' bitwise
    with DiagEcgPipeline.from_bundle(catalogue_bundle, device="cpu", threads=1, reuse_prefix=False) as pipe:
        forward, backward = _joined(a, b, b), _joined(b, b, a)  # 30 s each, the odd one out moved
        ans = pipe.answer(forward, "AF?")
        assert [(w["start_s"], w["end_s"]) for w in ans.windows] == [(0.0, 10.0), (10.0, 20.0), (20.0, 30.0)]
        alone = {p: pipe.answer(p, "AF?") for p in (a, b)}
        # each window is the 10 s record itself
        assert ans.windows[0]["option_probabilities"] == alone[a].option_probabilities
        assert ans.windows[1]["option_probabilities"] == alone[b].option_probabilities
        # the answer is the window with the most probability off "no", whichever end it sits at
        strongest = max(
            ans.windows, key=lambda w: sum(p for o, p in w["option_probabilities"].items() if o != "no")
        )
        assert ans.option_probabilities == strongest["option_probabilities"]
        assert ans.answer == strongest["answer"]
        assert pipe.answer(backward, "AF?").option_probabilities == ans.option_probabilities
        assert any("analysed in 3 windows" in w.message for w in ans.warnings)
        # a query: the union of the windows' answer sets
        q = pipe.answer(forward, "Which rhythm does this ECG show?")
        union = set().union(*(normalize_answer(w["answer"]) for w in q.windows)) - {"none"}
        assert set(q.answers) <= (union or {"none"})  # the members each window's yes/no answer confirms
        # 12 s: the first window only (a second would repeat most of it), and the rest named; 10.2 s: one
        # window, the record itself
        twelve = pipe.answer(dataclasses.replace(forward, signal=forward.signal[:, :1200]), "AF?")
        assert [(w["start_s"], w["end_s"]) for w in twelve.windows] == [(0.0, 10.0)]
        codes = [w.code for w in twelve.warnings if "not analysed" in w.message]
        assert codes == ["RECORD_PART_NOT_ANALYSED"]
        short = dataclasses.replace(forward, signal=forward.signal[:, :1020])
        assert len(pipe.answer(short, "AF?").windows) == 1


def test_reports_are_tidied(pipeline: DiagEcgPipeline, record_paths: list[Path]) -> None:
    from diagecg.report_text import tidy_report

    r = pipeline.report(record_paths[0])
    assert r.answer == tidy_report(r.answer) and len(r.windows) == 1


def test_degraded_records_are_refused_unless_allowed(
    catalogue_bundle: Path, record_paths: list[Path], tmp_path: Path
) -> None:
    path = record_with_flat_leads(record_paths[0], tmp_path, (6, 7, 8))  # V1-V3
    with DiagEcgPipeline.from_bundle(catalogue_bundle, device="cpu", threads=1) as strict:
        with pytest.raises(RecordError, match="flat lead.*V1, V2, V3"):
            strict.answer(path, "AF?")
    with DiagEcgPipeline.from_bundle(catalogue_bundle, device="cpu", threads=1, allow_degraded=True) as pipe:
        rhythm = pipe.answer(path, "AF?")
        assert any("degraded record" in w.message and "V1, V2, V3" in w.message for w in rhythm.warnings)
        assert not any("do not trust" in w.message for w in rhythm.warnings)  # a rhythm question
        # an answer its own warning would call untrustworthy is not given (issue 23): one error instead
        with pytest.raises(RecordError, match="would need leads that are flat in this record .*V1, V2, V3"):
            pipe.answer(path, "LBBB?")
        with pytest.raises(RecordError, match="answers only rhythm questions"):
            pipe.report(path)
        [line] = list(pipe.answer_batch([path], "LBBB?"))
        assert isinstance(line, dict) and line["error_type"] == "SignalQualityError" and line["answer"] == ""


def test_a_closed_pipeline_refuses_instead_of_crashing(tiny_bundle: Path, record_paths: list[Path]) -> None:
    pipe = DiagEcgPipeline.from_bundle(tiny_bundle, device="cpu", threads=1, ecg_cache_size=0)
    pipe.close()
    pipe.close()  # idempotent
    record = record_paths[0]
    calls = {
        "answer": lambda: pipe.answer(record, QUESTION),
        "report": lambda: pipe.report(record),
        "ecg_codes": lambda: pipe.ecg_codes(record),
        "option_probabilities": lambda: pipe.option_probabilities(record, QUESTION, ["yes", "no"]),
        "answer_batch": lambda: next(iter(pipe.answer_batch([record], QUESTION))),
        "report_batch": lambda: next(iter(pipe.report_batch([record]))),
    }
    for name, call in calls.items():
        if name.endswith("_batch"):  # a batch goes on past failures: the error is in its line
            result = call()
            assert isinstance(result, dict) and "closed" in result["error"], name
            assert result["error_type"] == "InferenceError"
        else:
            with pytest.raises(InferenceError, match="closed"):
                call()
    pipe.clear_caches()  # harmless after close


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def _malloc_in_use_mib() -> float | None:
    """glibc's bytes in use by malloc (mallinfo2), None elsewhere."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in (
                "arena",
                "ordblks",
                "smblks",
                "hblks",
                "hblkhd",
                "usmblks",
                "fsmblks",
                "uordblks",
                "fordblks",
                "keepcost",
            )
        ]

    try:
        mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = MallInfo2
    return float(mallinfo2().uordblks) / 2**20


def _load_answer_close(
    bundle: Path | None, record: EcgRecord, cycles: int, at: tuple[int, ...]
) -> list[tuple[float, float]]:
    sizes = []
    for k in range(cycles):
        with DiagEcgPipeline.from_bundle(bundle, device="cpu", threads=1, verify_hashes=False) as pipe:
            pipe.answer(record, QUESTION)
        if k in at:
            gc.collect()
            sizes.append((_rss_mib(), _malloc_in_use_mib() or 0.0))
    return sizes


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads the resident size from /proc")
def test_load_answer_close_leaves_memory_flat(tiny_bundle: Path, record_paths: list[Path]) -> None:
    """Issue 23: 200 load-answer-close cycles grew the resident size from 99 to 241 MB. glibc kept the
    memory the models freed (close() now gives it back: malloc_trim), and the tokenizers library kept ~5 KB
    per Tokenizer that had encoded text (one parse per tokenizer file now)."""
    record = read_record(record_paths[0])
    (rss0, _), (_, heap0), (rss1, heap1) = _load_answer_close(tiny_bundle, record, 150, (0, 29, 149))
    assert rss1 - rss0 < 8.0, (rss0, rss1)  # glibc's retention: tens of MB over the first cycles
    assert heap1 - heap0 < 0.3, (heap0, heap1)  # the tokenizers' ~5 KB a cycle: 0.6 MB over these 120


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads the resident size from /proc")
def test_500_cycles_with_the_shipped_bundle_leave_memory_flat(record_paths: list[Path]) -> None:
    """The issue's measurement (shipped bundle, 500 cycles; 2.5 min on a 2-core machine)."""
    record = read_record(record_paths[0])
    (rss0, _), (_, heap0), (rss1, heap1) = _load_answer_close(None, record, 500, (0, 49, 499))
    assert rss1 - rss0 < 8.0 and heap1 - heap0 < 0.5, (rss0, rss1, heap0, heap1)


def test_the_shipped_bundle_is_the_default() -> None:
    from diagecg.runtime import default_bundle

    assert (default_bundle() / "manifest.json").is_file()
    with DiagEcgPipeline.from_bundle(device="cpu", threads=1) as pipe:
        assert pipe.bundle.root == default_bundle()


def test_every_public_runtime_name_resolves() -> None:
    import diagecg.runtime as runtime

    assert sorted(runtime.__all__) == sorted(runtime._LAZY)
    assert all(getattr(runtime, name) is not None for name in runtime.__all__)


@pytest.mark.parametrize(
    "fields",
    [
        {"age_years": -5},
        {"sex": "femal"},
        {"weight_kg": float("nan")},
        {"height_cm": 1000.0},
        {"age_years": 300},
        {"age_years": True},
    ],
)
def test_patient_info_validates_as_the_cli_does(fields: dict[str, object]) -> None:
    with pytest.raises(InputError, match="patient"):
        PatientInfo(**fields)  # type: ignore[arg-type]


def test_patient_overrides_must_be_patient_info(pipeline: DiagEcgPipeline, record_paths: list[Path]) -> None:
    with pytest.raises(InputError, match="PatientInfo or None"):
        pipeline.answer(record_paths[0], QUESTION, patient={"age_years": 50})  # type: ignore[arg-type]


def test_reports_carry_the_measurements_the_model_reads(
    pipeline: DiagEcgPipeline, record_paths: list[Path]
) -> None:
    """One definition: a report prints the numbers of diagecg.features that the tokenizer was given,
    with no extra dependency; questions carry evidence instead."""
    from diagecg.features import report_measurements
    from diagecg.io import read_record
    from diagecg.preprocess import model_inputs

    report = pipeline.report(record_paths[1]).to_dict()
    jsonschema.validate(report, answer_schema())
    m = report["measurements"]
    assert m["window_s"] == [0.0, 10.0] and m["n_beats"] >= 5
    assert 30 <= m["measurements"]["heart_rate_bpm"]["value"] <= 200
    _, features = model_inputs(read_record(record_paths[1]), pipeline.bundle.preprocess)
    assert {k: v for k, v in m.items() if k != "window_s"} == report_measurements(features)
    assert pipeline.answer(record_paths[1], QUESTION).measurements is None
    pipeline.measure = False
    try:
        off = pipeline.report(record_paths[1])
        assert off.measurements is None and not any("measure" in w.message for w in off.warnings)
    finally:
        pipeline.measure = True


def _catalogue_pipeline(bundle: Path, calibration: dict | None = None) -> DiagEcgPipeline:
    if calibration is not None:
        manifest = json.loads((bundle / "manifest.json").read_text())
        manifest["calibration"] = {"fitted_on": {"folds": [9]}, "findings": calibration}
        (bundle / "manifest.json").write_text(json.dumps(manifest))
    return DiagEcgPipeline.from_bundle(bundle, device="cpu", threads=1)


BRADY = "Does this ECG show symptoms of sinus bradycardia?"


def test_a_finding_with_a_defining_measurement_carries_it_as_evidence(
    catalogue_bundle: Path, record_paths: list[Path]
) -> None:
    from diagecg.features import FEATURE_NAMES
    from diagecg.io import read_record
    from diagecg.preprocess import model_inputs

    with _catalogue_pipeline(catalogue_bundle) as pipe:
        ans = pipe.answer(record_paths[1], BRADY)
        jsonschema.validate(ans.to_dict(), answer_schema())
        _, features = model_inputs(read_record(record_paths[1]), pipe.bundle.preprocess)
        (ev,) = ans.evidence
        hr = float(features[FEATURE_NAMES.index("heart_rate_bpm")])
        assert ev["code"] == "SBRAD" and ev["measurement"] == "heart_rate_bpm"
        assert ev["value"] == round(hr, 3)
        assert ev["suggests_finding"] == (hr < 60) and ev["direction"] == "below" and ev["cutoff"] == 60.0
        assert not ans.calibrated  # this bundle has no calibration
        # a finding without a defining measurement has none
        mi = pipe.answer(record_paths[1], "Does this ECG show symptoms of left ventricular hypertrophy?")
        assert mi.question_supported and mi.evidence == []


@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_calibrated_verify_answers_follow_the_findings_threshold(
    catalogue_bundle: Path, tmp_path: Path, record_paths: list[Path], threshold: float
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(catalogue_bundle, bundle)
    cal = {
        "sinus bradycardia": {
            "code": "SBRAD",
            "a": 1.0,
            "b": -1.0,
            "threshold": threshold,
            "n": 100,
            "n_pos": 9,
        }
    }
    with _catalogue_pipeline(catalogue_bundle) as raw, _catalogue_pipeline(bundle, cal) as pipe:
        before = raw.answer(record_paths[1], BRADY).option_probabilities
        ans = pipe.answer(record_paths[1], BRADY)
    assert ans.calibrated and before is not None and ans.option_probabilities is not None
    p = ans.option_probabilities
    assert sum(p.values()) == pytest.approx(1.0)
    present = min(max(1 - before["no"], 1e-4), 1 - 1e-4)
    q = 1 / (1 + math.exp(-(math.log(present / (1 - present)) - 1.0)))
    assert 1 - p["no"] == pytest.approx(q, rel=1e-4)
    # the positive options keep their model proportions
    assert p["yes"] / p["not sure"] == pytest.approx(before["yes"] / before["not sure"], rel=1e-4)
    assert ans.answer == ("no" if threshold == 1.0 else max(("yes", "not sure"), key=lambda o: p[o]))
    assert ans.confidence == pytest.approx(p[ans.answer])
