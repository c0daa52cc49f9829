"""ECG-QA questions for PTB-XL records: the released samples and generated ones.

ECG-QA (Oh et al., NeurIPS 2023 Datasets & Benchmarks, arXiv 2306.15681, github.com/Jwoo5/ecg-qa)
builds questions from 70 templates over PTB-XL attributes. Only some of its JSON chunks are in
``shared/data/ecgqa/ptbxl``; their single-ECG samples are noise verify questions (templates 26-28),
loaded by :func:`load_ecgqa_samples`. The single-ECG SCP-code questions are generated here from
``ptbxl_labels.csv`` with ECG-QA's templates, attribute names and answer options
(``answers_for_each_template.csv``), following the answer rules of ECG-QA's sampling code:

* a statement counts as present with any likelihood (0 means "stated without likelihood");
  it is *certain* when its likelihood is 0 or 100 and *uncertain* otherwise (15/35/50/80);
* template 1 ("Does this ECG show symptoms of X?") answers ``yes`` / ``not sure`` / ``no`` for a
  diagnostic statement (certain / uncertain / absent) and ``yes`` / ``no`` for form and rhythm;
* "including uncertain symptoms" counts every present diagnostic statement, "excluding uncertain
  symptoms" only the certain ones; NORM is not a diagnostic *symptom* (ECG-QA drops it);
* choose questions answer the subset of the two candidates present, or ``none``; query
  questions answer every present attribute of the template's group, or ``none``;
* a record without statement labels (most of ``ptbxl_full``, ``PtbxlEntry.statements_labelled``) is
  asked only what its superclasses answer: "Is this a normal ECG?", template 1 about a superclass, and
  the superclass choose question (template 3). A statement it may or may not show is never asked, and
  never answered "no".

Attribute names are ECG-QA's (``myocardial infarction in inferior leads`` for IMI, ``digitalis
effect`` for DIG...): the lower-cased ``scp_statements.csv`` description unless
``_ECGQA_NAME_OVERRIDES`` says otherwise. Statements ECG-QA has no answer for (RVH, SEHYP, 2AVB,
3AVB, WPW, EL, ANEUR, PRC(S), PSVT, SVARR, TRIGU) are never asked; a query whose true answer would
need one of them is skipped for that record rather than answered wrongly.

The templates themselves (``TEMPLATES``: wording, training and held-out paraphrases, and which
templates a record-level, choose or query question is drawn from) live in ``diagecg.question_templates``;
the runtime matches questions against them in ``diagecg.questions``.

Template provenance. Verified wording: 26-38 (released data, ECG-QA README) and 1, 5, 6, 8
(ECG-QA questions quoted in other public code). Reconstructed wording (the id's answer options and
ECG-QA's sampling code fix its question type and attribute group; the sentence follows the verified
ones): 2-4, 7, 9-16. The mapping of ids 2 and 12-16 to
"normal ECG" and the five "any ..." groups is inferred from the order of ECG-QA's subcategories.

Skipped (the labels here cannot answer them): lead-specific SCP questions (17-19, ECG-QA's
per-lead statement annotations are not released), heart axis (20-22) and stage of infarction
(23-25) (PTB-XL's ``heart_axis`` / ``infarction_stadium`` columns are not in ``ptbxl_labels.csv``),
noise (26-34, no noise columns; the released samples are loaded instead), extra systoles (35-38,
no ``extra_beats`` column) and numeric features (39-42, ECG-QA computed them with its own wave
delineation). Comparison questions (43-70) involve two ECGs and are out of scope.

Wordings. ``wording="template"`` uses the template sentence; ``"mixed"`` uses the template half
the time and otherwise one of its training paraphrases (up to ten for the verify template);
``"paraphrase"`` draws only from held-out paraphrases never used by the other two, so an evaluation
can measure robustness to unseen question wording. For the released samples,
``load_ecgqa_samples(..., paraphrased=True)`` returns ECG-QA's own paraphrases.
"""

from __future__ import annotations

import ast
import csv
import functools
import glob
import json
import logging
import random
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from diagecg.config import ConfigMixin, check_field
from diagecg.datasets.ptbxl import PtbxlDataset, PtbxlEntry
from diagecg.datasets.reports import ScpStatement
from diagecg.question_templates import (
    NONE_ANSWER,
    NORMAL_ECG_TEMPLATE,
    TEMPLATES,
    QuestionTemplate,
    QuestionType,
    fill_attributes,
    finding_template,
)

logger = logging.getLogger(__name__)

QUESTION_TYPES: tuple[str, ...] = tuple(t.value for t in QuestionType)
ATTRIBUTE_TYPES: tuple[str, ...] = (
    "scp_code",
    "noise",
    "stage_of_infarction",
    "extra_systole",
    "heart_axis",
    "numeric_feature",
)
SOURCES: tuple[str, ...] = ("ecgqa", "generated")
Wording = Literal["template", "mixed", "paraphrase"]
WORDINGS: tuple[str, ...] = typing.get_args(Wording)
SPLITS: tuple[str, ...] = ("train", "valid", "test")

ANSWERS_FILE = "answers.csv"
ANSWERS_PER_TEMPLATE_FILE = "answers_for_each_template.csv"

# ECG-QA attribute names that differ from the lower-cased scp_statements.csv description
_ECGQA_NAME_OVERRIDES: dict[str, str] = {
    "DIG": "digitalis effect",
    "LOWT": "low amplitude t-wave",
    "BIGU": "bigeminal pattern (unknown origin, supraventricular, or ventricular)",
    "TRIGU": "trigeminal pattern (unknown origin, supraventricular, or ventricular)",
    "WPW": "wolff-parkinson-white syndrome",
    "IMI": "myocardial infarction in inferior leads",
    "ILMI": "myocardial infarction in inferolateral leads",
    "IPMI": "myocardial infarction in inferoposterior leads",
    "IPLMI": "myocardial infarction in inferoposterolateral leads",
    "AMI": "myocardial infarction in anterior leads",
    "ASMI": "myocardial infarction in anteroseptal leads",
    "ALMI": "myocardial infarction in anterolateral leads",
    "LMI": "myocardial infarction in lateral leads",
    "PMI": "myocardial infarction in posterior leads",
}
SUPERCLASS_NAMES: dict[str, str] = {
    "CD": "conduction disturbance",
    "HYP": "hypertrophy",
    "MI": "myocardial infarction",
    "STTC": "st/t change",
}


def ecgqa_attribute_name(code: str, scp_table: dict[str, ScpStatement]) -> str:
    """ECG-QA's name of an SCP statement, e.g. ``"IMI" -> "myocardial infarction in inferior leads"``."""
    if code in _ECGQA_NAME_OVERRIDES:
        return _ECGQA_NAME_OVERRIDES[code]
    if code not in scp_table:
        raise ValueError(f"SCP code {code!r} is not in scp_statements.csv")
    return scp_table[code].description.lower()


# --- samples ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class QASample:
    """One single-ECG question with its exact answer set."""

    ecg_id: int
    question: str
    answers: tuple[str, ...]  # the answer set, sorted
    question_type: str  # one of QUESTION_TYPES
    attribute_type: str  # one of ATTRIBUTE_TYPES
    template_id: int
    attributes: tuple[str, ...]
    source: str  # "ecgqa" | "generated"
    wording: str = "template"  # "template" | "paraphrase" (ECG-QA's or held-out) | "mixed"

    def __post_init__(self) -> None:
        if self.question_type not in QUESTION_TYPES:
            raise ValueError(f"question_type {self.question_type!r} not in {QUESTION_TYPES}")
        if self.attribute_type not in ATTRIBUTE_TYPES:
            raise ValueError(f"attribute_type {self.attribute_type!r} not in {ATTRIBUTE_TYPES}")
        if self.source not in SOURCES:
            raise ValueError(f"source {self.source!r} not in {SOURCES}")
        if not self.answers:
            raise ValueError(f"sample for ecg_id {self.ecg_id} has an empty answer set")

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["answers"], d["attributes"] = list(self.answers), list(self.attributes)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QASample:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            logger.warning("QASample: ignoring unknown keys %s", unknown)
        kw = {k: v for k, v in data.items() if k in names}
        missing = sorted(f.name for f in fields(cls) if f.name not in kw and f.name != "wording")
        if missing:
            raise ValueError(f"QASample: required keys missing: {missing}")
        kw["answers"], kw["attributes"] = tuple(kw["answers"]), tuple(kw["attributes"])
        kw["ecg_id"], kw["template_id"] = int(kw["ecg_id"]), int(kw["template_id"])
        return cls(**kw)


@dataclass(frozen=True)
class AnswerVocabulary:
    """ECG-QA's answer classes: all of them (``answers.csv`` order) and the options of each template."""

    answers: tuple[str, ...]
    per_template: dict[int, tuple[str, ...]] = field(default_factory=dict)

    def options(self, template_id: int) -> tuple[str, ...]:
        if template_id not in self.per_template:
            raise ValueError(f"unknown ECG-QA template_id {template_id}; known: 1-{max(self.per_template)}")
        return self.per_template[template_id]

    def to_dict(self) -> dict[str, Any]:
        per_template = {str(k): list(v) for k, v in self.per_template.items()}
        return {"answers": list(self.answers), "per_template": per_template}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnswerVocabulary:
        return cls(tuple(data["answers"]), {int(k): tuple(v) for k, v in data["per_template"].items()})


@functools.lru_cache(maxsize=4)
def _load_answer_vocab(root: Path) -> AnswerVocabulary:
    paths = [root / ANSWERS_FILE, root / ANSWERS_PER_TEMPLATE_FILE]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"ECG-QA answer file not found: {p}")
    with paths[0].open(newline="", encoding="utf-8") as f:
        answers = tuple(row["class"] for row in sorted(csv.DictReader(f), key=lambda r: int(r["index"])))
    per_template: dict[int, tuple[str, ...]] = {}
    with paths[1].open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            per_template[int(row["template_id"])] = tuple(ast.literal_eval(row["classes"]))
    return AnswerVocabulary(answers, per_template)


def load_answer_vocab(ecgqa_root: str | Path) -> AnswerVocabulary:
    """Read ``answers.csv`` and ``answers_for_each_template.csv`` under ``ecgqa_root`` (cached).

    Args:
        ecgqa_root: the ``ecgqa/ptbxl`` folder.
    """
    return _load_answer_vocab(Path(ecgqa_root).resolve())


def load_ecgqa_samples(
    ecgqa_root: str | Path,
    available_ids: set[int],
    splits: tuple[str, ...] = ("train", "valid"),
    paraphrased: bool = False,
) -> list[QASample]:
    """Single-ECG samples of the released ECG-QA JSON chunks whose ECG is in ``available_ids``.

    Args:
        ecgqa_root: the ``ecgqa/ptbxl`` folder (holds ``template/`` and ``paraphrased/``).
        available_ids: PTB-XL ecg_ids with a signal (and in the folds the caller wants).
        splits: ECG-QA splits to read.
        paraphrased: read ``paraphrased/`` (ECG-QA's reworded questions) instead of ``template/``.

    Returns:
        Samples in file order, ``source="ecgqa"``.

    Raises:
        ValueError: unknown split. FileNotFoundError: the folder for a split is missing.
    """
    bad = [s for s in splits if s not in SPLITS]
    if bad:
        raise ValueError(f"unknown ECG-QA splits {bad}; allowed: {SPLITS}")
    kind = "paraphrased" if paraphrased else "template"
    out: list[QASample] = []
    for split in splits:
        folder = Path(ecgqa_root) / kind / split
        if not folder.is_dir():
            raise FileNotFoundError(f"ECG-QA folder not found: {folder}")
        for path in sorted(glob.glob(str(folder / "*.json"))):
            for item in json.loads(Path(path).read_text(encoding="utf-8")):
                if not item["question_type"].startswith("single") or len(item["ecg_id"]) != 1:
                    continue
                if int(item["ecg_id"][0]) not in available_ids:
                    continue
                out.append(
                    QASample(
                        ecg_id=int(item["ecg_id"][0]),
                        question=item["question"],
                        answers=tuple(sorted(item["answer"])),
                        question_type=item["question_type"],
                        attribute_type=item["attribute_type"],
                        template_id=int(item["template_id"]),
                        attributes=tuple(item["attribute"] or ()),
                        source="ecgqa",
                        wording="paraphrase" if paraphrased else "template",
                    )
                )
    return out


# --- templates -------------------------------------------------------------------------------


# group -> (statement category, likelihood rule); "code" = all vocabulary statements (template 1)
_GROUPS: dict[str, tuple[str, str]] = {
    "code": ("any", "three_way"),
    "norm": ("norm", "any"),
    "superclass": ("superclass", "any"),
    "dx_inc": ("diagnostic", "any"),
    "dx_exc": ("diagnostic", "certain"),
    "form": ("form", "any"),
    "rhythm": ("rhythm", "any"),
    "abnormal": ("any", "any"),
}
# ECG-QA's attribute name for the record-level verify templates
_RECORD_ATTRIBUTE: dict[int, str] = {
    tid: t.record_attribute for tid, t in TEMPLATES.items() if t.record_attribute is not None
}


def render_question(
    template: QuestionTemplate, wording: str, rng: random.Random, attributes: tuple[str, ...]
) -> str:
    """Fill the template (or a paraphrase drawn by ``wording``) with ``attributes``."""
    if wording == "template":
        pool: tuple[str, ...] = (template.text,)
    elif wording == "mixed":  # half the time the template itself, else one of its training paraphrases
        pool = (
            (template.text,)
            if rng.random() < 0.5 or not template.train_paraphrases
            else template.train_paraphrases
        )
    elif wording == "paraphrase":
        pool = template.heldout_paraphrases
    else:
        raise ValueError(f"wording must be one of {WORDINGS}, not {wording!r}")
    return fill_attributes(rng.choice(pool), attributes)


# --- generation ------------------------------------------------------------------------------


@dataclass
class QuestionGenConfig(ConfigMixin):
    """How many questions :func:`generate_questions` asks per record."""

    n_verify: int = 2  # alternating yes / no where the record allows it
    n_choose: int = 1
    n_query: int = 1
    verify_code_fraction: float = 0.6  # share of verify questions about one statement (template 1)

    def __post_init__(self) -> None:
        n = "QuestionGenConfig"
        for name in ("n_verify", "n_choose", "n_query"):
            check_field(getattr(self, name) >= 0, n, name, getattr(self, name), "must be >= 0")
        check_field(
            0.0 <= self.verify_code_fraction <= 1.0,
            n,
            "verify_code_fraction",
            self.verify_code_fraction,
            "must be in [0, 1]",
        )


_CERTAIN_LIKELIHOODS = (0.0, 100.0)
_FINDING_TEMPLATE = finding_template().template_id  # "Does this ECG show symptoms of X?"
_VERIFY_RECORD_TEMPLATES = tuple(
    tid for tid, t in TEMPLATES.items() if t.record_level and t.question_type is QuestionType.VERIFY
)
_CHOOSE_TEMPLATES = tuple(tid for tid, t in TEMPLATES.items() if t.question_type is QuestionType.CHOOSE)
_QUERY_TEMPLATES = tuple(tid for tid, t in TEMPLATES.items() if t.question_type is QuestionType.QUERY)


class _Generator:
    """Answers ECG-QA templates from one record's SCP statements (shared tables built once)."""

    def __init__(
        self, scp_table: dict[str, ScpStatement], vocab: AnswerVocabulary, prevalence: dict[str, float]
    ) -> None:
        self.scp = scp_table
        known = set(vocab.answers)
        # statements ECG-QA can name (NORM is not a symptom)
        self.names = {c: ecgqa_attribute_name(c, scp_table) for c in sorted(scp_table) if c != "NORM"}
        self.names = {c: n for c, n in self.names.items() if n in known}
        self.vocab = vocab
        self.prevalence = prevalence
        self.category_codes = {
            cat: sorted(c for c, s in scp_table.items() if c != "NORM" and getattr(s, cat))
            for cat in ("diagnostic", "form", "rhythm")
        }
        self.category_codes["any"] = sorted(c for c in scp_table if c != "NORM")

    # -- facts about one record
    @staticmethod
    def knows(entry: PtbxlEntry, group: str) -> bool:
        """Whether the record's labels answer ``group``: the superclasses (NORM included) always, the
        statement groups only where its statements are labelled."""
        return entry.statements_labelled or _GROUPS[group][0] in ("superclass", "norm")

    def group_present(self, entry: PtbxlEntry, group: str) -> list[str]:
        """Codes (or superclass codes) of ``group`` present in the record under its likelihood rule."""
        category, rule = _GROUPS[group]
        assert self.knows(entry, group), f"ecg_id {entry.ecg_id} has no statement labels for group {group}"
        if category == "superclass":
            return sorted(s for s in entry.superclasses if s in SUPERCLASS_NAMES)
        if category == "norm":
            has_norm = "NORM" in (entry.scp_codes if entry.statements_labelled else entry.superclasses)
            return ["NORM"] if has_norm else []
        codes = [c for c in self.category_codes[category] if c in entry.scp_codes]
        if rule == "certain":
            codes = [c for c in codes if entry.scp_codes[c] in _CERTAIN_LIKELIHOODS]
        return codes

    def name_of(self, group: str, code: str) -> str | None:
        return SUPERCLASS_NAMES.get(code) if group == "superclass" else self.names.get(code)

    def code_answer(self, entry: PtbxlEntry, code: str) -> str:
        assert entry.statements_labelled, f"ecg_id {entry.ecg_id}: whether it shows {code} is unknown"
        if code not in entry.scp_codes:
            return "no"
        if self.scp[code].diagnostic and entry.scp_codes[code] not in _CERTAIN_LIKELIHOODS:
            return "not sure"
        return "yes"

    # -- one question of each type; each returns (template_id, attributes, answers) or None
    def verify(self, entry: PtbxlEntry, rng: random.Random, want_yes: bool, frac: float):
        if not entry.statements_labelled:  # a superclass (template 1) or "normal ECG" (template 2)
            supers = [c for c in SUPERCLASS_NAMES if (c in entry.superclasses) == want_yes]
            norm_ok = bool(self.group_present(entry, "norm")) == want_yes
            said = ("yes" if want_yes else "no",)
            if supers and (not norm_ok or rng.random() < frac):
                return _FINDING_TEMPLATE, (SUPERCLASS_NAMES[rng.choice(supers)],), said
            return (NORMAL_ECG_TEMPLATE, (_RECORD_ATTRIBUTE[NORMAL_ECG_TEMPLATE],), said) if norm_ok else None
        universe = sorted(self.names)
        if want_yes:
            codes = [c for c in universe if c in entry.scp_codes]
            weights = [1.0] * len(codes)
        else:  # draw absent statements as often as they are present elsewhere: balanced per attribute
            codes = [c for c in universe if c not in entry.scp_codes and self.prevalence.get(c, 0) > 0]
            weights = [float(self.prevalence[c]) for c in codes]
        record_tids = [
            t
            for t in _VERIFY_RECORD_TEMPLATES
            if bool(self.group_present(entry, TEMPLATES[t].group)) == want_yes
        ]
        if codes and (not record_tids or rng.random() < frac):
            code = rng.choices(codes, weights=weights)[0]
            return _FINDING_TEMPLATE, (self.names[code],), (self.code_answer(entry, code),)
        if record_tids:
            tid = rng.choice(record_tids)
            return tid, (_RECORD_ATTRIBUTE[tid],), ("yes" if want_yes else "no",)
        return None

    def choose(self, entry: PtbxlEntry, rng: random.Random):
        # draw the answer pattern first (one / both / none of the candidates present), then a
        # template allowing it: otherwise "none" would dominate, as most groups are absent
        by_pattern: dict[str, list[tuple[int, list[str], list[str]]]] = {}
        for tid in _CHOOSE_TEMPLATES:
            group = TEMPLATES[tid].group
            if not self.knows(entry, group):
                continue
            allowed = set(self.vocab.options(tid)) - {NONE_ANSWER}
            named = {self.name_of(group, c) for c in self.group_present(entry, group)}
            present_l, absent = sorted(n for n in named if n in allowed), sorted(allowed - named)
            feasible = {
                "one": bool(present_l and absent),
                "both": len(present_l) >= 2,
                "none": len(absent) >= 2,
            }
            for p, ok in feasible.items():
                if ok:
                    by_pattern.setdefault(p, []).append((tid, present_l, absent))
        if not by_pattern:
            return None
        pattern = rng.choice(sorted(by_pattern))
        tid, present_l, absent = rng.choice(by_pattern[pattern])
        if pattern == "one":
            pair = [rng.choice(present_l), rng.choice(absent)]
        elif pattern == "both":
            pair = rng.sample(present_l, 2)
        else:
            pair = rng.sample(absent, 2)
        rng.shuffle(pair)
        answers = tuple(n for n in pair if n in present_l) or (NONE_ANSWER,)
        return tid, tuple(pair), answers

    def query(self, entry: PtbxlEntry, rng: random.Random):
        feasible = {}
        for tid in _QUERY_TEMPLATES:
            group = TEMPLATES[tid].group
            if not self.knows(entry, group):
                continue
            allowed = self.vocab.options(tid)
            names = [self.name_of(group, c) for c in self.group_present(entry, group)]
            if all(n is not None and n in allowed for n in names):  # else the true answer is unsayable
                feasible[tid] = tuple(names) or (NONE_ANSWER,)
        if not feasible:
            return None
        tid = rng.choice(sorted(feasible))
        attributes = tuple(a for a in self.vocab.options(tid) if a != NONE_ANSWER)
        return tid, attributes, feasible[tid]


def generate_questions(
    ptbxl: PtbxlDataset,
    ecg_ids: list[int] | tuple[int, ...],
    scp_table: dict[str, ScpStatement],
    rng_seed: int,
    *,
    answer_vocab: AnswerVocabulary,
    config: QuestionGenConfig | None = None,
    wording: Wording = "template",
) -> list[QASample]:
    """Generate ECG-QA-style single-ECG SCP-code questions from PTB-XL labels.

    Each record is handled with its own RNG seeded by ``(rng_seed, ecg_id)``, so a record's
    questions do not depend on which other ids are passed; the wording RNG is separate, so the
    three wordings ask the same questions with the same answers.

    Args:
        ptbxl: the labels.
        ecg_ids: records to ask about (e.g. ``ptbxl.ids(TRAIN_FOLDS)``).
        scp_table: from :func:`diagecg.datasets.reports.load_scp_table`.
        rng_seed: the seed.
        answer_vocab: from :func:`load_answer_vocab`; every answer is one of the template's options.
        config: questions per record; defaults to ``QuestionGenConfig()``.
        wording: ``"template"``, ``"mixed"`` (template or training paraphrases) or ``"paraphrase"``
            (held-out paraphrases only).

    Returns:
        ``source="generated"``, ``attribute_type="scp_code"`` samples, grouped by record in
        ``ecg_ids`` order.

    Raises:
        ValueError: unknown wording, or an ecg_id without labels.
    """
    cfg = config or QuestionGenConfig()
    if wording not in WORDINGS:
        raise ValueError(f"wording must be one of {WORDINGS}, not {wording!r}")
    missing = [i for i in ecg_ids if i not in ptbxl.entries]
    if missing:
        raise ValueError(f"{len(missing)} ecg_ids have no PTB-XL labels, e.g. {missing[:5]}")
    entries = [ptbxl.entries[i] for i in ecg_ids]
    # statement frequencies over all labelled records (not just ecg_ids), so a record's questions
    # do not depend on the id set; they only weight which absent statements are asked about. Weighted
    # (PtbxlDataset.statement_weights), so the AF-enriched subset of ptbxl_full does not inflate AFIB
    all_ids = list(ptbxl.entries)
    prevalence: dict[str, float] = {}
    for i, w in zip(all_ids, ptbxl.statement_weights(all_ids), strict=True):
        for c in ptbxl.entries[i].scp_codes:
            prevalence[c] = prevalence.get(c, 0.0) + float(w)
    gen = _Generator(scp_table, answer_vocab, prevalence)

    out: list[QASample] = []
    for entry in entries:
        rng = random.Random(f"ecgqa-{rng_seed}-{entry.ecg_id}")
        word_rng = random.Random(f"ecgqa-wording-{rng_seed}-{entry.ecg_id}")
        seen: set[tuple[int, tuple[str, ...]]] = set()
        picked: list[tuple[int, tuple[str, ...], tuple[str, ...]]] = []
        start_yes = rng.random() < 0.5
        plan: list[tuple[str, bool]] = [("verify", (i % 2 == 0) == start_yes) for i in range(cfg.n_verify)]
        plan += [("choose", False)] * cfg.n_choose + [("query", False)] * cfg.n_query
        for kind, want_yes in plan:
            for attempt in range(8):
                if kind == "verify":  # fall back to the other polarity when this one is impossible
                    polarity = want_yes if attempt < 4 else not want_yes
                    q = gen.verify(entry, rng, polarity, cfg.verify_code_fraction)
                elif kind == "choose":
                    q = gen.choose(entry, rng)
                else:
                    q = gen.query(entry, rng)
                if q is not None and (q[0], q[1]) not in seen:
                    seen.add((q[0], q[1]))
                    picked.append(q)
                    break
        for tid, attributes, answers in picked:
            tpl = TEMPLATES[tid]
            options = answer_vocab.options(tid)
            assert set(answers) <= set(options), f"template {tid}: {answers} not within {options}"
            out.append(
                QASample(
                    ecg_id=entry.ecg_id,
                    question=render_question(tpl, wording, word_rng, attributes),
                    answers=tuple(sorted(answers)),
                    question_type=tpl.question_type.value,
                    attribute_type="scp_code",
                    template_id=tid,
                    attributes=attributes,
                    source="generated",
                    wording=wording,
                )
            )
    return out


def finding_names(
    findings: tuple[str, ...], scp_table: dict[str, ScpStatement], answer_vocab: AnswerVocabulary
) -> dict[str, str]:
    """The name a verify question uses for each finding ECG-QA can name: superclasses by
    ``SUPERCLASS_NAMES``, NORM as ``"normal ecg"`` (template 2), statements by their ECG-QA name.
    Findings ECG-QA has no name for (EL, RVH...) are left out."""
    known = set(answer_vocab.answers)
    out: dict[str, str] = {}
    for code in findings:
        if code == "NORM":
            out[code] = _RECORD_ATTRIBUTE[NORMAL_ECG_TEMPLATE]
        elif code in SUPERCLASS_NAMES:
            out[code] = SUPERCLASS_NAMES[code]
        elif code in scp_table and ecgqa_attribute_name(code, scp_table) in known:
            out[code] = ecgqa_attribute_name(code, scp_table)
    return out


def finding_text(code: str, scp_table: dict[str, ScpStatement]) -> str:
    """Words for any finding code: ECG-QA's name where it has one, else the statement's description."""
    if code == "NORM":
        return _RECORD_ATTRIBUTE[NORMAL_ECG_TEMPLATE]
    if code in SUPERCLASS_NAMES:
        return SUPERCLASS_NAMES[code]
    return ecgqa_attribute_name(code, scp_table)


def finding_questions(
    ptbxl: PtbxlDataset,
    ecg_ids: list[int] | tuple[int, ...],
    names: dict[str, str],
    scp_table: dict[str, ScpStatement],
    rng_seed: int,
    wording: Wording = "template",
) -> list[QASample]:
    """One verify question per record and finding: "Does this ECG show symptoms of X?" (template 1;
    "Is this a normal ECG?", template 2, for NORM).

    Answers follow ECG-QA's rules: a superclass (MI, STTC, CD, HYP) is ``yes``/``no`` from
    ``diagnostic_superclass``; a statement is ``yes``/``not sure``/``no`` as in template 1 (``not sure``:
    a diagnostic statement with an uncertain likelihood). A statement is not asked of a record without
    statement labels (its answer is unknown, not "no"); NORM and the superclasses are asked of every record.

    Args:
        ptbxl: the labels.
        ecg_ids: records to ask about.
        names: finding code -> attribute name (:func:`finding_names`).
        scp_table: from ``reports.load_scp_table``.
        rng_seed: picks the wording per question (``"mixed"``/``"paraphrase"``).
        wording: as :func:`generate_questions`.

    Returns:
        One sample per record and finding its labels answer, record-major.
    """
    if wording not in WORDINGS:
        raise ValueError(f"wording must be one of {WORDINGS}, not {wording!r}")
    gen = _Generator(scp_table, AnswerVocabulary(()), {})
    out: list[QASample] = []
    for ecg_id in ecg_ids:
        entry = ptbxl.entries[ecg_id]
        rng = random.Random(f"ecgqa-finding-{rng_seed}-{ecg_id}")
        for code, name in names.items():
            if code == "NORM":
                tid, answer = NORMAL_ECG_TEMPLATE, ("yes" if gen.group_present(entry, "norm") else "no")
            elif code in SUPERCLASS_NAMES:
                tid, answer = _FINDING_TEMPLATE, ("yes" if code in entry.superclasses else "no")
            elif entry.statements_labelled:
                tid, answer = _FINDING_TEMPLATE, gen.code_answer(entry, code)
            else:
                continue
            tpl = TEMPLATES[tid]
            out.append(
                QASample(
                    ecg_id=ecg_id,
                    question=render_question(tpl, wording, rng, (name,)),
                    answers=(answer,),
                    question_type=tpl.question_type.value,
                    attribute_type="scp_code",
                    template_id=tid,
                    attributes=(name,),
                    source="generated",
                    wording=wording,
                )
            )
    return out
