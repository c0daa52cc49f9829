"""What ``diagecg eval`` asks: its config, the held-out records, the questions per wording and the report
references, and the findings every record is asked about (torch-free: no model is involved).

The records are a seeded subset of the evaluated PTB-XL folds, stratified by :func:`eval_record_strata`;
the findings are those of :func:`select_findings`, each question weighted by
:func:`finding_sample_weights` so that the AF-enriched subset of ptbxl_full counts as PTB-XL's own AFIB
prevalence would. ``bench/ecg_dependence.py`` draws the same records and findings for the exported bundle.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from pathlib import Path

from diagecg.config import ConfigMixin, check_field
from diagecg.datasets import seeded_subset, stratified_subset
from diagecg.datasets.ecgqa import (
    WORDINGS,
    AnswerVocabulary,
    QASample,
    Wording,
    finding_names,
    generate_questions,
    load_answer_vocab,
    load_ecgqa_samples,
)
from diagecg.datasets.ptbxl import SUPERCLASSES, TEST_FOLDS, TRAIN_FOLDS, PtbxlDataset, frequent_findings
from diagecg.datasets.reports import ScpStatement, report_text

EVAL_WORDINGS: tuple[str, ...] = ("template", "paraphrase")  # "mixed" would blur the two

# reported whatever their count (the targets of the issue, and the Challenge's rhythm findings)
TRACKED_FINDINGS: tuple[str, ...] = ("AFIB", "CLBBB", "CRBBB", "1AVB", "PVC", "PAC", "SBRAD", "STACH")


def select_findings(
    ptbxl: PtbxlDataset,
    ecg_ids: Sequence[int],
    scp_table: dict[str, ScpStatement],
    answer_vocab: AnswerVocabulary,
    min_positives: int,
) -> dict[str, str]:
    """The findings to score on ``ecg_ids``: code -> name asked.

    The superclasses, every nameable statement with at least ``min_positives`` positives among
    ``ecg_ids``, and the :data:`TRACKED_FINDINGS` with at least one.
    """
    frequent = frequent_findings(ptbxl, list(ecg_ids), min_positives)  # superclasses first
    present = {code for i in ecg_ids for code in ptbxl.entries[i].scp_codes}
    tracked = [c for c in TRACKED_FINDINGS if c in present and c not in frequent]
    return finding_names((*frequent, *tracked), scp_table, answer_vocab)


def finding_sample_weights(ptbxl: PtbxlDataset, ecg_ids: Sequence[int], codes: Sequence[str]) -> list[float]:
    """The importance weight of each (record, finding) question: 1 for a superclass (known for every
    record), the record's ``PtbxlDataset.statement_weights`` for a statement."""
    w = dict(zip(ecg_ids, ptbxl.statement_weights(list(ecg_ids)), strict=True))
    return [1.0 if c in SUPERCLASSES else float(w[i]) for i, c in zip(ecg_ids, codes, strict=True)]


@dataclasses.dataclass(frozen=True)
class EvalConfig(ConfigMixin):
    """What ``diagecg eval`` measures, on which records, with which checkpoint."""

    checkpoint_dir: str = "runs/instruct"  # output folder of ``diagecg train instruct``
    data_dir: str = "data"  # shared data root (holding ptbxl/ and ecgqa/) or the ptbxl folder itself
    # also the records of ptbxl_full/ beside ptbxl/ when the data root has it (diagecg.datasets.ptbxl)
    ptbxl_full: bool = True
    out_file: str | None = None  # results JSON; predictions go beside it (eval_results.PREDICTIONS_SUFFIX)
    folds: tuple[int, ...] = TEST_FOLDS  # evaluated; must not overlap any fold the checkpoint trained on
    train_folds: tuple[int, ...] = TRAIN_FOLDS  # where the majority baselines count answers
    wordings: tuple[str, ...] = EVAL_WORDINGS  # "template" (training wording) / "paraphrase" (held out)
    include_ecgqa_noise: bool = True  # add ECG-QA's released noise questions on the evaluated records
    max_records: int | None = None  # a seeded stratified subset of the evaluated records; None = all
    max_questions: int | None = None  # per wording: a seeded subset (same questions for every wording)
    n_reports: int | None = None  # reports to generate (seeded subset); None = all, 0 = none
    max_new_tokens: int | None = None  # None = the checkpoint's GenerationConfig.max_new_tokens
    seed: int = 0  # question generation and subsets
    ablation: bool = True  # also score the model with each record's ECG tokens swapped for another's
    finding_min_positives: int = 10  # statements with this many positives get a per-finding row (and macro)
    n_bootstrap: int = 1000  # bootstrap draws of the per-finding AUCs' 95% intervals; 0 = none
    # fit the per-finding calibration (diagecg.calibration.fit_calibration) on these folds' answers: run it
    # on a validation fold (9), never on the test fold; export writes it into the bundle
    calibrate: bool = False
    # the calibration the runtime will answer with (results of a calibrate run on another fold); None =
    # the checkpoint's calibration_results.json when it exists: sensitivity, specificity and ECE are then
    # those of the calibrated decision rule
    calibration_file: str | None = None
    batch_size: int = 16  # prompts per generate() call
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    progress: bool = True  # tqdm bars

    def __post_init__(self) -> None:
        n = "EvalConfig"
        for name in ("folds", "train_folds"):
            folds = getattr(self, name)
            check_field(
                len(folds) > 0 and all(1 <= f <= 10 for f in folds),
                n,
                name,
                folds,
                "a non-empty tuple of PTB-XL folds 1-10",
            )
        check_field(
            not set(self.folds) & set(self.train_folds),
            n,
            "folds",
            self.folds,
            f"must be disjoint from train_folds {self.train_folds}",
        )
        check_field(
            len(self.wordings) > 0
            and all(w in WORDINGS for w in self.wordings)
            and len(set(self.wordings)) == len(self.wordings),
            n,
            "wordings",
            self.wordings,
            f"a non-empty tuple of distinct values from {WORDINGS}",
        )
        check_field(
            self.max_records is None or self.max_records >= 1,
            n,
            "max_records",
            self.max_records,
            "None or >= 1",
        )
        check_field(
            self.max_questions is None or self.max_questions >= 1,
            n,
            "max_questions",
            self.max_questions,
            "None or >= 1",
        )
        check_field(
            self.n_reports is None or self.n_reports >= 0, n, "n_reports", self.n_reports, "None or >= 0"
        )
        check_field(
            self.max_new_tokens is None or self.max_new_tokens >= 1,
            n,
            "max_new_tokens",
            self.max_new_tokens,
            "None or >= 1",
        )
        check_field(self.batch_size >= 1, n, "batch_size", self.batch_size, "must be >= 1")
        check_field(
            self.finding_min_positives >= 1,
            n,
            "finding_min_positives",
            self.finding_min_positives,
            "must be >= 1",
        )
        check_field(self.n_bootstrap >= 0, n, "n_bootstrap", self.n_bootstrap, "must be >= 0")
        check_field(
            self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
            n,
            "device",
            self.device,
            "'auto', 'cpu', 'cuda' or 'cuda:N'",
        )


@dataclasses.dataclass
class EvalData:
    """The questions and report references of one evaluation, before any model is run."""

    ecg_ids: list[int]  # evaluated records (encoded, in the evaluated folds)
    questions: dict[str, list[QASample]]  # wording -> samples (same questions, different wording)
    train_questions: list[QASample]  # the majority baselines count answers here
    reports: list[tuple[int, str]]  # (ecg_id, reference report)
    n_empty_reference: int  # evaluated records without any statement (no report reference)
    answer_vocab: AnswerVocabulary
    # what each training question counts in the majority baselines (its record's statement weight;
    # 1 for records without statement labels, which are asked about their superclasses only)
    train_weights: list[float] | None = None


def build_eval_data(
    cfg: EvalConfig,
    ptbxl: PtbxlDataset,
    scp_table: dict[str, ScpStatement],
    ecgqa_root: Path,
    ecg_ids: Sequence[int],
    train_ids: Sequence[int],
) -> EvalData:
    """Questions per wording, the baseline's training questions and the report references.

    Args:
        cfg: the evaluation config (wordings, noise questions, subsets, seed).
        ptbxl: PTB-XL labels.
        scp_table: from ``load_scp_table``.
        ecgqa_root: the ECG-QA ``ptbxl`` folder.
        ecg_ids: evaluated records (all in ``cfg.folds``).
        train_ids: records of ``cfg.train_folds`` (for the majority baselines).

    Raises:
        ValueError: an evaluated record lies outside ``cfg.folds``, or there is nothing to ask.
    """
    outside = [i for i in ecg_ids if ptbxl.entries[i].strat_fold not in cfg.folds]
    if outside:
        raise ValueError(
            f"{len(outside)} evaluated records are outside folds {cfg.folds}, e.g. {outside[:5]}"
        )
    vocab = load_answer_vocab(ecgqa_root)
    ids = list(ecg_ids)
    # ECG-QA's released questions (all splits here: its split is not PTB-XL's folds), read once
    released: dict[bool, list[QASample]] = {}
    if cfg.include_ecgqa_noise:
        wanted = set(ids) | set(train_ids)
        for paraphrased in sorted({w == "paraphrase" for w in cfg.wordings} | {False}):
            released[paraphrased] = load_ecgqa_samples(
                ecgqa_root, wanted, splits=("train", "valid"), paraphrased=paraphrased
            )
    test_set = set(ids)
    questions: dict[str, list[QASample]] = {}
    for wording in cfg.wordings:
        samples = generate_questions(
            ptbxl, ids, scp_table, cfg.seed, answer_vocab=vocab, wording=typing.cast(Wording, wording)
        )
        # the paraphrase wording of ECG-QA's questions is its own paraphrased release (never trained on)
        samples += [s for s in released.get(wording == "paraphrase", []) if s.ecg_id in test_set]
        keep = seeded_subset(range(len(samples)), cfg.max_questions, cfg.seed, "eval-subset")
        questions[wording] = [samples[i] for i in keep]
    if not any(questions.values()):
        raise ValueError(f"no questions for the {len(ids)} evaluated records in folds {cfg.folds}")

    train = generate_questions(ptbxl, list(train_ids), scp_table, cfg.seed, answer_vocab=vocab)
    train += [s for s in released.get(False, []) if s.ecg_id not in test_set]
    stmt_w = dict(zip(train_ids, ptbxl.statement_weights(list(train_ids)), strict=True))
    train_weights = [
        float(stmt_w[s.ecg_id]) if ptbxl.entries[s.ecg_id].statements_labelled else 1.0 for s in train
    ]

    references = [(i, report_text(ptbxl.entries[i], scp_table, "en")) for i in ids]
    with_text = [(i, r) for i, r in references if r]
    chosen = seeded_subset(range(len(with_text)), cfg.n_reports, cfg.seed, "eval-subset")
    reports = [] if cfg.n_reports == 0 else [with_text[k] for k in chosen]
    return EvalData(
        ecg_ids=ids,
        questions=questions,
        train_questions=train,
        reports=reports,
        n_empty_reference=len(references) - len(with_text),
        answer_vocab=vocab,
        train_weights=train_weights,
    )


def eval_record_strata(
    ptbxl: PtbxlDataset, ecg_ids: Sequence[int]
) -> list[tuple[bool, bool, tuple[str, ...]]]:
    """The stratum of each record for ``max_records``: whether its statements are labelled, whether it
    has AFIB, and its superclasses."""
    return [
        (e.statements_labelled, "AFIB" in e.scp_codes, tuple(sorted(e.superclasses)))
        for e in (ptbxl.entries[i] for i in ecg_ids)
    ]


def eval_record_subset(
    ptbxl: PtbxlDataset, ecg_ids: Sequence[int], max_records: int | None, seed: int
) -> list[int]:
    """The records ``diagecg eval`` evaluates with ``max_records`` and ``seed``: a seeded subset of
    ``ecg_ids`` with the share of each :func:`eval_record_strata` stratum kept."""
    return stratified_subset(
        list(ecg_ids), eval_record_strata(ptbxl, ecg_ids), max_records, seed, "eval-records"
    )
