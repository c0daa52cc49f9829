"""The per-record checks of in-memory records are cached like the ECG codes (issue 27): a follow-up
question about the same ``EcgRecord`` does not run the quality checks again and gets the same answer and
warnings; anything that changes the checks' outcome is checked again."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import diagecg.record
import diagecg.runtime.record_input as record_input
from diagecg.config import QualityConfig
from diagecg.errors import SignalQualityError
from diagecg.io import read_record
from diagecg.runtime.pipeline import DiagEcgPipeline
from diagecg.runtime.record_input import RecordChecks
from diagecg.types import EcgRecord

QUESTION = "Does this ECG show atrial fibrillation?"


class Calls:
    """Counts the calls of the quality checks (``diagecg.record.check_signal``) and of ``dead_leads``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.checks = self.dead = 0
        check_signal, dead_leads = diagecg.record.check_signal, record_input.dead_leads

        def counted_check(*args, **kwargs):  # type: ignore[no-untyped-def]
            self.checks += 1
            return check_signal(*args, **kwargs)

        def counted_dead(*args, **kwargs):  # type: ignore[no-untyped-def]
            self.dead += 1
            return dead_leads(*args, **kwargs)

        monkeypatch.setattr(diagecg.record, "check_signal", counted_check)
        monkeypatch.setattr(record_input, "dead_leads", counted_dead)


def by_hand(path: Path, **changes: object) -> EcgRecord:
    """A record built in Python from a file's signal: not marked checked, so every check applies."""
    rec = read_record(path)
    fields = dict(
        signal=rec.signal.copy(),
        fs_hz=rec.fs_hz,
        lead_names=rec.lead_names,
        patient=rec.patient,
        record_id="by-hand",
        source="by-hand",
        warnings=["built in Python"],
    )
    fields.update(changes)
    return EcgRecord(**fields)  # type: ignore[arg-type]


def test_a_follow_up_question_does_not_check_the_record_again(
    pipeline: DiagEcgPipeline, record_paths: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline.clear_caches()
    rec, equal, changed = (
        by_hand(record_paths[0]),
        by_hand(record_paths[0]),
        by_hand(record_paths[0], source="elsewhere"),
    )
    calls = Calls(monkeypatch)
    first, again = pipeline.answer(rec, QUESTION), pipeline.answer(rec, QUESTION)
    assert (calls.checks, calls.dead) == (1, 1)
    assert again.answer == first.answer and again.warnings == first.warnings
    assert any(w.message == "built in Python" for w in again.warnings)
    report = pipeline.report(rec)
    assert (calls.checks, calls.dead) == (1, 1) and report.warnings[: len(first.warnings)] == first.warnings
    # the same record object, and an equal one, are hits; a changed sample or field is checked again
    pipeline.answer(equal, QUESTION)
    assert calls.checks == 1
    assert pipeline.answer(changed, QUESTION).record == "elsewhere" and calls.checks == 2
    rec.signal[3, 100] += 0.01
    pipeline.answer(rec, QUESTION)
    assert calls.checks == 3
    # a file is read and checked for every question (it may change between them)
    pipeline.answer(record_paths[1], QUESTION)
    pipeline.answer(record_paths[1], QUESTION)
    assert calls.checks == 5


def test_the_cache_is_off_with_ecg_cache_size_0_and_gives_the_same_records(
    record_paths: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    quality = QualityConfig()
    off, on = RecordChecks(0), RecordChecks(2)
    rec = by_hand(record_paths[0])
    calls = Calls(monkeypatch)
    plain = [off.check(rec, quality) for _ in range(2)]
    assert (calls.checks, calls.dead) == (2, 2)
    cached = [on.check(rec, quality) for _ in range(2)]
    assert (calls.checks, calls.dead) == (3, 3)
    for got, dead in [*plain, *cached]:  # the record check_record gives, field for field
        want = diagecg.record.check_record(rec, quality)
        assert all(
            np.array_equal(getattr(got, f.name), getattr(want, f.name)) for f in dataclasses.fields(EcgRecord)
        ), f"{got} != {want}"
        assert got.checked == want.checked and not dead.any()
    with pytest.raises(ValueError, match="size"):
        RecordChecks(-1)


def test_the_cache_is_bounded_and_keeps_no_signal_it_changed(
    record_paths: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    quality = QualityConfig()
    checks = RecordChecks(2)
    a, b, c = (by_hand(record_paths[0], record_id=name) for name in "abc")
    # leads in another order: checking reorders the signal, so the record is checked every time
    order = [11 - i for i in range(12)]
    shuffled = by_hand(
        record_paths[0], signal=a.signal[order].copy(), lead_names=tuple(a.lead_names[i] for i in order)
    )
    calls = Calls(monkeypatch)
    for rec in (a, b, c, c, b, a):  # a was dropped when c came in
        checks.check(rec, quality)
    assert calls.checks == 4
    for _ in range(2):
        got, _ = checks.check(shuffled, quality)
        assert np.array_equal(got.signal, a.signal) and got.lead_names == a.lead_names
    assert calls.checks == 6


def test_a_record_that_fails_its_checks_fails_every_time(record_paths: list[Path]) -> None:
    checks = RecordChecks(4)
    rec = by_hand(record_paths[0])
    rec.signal[8, :] = 0.0  # a flat V3: refused without allow_degraded
    for _ in range(2):
        with pytest.raises(SignalQualityError, match="flat"):
            checks.check(rec, QualityConfig())
    got, dead = checks.check(rec, QualityConfig(allow_flat_leads=True))
    assert dead.tolist() == [i == 8 for i in range(12)] and not dead.flags.writeable
    assert checks.check(rec, QualityConfig(allow_flat_leads=True))[1] is dead
