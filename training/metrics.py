"""Evaluation: exact-match QA accuracy with a majority baseline, and report-generation metrics.

QA answers are sets, written and read by :mod:`diagecg.answers` (torch-free, shared with the
runtime): a prediction is correct when :func:`~diagecg.answers.normalize_answer` of the generated
text equals the reference set, as in ECG-QA's exact-match accuracy (Oh et al. 2023).

Report metrics follow the DiagECG / HeartLLM evaluation (arXiv 2508.15338): corpus BLEU-1..4
(NLTK, uniform n-gram weights, no smoothing), METEOR (NLTK) and ROUGE-1/2/L F1 (``rouge-score``,
Porter stemming), on lower-cased text split into words and punctuation by a regular expression
(NLTK's punkt tokenizer would need a download). METEOR is computed without WordNet: NLTK's
synonym stage is given a stub whose ``synsets()`` is empty, so words match exactly or by Porter
stem only (nothing is downloaded; scores are slightly below METEOR with synonyms).
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

from diagecg.answers import format_answer, normalize_answer
from diagecg.datasets.ecgqa import QUESTION_TYPES, QASample

__all__ = [
    "ATTRIBUTE_PREFIX",
    "OVERALL",
    "exact_match_by_type",
    "format_answer",
    "format_table",
    "majority_baseline",
    "majority_predictions",
    "normalize_answer",
    "report_metrics",
    "tokenize_report",
]

_TOKEN_RE = re.compile(r"[a-z0-9]+(?:[-'/][a-z0-9]+)*|[^\sa-z0-9]")
OVERALL = "overall"
ATTRIBUTE_PREFIX = "attr/"


def _reference_set(sample: QASample) -> frozenset[str]:
    return normalize_answer(format_answer(sample.answers))


# --- QA accuracy ---------------------------------------------------------------------------


def _accumulate(samples: Sequence[QASample], correct: Sequence[bool]) -> dict[str, dict[str, float]]:
    groups: dict[str, list[bool]] = {OVERALL: list(correct)}
    for s, ok in zip(samples, correct, strict=True):
        groups.setdefault(s.question_type, []).append(ok)
        groups.setdefault(ATTRIBUTE_PREFIX + s.attribute_type, []).append(ok)
    order = [
        OVERALL,
        *[q for q in QUESTION_TYPES if q in groups],
        *sorted(k for k in groups if k.startswith(ATTRIBUTE_PREFIX)),
    ]
    return {
        k: {"n": len(groups[k]), "accuracy": (sum(groups[k]) / len(groups[k])) if groups[k] else 0.0}
        for k in order
    }


def exact_match_by_type(
    samples: Sequence[QASample], predictions: Sequence[str]
) -> dict[str, dict[str, float]]:
    """Exact-match accuracy of predicted answer sets.

    Args:
        samples: the questions with reference answers.
        predictions: generated answer text, one per sample.

    Returns:
        ``{"overall": {"n", "accuracy"}, "<question_type>": ..., "attr/<attribute_type>": ...}``.

    Raises:
        ValueError: the two lists differ in length.
    """
    if len(samples) != len(predictions):
        raise ValueError(f"{len(samples)} samples but {len(predictions)} predictions")
    correct = [normalize_answer(p) == _reference_set(s) for s, p in zip(samples, predictions, strict=True)]
    return _accumulate(samples, correct)


def _majority(counter: Counter[str]) -> str:
    return min(counter.items(), key=lambda kv: (-kv[1], kv[0]))[0]  # ties broken alphabetically


def majority_predictions(
    train_samples: Sequence[QASample],
    test_samples: Sequence[QASample],
    by: str = "template",
    weights: Sequence[float] | None = None,
) -> list[str]:
    """The majority-baseline answer for each test sample, formatted with :func:`format_answer`.

    Args:
        train_samples: where the majorities are counted.
        test_samples: the questions to answer.
        by: ``"template"`` (majority answer set per template_id) or ``"question"`` (per
            template_id and attributes, falling back to the template's majority).
        weights: what each train sample counts (e.g. its record's ``PtbxlDataset.statement_weights``,
            so an enriched subset does not decide the majority); None = 1 each.

    Unseen templates fall back to the majority of the question type, then of all train samples.
    """
    if by not in ("template", "question"):
        raise ValueError(f"by must be 'template' or 'question', not {by!r}")
    if not train_samples:
        raise ValueError("majority baseline needs at least one train sample")
    if weights is not None and len(weights) != len(train_samples):
        raise ValueError(f"{len(weights)} weights for {len(train_samples)} train samples")
    per_question: dict[tuple[int, tuple[str, ...]], Counter[str]] = {}
    per_template: dict[int, Counter[str]] = {}
    per_type: dict[str, Counter[str]] = {}
    overall: Counter[str] = Counter()
    for k, s in enumerate(train_samples):
        a = format_answer(s.answers)
        w = 1.0 if weights is None else float(weights[k])
        per_question.setdefault((s.template_id, s.attributes), Counter())[a] += w  # type: ignore[assignment]
        per_template.setdefault(s.template_id, Counter())[a] += w  # type: ignore[assignment]
        per_type.setdefault(s.question_type, Counter())[a] += w  # type: ignore[assignment]
        overall[a] += w  # type: ignore[assignment]
    out = []
    for s in test_samples:
        if by == "question" and (s.template_id, s.attributes) in per_question:
            out.append(_majority(per_question[(s.template_id, s.attributes)]))
        elif s.template_id in per_template:
            out.append(_majority(per_template[s.template_id]))
        elif s.question_type in per_type:
            out.append(_majority(per_type[s.question_type]))
        else:
            out.append(_majority(overall))
    return out


def majority_baseline(
    train_samples: Sequence[QASample], test_samples: Sequence[QASample], by: str = "template"
) -> dict[str, dict[str, float]]:
    """Exact-match accuracy of :func:`majority_predictions` (same shape as :func:`exact_match_by_type`)."""
    return exact_match_by_type(test_samples, majority_predictions(train_samples, test_samples, by=by))


def format_table(
    results: dict[str, dict[str, float]], baseline: dict[str, dict[str, float]] | None = None
) -> str:
    """A plain-text table of accuracy per group, with the baseline beside it when given."""
    header = f"{'group':<28} {'n':>6} {'accuracy':>9}" + (f" {'baseline':>9}" if baseline else "")
    lines = [header, "-" * len(header)]
    for key, row in results.items():
        line = f"{key:<28} {int(row['n']):>6} {row['accuracy']:>9.3f}"
        if baseline:
            b = baseline.get(key)
            line += f" {b['accuracy']:>9.3f}" if b else f" {'-':>9}"
        lines.append(line)
    return "\n".join(lines)


# --- report metrics ------------------------------------------------------------------------


def tokenize_report(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens (``"st/t"`` and ``"t-wave"`` stay one token)."""
    return _TOKEN_RE.findall(text.lower())


class _NoWordNet:
    """Stands in for ``nltk.corpus.wordnet`` so METEOR needs no download: no synonyms at all."""

    def synsets(self, *args: Any, **kwargs: Any) -> list[Any]:
        return []


def report_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """BLEU-1..4, METEOR and ROUGE-1/2/L F1 of generated reports against one reference each.

    Args:
        predictions: generated reports.
        references: reference reports, same order.

    Returns:
        ``{"bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge1", "rouge2", "rougeL", "n"}``;
        BLEU is corpus-level, METEOR and ROUGE are means over pairs. All in [0, 1].

    Raises:
        ValueError: lengths differ or the lists are empty.
    """
    from nltk.stem.porter import PorterStemmer
    from nltk.translate.bleu_score import corpus_bleu
    from nltk.translate.meteor_score import meteor_score
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("report_metrics needs at least one prediction")
    hyps = [tokenize_report(p) for p in predictions]
    refs = [tokenize_report(r) for r in references]
    out: dict[str, float] = {}
    for n in range(1, 5):
        weights = tuple([1.0 / n] * n)
        with warnings.catch_warnings():  # NLTK warns on every zero n-gram overlap; 0.0 is the answer
            warnings.filterwarnings("ignore", r"\s*The hypothesis contains 0 counts", UserWarning)
            out[f"bleu{n}"] = float(corpus_bleu([[r] for r in refs], hyps, weights=weights))
    stemmer, wordnet = PorterStemmer(), _NoWordNet()
    meteors = [
        meteor_score([r], h, stemmer=stemmer, wordnet=wordnet) if h and r else 0.0
        for h, r in zip(hyps, refs, strict=True)
    ]
    out["meteor"] = sum(meteors) / len(meteors)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    sums = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for p, r in zip(predictions, references, strict=True):
        scores = scorer.score(r, p)
        for k in sums:
            sums[k] += scores[k].fmeasure
    out.update({k: v / len(predictions) for k, v in sums.items()})
    out["n"] = float(len(predictions))
    return out
