"""Held-out evaluation: config, question sets per wording, scoring beside the baselines, end to end."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest
from builders import INSTRUCT_CORPUS, demo_text_tokenizer, llama_with_ecg_tokens, save_random_ecg_tokenizer

from diagecg.answers import format_answer
from diagecg.config import apply_overrides
from diagecg.constants import LLM_META, RUN_SUMMARY
from diagecg.datasets import resolve_data_roots
from diagecg.datasets.ptbxl import TEST_FOLDS, TRAIN_FOLDS
from diagecg.datasets.reports import report_text
from diagecg.eval_results import format_results, write_results
from diagecg.features import FEATURE_NAMES
from diagecg.nn.llm_checkpoint import BaseModelRef, LlmMeta
from diagecg.training.eval_data import EvalConfig, EvalData, build_eval_data
from diagecg.training.eval_folds import check_folds, checkpoint_training_folds
from diagecg.training.evaluate import main
from diagecg.training.metrics import majority_predictions
from diagecg.training.qa_scoring import evaluate_predictions, score_qa


@pytest.fixture(scope="module")
def data(ptbxl, scp_table, shared_data) -> EvalData:
    cfg = EvalConfig(data_dir=str(shared_data), n_reports=6)
    ecgqa_root = resolve_data_roots(shared_data).ecgqa
    test_ids = ptbxl.ids(TEST_FOLDS)[:40]
    return build_eval_data(cfg, ptbxl, scp_table, ecgqa_root, test_ids, ptbxl.ids(TRAIN_FOLDS))


def test_eval_config_checks_and_round_trips(tmp_path):
    cfg = EvalConfig(out_file="r.json", max_questions=10)
    path = tmp_path / "eval.json"
    cfg.save(path)
    assert EvalConfig.load(path) == cfg
    # what `diagecg eval --checkpoint ... --data ... --out ... --set ...` builds
    cli = apply_overrides(
        EvalConfig(),
        [
            "checkpoint_dir=ck",
            "data_dir=d",
            "out_file=o.json",
            "folds=9,10",
            "train_folds=1,2",
            "wordings=paraphrase",
            "n_reports=0",
        ],
    )
    assert cli.folds == (9, 10) and cli.wordings == ("paraphrase",) and cli.n_reports == 0
    assert cli.out_file == "o.json"
    with pytest.raises(ValueError, match="disjoint from train_folds"):
        EvalConfig(folds=(8,))
    with pytest.raises(ValueError, match="wordings"):
        EvalConfig(wordings=("template", "reworded"))
    with pytest.raises(ValueError, match="folds"):
        EvalConfig(folds=(11,))
    with pytest.raises(ValueError, match="batch_size"):
        EvalConfig(batch_size=0)


def test_data_roots_accept_the_shared_root_or_its_ptbxl_folder(shared_data, ptbxl_root, tmp_path):
    assert resolve_data_roots(shared_data) == resolve_data_roots(ptbxl_root)
    assert resolve_data_roots(shared_data).ecgqa.name == "ptbxl"
    with pytest.raises(FileNotFoundError):
        resolve_data_roots(tmp_path)


def test_wordings_ask_the_same_questions_in_other_words(data, ptbxl, scp_table):
    tpl, para = data.questions["template"], data.questions["paraphrase"]
    assert len(tpl) == len(para) > 100
    same = [(s.ecg_id, s.template_id, s.attributes, s.answers) for s in tpl]
    assert same == [(s.ecg_id, s.template_id, s.attributes, s.answers) for s in para]
    assert sum(a.question != b.question for a, b in zip(tpl, para, strict=True)) > 0.9 * len(tpl)
    assert {s.attribute_type for s in tpl} == {"scp_code", "noise"}  # ECG-QA's noise questions included
    assert {ptbxl.entries[s.ecg_id].strat_fold for s in tpl} == {10}
    assert {ptbxl.entries[s.ecg_id].strat_fold for s in data.train_questions} <= set(TRAIN_FOLDS)
    assert len(data.reports) == 6
    for ecg_id, ref in data.reports:
        assert ref == report_text(ptbxl.entries[ecg_id], scp_table, "en") and ref


def test_max_questions_takes_the_same_subset_for_every_wording(ptbxl, scp_table, shared_data):
    cfg = EvalConfig(max_questions=7, include_ecgqa_noise=False, n_reports=0, seed=3)
    ecgqa_root = resolve_data_roots(shared_data).ecgqa
    ids = ptbxl.ids(TEST_FOLDS)[:10]
    d = build_eval_data(cfg, ptbxl, scp_table, ecgqa_root, ids, ptbxl.ids(TRAIN_FOLDS)[:50])
    assert [len(v) for v in d.questions.values()] == [7, 7]
    tids = [s.template_id for s in d.questions["template"]]
    assert tids == [s.template_id for s in d.questions["paraphrase"]]
    assert d.reports == [] and {s.attribute_type for s in d.questions["template"]} == {"scp_code"}
    with pytest.raises(ValueError, match="outside folds"):
        build_eval_data(cfg, ptbxl, scp_table, ecgqa_root, ptbxl.ids((9,))[:3], ids)


def test_score_puts_the_baselines_beside_the_model(data):
    samples = data.questions["template"]
    train = data.train_questions
    majority = majority_predictions(train, samples, by="template")
    as_baseline = score_qa(samples, majority, train, data.answer_vocab)
    for group, row in as_baseline["groups"].items():
        assert row["model"] == pytest.approx(row["majority_template"]), group
    assert as_baseline["valid_format"] == 1.0
    overall = as_baseline["groups"]["overall"]
    assert overall["majority_question"] >= overall["majority_template"]  # the stronger baseline
    assert 0.3 < overall["majority_template"] < 0.9
    perfect = score_qa(samples, [format_answer(s.answers) for s in samples], train, data.answer_vocab)
    assert all(row["model"] == 1.0 for row in perfect["groups"].values())
    assert all(row["model"] == 1.0 for row in perfect["by_template"].values())
    assert set(perfect["groups"]) >= {
        "overall",
        "single-verify",
        "single-choose",
        "single-query",
        "attr/scp_code",
        "attr/noise",
    }
    garbage = score_qa(samples, ["maybe"] * len(samples), train, data.answer_vocab)
    assert garbage["valid_format"] == 0.0 and garbage["groups"]["overall"]["model"] == 0.0
    with pytest.raises(ValueError, match="predictions"):
        score_qa(samples, [], train, data.answer_vocab)


def test_results_table_and_json(data, tmp_path):
    train = data.train_questions

    def qa(ids, questions):  # answers every question with the per-question majority of its template
        by_q = {(s.ecg_id, s.question): s for v in data.questions.values() for s in v}
        samples = [by_q[(i, q)] for i, q in zip(ids, questions, strict=True)]
        return majority_predictions(train, samples, by="question")

    refs = dict(data.reports)

    def constant(ids, questions):  # an "ablated" model that ignores the ECG: always "no"
        return ["no"] * len(ids)

    qa_res, reports, rows = evaluate_predictions(
        data, qa, lambda ids, qs: [refs[i] for i in ids], "Report?", constant
    )
    results = {
        "checkpoint_dir": "ck",
        "folds": [10],
        "train_folds": list(TRAIN_FOLDS),
        "n_records": 40,
        "qa": qa_res,
        "reports": reports,
        "predictions_file": None,
    }
    for row in qa_res["template"]["groups"].values():
        assert row["model"] == pytest.approx(row["majority_question"])
    verify = [s for s in data.questions["template"] if s.question_type == "single-verify"]
    assert qa_res["template"]["groups"]["single-verify"]["ablated"] == pytest.approx(
        sum(s.answers == ("no",) for s in verify) / len(verify)
    )
    vc = qa_res["template"]["groups"]["verify+choose"]
    n_vc = sum(s.question_type in ("single-verify", "single-choose") for s in data.questions["template"])
    assert vc["n"] == n_vc and 0 < vc["ablated"] < vc["model"]
    assert reports["metrics"]["bleu4"] == pytest.approx(1.0) and reports["n"] == 6
    table = format_results(results)
    lines = table.splitlines()
    header = next(line for line in lines if line.startswith("group"))
    assert header.split() == ["group", "n", "model", "ablated", "maj/tpl", "maj/q"]
    overall = [line for line in lines if line.startswith("overall")]
    assert len(overall) == 2  # one per wording
    t = qa_res["template"]["groups"]["overall"]
    assert overall[0].split()[2:] == [
        f"{t['model']:.3f}",
        f"{t['ablated']:.3f}",
        f"{t['majority_template']:.3f}",
        f"{t['majority_question']:.3f}",
    ]
    assert "paraphrase wording" in table and "BLEU4=1.000" in table and "rougeL=1.000" in table
    pred_path = write_results(results, rows, tmp_path / "out" / "eval.json")
    saved = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert saved["predictions_file"] == str(pred_path)
    assert saved["qa"]["paraphrase"]["groups"]["single-query"]["n"] > 0
    lines = pred_path.read_text().splitlines()
    n_qa = sum(len(v) for v in data.questions.values())
    assert len(lines) == n_qa + 6
    first = json.loads(lines[0])
    assert first["task"] == "qa" and isinstance(first["correct"], bool)
    assert first["ablated_prediction"] == "no"


def test_folds_the_checkpoint_trained_on_are_refused(tmp_path, caplog):
    instruct = tmp_path / "instruct"
    pretrain = instruct / "base_model"  # a copied pretrain stage, as save_llm_checkpoint stores small bases
    pretrain.mkdir(parents=True)
    LlmMeta(stage="pretrain", train_folds=(1, 2, 10)).save(pretrain / LLM_META)
    base = BaseModelRef(path="base_model", kind="llm_checkpoint", copied=True)
    LlmMeta(stage="instruct", method="lora", base_model=base, train_folds=(1, 2)).save(instruct / LLM_META)
    summary = {
        "stage": "instruct",
        "train_folds": [1, 2, 3],
        "pretrain_train_folds": [1, 2, 10],
        "config": {"train_folds": [1], "eval_folds": [9]},
    }
    (instruct / RUN_SUMMARY).write_text(json.dumps(summary))
    recorded = checkpoint_training_folds(instruct)
    assert recorded == {
        "instruct.train_folds": (1, 2, 3),
        "instruct.eval_folds": (9,),
        "instruct.pretrain_train_folds": (1, 2, 10),
        "pretrain.train_folds": (1, 2, 10),
    }
    with pytest.raises(ValueError, match=r"overlaps the checkpoint's training folds \(instruct.pretrain"):
        check_folds(EvalConfig(), recorded)
    with pytest.raises(ValueError, match=r"overlaps the checkpoint's training folds \(pretrain"):
        check_folds(EvalConfig(), {"pretrain.train_folds": (1, 2, 10)})
    check_folds(EvalConfig(), {"instruct.train_folds": (1, 2, 3), "instruct.eval_folds": (9,)})
    with caplog.at_level(logging.WARNING):
        check_folds(EvalConfig(folds=(9,), train_folds=(1, 2)), recorded)
    assert "validation" in caplog.text
    assert checkpoint_training_folds(tmp_path / "missing") == {}


def test_lineage_answers_exactly_which_folds_each_stage_used(tmp_path):
    from diagecg.nn.llm_checkpoint import StageRecord

    lineage = (
        StageRecord("tokenizer", (1, 2, 3), (9,), {"steps": 5}),
        StageRecord("pretrain", (1, 2), (9,)),
        StageRecord("instruct", (1, 2, 3, 4), (9,)),
    )
    ck = tmp_path / "instruct"
    ck.mkdir()
    LlmMeta(stage="instruct", train_folds=(1, 2, 3, 4), valid_folds=(9,), lineage=lineage).save(ck / LLM_META)
    (ck / RUN_SUMMARY).write_text(json.dumps({"train_folds": [10]}))  # ignored: the lineage is exact
    recorded = checkpoint_training_folds(ck)
    assert recorded == {
        "tokenizer.train_folds": (1, 2, 3),
        "tokenizer.valid_folds": (9,),
        "pretrain.train_folds": (1, 2),
        "pretrain.valid_folds": (9,),
        "instruct.train_folds": (1, 2, 3, 4),
        "instruct.valid_folds": (9,),
    }
    check_folds(EvalConfig(), recorded)
    with pytest.raises(ValueError, match=r"tokenizer.train_folds"):
        check_folds(EvalConfig(folds=(3,), train_folds=(5,)), recorded)
    assert LlmMeta.load(ck / LLM_META).lineage == lineage  # round trip through JSON


# --- end to end on a tiny real checkpoint -------------------------------------------------------

CORPUS = [
    *INSTRUCT_CORPUS,
    "Is there static noise in lead aVL? baseline drift, burst noise, electrodes problems",
]
MAX_NEW_TOKENS = 6


def build_tiny_checkpoint(out: Path, tmp: Path) -> Path:
    """A real instruct-stage folder: random tiny ECG tokenizer + random 2-layer Llama with ECG tokens.

    The output rows of the ECG tokens are scaled up so that, unmasked, the model would prefer
    them: the evaluation's ban on ECG ids in answers is then visible.
    """
    import torch
    from transformers import LlamaConfig

    from diagecg.config import GenerationConfig
    from diagecg.constants import DEMO_BOS_TOKEN, DEMO_EOS_TOKEN, DEMO_PAD_TOKEN
    from diagecg.nn.llm_checkpoint import save_llm_checkpoint
    from diagecg.prompts import PromptConfig

    torch.manual_seed(0)
    fsq = save_random_ecg_tokenizer(tmp / "ecg")
    text_tok, hf_tok, special = demo_text_tokenizer(CORPUS * 4)
    cfg = LlamaConfig(
        vocab_size=text_tok.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=special[DEMO_BOS_TOKEN],
        eos_token_id=special[DEMO_EOS_TOKEN],
        pad_token_id=special[DEMO_PAD_TOKEN],
    )
    model, vocab = llama_with_ecg_tokens(cfg, hf_tok, fsq.codebook_size)
    with torch.no_grad():
        model.lm_head.weight[vocab.offset :] *= 50.0
    meta = LlmMeta(
        stage="instruct",
        method="full",
        vocab=vocab,
        prompt=PromptConfig(),
        generation=GenerationConfig(max_new_tokens=MAX_NEW_TOKENS),
        preset="100hz",
        train_folds=TRAIN_FOLDS,
        valid_folds=(9,),
    )
    return save_llm_checkpoint(out, model, hf_tok, meta, tmp / "ecg")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("tiny_instruct")
    return build_tiny_checkpoint(base / "instruct", base / "build")


@pytest.fixture(scope="module")
def e2e(tiny_checkpoint, shared_data, tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("eval") / "eval.json"
    cfg = EvalConfig(
        checkpoint_dir=str(tiny_checkpoint),
        data_dir=str(shared_data / "ptbxl"),
        out_file=str(out),
        max_records=5,
        n_reports=3,
        batch_size=4,
        device="cpu",
        progress=False,
        ptbxl_full=False,
    )  # ptbxl/ alone: the `ptbxl` fixture's records
    return cfg, main(cfg), out


def test_main_writes_per_type_accuracy_beside_baselines(e2e, ptbxl):
    cfg, results, out = e2e
    saved = json.loads(out.read_text())
    assert saved == results
    assert results["schema_version"] == 1 and results["folds"] == [10] and results["n_records"] == 5
    assert results["n_prompts_over_context"] == 0
    assert results["checkpoint"]["training_folds"] == {
        "instruct.train_folds": list(TRAIN_FOLDS),
        "instruct.valid_folds": [9],
    }
    rows = [json.loads(line) for line in Path(results["predictions_file"]).read_text().splitlines()]
    for wording in ("template", "paraphrase"):
        block = results["qa"][wording]
        assert block["n"] == sum(r["wording"] == wording for r in rows) >= 5 * 4
        for group in (
            "overall",
            "single-verify",
            "single-choose",
            "single-query",
            "attr/scp_code",
            "verify+choose",
        ):
            row = block["groups"][group]
            assert set(row) == {"n", "model", "majority_template", "majority_question", "ablated"}
        mine = [r for r in rows if r["wording"] == wording]
        accuracy = sum(r["correct"] for r in mine) / len(mine)
        assert block["groups"]["overall"]["model"] == pytest.approx(accuracy)
        assert {ptbxl.entries[r["ecg_id"]].strat_fold for r in mine} == {10}
    assert set(results["reports"]["metrics"]) == {
        "bleu1",
        "bleu2",
        "bleu3",
        "bleu4",
        "meteor",
        "rouge1",
        "rouge2",
        "rougeL",
    }
    assert results["reports"]["n"] == 3 == sum(r["task"] == "report" for r in rows)
    table = format_results(results)
    assert "maj/tpl" in table and "maj/q" in table and "BLEU1=" in table and "METEOR" not in table
    assert "meteor=" in table
    # per finding: every superclass, asked of every record, in both wordings, beside the ablation
    findings = results["findings"]
    assert list(findings["findings"])[:5] == ["NORM", "MI", "STTC", "CD", "HYP"]
    for wording in ("template", "paraphrase"):
        for label in ("model", "ablated"):
            per = findings[wording][label]["per_finding"]
            assert set(per) == set(findings["findings"])
            assert all(row["n"] == 5 for row in per.values())
    assert "Findings, template wording" in table and "AUC abl" in table
    # the ruler: each finding with a defining measurement, scored on the same questions
    ruler = findings["ruler"]
    assert set(ruler) <= set(findings["findings"]) and "NORM" not in ruler and "ruler AUC" in table
    for row in ruler.values():
        assert row["n"] == 5 and row["feature"] in FEATURE_NAMES and len(row["auc_ci"]) == 2
    assert "calibration" not in findings  # only on request, on a validation fold


def test_calibration_is_fitted_on_request(tiny_checkpoint, shared_data, tmp_path):
    import torch

    torch.set_num_threads(1)
    cfg = EvalConfig(
        checkpoint_dir=str(tiny_checkpoint),
        data_dir=str(shared_data / "ptbxl"),
        folds=(9,),
        max_records=30,
        n_reports=0,
        batch_size=8,
        device="cpu",
        progress=False,
        wordings=("template",),
        ablation=False,
        calibrate=True,
        finding_min_positives=3,
        ptbxl_full=False,
    )  # ptbxl/ alone: the tiny checkpoint's test records
    results = main(cfg)
    findings = results["findings"]
    cal = findings["calibration"]
    assert cal, "the superclasses of 30 records have enough positives and negatives"
    for name, row in cal.items():
        assert findings["findings"][row["code"]] == name
        assert {"a", "b", "threshold", "n", "n_pos"} <= set(row) and 0.0 <= row["threshold"] <= 1.0
    # the test fold is then scored with the rule the runtime answers with
    path = tmp_path / "calibration_results.json"
    path.write_text(json.dumps(results))
    test_cfg = dataclasses.replace(
        cfg, folds=(10,), calibrate=False, calibration_file=str(path), max_records=12
    )
    scored = main(test_cfg)["findings"]
    assert scored["calibrated_with"]["findings"] == sorted(cal)
    assert "calibration" not in scored
    with pytest.raises(ValueError, match="fitted on fold"):
        main(dataclasses.replace(test_cfg, folds=(9,), train_folds=TRAIN_FOLDS))


def test_apply_calibration_gives_the_runtime_rule() -> None:
    import numpy as np

    from diagecg.calibration import calibrate_options
    from diagecg.datasets.ecgqa import QASample
    from diagecg.training.evaluate import apply_calibration

    s = QASample(
        ecg_id=1,
        question="q",
        answers=("yes",),
        question_type="single-verify",
        attribute_type="scp_code",
        template_id=1,
        attributes=("atrial fibrillation",),
        source="generated",
    )
    other = dataclasses.replace(s, attributes=("myocardial infarction",))
    probs = [np.array([0.7, 0.1, 0.2]), np.array([0.7, 0.1, 0.2])]  # no, not sure, yes
    opts = [("no", "not sure", "yes")] * 2
    cal = {"atrial fibrillation": {"a": 1.0, "b": 0.0, "threshold": 0.25}}
    out, calls = apply_calibration([s, other], probs, opts, cal)
    q, best = calibrate_options(probs[0], 0, cal["atrial fibrillation"])
    np.testing.assert_allclose(out[0], q)
    assert calls == [True, False]  # p(present) 0.3 reaches 0.25; the uncalibrated one answers "no"
    assert apply_calibration([s], probs[:1], opts[:1], {}) == (probs[:1], None)


def test_answers_match_an_unbatched_decode_and_generate_answer(e2e, tiny_checkpoint, ptbxl):
    """Batched left-padded generation == a plain argmax loop (no padding, no cache) == sft.generate_answer."""
    import torch
    from tokenizers import Tokenizer

    from diagecg.nn.checkpoint import load_tokenizer
    from diagecg.nn.llm_checkpoint import load_llm_checkpoint
    from diagecg.prompts import encode_prompt
    from diagecg.training.ecg_data import load_signals
    from diagecg.training.encode_records import encode_signals
    from diagecg.training.sft import generate_answer

    _, results, _ = e2e
    rows = [json.loads(line) for line in Path(results["predictions_file"]).read_text().splitlines()]
    model, _, meta, paths = load_llm_checkpoint(tiny_checkpoint)
    text_tok = Tokenizer.from_file(str(paths.text_tokenizer))
    ecg_tok, pre, _, _ = load_tokenizer(paths.ecg_tokenizer_dir)
    v = meta.vocab
    banned = [*range(v.offset, v.vocab_size), v.bos_id, v.pad_id]
    picked = [rows[0], rows[len(rows) // 2], rows[-1]]  # a template question, a paraphrase, a report
    assert picked[-1]["task"] == "report"
    for row in picked:
        loaded = load_signals(ptbxl, [row["ecg_id"]], pre, progress=False)
        indices = encode_signals(ecg_tok, loaded.signals, loaded.features)[0]
        patient = ptbxl.entries[row["ecg_id"]].patient
        ids = encode_prompt(
            meta.prompt,
            v,
            lambda t: text_tok.encode(t, add_special_tokens=False).ids,
            question=row["question"],
            patient=patient,
            ecg_indices=indices.tolist(),
        )
        new: list[int] = []
        with torch.no_grad():
            for _ in range(MAX_NEW_TOKENS):
                logits = model(torch.tensor([ids + new])).logits[0, -1]
                logits[banned] = float("-inf")
                t = int(logits.argmax())
                if t == v.eos_id:
                    break
                new.append(t)
        assert row["prediction"] == text_tok.decode(new, skip_special_tokens=True).strip()
        assert row["prediction"] == generate_answer(model, text_tok, meta, indices, row["question"], patient)
    assert all("<ecg" not in r["prediction"] for r in rows)  # the scaled-up ECG rows never win
    assert len({r["prediction"] for r in rows}) > 1  # answers depend on the record and question


def test_greedy_generate_is_batch_invariant_and_respects_the_context(tiny_checkpoint):
    import torch

    from diagecg.nn.generation import greedy_generate
    from diagecg.nn.llm_checkpoint import load_llm_checkpoint

    model, _, meta, _ = load_llm_checkpoint(tiny_checkpoint)
    v = meta.vocab
    g = torch.Generator().manual_seed(0)
    prompts = [
        [v.bos_id, *torch.randint(3, v.base_vocab_size, (n,), generator=g).tolist()]
        for n in (3, 17, 9, 30, 4)
    ]
    kw = dict(pad_id=v.pad_id, stop_ids=[v.eos_id], banned_ids=list(range(v.offset, v.vocab_size)))
    one = greedy_generate(model, prompts, max_new_tokens=5, batch_size=1, **kw)
    assert greedy_generate(model, prompts, max_new_tokens=5, batch_size=3, **kw) == one
    assert any(len(o) == 5 for o in one)
    # a context of 33 tokens leaves the 31-token prompt 2 new tokens and the 18-token one all 5
    limited = greedy_generate(model, prompts, max_new_tokens=5, batch_size=5, context=33, **kw)
    assert limited[3] == one[3][:2] and limited[1] == one[1] and limited[0] == one[0]
    assert greedy_generate(model, prompts[3:4], max_new_tokens=5, batch_size=1, context=31, **kw) == [[]]
    with pytest.raises(ValueError, match="stop id"):
        greedy_generate(model, prompts, max_new_tokens=5, batch_size=1, pad_id=v.pad_id, stop_ids=[])


def test_main_refuses_folds_the_checkpoint_trained_on(tiny_checkpoint, shared_data):
    cfg = EvalConfig(
        checkpoint_dir=str(tiny_checkpoint), data_dir=str(shared_data), folds=(8,), train_folds=(1, 2)
    )
    with pytest.raises(ValueError, match="training folds"):
        main(cfg)


def test_the_ablated_predictor_asks_with_another_records_ecg(tiny_checkpoint):
    import numpy as np
    from tokenizers import Tokenizer

    from diagecg.nn.llm_checkpoint import load_llm_checkpoint
    from diagecg.training.evaluate import LlmPredictor
    from diagecg.types import PatientInfo

    model, _, meta, paths = load_llm_checkpoint(tiny_checkpoint)
    text = Tokenizer.from_file(str(paths.text_tokenizer))
    codes = {1: np.arange(66) % 16, 2: (np.arange(66) * 7) % 16}
    patients = {1: PatientInfo(age_years=30), 2: PatientInfo(age_years=80)}
    real = LlmPredictor(model, text, meta, codes, patients, batch_size=2)
    ablated = real.with_ecg_of({1: 2, 2: 1})
    q = "Does this ECG show symptoms of atrial fibrillation?"
    a, b = real.prompt_ids(1, q), ablated.prompt_ids(1, q)
    v = meta.vocab
    ecg = [i for i in b if v.offset <= i < v.offset + v.n_codes]
    assert ecg == [v.offset + int(c) for c in codes[2]]  # record 2's ECG ...
    assert [i for i in a if not v.offset <= i < v.offset + v.n_codes] == [
        i for i in b if not v.offset <= i < v.offset + v.n_codes
    ]  # ... with record 1's patient and question
    assert real.ecg_indices[1] is codes[1]  # the real predictor is untouched
    p_real = real.option_probabilities([1], [q], [("yes", "no", "not sure")])[0]
    p_abl = ablated.option_probabilities([1], [q], [("yes", "no", "not sure")])[0]
    assert p_real.sum() == pytest.approx(1.0) and not np.allclose(p_real, p_abl)
