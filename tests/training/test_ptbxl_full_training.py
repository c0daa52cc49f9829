"""What the training stages read from ptbxl_full: unknown labels never train the summary head, and the LLM
stages use every record of the fake data (``tests/fake_ptbxl_full.py``; ptbxl_full itself is tested in
``tests/datasets/test_ptbxl_full.py``)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_ptbxl_full import write_fake_data

from diagecg.datasets import resolve_data_roots
from diagecg.datasets.ptbxl import PtbxlDataset


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_fake_data(tmp_path / "data")


def test_masked_bce_ignores_unknown_labels() -> None:
    from diagecg.training.train_tokenizer import masked_bce

    labels = torch.tensor([[1.0, 0.0, math.nan], [0.0, math.nan, 1.0]])
    weights = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 2.0]])
    logits = torch.tensor([[0.3, -0.2, 5.0], [1.0, -7.0, 0.5]], requires_grad=True)
    loss = masked_bce(logits, labels, weights)
    loss.backward()
    assert logits.grad is not None
    assert logits.grad[0, 2] == 0 and logits.grad[1, 1] == 0  # unknown: no gradient, never pushed to 0
    known = [(0, 0, 1.0, 1.0), (0, 1, 0.0, 1.0), (1, 0, 0.0, 1.0), (1, 2, 1.0, 2.0)]
    want = (
        sum(
            w * torch.nn.functional.binary_cross_entropy_with_logits(logits[r, c], torch.tensor(y))
            for r, c, y, w in known
        )
        / 5.0
    )
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)
    other = logits.detach().clone()
    other[0, 2], other[1, 1] = -30.0, 30.0  # whatever the model says where the label is unknown
    assert masked_bce(other, labels, weights).item() == pytest.approx(loss.item(), rel=1e-6)


@pytest.mark.slow
def test_pretrain_and_instruct_read_ptbxl_full(
    data: Path, tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The LLM stages on the fake data with ptbxl_full (random FSQ indices, a tiny base model): every
    record is used, a record without statements is asked about its superclasses only and has no report."""
    from builders import N_CODES, N_FRAMES, TINY_LLM_CORPUS, TINY_LLM_WIDTHS, save_random_ecg_tokenizer

    from diagecg.constants import ECG_TOKEN_CACHE
    from diagecg.training import sft as sft_module
    from diagecg.training.base_model import build_tiny_base_model
    from diagecg.training.pretrain import PretrainConfig
    from diagecg.training.pretrain import main as pretrain_main

    monkeypatch.setenv("DIAGECG_CACHE", str(tmp_path / "cache"))
    shutil.copy(shared_data / "ptbxl" / "scp_statements.csv", data / "ptbxl")
    (data / "ecgqa").mkdir()
    (data / "ecgqa" / "ptbxl").symlink_to(resolve_data_roots(shared_data).ecgqa)
    torch.manual_seed(0)
    init = tmp_path / "tokenizer"
    save_random_ecg_tokenizer(init)
    ids = PtbxlDataset.from_data_dir(data).ids(None)
    rng = np.random.default_rng(0)
    np.savez_compressed(init / ECG_TOKEN_CACHE, **{str(i): rng.integers(0, N_CODES, N_FRAMES) for i in ids})
    base = build_tiny_base_model(
        TINY_LLM_CORPUS, tmp_path / "base", 0, vocab_size=400, max_position=256, **TINY_LLM_WIDTHS
    )
    common = dict(
        data_dir=str(data),
        steps=4,
        batch_size=8,
        eval_every=4,
        eval_examples=4,
        num_threads=1,
        progress=False,
    )
    pretrain_main(
        PretrainConfig(
            init_dir=str(init), out_dir=str(tmp_path / "pre"), base_model=str(base), text_ratio=0.5, **common
        )
    )  # type: ignore[arg-type]
    seen: list[list] = []
    original = sft_module.encode_sft_items

    def spy(items, *args, **kwargs):  # the train, valid and finding instructions, in that order
        seen.append(list(items))
        return original(items, *args, **kwargs)

    monkeypatch.setattr(sft_module, "encode_sft_items", spy)
    sft_module.main(
        sft_module.SFTConfig(
            init_dir=str(tmp_path / "pre"),
            out_dir=str(tmp_path / "sft"),
            eval_generate=0,
            question_rounds=2,
            lora_r=4,
            lora_alpha=8,
            unlabelled_qa_share=0.5,
            finding_verify_ratio=0.25,
            finding_min_positives=1,
            **common,
        )
    )  # type: ignore[arg-type]
    train, _, finding = seen
    assert {it.ecg_id for it in train} >= {2002, 2006}  # unknown-fold training records are used
    from diagecg.datasets.ecgqa import ecgqa_attribute_name
    from diagecg.datasets.reports import load_scp_table

    scp = load_scp_table(data / "ptbxl")
    statement_names = {ecgqa_attribute_name(c, scp) for c in scp if c != "NORM"}
    for it in (*train, *finding):
        if it.ecg_id in (2002, 2006):  # superclass and normal-ECG questions only, whatever the wording
            assert it.task == "qa" and not any(name in it.question.lower() for name in statement_names), it
            assert not any(w in it.question.lower() for w in ("rhythm", "form", "diagnostic symptoms")), it
    assert {it.ecg_id for it in train if it.task == "report"} <= {2, 3, 2001, 2005}
    assert not any(it.ecg_id in (2002, 2006) and "fibrillation" in it.question for it in finding)
