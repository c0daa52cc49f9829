"""ECG-QA loading and question generation on the real shared data."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from diagecg.datasets import ecgqa
from diagecg.datasets.ecgqa import (
    TEMPLATES,
    QASample,
    QuestionGenConfig,
    ecgqa_attribute_name,
    finding_names,
    finding_questions,
    generate_questions,
    load_answer_vocab,
    load_ecgqa_samples,
)
from diagecg.datasets.ptbxl import SUPERCLASSES, TEST_FOLDS, TRAIN_FOLDS


@pytest.fixture(scope="session")
def ecgqa_root(shared_data: Path) -> Path:
    return shared_data / "ecgqa" / "ptbxl"


@pytest.fixture(scope="session")
def vocab(ecgqa_root: Path):
    return load_answer_vocab(ecgqa_root)


@pytest.fixture(scope="session")
def generated(ptbxl, scp_table, vocab) -> list[QASample]:
    return generate_questions(ptbxl, ptbxl.ids(), scp_table, rng_seed=0, answer_vocab=vocab)


def test_answer_vocab_matches_files(vocab, ecgqa_root):
    assert len(vocab.answers) == 104 and vocab.answers[:3] == ("no", "not sure", "yes")
    assert set(vocab.per_template) == set(range(1, 71))
    assert load_answer_vocab(ecgqa_root).options(2) == ("no", "yes")
    assert "sinus bradycardia" in load_answer_vocab(ecgqa_root).options(10)
    for options in vocab.per_template.values():
        assert set(options) <= set(vocab.answers)
    with pytest.raises(ValueError, match="template_id 99"):
        vocab.options(99)
    assert ecgqa.AnswerVocabulary.from_dict(vocab.to_dict()) == vocab


def test_load_ecgqa_samples_keeps_single_ecg_samples_with_a_signal(ptbxl, ecgqa_root, vocab):
    available = set(ptbxl.ids())
    samples = load_ecgqa_samples(ecgqa_root, available, paraphrased=False)
    assert len(samples) > 500
    assert all(s.ecg_id in available and s.source == "ecgqa" for s in samples)
    assert {s.question_type for s in samples} == {"single-verify"}
    assert {s.template_id for s in samples} == {26, 27, 28}
    assert all(set(s.answers) <= set(vocab.options(s.template_id)) for s in samples)
    assert {s.answers for s in samples} == {("no",), ("yes",)}

    para = load_ecgqa_samples(ecgqa_root, available, paraphrased=True)
    assert [(s.ecg_id, s.answers, s.template_id) for s in para] == [
        (s.ecg_id, s.answers, s.template_id) for s in samples
    ]
    assert sum(p.question != s.question for p, s in zip(para, samples, strict=True)) > 0.5 * len(samples)

    subset = set(sorted(available)[:100])
    assert all(s.ecg_id in subset for s in load_ecgqa_samples(ecgqa_root, subset))
    with pytest.raises(ValueError, match="unknown ECG-QA splits"):
        load_ecgqa_samples(ecgqa_root, available, splits=("training",))


def test_ecgqa_attribute_names_are_in_the_answer_vocabulary(scp_table, vocab):
    assert ecgqa_attribute_name("IMI", scp_table) == "myocardial infarction in inferior leads"
    assert ecgqa_attribute_name("NST_", scp_table) == "non-specific st changes"
    asked = {"diagnostic": 4, "form": 6, "rhythm": 7}  # choose templates of each group
    for code, stmt in scp_table.items():
        if code == "NORM":
            continue
        name = ecgqa_attribute_name(code, scp_table)
        if name in vocab.answers:  # the statements ECG-QA never answers are listed in the module docstring
            for cat, tid in asked.items():
                if getattr(stmt, cat):
                    assert name in vocab.options(tid), (code, name, tid)
    missing = {c for c in scp_table if ecgqa_attribute_name(c, scp_table) not in vocab.answers} - {"NORM"}
    assert missing == {
        "RVH",
        "SEHYP",
        "2AVB",
        "3AVB",
        "WPW",
        "EL",
        "ANEUR",
        "PRC(S)",
        "PSVT",
        "SVARR",
        "TRIGU",
    }


def test_generated_answers_are_within_template_options(generated, vocab):
    assert len(generated) > 1000
    for s in generated:
        assert s.template_id in TEMPLATES and s.source == "generated" and s.attribute_type == "scp_code"
        assert s.question_type == TEMPLATES[s.template_id].question_type
        assert set(s.answers) <= set(vocab.options(s.template_id)), s
        assert "${" not in s.question
        if s.question_type == "single-choose":
            assert len(s.attributes) == 2 and all(a in s.question for a in s.attributes)
            assert set(s.answers) <= {*s.attributes, "none"}


def test_generated_types_and_verify_balance(generated):
    types = {s.question_type for s in generated}
    assert types == {"single-verify", "single-choose", "single-query"}
    verify = [s.answers[0] for s in generated if s.question_type == "single-verify"]
    n_yes, n_no = verify.count("yes") + verify.count("not sure"), verify.count("no")
    assert n_yes > 0 and n_no > 0 and "not sure" in verify
    assert 0.4 < n_yes / len(verify) < 0.6
    choose = [s.answers for s in generated if s.question_type == "single-choose"]
    assert ("none",) in choose and any(len(a) == 2 for a in choose) and any(a != ("none",) for a in choose)
    assert len({s.template_id for s in generated}) == len(TEMPLATES)


def test_generated_answers_follow_the_labels(generated, ptbxl, scp_table):
    """A second, direct reading of the ECG-QA answer rules for templates 1, 2, 8, 9, 10 and 5."""
    name_to_code = {ecgqa_attribute_name(c, scp_table): c for c in scp_table if c != "NORM"}

    def names(entry, flag, certain_only=False):
        return {
            ecgqa_attribute_name(c, scp_table)
            for c, lk in entry.scp_codes.items()
            if c != "NORM" and getattr(scp_table[c], flag) and (not certain_only or lk in (0.0, 100.0))
        } or {"none"}

    checked = 0
    for s in generated:
        e = ptbxl.entries[s.ecg_id]
        if s.template_id == 1:
            code = name_to_code[s.attributes[0]]
            lk = e.scp_codes.get(code)
            expected = (
                "no"
                if lk is None
                else ("not sure" if scp_table[code].diagnostic and lk not in (0.0, 100.0) else "yes")
            )
            assert s.answers == (expected,)
        elif s.template_id == 2:
            assert s.answers == ("yes" if "NORM" in e.scp_codes else "no",)
        elif s.template_id in (8, 9, 10):
            flag = "rhythm" if s.template_id == 10 else "diagnostic"
            assert set(s.answers) == names(e, flag, certain_only=s.template_id == 9)
        elif s.template_id == 5:
            certain = names(e, "diagnostic", certain_only=True)
            assert set(s.answers) == ({*s.attributes} & certain or {"none"})
        else:
            continue
        checked += 1
    assert checked > 0.5 * len(generated)


def test_generation_is_deterministic_and_per_record(ptbxl, scp_table, vocab, generated):
    ids = ptbxl.ids(TEST_FOLDS)
    a = generate_questions(ptbxl, ids, scp_table, rng_seed=0, answer_vocab=vocab)
    b = generate_questions(ptbxl, ids, scp_table, rng_seed=0, answer_vocab=vocab)
    c = generate_questions(ptbxl, ids, scp_table, rng_seed=1, answer_vocab=vocab)
    assert a == b and a != c
    # a record's questions do not depend on the other ids passed
    assert a == [s for s in generated if s.ecg_id in set(ids)]


def test_wordings_ask_the_same_questions_and_paraphrases_stay_held_out(ptbxl, scp_table, vocab):
    ids = ptbxl.ids(TRAIN_FOLDS)[:200]
    runs = {
        w: generate_questions(ptbxl, ids, scp_table, 3, answer_vocab=vocab, wording=w)
        for w in ("template", "mixed", "paraphrase")
    }
    key = [(s.ecg_id, s.template_id, s.attributes, s.answers) for s in runs["template"]]
    for w, samples in runs.items():
        assert [(s.ecg_id, s.template_id, s.attributes, s.answers) for s in samples] == key
        assert all(s.wording == w for s in samples)
    seen = {s.question for s in runs["template"]} | {s.question for s in runs["mixed"]}
    assert not seen & {s.question for s in runs["paraphrase"]}
    assert {s.question for s in runs["mixed"]} - {s.question for s in runs["template"]}
    with pytest.raises(ValueError, match="wording"):
        generate_questions(ptbxl, ids, scp_table, 3, answer_vocab=vocab, wording="other")  # type: ignore[arg-type]


def test_question_counts_follow_the_config(ptbxl, scp_table, vocab):
    ids = ptbxl.ids(TEST_FOLDS)[:30]
    cfg = QuestionGenConfig(n_verify=4, n_choose=0, n_query=2)
    samples = generate_questions(ptbxl, ids, scp_table, 0, answer_vocab=vocab, config=cfg)
    assert not [s for s in samples if s.question_type == "single-choose"]
    assert len([s for s in samples if s.question_type == "single-verify"]) == 4 * len(ids)
    assert QuestionGenConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="n_verify"):
        QuestionGenConfig(n_verify=-1)
    with pytest.raises(ValueError, match="no PTB-XL labels"):
        generate_questions(ptbxl, [10**7], scp_table, 0, answer_vocab=vocab)


def test_qasample_roundtrip_and_validation(generated, tmp_path):
    s = generated[0]
    assert QASample.from_dict(s.to_dict()) == s
    assert [QASample.from_dict(json.loads(json.dumps(g.to_dict()))) for g in generated[:50]] == generated[:50]
    with pytest.raises(ValueError, match="question_type"):
        dataclasses.replace(s, question_type="single-guess")
    with pytest.raises(ValueError, match="required keys missing"):
        QASample.from_dict({"ecg_id": 1})


# --- finding verify questions -----------------------------------------------------------------------------

FINDINGS = (*SUPERCLASSES, "AFIB", "IMI", "SR", "LVH", "EL", "RVH", "NDT")


def test_finding_names_use_ecgqa_names_and_drop_the_unnamable(scp_table, vocab):
    names = finding_names(FINDINGS, scp_table, vocab)
    assert names["NORM"] == "normal ecg"  # template 2's attribute
    assert [names[c] for c in ("MI", "STTC", "CD", "HYP")] == [
        "myocardial infarction",
        "st/t change",
        "conduction disturbance",
        "hypertrophy",
    ]
    assert names["AFIB"] == "atrial fibrillation"
    assert names["IMI"] == "myocardial infarction in inferior leads"
    assert "EL" not in names and "RVH" not in names  # ECG-QA has no answer naming them
    assert list(names) == [c for c in FINDINGS if c not in ("EL", "RVH")]  # order kept
    assert all(n in vocab.answers for c, n in names.items() if c not in SUPERCLASSES)
    assert len(set(names.values())) == len(names)


@pytest.fixture(scope="module")
def finding_samples(ptbxl, scp_table, vocab) -> tuple[list[int], dict[str, str], list[QASample]]:
    ids = ptbxl.ids(TRAIN_FOLDS)[:120]
    names = finding_names(FINDINGS, scp_table, vocab)
    return ids, names, finding_questions(ptbxl, ids, names, scp_table, rng_seed=0)


def test_finding_questions_one_per_record_and_finding(finding_samples):
    ids, names, samples = finding_samples
    assert len(samples) == len(ids) * len(names)
    assert [(s.ecg_id, s.attributes) for s in samples] == [(i, (n,)) for i in ids for n in names.values()]
    assert all(s.question_type == "single-verify" and s.source == "generated" for s in samples)
    norm = [s for s in samples if s.attributes == ("normal ecg",)]
    assert {s.template_id for s in norm} == {2} and {s.question for s in norm} == {"Is this a normal ECG?"}
    others = [s for s in samples if s.attributes != ("normal ecg",)]
    assert {s.template_id for s in others} == {1}
    assert all(s.question == f"Does this ECG show symptoms of {s.attributes[0]}?" for s in others)


def test_finding_answers_follow_the_labels(finding_samples, ptbxl, scp_table, vocab):
    ids, names, samples = finding_samples
    code_of = {n: c for c, n in names.items()}
    seen = set()
    for s in samples:
        e, code = ptbxl.entries[s.ecg_id], code_of[s.attributes[0]]
        assert set(s.answers) <= set(vocab.options(s.template_id))
        if code == "NORM":
            want = "yes" if "NORM" in e.scp_codes else "no"
        elif code in SUPERCLASSES:  # yes/no from diagnostic_superclass, never "not sure"
            want = "yes" if code in e.superclasses else "no"
        elif code not in e.scp_codes:
            want = "no"
        elif scp_table[code].diagnostic and e.scp_codes[code] not in (0.0, 100.0):
            want = "not sure"  # an uncertain diagnostic statement
        else:
            want = "yes"
        assert s.answers == (want,), (s, e.scp_codes, e.superclasses)
        seen.add((code in SUPERCLASSES, want))
    # the records cover every kind of answer: superclasses yes and no, statements yes, no and not sure
    assert {(True, "yes"), (True, "no"), (False, "yes"), (False, "no"), (False, "not sure")} <= seen


def test_finding_questions_wordings(ptbxl, scp_table, vocab):
    ids = ptbxl.ids(TRAIN_FOLDS)[:40]
    names = finding_names(FINDINGS, scp_table, vocab)
    runs = {
        w: finding_questions(ptbxl, ids, names, scp_table, 1, wording=w)
        for w in ("template", "mixed", "paraphrase")
    }
    key = [(s.ecg_id, s.template_id, s.attributes, s.answers) for s in runs["template"]]
    for w, samples in runs.items():
        assert [(s.ecg_id, s.template_id, s.attributes, s.answers) for s in samples] == key
        assert all(s.wording == w for s in samples)
        assert all(s.attributes[0] in s.question for s in samples if s.template_id == 1)
    mixed, para = {s.question for s in runs["mixed"]}, {s.question for s in runs["paraphrase"]}
    assert mixed - {s.question for s in runs["template"]}  # the training paraphrases are used
    assert not para & (mixed | {s.question for s in runs["template"]})  # the held-out ones stay held out
    assert finding_questions(ptbxl, ids, names, scp_table, 1, wording="mixed") == runs["mixed"]
    assert finding_questions(ptbxl, ids, names, scp_table, 2, wording="mixed") != runs["mixed"]
    with pytest.raises(ValueError, match="wording"):
        finding_questions(ptbxl, ids, names, scp_table, 1, wording="other")  # type: ignore[arg-type]
