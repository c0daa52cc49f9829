"""ptbxl_full beside ptbxl: the fold rule for records without a known fold, unknown statements (never
"absent"), the AF-prevalence weights, the unpack cache, and the questions generated from them.

The fake data (``tests/fake_ptbxl_full.py``) is written by the tests; what the training stages read from
it is tested in ``tests/training/test_ptbxl_full_training.py``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from fake_ptbxl_full import n_unpacks, write_fake_data

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


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_fake_data(tmp_path / "data")


@pytest.fixture
def ds(data: Path, tmp_path: Path) -> PtbxlDataset:
    return PtbxlDataset.from_data_dir(data, cache_dir=tmp_path / "cache")


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
        "02001_lr.dat",
        "02001_lr.hea",
        "02002_lr.dat",
        "02002_lr.hea",
    ]
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


def test_the_cache_root_comes_from_the_environment(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIAGECG_CACHE", str(tmp_path / "env-cache"))
    ds = PtbxlDataset.from_data_dir(data)
    assert ds.record_path(2002).is_relative_to(tmp_path / "env-cache" / "ptbxl_full")


# --- questions and the real data ----------------------------------------------------------------


def test_questions_never_read_an_unknown_statement_as_no(
    ds: PtbxlDataset, scp_table: dict, shared_data: Path
) -> None:
    from diagecg.datasets.ecgqa import load_answer_vocab

    vocab = load_answer_vocab(resolve_data_roots(shared_data).ecgqa)
    unlabelled = [2002, 2003, 2006]
    samples = [
        s
        for seed in range(6)
        for s in generate_questions(ds, unlabelled, scp_table, seed, answer_vocab=vocab)
    ]
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
        (2001, "normal ecg", ("no",)),
        (2001, "conduction disturbance", ("no",)),
        (2001, "atrial fibrillation", ("yes",)),
        (2002, "normal ecg", ("no",)),
        (2002, "conduction disturbance", ("yes",)),  # AFIB of 2002: not asked
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
