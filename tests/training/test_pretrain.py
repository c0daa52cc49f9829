"""Stage 2: forecasting examples (loss on the target only) and short pretraining runs on real PTB-XL records.

The ECG tokenizer here is a random stage-1 checkpoint and the FSQ indices are random (the LLM stage is
tested on its own); the records, folds and labels are the real shared PTB-XL ones.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from builders import N_CODES, N_FRAMES, TINY_LLM_CORPUS, TINY_LLM_WIDTHS, make_random_stage1

from diagecg.config import EncoderConfig, FSQConfig, PreprocessConfig, SummaryConfig, VocabConfig
from diagecg.constants import (
    ECG_TOKEN_CACHE,
    LLM_ADAPTER_DIR,
    LLM_MODEL_DIR,
    LLM_TEXT_TOKENIZER,
    LLM_TRAIN_STATE_DIR,
    RUN_SUMMARY,
    ManifestKey,
)
from diagecg.datasets.ptbxl import PtbxlDataset
from diagecg.features import FEATURE_NAMES
from diagecg.nn.checkpoint import save_checkpoint
from diagecg.nn.ecg_tokenizer import EcgTokenizer
from diagecg.nn.llm_checkpoint import load_llm_checkpoint, read_llm_meta
from diagecg.training import pretrain as pretrain_module
from diagecg.training.base_model import build_tiny_base_model
from diagecg.training.llm_data import (
    IGNORE_INDEX,
    ForecastScale,
    collate,
    draw_forecast_examples,
    forecast_example,
    text_example,
)
from diagecg.training.llm_model import stage1_summary
from diagecg.training.llm_trainer import lr_at, quantized_load_kwargs
from diagecg.training.pretrain import PretrainConfig, main

VOCAB = VocabConfig(
    n_codes=N_CODES,
    offset=100,
    start_id=116,
    end_id=117,
    vocab_size=118,
    base_vocab_size=100,
    bos_id=0,
    eos_id=1,
    pad_id=2,
)


def small_config(shared_data: Path, init: Path, out: Path, base: Path | None, **changes) -> PretrainConfig:
    cfg = PretrainConfig(
        data_dir=str(shared_data),
        ptbxl_full=False,  # ptbxl/ alone: the random stage-1 token cache covers its records only
        init_dir=str(init),
        out_dir=str(out),
        base_model=None if base is None else str(base),
        steps=12,
        batch_size=8,
        lr=3e-3,
        warmup_steps=2,
        eval_every=6,
        eval_examples=32,
        log_every=3,
        max_train_records=48,
        num_threads=1,
        progress=False,
    )
    return dataclasses.replace(cfg, **changes)


@pytest.fixture(scope="module")
def setup(shared_data: Path, ptbxl_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("pretrain")
    init = make_random_stage1(root, ptbxl_root)
    bases = {
        a: build_tiny_base_model(
            TINY_LLM_CORPUS,
            root / f"base-{a}",
            0,
            vocab_size=400,
            max_position=256,
            arch=a,
            **TINY_LLM_WIDTHS,
        )
        for a in ("llama", "qwen2")
    }
    return {"root": root, "init": init, "bases": bases, "data": shared_data}


@pytest.fixture(scope="module")
def full_run(setup: dict) -> dict:
    out = setup["root"] / "full"
    return {
        "out": out,
        "summary": main(small_config(setup["data"], setup["init"], out, setup["bases"]["llama"])),
    }


# --- examples ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "context, target, offset", [(31, 8, 0), (31, 16, 10), (47, 16, 0), (1, 1, 61), (32, 31, 0)]
)
def test_forecast_loss_only_on_the_target(context: int, target: int, offset: int) -> None:
    idx = list(range(N_FRAMES))
    idx = [k % N_CODES for k in idx]
    ids, labels = forecast_example(idx, VOCAB, context, target, offset)
    assert len(ids) == len(labels)
    head = [VOCAB.bos_id, VOCAB.start_id]
    assert ids[:2] == head
    assert ids[2 : 2 + context] == [VOCAB.offset + k for k in idx[offset : offset + context]]
    labelled = [i for i, lab in enumerate(labels) if lab != IGNORE_INDEX]
    reaches_end = offset + context + target == N_FRAMES
    assert labelled == list(range(2 + context, 2 + context + target + reaches_end))  # target (+ </ecg>) only
    assert [labels[i] for i in labelled] == ids[2 + context :]
    assert (ids[-1] == VOCAB.end_id) == reaches_end


def test_forecast_windows_are_random_but_seeded() -> None:
    recs = [np.random.default_rng(s).integers(0, N_CODES, N_FRAMES) for s in range(5)]
    scales = [ForecastScale(0.5, 0.125), ForecastScale(0.75, 0.25)]
    a = draw_forecast_examples(recs, VOCAB, scales, 20, random.Random(3))
    b = draw_forecast_examples(recs, VOCAB, scales, 20, random.Random(3))
    assert a == b and len({len(x[0]) for x in a}) > 1
    for _ids, labels in a:
        n_target = sum(lab != IGNORE_INDEX for lab in labels)
        assert n_target in (8, 9, 16, 17)  # round(T/8) or round(T/4), plus </ecg> at the record's end
    with pytest.raises(ValueError, match="needs"):
        ForecastScale(0.9, 0.2).lengths(N_FRAMES)


def test_text_example_and_collate() -> None:
    enc = lambda text: [10 + (ord(c) % 50) for c in text]  # noqa: E731
    ids, labels = text_example("abc", enc, VOCAB, max_len=64)
    assert ids == [0, *enc("abc"), 1] and labels == [IGNORE_INDEX, *enc("abc"), 1]
    assert len(text_example("x" * 100, enc, VOCAB, max_len=16)[0]) == 16
    batch = collate([(ids, labels), ([0, 5], [IGNORE_INDEX, 5])], pad_id=2)
    assert batch["input_ids"].shape == (2, 5) and batch["input_ids"][1].tolist() == [0, 5, 2, 2, 2]
    assert batch["attention_mask"][1].tolist() == [1, 1, 0, 0, 0]
    assert batch["labels"][1].tolist() == [IGNORE_INDEX, 5, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]


def test_lr_schedule_warms_up_then_decays() -> None:
    lrs = [lr_at(s, steps=100, lr=1.0, warmup=10, min_ratio=0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False)) and lrs[-1] == pytest.approx(
        0.1, abs=1e-3
    )


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"train_folds": (1, 10)}, "test fold"),
        ({"valid_folds": (8,)}, "disjoint"),
        ({"target_fractions": (0.1,)}, "one per context fraction"),
        ({"context_fractions": (0.9, 0.5, 0.75)}, "c \\+ t <= 1"),
        ({"load_in_4bit": True}, "method='lora'"),
        ({"method": "adapter"}, "method"),
    ],
)
def test_config_is_checked(changes: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(PretrainConfig(), **changes)


def test_missing_init_and_4bit_on_cpu_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="init_dir is required"):
        main(PretrainConfig(out_dir=str(tmp_path)))
    from types import SimpleNamespace

    cpu = SimpleNamespace(device=torch.device("cpu"), local_process_index=0)
    with pytest.raises(ValueError, match="CUDA GPU"):
        quantized_load_kwargs(True, cpu)
    assert quantized_load_kwargs(False, cpu) == {}


# --- a stage 1 with summary tokens ------------------------------------------------------------

SUMMARY = SummaryConfig(findings=("NORM", "MI", "CD"), levels=4, features=FEATURE_NAMES, hidden=8)


def make_summary_stage1(root: Path, ptbxl_root: Path, seed: int = 0) -> tuple[Path, dict[int, np.ndarray]]:
    """A random stage-1 checkpoint with a summary head, and a token cache whose rows are its 3 summary
    codes (in [16, 28)) followed by 63 random frame codes (in [0, 16))."""
    d = root / "tokenizer-summary"
    pre = PreprocessConfig(fs_hz=100)
    enc = EncoderConfig(
        n_samples=pre.n_samples, stem_channels=8, stage_channels=(8, 8, 8, 8), groups=4, fused_channels=16
    )
    fsq = FSQConfig(levels=(4, 4))
    torch.manual_seed(seed)
    configs = {
        ManifestKey.PREPROCESS: pre,
        ManifestKey.ENCODER: enc,
        ManifestKey.FSQ: fsq,
        ManifestKey.SUMMARY: SUMMARY,
    }
    save_checkpoint(d, EcgTokenizer(enc, fsq, SUMMARY).eval(), configs, step=0)
    rng = np.random.default_rng(seed)
    blocks = N_CODES + np.arange(SUMMARY.n_tokens) * SUMMARY.levels
    tokens = {
        i: np.concatenate(
            [blocks + rng.integers(0, SUMMARY.levels, SUMMARY.n_tokens), rng.integers(0, N_CODES, N_FRAMES)]
        )
        for i in PtbxlDataset(ptbxl_root).ids(None, fs_hz=100)
    }
    np.savez_compressed(d / ECG_TOKEN_CACHE, **{str(i): t for i, t in tokens.items()})  # after the weights
    return d, tokens


class _Captured(Exception):
    pass


def test_forecasting_never_sees_summary_codes(setup: dict, ptbxl_root: Path, monkeypatch) -> None:
    """With summary tokens in the stage-1 cache, pretraining forecasts the frame tokens only, while the
    vocabulary still gets a row for every summary code."""
    init, tokens = make_summary_stage1(setup["root"], ptbxl_root)
    assert stage1_summary(init) == SUMMARY and stage1_summary(setup["init"]).n_tokens == 0

    def capture(train_records, examples, offset, n_codes):  # called once the data and vocabulary exist
        raise _Captured(train_records, examples, offset, n_codes)

    monkeypatch.setattr(pretrain_module, "unigram_loss", capture)
    cfg = small_config(setup["data"], init, setup["root"] / "summary-run", setup["bases"]["llama"])
    with pytest.raises(_Captured) as caught:
        main(cfg)
    train_records, valid_examples, offset, n_codes = caught.value.args
    assert n_codes == N_CODES + SUMMARY.n_codes  # frame codes + 3 findings x 4 levels
    frames = {tuple(t[SUMMARY.n_tokens :]) for t in tokens.values()}
    assert len(train_records) == cfg.max_train_records
    assert all(len(r) == N_FRAMES and r.max() < N_CODES and tuple(r) in frames for r in train_records)
    ecg_ids = [t for ids, _ in valid_examples for t in ids if offset <= t < offset + n_codes]
    assert ecg_ids and max(ecg_ids) < offset + N_CODES  # no summary code in any forecasting example


# --- runs ------------------------------------------------------------------------------------


def test_pretraining_lowers_the_forecasting_loss(full_run: dict) -> None:
    s = full_run["summary"]
    assert s["step"] == 12 and [h["step"] for h in s["history"]] == [0, 6, 12]
    assert s["eval"]["loss"] < 0.8 * s["eval_initial"]["loss"]
    assert s["history"][-1]["train_ecg_loss"] < s["history"][1]["train_ecg_loss"]
    # random indices: nothing beyond code frequencies to learn, so the unigram loss (~ln 16) is the floor
    assert s["eval_unigram_loss"] == pytest.approx(np.log(N_CODES), abs=0.05)
    assert s["eval"]["loss"] > s["eval_unigram_loss"] - 0.1
    assert s["text_ratio"] == 0.0 and s["n_train_records"] == 48 and s["steps_per_s"] > 0
    assert s["train_folds"] == list(range(1, 9)) and s["valid_folds"] == [9]


def test_pretrain_writes_a_complete_checkpoint(full_run: dict, setup: dict) -> None:
    out = full_run["out"]
    for name in (
        RUN_SUMMARY,
        LLM_TEXT_TOKENIZER,
        LLM_MODEL_DIR,
        LLM_TRAIN_STATE_DIR,
        "tokenizer",
        "ecg_tokenizer",
    ):
        assert (out / name).exists(), name
    meta = read_llm_meta(out)
    assert (meta.stage, meta.method, meta.preset) == ("pretrain", "full", "100hz")
    assert meta.vocab.n_codes == N_CODES and meta.vocab.vocab_size == meta.vocab.end_id + 1
    assert meta.base_model.path == str(setup["bases"]["llama"].resolve()) and not meta.base_model.demo
    model, hf_tok, _, paths = load_llm_checkpoint(out)
    assert model.get_input_embeddings().weight.shape[0] == meta.vocab.vocab_size
    assert json.loads((out / RUN_SUMMARY).read_text())["stage"] == "pretrain"
    with pytest.raises(ValueError, match="already holds a checkpoint"):
        main(small_config(setup["data"], setup["init"], out, setup["bases"]["llama"]))


def test_lora_pretraining_trains_only_adapters_and_ecg_rows(setup: dict) -> None:
    out = setup["root"] / "lora"
    s = main(
        small_config(
            setup["data"],
            setup["init"],
            out,
            setup["bases"]["qwen2"],
            method="lora",
            lora_r=4,
            lora_alpha=8,
            steps=6,
            eval_every=6,
        )
    )
    assert s["eval"]["loss"] < s["eval_initial"]["loss"]
    assert s["n_trainable_params"] < 0.5 * s["n_params"]
    assert (out / LLM_ADAPTER_DIR).is_dir() and not (out / LLM_MODEL_DIR).exists()
    merged, _, meta, _ = load_llm_checkpoint(out, merge=True)
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(setup["bases"]["qwen2"]))
    n_base = base.get_input_embeddings().weight.shape[0]
    w = merged.get_input_embeddings().weight.detach()
    assert torch.equal(w[:n_base], base.get_input_embeddings().weight.detach())  # text rows frozen
    ecg = w[meta.vocab.offset : meta.vocab.end_id + 1]
    assert torch.isfinite(ecg).all() and ecg.std() > 0


@pytest.mark.slow
def test_resume_continues_the_same_run(setup: dict) -> None:
    out = setup["root"] / "resumed"
    cfg = small_config(setup["data"], setup["init"], out, setup["bases"]["llama"])
    main(dataclasses.replace(cfg, stop_at_step=6))
    resumed = main(dataclasses.replace(cfg, resume=True))
    straight = main(dataclasses.replace(cfg, out_dir=str(setup["root"] / "straight")))
    assert resumed["resumed_from_step"] == 6 and resumed["step"] == 12
    assert resumed["eval"]["loss"] == pytest.approx(straight["eval"]["loss"], rel=1e-4)


@pytest.mark.slow
def test_demo_model_pretraining_with_the_text_objective(setup: dict) -> None:
    out = setup["root"] / "demo"
    s = main(
        small_config(setup["data"], setup["init"], out, None, steps=10, eval_every=5, demo_vocab_size=800)
    )
    assert (
        s["base_model"]["demo"] and s["text_ratio"] == 0.3 and s["history"][-1]["train_text_loss"] is not None
    )
    assert s["eval"]["loss"] < s["eval_initial"]["loss"]
    meta = read_llm_meta(out)
    assert meta.base_model.copied and (out / meta.base_model.path / "README.md").is_file()
