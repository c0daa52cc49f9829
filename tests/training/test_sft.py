"""Stage 3: instruction examples (loss on the answer only), short instruct runs on real PTB-XL labels
(random FSQ indices), the fold discipline, the saved LoRA checkpoint and greedy decoding."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from builders import TINY_LLM_CORPUS, TINY_LLM_WIDTHS, make_random_stage1
from tokenizers import Tokenizer

from diagecg.constants import LLM_ADAPTER_DIR, LLM_BASE_DIR, RUN_SUMMARY
from diagecg.datasets.ptbxl import PtbxlDataset
from diagecg.nn.llm_checkpoint import load_llm_checkpoint, read_llm_meta
from diagecg.prompts import PromptConfig, encode_prompt
from diagecg.training import sft as sft_module
from diagecg.training.base_model import build_tiny_base_model
from diagecg.training.llm_data import IGNORE_INDEX, SftItem, encode_sft_items, sft_example
from diagecg.training.pretrain import PretrainConfig
from diagecg.training.pretrain import main as pretrain_main
from diagecg.training.sft import BalancedPool, SFTConfig, generate_answer, main
from diagecg.types import PatientInfo

QUESTION = "Does this ECG show symptoms of atrial fibrillation?"


def small_config(shared_data: Path, init: Path, out: Path, **changes) -> SFTConfig:
    cfg = SFTConfig(
        data_dir=str(shared_data),
        ptbxl_full=False,  # ptbxl/ alone: the random stage-1 token cache covers its records only
        init_dir=str(init),
        out_dir=str(out),
        steps=15,
        batch_size=8,
        lr=1e-2,
        warmup_steps=2,
        eval_every=5,
        eval_examples=32,
        eval_generate=4,
        log_every=5,
        max_train_records=48,
        question_rounds=1,
        lora_r=8,
        lora_alpha=32,
        num_threads=1,
        progress=False,
    )
    return dataclasses.replace(cfg, **changes)


@pytest.fixture(scope="module")
def pretrained(shared_data: Path, ptbxl_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("sft")
    init = make_random_stage1(root, ptbxl_root)
    base = build_tiny_base_model(
        TINY_LLM_CORPUS, root / "base", 0, vocab_size=400, max_position=256, **TINY_LLM_WIDTHS
    )
    pre = root / "pretrain"
    pretrain_main(
        PretrainConfig(
            data_dir=str(shared_data),
            ptbxl_full=False,
            init_dir=str(init),
            out_dir=str(pre),
            base_model=str(base),
            steps=30,
            batch_size=8,
            lr=1e-2,
            eval_every=30,
            eval_examples=16,
            max_train_records=32,
            text_ratio=0.8,
            num_threads=1,
            progress=False,
        )
    )
    return {"root": root, "pretrain": pre, "data": shared_data}


@pytest.fixture(scope="module")
def lora_run(pretrained: dict) -> dict:
    """An instruct run with class-balanced finding questions, one of which is dropped as too long."""
    seen: dict[str, list[SftItem]] = {}
    original = sft_module.encode_sft_items

    def spy(items, *args, **kwargs):  # record which records each split's instructions come from
        split = ("train", "valid", "finding")[len(seen)]
        seen[split] = list(items)
        if split == "finding":  # as if the first one were longer than the model's context
            examples, kept, n_long = original(items[1:], *args, **kwargs)
            return examples, kept, n_long + 1
        return original(items, *args, **kwargs)

    sft_module.encode_sft_items = spy
    try:
        out = pretrained["root"] / "instruct"
        cfg = small_config(pretrained["data"], pretrained["pretrain"], out, finding_verify_ratio=0.25)
        summary = main(cfg)
    finally:
        sft_module.encode_sft_items = original
    return {"out": out, "summary": summary, "seen": seen}


# --- examples ------------------------------------------------------------------------------


def test_sft_loss_only_on_the_answer_and_eos(pretrained: dict) -> None:
    _, _, meta, paths = load_llm_checkpoint(pretrained["pretrain"])
    text_tok = Tokenizer.from_file(str(paths.text_tokenizer))
    enc = lambda t: text_tok.encode(t, add_special_tokens=False).ids  # noqa: E731
    item = SftItem(ecg_id=1, task="qa", question=QUESTION, answer="not sure")
    ids, labels = sft_example(item, meta.prompt, meta.vocab, enc, [3, 1, 4, 1, 5], PatientInfo(age_years=50))
    prompt = encode_prompt(
        meta.prompt,
        meta.vocab,
        enc,
        question=QUESTION,
        patient=PatientInfo(age_years=50),
        ecg_indices=[3, 1, 4, 1, 5],
    )
    assert ids[: len(prompt)] == prompt and all(lab == IGNORE_INDEX for lab in labels[: len(prompt)])
    answer = labels[len(prompt) :]
    assert answer == ids[len(prompt) :] and answer[-1] == meta.vocab.eos_id
    assert text_tok.decode(answer[:-1]) == " not sure"
    tokens, patients = {1: np.array([3, 1, 4, 1, 5])}, {1: PatientInfo(age_years=50)}
    assert encode_sft_items([item], meta.prompt, meta.vocab, enc, tokens, patients, len(ids)) == (
        [(ids, labels)],
        [item],
        0,
    )
    dropped = encode_sft_items([item], meta.prompt, meta.vocab, enc, tokens, patients, len(ids) - 1)
    assert dropped == ([], [], 1)  # too long: left out and counted


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"wording": "paraphrase"}, "held out"),
        ({"tasks": ("qa", "chat")}, "tasks"),
        ({"valid_folds": (10,)}, "test fold"),
        ({"report_ratio": 1.0}, "report_ratio"),
        ({"finding_verify_ratio": -0.1}, "finding_verify_ratio"),
        ({"finding_verify_ratio": 1.5}, "finding_verify_ratio"),
        ({"finding_min_positives": 0}, "finding_min_positives"),
    ],
)
def test_config_is_checked(changes: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(SFTConfig(), **changes)


def test_finding_verify_fields_accept_their_range() -> None:
    assert SFTConfig().finding_verify_ratio == 0.0  # off unless asked for
    for ratio in (0.0, 0.3, 1.0):
        assert SFTConfig(finding_verify_ratio=ratio, finding_min_positives=1).finding_verify_ratio == ratio
    cfg = SFTConfig(finding_verify_ratio=0.25, finding_min_positives=3)
    assert SFTConfig.from_dict(cfg.to_dict()) == cfg


# --- class-balanced finding questions ----------------------------------------------------------------------

# (finding, present) -> pool size: very unequal on purpose, and CD has no absent example at all
POOL_SIZES = {
    ("NORM", True): 100,
    ("NORM", False): 5,
    ("AFIB", True): 2,
    ("AFIB", False): 200,
    ("CD", True): 50,
}


def _balanced_pool() -> tuple[BalancedPool, dict[int, tuple[str, bool]]]:
    examples, keys, key_of = [], [], {}
    for key, n in POOL_SIZES.items():
        for _ in range(n):
            k = len(examples)  # each example is ([k], [k]): its id tells its pool
            examples.append(([k], [k]))
            keys.append(key)
            key_of[k] = key
    order = list(range(len(examples)))
    random.Random(0).shuffle(order)  # the pool must not depend on the input order
    return BalancedPool([examples[i] for i in order], [keys[i] for i in order]), key_of


def test_balanced_pool_draws_findings_then_classes_equally() -> None:
    pool, key_of = _balanced_pool()
    assert pool.findings == ["AFIB", "CD", "NORM"]
    n = 6000
    drawn = pool.draw(n, random.Random(1))
    assert len(drawn) == n
    by_key = Counter(key_of[ids[0]] for ids, _ in drawn)
    by_finding = Counter(f for f, _ in by_key.elements())
    # binomial sd of a 1/3 share of 6000 is ~37, of a 1/6 share ~29: the bounds allow > 4 sd
    for f in ("NORM", "AFIB", "CD"):
        assert abs(by_finding[f] - n / 3) < 160, by_finding
    for f in ("NORM", "AFIB"):  # present and absent equally, whatever the pool sizes (100:5, 2:200)
        assert abs(by_key[(f, True)] - n / 6) < 130 and abs(by_key[(f, False)] - n / 6) < 130, by_key
    assert by_key[("CD", True)] == by_finding["CD"]  # a finding with one class draws that class
    afib_yes = Counter(ids[0] for ids, _ in drawn if key_of[ids[0]] == ("AFIB", True))
    assert len(afib_yes) == 2 and min(afib_yes.values()) > 350  # uniform inside a pool (~500 each)


def test_balanced_pool_is_seeded() -> None:
    pool, _ = _balanced_pool()
    a, b = pool.draw(50, random.Random(7)), pool.draw(50, random.Random(7))
    assert a == b and a != pool.draw(50, random.Random(8))
    assert pool.draw(0, random.Random(7)) == []


def test_balanced_pool_needs_one_key_per_example() -> None:
    with pytest.raises(ValueError):
        BalancedPool([([1], [1]), ([2], [2])], [("NORM", True)])


# --- runs ------------------------------------------------------------------------------------


def test_instruction_tuning_lowers_the_answer_loss(lora_run: dict) -> None:
    s = lora_run["summary"]
    assert s["step"] == 15 and [h["step"] for h in s["history"]] == [0, 5, 10, 15]
    assert s["eval"]["qa_loss"] < 0.8 * s["eval_initial"]["qa_loss"]
    assert s["eval"]["report_loss"] < 0.85 * s["eval_initial"]["report_loss"]
    assert s["history"][-1]["train_loss"] < s["history"][1]["train_loss"]
    assert s["n_train_instructions"]["qa"] > 0 and s["n_train_instructions"]["report"] > 0
    assert s["n_trainable_params"] < 0.5 * s["n_params"]  # LoRA
    assert s["generated"]["n_qa"] == 4 and all(
        isinstance(r["prediction"], str) for r in s["generated"]["examples"]
    )


def test_training_never_touches_folds_9_and_10(lora_run: dict, ptbxl_root: Path) -> None:
    folds = PtbxlDataset(ptbxl_root).entries
    train, valid = lora_run["seen"]["train"], lora_run["seen"]["valid"]
    assert train and valid
    assert {folds[i.ecg_id].strat_fold for i in train + lora_run["seen"]["finding"]} <= set(range(1, 9))
    assert {folds[i.ecg_id].strat_fold for i in valid} == {9}
    assert {i.task for i in train} == {"qa", "report"}
    assert any(i.question == PromptConfig().report_question for i in train)
    s = lora_run["summary"]
    assert s["train_folds"] == list(range(1, 9)) and s["valid_folds"] == [9]


def test_finding_questions_join_the_qa_rows(lora_run: dict, ptbxl_root: Path) -> None:
    s = lora_run["summary"]
    finding = lora_run["seen"]["finding"]
    assert s["n_finding_verify_instructions"] == len(finding) - 1  # the dropped one is left out of the pool
    ptbxl = PtbxlDataset(ptbxl_root)
    ids = sorted({i.ecg_id for i in finding})
    assert len(finding) % len(ids) == 0 and len(finding) // len(ids) >= 5  # every record x every finding
    assert {i.task for i in finding} == {"qa"} and {i.answer for i in finding} >= {"yes", "no"}
    assert all(ptbxl.entries[i].strat_fold in range(1, 9) for i in ids)


def test_instruct_checkpoint_is_a_lora_adapter_on_the_copied_pretrain_model(
    lora_run: dict, pretrained: dict
) -> None:
    out = lora_run["out"]
    meta = read_llm_meta(out)
    assert (meta.stage, meta.method) == ("instruct", "lora") and meta.train_folds == tuple(range(1, 9))
    assert meta.base_model.copied and (out / LLM_BASE_DIR / "config.json").is_file()
    assert (out / LLM_ADAPTER_DIR / "adapter_config.json").is_file() and (out / RUN_SUMMARY).is_file()
    assert meta.vocab == read_llm_meta(pretrained["pretrain"]).vocab
    model, _, _, paths = load_llm_checkpoint(out)
    merged, _, _, _ = load_llm_checkpoint(out, merge=True)
    text_tok = Tokenizer.from_file(str(paths.text_tokenizer))
    ids = encode_prompt(
        meta.prompt,
        meta.vocab,
        lambda t: text_tok.encode(t, add_special_tokens=False).ids,
        question=QUESTION,
        patient=PatientInfo(),
        ecg_indices=[0, 1, 2, 3],
    )
    with torch.no_grad():
        a = model(input_ids=torch.tensor([ids])).logits
        b = merged(input_ids=torch.tensor([ids])).logits
    assert torch.allclose(a, b, atol=1e-4)
    answer = generate_answer(merged, text_tok, meta, [0, 1, 2, 3], QUESTION, PatientInfo(), max_new_tokens=8)
    assert isinstance(answer, str) and "<ecg" not in answer


def test_generate_answer_never_emits_ecg_tokens(pretrained: dict) -> None:
    model, _, meta, paths = load_llm_checkpoint(pretrained["pretrain"])
    v = meta.vocab
    with torch.no_grad():  # make the ECG ids the model's favourites: the ban must still hold
        model.get_output_embeddings().weight[v.offset : v.end_id + 1] *= 100.0
        model.get_output_embeddings().weight[v.eos_id] *= 0.0
    text_tok = Tokenizer.from_file(str(paths.text_tokenizer))
    seen: list[list[int]] = []
    original = model.generate

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        seen.append(out[0, kwargs["input_ids"].shape[1] :].tolist())
        return out

    model.generate = spy
    answer = generate_answer(model, text_tok, meta, [5, 6, 7], QUESTION, PatientInfo(), max_new_tokens=6)
    assert isinstance(answer, str) and len(seen[0]) == 6
    assert all(not (v.offset <= t <= v.end_id) for t in seen[0])


@pytest.mark.slow
def test_full_fine_tuning_and_resume(pretrained: dict) -> None:
    out = pretrained["root"] / "full"
    cfg = small_config(
        pretrained["data"], pretrained["pretrain"], out, method="full", steps=8, eval_every=4, eval_generate=0
    )
    main(dataclasses.replace(cfg, stop_at_step=4))
    resumed = main(dataclasses.replace(cfg, resume=True))
    straight = main(dataclasses.replace(cfg, out_dir=str(pretrained["root"] / "full-straight")))
    assert resumed["resumed_from_step"] == 4 and resumed["step"] == 8
    assert resumed["eval"]["qa_loss"] == pytest.approx(straight["eval"]["qa_loss"], rel=1e-4)
    assert read_llm_meta(out).method == "full"
