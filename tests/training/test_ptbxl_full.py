"""ptbxl_full beside ptbxl: the fold rule for records without a known fold, unknown statements (never
"absent"), the AF-prevalence weights, the unpack cache, and what training reads from them.

The fake data is written by the tests: a ``ptbxl/`` folder with a few label rows (three with the fixture
records' signals) and a ``ptbxl_full/`` folder whose ``unpack.py`` writes a fixture record under each id
and logs every call, so a test can count how often the cache was unpacked.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from diagecg.datasets import resolve_data_roots
from diagecg.datasets.cache import CACHE_MARKER, unpacked
from diagecg.datasets.ecgqa import finding_questions, generate_questions
from diagecg.datasets.ptbxl import (
    SUPERCLASSES,
    TRAIN_FOLDS,
    PtbxlDataset,
    finding_labels,
    finding_state,
    finding_weights,
    frequent_findings,
    has_finding,
)
from diagecg.errors import DiagEcgError

FIXTURE_RECORDS = Path(__file__).resolve().parents[1] / "fixtures" / "records"

PTBXL_ROWS = [  # ecg_id, scp_codes, strat_fold, superclasses; 2, 3 and 8 have the fixture signals
    (2, {"NORM": 80.0, "SR": 0.0}, 1, ["NORM"]),
    (3, {"AFIB": 0.0, "STD_": 100.0}, 2, ["STTC"]),
    (4, {"SR": 0.0, "NORM": 100.0}, 1, ["NORM"]),
    (5, {"SR": 0.0, "LVH": 100.0}, 3, ["HYP"]),
    (8, {"SR": 0.0, "IMI": 100.0}, 10, ["MI"]),
    (2001, {"AFIB": 0.0, "ISC_": 100.0}, 3, ["STTC"]),  # also in ptbxl_full: its signal is there
]
FULL_ROWS = [  # ecg_id, split, strat_fold, superclasses, scp_codes (None: no statement labels)
    (2001, "train", 3, ["STTC"], {"AFIB": 0.0, "ISC_": 100.0}),
    (2002, "train", None, ["CD"], None),  # training fold unknown
    (2003, "test", 10, ["NORM"], None),
    (2004, "val", 9, ["NORM"], {"SR": 0.0, "NORM": 100.0}),
    (2005, "train", 4, ["MI"], {"SR": 0.0, "IMI": 100.0}),
    (2006, "train", None, ["NORM"], None),
]
FAKE_UNPACK = '''
import sys
from pathlib import Path
here = Path(__file__).resolve().parent
out = Path(sys.argv[1])
with open(here.parent / "unpack_calls.log", "a") as f:
    f.write("call\\n")
if (here.parent / "FAIL").exists():
    sys.exit("checksum mismatch: the pack is damaged")
hea, dat = (here / "template.hea").read_text(), (here / "template.dat").read_bytes()
for i in map(int, (here / "ids.txt").read_text().split()):
    rel = f"records100/{i // 1000 * 1000:05d}/{i:05d}_lr"
    (out / rel).parent.mkdir(parents=True, exist_ok=True)
    (out / (rel + ".hea")).write_text(hea.replace("00002_lr", f"{i:05d}_lr"))
    (out / (rel + ".dat")).write_bytes(dat)
'''


def write_fake_data(root: Path) -> Path:
    """A shared data root with ``ptbxl/`` and ``ptbxl_full/`` as described in the module docstring."""
    ptbxl = root / "ptbxl"
    (ptbxl / "records100" / "00000").mkdir(parents=True)
    for i in (2, 3, 8):
        for suffix in (".hea", ".dat"):
            shutil.copy(FIXTURE_RECORDS / f"{i:05d}_lr{suffix}", ptbxl / "records100" / "00000")
    with (ptbxl / "ptbxl_labels.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ecg_id", "scp_codes", "strat_fold", "report", "age", "sex", "patient_id",
                    "recording_date", "label_source", "diagnostic_superclass"])
        for i, codes, fold, supers in PTBXL_ROWS:
            w.writerow([i, repr(codes), fold, "sinusrhythmus", 60.0, 1.0, 100 + i, "", "test",
                        json.dumps(supers)])
    full = root / "ptbxl_full"
    full.mkdir()
    with (full / "ptbxl_labels_full.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ecg_id", "split", "strat_fold", *SUPERCLASSES, "diagnostic_superclass", "scp_codes",
                    "report", "age", "sex", "patient_id", "recording_date", "label_source"])
        for i, split, fold, supers, codes in FULL_ROWS:
            known = ([repr(codes), "sinus rhythm.", 70.0, 0.0, 500 + i] if codes is not None
                     else ["", "", "", "", ""])  # no statements: no report, age, sex, patient either
            w.writerow([i, split, "" if fold is None else fold, *(int(s in supers) for s in SUPERCLASSES),
                        json.dumps(supers), *known, "", "test"])
    (full / "ids.txt").write_text("\n".join(str(r[0]) for r in FULL_ROWS) + "\n")
    (full / "records100.bin.xz").write_bytes(b"packed")
    (full / "headers100.tar.xz").write_bytes(b"headers")
    (full / "unpack.py").write_text(FAKE_UNPACK)
    shutil.copy(FIXTURE_RECORDS / "00002_lr.hea", full / "template.hea")
    shutil.copy(FIXTURE_RECORDS / "00002_lr.dat", full / "template.dat")
    return root


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_fake_data(tmp_path / "data")


@pytest.fixture
def ds(data: Path, tmp_path: Path) -> PtbxlDataset:
    return PtbxlDataset.from_data_dir(data, cache_dir=tmp_path / "cache")


def n_unpacks(data: Path) -> int:
    log = data / "unpack_calls.log"
    return len(log.read_text().splitlines()) if log.is_file() else 0


# --- folds ---------------------------------------------------------------------------------------


def test_unknown_fold_records_join_only_the_whole_training_split(ds: PtbxlDataset) -> None:
    assert ds.ids(TRAIN_FOLDS) == [2, 3, 2001, 2002, 2005, 2006]
    assert ds.ids((*TRAIN_FOLDS, 9)) == [2, 3, 2001, 2002, 2004, 2005, 2006]
    assert ds.ids((1, 2, 3, 4)) == [2, 3, 2001, 2005]  # a subset of the training folds: left out
    assert ds.ids((1, 2, 3, 4, 5, 6, 7)) == [2, 3, 2001, 2005]
    assert ds.ids((9,)) == [2004] and ds.ids((10,)) == [8, 2003]  # never in validation or test
    assert ds.ids(None) == [2, 3, 8, 2001, 2002, 2003, 2004, 2005, 2006]
    assert ds.entries[2002].strat_fold is None and ds.entries[2002].split == "train"
    assert [ds.entries[i].split for i in (2003, 2004, 2005)] == ["test", "val", "train"]


def test_without_ptbxl_full_only_ptbxl_records_exist(data: Path) -> None:
    alone = PtbxlDataset(data / "ptbxl")
    assert alone.ids(None) == [2, 3, 8]  # 2001 has labels in ptbxl/ but no signal there
    assert PtbxlDataset.from_data_dir(data, full=False).ids(None) == [2, 3, 8]
    assert resolve_data_roots(data).ptbxl_full_or_none == data / "ptbxl_full"
    assert resolve_data_roots(data / "ptbxl").ptbxl_full_or_none == data / "ptbxl_full"


def test_record_paths_point_at_the_cache_for_ptbxl_full(ds: PtbxlDataset, tmp_path: Path) -> None:
    assert ds.record_path(2) == ds.root / "records100" / "00000" / "00002_lr"
    assert ds.record_path(2001) == tmp_path / "cache" / "ptbxl_full" / "records100" / "02000" / "02001_lr"
    assert ds.entries[2001].source == "ptbxl_full" and ds.entries[2001].statements_labelled
    assert not ds.has_record(2001, fs_hz=500)  # ptbxl_full is 100 Hz only


# --- unknown statements --------------------------------------------------------------------------


def test_a_statement_of_an_unlabelled_record_is_unknown_never_absent(ds: PtbxlDataset) -> None:
    e = ds.entries[2002]
    assert not e.statements_labelled and e.scp_codes == {}
    assert finding_state(e, "CD") is True and finding_state(e, "MI") is False
    assert finding_state(e, "NORM") is False  # NORM is a superclass: known for every record
    assert finding_state(ds.entries[2006], "NORM") is True
    assert finding_state(e, "AFIB") is None and finding_state(e, "SR") is None
    with pytest.raises(ValueError, match="unknown"):
        has_finding(e, "AFIB")
    rows = finding_labels(ds, [2001, 2002], ("CD", "STTC", "AFIB", "SR"))
    assert rows[0] == [0.0, 1.0, 1.0, 0.0]  # labelled: absent is 0
    assert rows[1][:2] == [1.0, 0.0] and math.isnan(rows[1][2]) and math.isnan(rows[1][3])


def test_frequent_findings_count_only_labelled_records(ds: PtbxlDataset) -> None:
    ids = ds.ids(None)
    assert frequent_findings(ds, ids, 2) == (*SUPERCLASSES, "SR", "AFIB", "IMI")
    assert frequent_findings(ds, [2002, 2003, 2006], 1) == SUPERCLASSES


# --- AF prevalence weights -----------------------------------------------------------------------


def test_statement_weights_restore_the_reference_af_prevalence(ds: PtbxlDataset) -> None:
    # reference: ptbxl/'s training folds (2, 3, 4, 5): 1 AFIB in 4 -> 0.25; enriched training subset
    # (2001, 2005): 1 in 2 -> 0.5; weights 0.25/0.5 = 0.5 with AFIB, 0.75/0.5 = 1.5 without
    w = ds.statement_weights([2, 3, 2001, 2005, 2002, 2004, 2003])
    np.testing.assert_allclose(w, [1.0, 1.0, 0.5, 1.5, 0.0, 1.5, 0.0])
    enriched = [2001, 2005]
    we = ds.statement_weights(enriched)
    afib = np.array([has_finding(ds.entries[i], "AFIB") for i in enriched], dtype=float)
    assert (we * afib).sum() / we.sum() == pytest.approx(0.25)
    assert we.sum() == pytest.approx(len(enriched))  # the subset keeps its total weight
    fw = finding_weights(ds, [2001, 2002], ("MI", "AFIB"))
    np.testing.assert_allclose(fw, [[1.0, 0.5], [1.0, 0.0]])  # superclasses weigh 1, unknown 0


def test_weights_are_one_without_an_enriched_subset(data: Path) -> None:
    alone = PtbxlDataset(data / "ptbxl")
    # ptbxl/'s own rows with ecg_id >= 2000 are the enriched subset's labelled records
    np.testing.assert_allclose(alone.statement_weights([2, 3]), [1.0, 1.0])


# --- the unpack cache ----------------------------------------------------------------------------


def test_the_cache_is_unpacked_once_and_reused(data: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert PtbxlDataset.from_data_dir(data, cache_dir=cache).ids((10,)) == [8, 2003]
    assert n_unpacks(data) == 1
    assert PtbxlDataset.from_data_dir(data, cache_dir=cache).ids(None)[-1] == 2006
    assert n_unpacks(data) == 1  # reused
    marker = json.loads((cache / "ptbxl_full" / CACHE_MARKER).read_text())
    assert marker["size:records100.bin.xz"] == len(b"packed")
    assert [p.name for p in cache.iterdir()] == ["ptbxl_full"]  # no temporary folder left


def test_labels_alone_never_unpack(data: Path, tmp_path: Path) -> None:
    ds = PtbxlDataset.from_data_dir(data, cache_dir=tmp_path / "cache")
    finding_labels(ds, list(ds.entries), ("MI", "AFIB"))
    ds.statement_weights(list(ds.entries))
    assert n_unpacks(data) == 0 and not (tmp_path / "cache").exists()


def test_a_changed_source_is_unpacked_again(data: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    full = data / "ptbxl_full"
    args = (full, "ptbxl_full", ("records100.bin.xz", "headers100.tar.xz"), ("ids.txt",))
    first = unpacked(*args, cache_dir=cache)
    (full / "ids.txt").write_text("2001\n2002\n")  # a new release of the pack
    again = unpacked(*args, cache_dir=cache)
    assert again == first and n_unpacks(data) == 2
    assert sorted(p.name for p in (again / "records100" / "02000").iterdir()) == [
        "02001_lr.dat", "02001_lr.hea", "02002_lr.dat", "02002_lr.hea"]
    unpacked(*args, cache_dir=cache)
    assert n_unpacks(data) == 2


def test_a_failed_unpack_leaves_no_cache(data: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (data / "FAIL").write_text("")
    with pytest.raises(DiagEcgError, match="damaged"):
        PtbxlDataset.from_data_dir(data, cache_dir=cache).ids(None)
    assert list(cache.iterdir()) == []
    (data / "FAIL").unlink()
    assert PtbxlDataset.from_data_dir(data, cache_dir=cache).ids((9,)) == [2004]


def test_the_cache_root_comes_from_the_environment(data: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIAGECG_CACHE", str(tmp_path / "env-cache"))
    ds = PtbxlDataset.from_data_dir(data)
    assert ds.record_path(2002).is_relative_to(tmp_path / "env-cache" / "ptbxl_full")


# --- what training reads -------------------------------------------------------------------------


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
    want = sum(w * torch.nn.functional.binary_cross_entropy_with_logits(logits[r, c], torch.tensor(y))
               for r, c, y, w in known) / 5.0
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)
    other = logits.detach().clone()
    other[0, 2], other[1, 1] = -30.0, 30.0  # whatever the model says where the label is unknown
    assert masked_bce(other, labels, weights).item() == pytest.approx(loss.item(), rel=1e-6)


def test_questions_never_read_an_unknown_statement_as_no(ds: PtbxlDataset, scp_table: dict,
                                                          shared_data: Path) -> None:
    from diagecg.datasets.ecgqa import load_answer_vocab

    vocab = load_answer_vocab(resolve_data_roots(shared_data).ecgqa)
    unlabelled = [2002, 2003, 2006]
    samples = [s for seed in range(6) for s in generate_questions(ds, unlabelled, scp_table, seed,
                                                                   answer_vocab=vocab)]
    assert samples and {s.template_id for s in samples} <= {1, 2, 3}
    super_names = {"conduction disturbance", "hypertrophy", "myocardial infarction", "st/t change"}
    for s in samples:
        e = ds.entries[s.ecg_id]
        if s.template_id == 1:
            assert s.attributes[0] in super_names
        if s.template_id == 2:
            assert s.answers == (("yes",) if "NORM" in e.superclasses else ("no",))
    names = {"NORM": "normal ecg", "CD": "conduction disturbance", "AFIB": "atrial fibrillation"}
    asked = finding_questions(ds, [2001, 2002], names, scp_table, 0)
    assert [(q.ecg_id, q.attributes[0], q.answers) for q in asked] == [
        (2001, "normal ecg", ("no",)), (2001, "conduction disturbance", ("no",)),
        (2001, "atrial fibrillation", ("yes",)),
        (2002, "normal ecg", ("no",)), (2002, "conduction disturbance", ("yes",)),  # AFIB of 2002: not asked
    ]


@pytest.mark.slow
def test_real_ptbxl_full_counts(shared_data: Path) -> None:
    """The real data (unpacked into the user's cache, ~20 s the first time): split sizes and labels."""
    if resolve_data_roots(shared_data).ptbxl_full_or_none is None:
        pytest.skip("no ptbxl_full in the shared data")
    ds = PtbxlDataset.from_data_dir(shared_data)
    train, val, test = ds.ids(TRAIN_FOLDS), ds.ids((9,)), ds.ids((10,))
    assert len(train) > 16_000 and 2_000 < len(val) < 2_300 and 2_000 < len(test) < 2_300
    assert not set(train) & set(val) | set(train) & set(test)
    labelled = ds.statements_labelled_ids(train)
    assert 5_000 < len(labelled) < 6_000
    w = ds.statement_weights(labelled)
    afib = np.array([has_finding(ds.entries[i], "AFIB") for i in labelled], dtype=float)
    ref = [i for i in labelled if i < 2000]
    p_ref = np.mean([has_finding(ds.entries[i], "AFIB") for i in ref])
    # the weights are fitted on every labelled training row (two of which have no signal): close, not equal
    assert (w * afib).sum() / w.sum() == pytest.approx(p_ref, abs=2e-3)


@pytest.mark.slow
def test_pretrain_and_instruct_read_ptbxl_full(data: Path, tmp_path: Path, shared_data: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
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
    base = build_tiny_base_model(TINY_LLM_CORPUS, tmp_path / "base", 0, vocab_size=400, max_position=256,
                                 **TINY_LLM_WIDTHS)
    common = dict(data_dir=str(data), steps=4, batch_size=8, eval_every=4, eval_examples=4, num_threads=1,
                  progress=False)
    pretrain_main(PretrainConfig(init_dir=str(init), out_dir=str(tmp_path / "pre"), base_model=str(base),
                                 text_ratio=0.5, **common))  # type: ignore[arg-type]
    seen: list[list] = []
    original = sft_module.encode_sft_items

    def spy(items, *args, **kwargs):  # the train, valid and finding instructions, in that order
        seen.append(list(items))
        return original(items, *args, **kwargs)

    monkeypatch.setattr(sft_module, "encode_sft_items", spy)
    sft_module.main(sft_module.SFTConfig(init_dir=str(tmp_path / "pre"), out_dir=str(tmp_path / "sft"),
                                         eval_generate=0, question_rounds=2, lora_r=4, lora_alpha=8,
                                         unlabelled_qa_share=0.5, finding_verify_ratio=0.25,
                                         finding_min_positives=1, **common))  # type: ignore[arg-type]
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
